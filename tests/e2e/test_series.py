"""`GET /v1/series`: every node samples its own traffic, errors, memory and disk every few seconds
into a bounded series kept in memory, and answers every node's (asked over the mesh), naming the
nodes it could not ask. Rates come from counter growth between samples and are never negative."""

import time
import uuid

import requests

from conftest import s3_client, wait_until
from test_cluster_actors import kill_and_wait_down, node_id, trio  # noqa: F401 (trio is a fixture)
from test_stomp import Client, RawStomp

RATES = ("messages_in_per_s", "messages_out_per_s", "s3_requests_per_s", "s3_errors_per_s", "stomp_errors_per_s")
GAUGES = ("resident_bytes", "memory_limit_bytes", "memory_refusing", "storage_bytes")


def series(server, **params):
    """The body of `server`'s /v1/series (failing on any status but 200)."""
    response = server.get("/v1/series", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def bad_login(node):
    """A STOMP CONNECT with a wrong passcode: the node answers an ERROR frame."""
    raw = RawStomp(node)
    try:
        raw.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "login": "nobody", "passcode": "wrong"},
                       escaped=False)
        frame = raw.read_frame()
        assert frame is not None and frame.command == "ERROR", frame
    finally:
        raw.sock.close()


def traffic_seen(node):
    """True once `node`'s /v1/series shows S3 requests, errors and messages in and out, on any node."""
    samples = [s for n in series(node)["nodes"] for s in n["samples"]]
    return all(any(s[rate] > 0 for s in samples)
               for rate in ("messages_in_per_s", "messages_out_per_s", "s3_requests_per_s", "s3_errors_per_s",
                            "stomp_errors_per_s"))


def check_shape(body):
    """Every sample of every node has each rate (never negative) and gauge, oldest first, at most
    max_samples of them."""
    assert body["interval_ms"] == 5000 and body["max_samples"] == 360, body
    for node in body["nodes"]:
        samples = node["samples"]
        assert len(samples) <= body["max_samples"]
        assert [s["at_ms"] for s in samples] == sorted({s["at_ms"] for s in samples}), "oldest first, one per instant"
        for sample in samples:
            assert set(sample) == {"at_ms", *RATES, *GAUGES}, sample
            assert all(sample[rate] >= 0 for rate in RATES), sample
            assert sample["resident_bytes"] > 0 and sample["storage_bytes"] > 0, sample
            assert sample["memory_limit_bytes"] > sample["resident_bytes"] and sample["memory_refusing"] is False, sample


def make_traffic(node, rounds=20):
    """S3 requests (some refused), STOMP messages in and out, and a refused STOMP login."""
    bucket = f"series-{uuid.uuid4().hex[:8]}"
    s3 = s3_client(node)
    s3.create_bucket(Bucket=bucket)
    subscriber, publisher = Client(node), Client(node)
    subscriber.subscribe(f"/topic/{bucket}", id="s")
    for i in range(rounds):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"sampled")
        requests.get(f"{node.s3}/{bucket}/k{i}", timeout=10)  # unsigned: refused, a 4xx
        publisher.send(f"/topic/{bucket}", f"m{i}")
    subscriber.listener.wait_count(rounds)
    bad_login(node)
    publisher.close()
    subscriber.close()


def test_a_node_samples_its_traffic_errors_memory_and_disk_into_a_bounded_series(servd):
    me = node_id(servd)
    assert servd.get("/v1/series", token=None).status_code == 401
    refused = servd.get("/v1/series", params={"since": "1"})
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidParameter"
    assert servd.get("/v1/series", params={"node": "no-such-node"}).status_code == 404
    body = wait_until(lambda: (lambda b: b if b["nodes"][0]["samples"] else None)(series(servd)), timeout=15,
                      message="a first sample")
    assert [n["node"] for n in body["nodes"]] == [me] and body["unreachable"] == []
    check_shape(body)

    make_traffic(servd)
    body = wait_until(lambda: traffic_seen(servd) and series(servd), timeout=20,
                      message=lambda: f"the rates did not rise: {series(servd)}")
    check_shape(body)
    assert [n["node"] for n in series(servd, node=me)["nodes"]] == [me]
    # A sample every 5 s: the series grows by about one per interval, up to its bound.
    before = len(series(servd)["nodes"][0]["samples"])
    time.sleep(5.5)
    assert len(series(servd)["nodes"][0]["samples"]) in (before + 1, before + 2)


def test_a_restarted_node_starts_a_new_series_whose_rates_are_never_negative(start_servd, tmp_path):
    node = start_servd(data_dir=tmp_path / "restarted").wait_ready()
    make_traffic(node)
    wait_until(lambda: traffic_seen(node), timeout=20, message="rates before the restart")
    node.stop()
    restarted_ms = time.time() * 1000
    node = start_servd(data_dir=tmp_path / "restarted").wait_ready()
    body = wait_until(lambda: (lambda b: b if len(b["nodes"][0]["samples"]) >= 2 else None)(series(node)), timeout=20,
                      message="two samples after the restart")
    check_shape(body)
    # Its counters began again from zero; the series it had went with the process.
    assert all(s["at_ms"] > restarted_ms for s in body["nodes"][0]["samples"]), body
    assert all(s["s3_requests_per_s"] == 0 for s in body["nodes"][0]["samples"]), body


def test_the_series_of_every_node_and_the_nodes_that_could_not_answer(trio):
    n1, n2, n3 = trio
    me, ids = node_id(n1), sorted(node_id(n) for n in trio)
    body = wait_until(lambda: (lambda b: b if all(n["samples"] for n in b["nodes"]) else None)(series(n1)), timeout=15,
                      message="a sample of every node")
    check_shape(body)
    names = [n["node"] for n in body["nodes"]]
    assert names[0] == me and sorted(names) == ids and names[1:] == sorted(names[1:]), "this node first, then by id"
    assert body["unreachable"] == []
    other = node_id(n2)
    assert [n["node"] for n in series(n1, node=other)["nodes"]] == [other], "one node's, asked of another"

    victim = node_id(n3)
    kill_and_wait_down(n3, n1)
    body = series(n1)
    check_shape(body)
    assert victim not in [n["node"] for n in body["nodes"]] and body["unreachable"] == [victim], body
    only = series(n1, node=victim)
    assert only["nodes"] == [] and only["unreachable"] == [victim], "named, not invented"
