"""/metrics as an operator's Prometheus sees it: every family parses with HELP and TYPE, labels stay
within bounded sets, and the S3, STOMP, membership and storage families move under load.

Each test starts its own node, so counters start at zero there; still, each check compares a
scrape after the load with one before it, as a graph of rates would.
"""

import re

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import s3_client, s3_error, unique_bucket, wait_until
from test_stomp import Client, admin_put

# The families this node exports for the S3 and STOMP edges, membership and storage, with their type.
NEW_FAMILIES = {
    "serv_s3_requests_total": "counter",
    "serv_s3_request_duration_seconds": "histogram",
    "serv_stomp_connections": "gauge",
    "serv_stomp_connections_total": "counter",
    "serv_stomp_frames_received_total": "counter",
    "serv_stomp_frames_sent_total": "counter",
    "serv_stomp_messages_published_total": "counter",
    "serv_stomp_messages_delivered_total": "counter",
    "serv_stomp_messages_acked_total": "counter",
    "serv_stomp_messages_nacked_total": "counter",
    "serv_stomp_messages_dead_lettered_total": "counter",
    "serv_cluster_members": "gauge",
    "serv_cluster_suspicions_total": "counter",
    "serv_storage_bytes": "gauge",
    "serv_storage_fsync_seconds": "histogram",
}

STOMP_COMMANDS = {"CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT",
                  "ABORT", "DISCONNECT", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR", "other"}


def scrape(node):
    """{(sample name, sorted label pairs): value} of one /metrics scrape."""
    text = requests.get(f"{node.admin}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    """One sample's value; 0 when absent (a labelled series appears with its first event)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rose(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def test_every_serv_family_has_help_and_type_and_parses_with_bounded_labels(servd):
    s3 = s3_client(servd)
    bucket = unique_bucket("metrics")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    client = Client(servd)
    try:
        client.send("/queue/metrics-parse", "hello")
        text = requests.get(f"{servd.admin}/metrics", timeout=10).text
    finally:
        client.close()

    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    sample_names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    assert all(name.startswith("serv_") for name in sample_names), sample_names
    for name in sample_names:
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types and family in helps, f"{name} has no HELP/TYPE of its family"
    for name, kind in types.items():
        assert name in helps, name
        assert kind in {"counter", "gauge", "histogram", "summary"}, (name, kind)
        assert kind != "counter" or name.endswith("_total"), f"counter {name} must end in _total"
        assert re.fullmatch(r"serv_[a-z0-9_]+", name), name
    for name, kind in NEW_FAMILIES.items():
        assert types.get(name) == kind, (name, types.get(name))

    families = list(text_string_to_metric_families(text))  # raises on anything malformed
    assert {f.type for f in families} <= {"counter", "gauge", "histogram", "summary"}
    samples = [s for f in families for s in f.samples]
    for sample in samples:
        labels = sample.labels
        if sample.name.startswith("serv_s3_"):
            assert set(labels) - {"le"} == ({"operation", "status"} if "requests" in sample.name else {"operation"})
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+|unknown", labels["operation"]), labels
            assert "status" not in labels or re.fullmatch(r"[1-5]\d\d|other", labels["status"]), labels
            assert bucket not in str(labels), "a bucket name is never a label"
        if sample.name.startswith("serv_stomp_frames_"):
            assert set(labels) == {"command"} and labels["command"] in STOMP_COMMANDS, labels
        if sample.name == "serv_cluster_members":
            assert labels["state"] in {"alive", "suspect", "down"}, labels
        if sample.name.startswith("serv_stomp_messages_") or sample.name == "serv_storage_bytes":
            assert labels == {}, sample
    assert not any("metrics-parse" in str(s.labels) for s in samples), "a destination is never a label"


def test_s3_requests_count_by_operation_and_status_and_their_latency(servd):
    s3 = s3_client(servd)
    bucket = unique_bucket("metrics")
    s3.create_bucket(Bucket=bucket)
    before = scrape(servd)
    puts = 7
    for i in range(puts):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"payload %d" % i)
    assert s3_error(s3.get_object, Bucket=bucket, Key="missing")[0] == 404
    s3.list_objects_v2(Bucket=bucket)
    assert s3_error(s3.get_bucket_logging, Bucket=bucket)[0] == 501
    # Refused before any operation is known: the signature does not match.
    wrong = s3_client(servd, secret="not-the-secret-key-0123456789")
    assert s3_error(wrong.put_object, Bucket=bucket, Key="no", Body=b"x")[0] == 403
    after = scrape(servd)

    assert rose(before, after, "serv_s3_requests_total", operation="PutObject", status="200") == puts
    assert rose(before, after, "serv_s3_requests_total", operation="GetObject", status="404") == 1
    assert rose(before, after, "serv_s3_requests_total", operation="ListObjectsV2", status="200") == 1
    assert rose(before, after, "serv_s3_requests_total", operation="GetBucketLogging", status="501") == 1
    assert rose(before, after, "serv_s3_requests_total", operation="unknown", status="403") == 1
    duration = "serv_s3_request_duration_seconds"
    assert rose(before, after, f"{duration}_count", operation="PutObject") == puts
    assert rose(before, after, f"{duration}_bucket", operation="PutObject", le="+Inf") == puts
    assert rose(before, after, f"{duration}_sum", operation="PutObject") > 0
    assert rose(before, after, f"{duration}_count", operation="GetObject") == 1
    # Buckets are cumulative, from 1 ms to 30 s.
    bounds = sorted(float(dict(labels)["le"]) for (name, labels) in after
                    if name == f"{duration}_bucket" and dict(labels)["operation"] == "PutObject")
    assert bounds[0] == 0.001 and bounds[-2] == 30 and bounds[-1] == float("inf")
    counts = [value(after, f"{duration}_bucket", operation="PutObject", le=le)
              for le in ("0.001", "0.01", "0.1", "1", "30", "+Inf")]
    assert counts == sorted(counts), counts


def test_stomp_connections_frames_and_messages_move_and_the_gauge_goes_back_down(servd):
    destination = "/queue/metrics-flow"
    before = scrape(servd)
    client = Client(servd)
    try:
        opened = scrape(servd)
        assert rose(before, opened, "serv_stomp_connections") == 1
        assert rose(before, opened, "serv_stomp_connections_total") == 1
        client.subscribe(destination, id="s", ack="client-individual")
        for i in range(3):
            client.send(destination, f"m{i}")
        client.listener.wait_count(3)
        for message in client.messages:
            client.ack(message)
        during = scrape(servd)
    finally:
        client.close()

    frames_in = "serv_stomp_frames_received_total"
    connects = (rose(before, during, frames_in, command="CONNECT")
                + rose(before, during, frames_in, command="STOMP"))
    assert connects == 1
    assert rose(before, during, frames_in, command="SUBSCRIBE") == 1
    assert rose(before, during, frames_in, command="SEND") == 3
    assert rose(before, during, frames_in, command="ACK") == 3
    frames_out = "serv_stomp_frames_sent_total"
    assert rose(before, during, frames_out, command="CONNECTED") == 1
    assert rose(before, during, frames_out, command="MESSAGE") == 3
    assert rose(before, during, frames_out, command="RECEIPT") == 1 + 3 + 3  # subscribe, sends, acks
    assert rose(before, during, "serv_stomp_messages_published_total") == 3
    assert rose(before, during, "serv_stomp_messages_delivered_total") == 3
    assert rose(before, during, "serv_stomp_messages_acked_total") == 3
    assert rose(before, during, "serv_stomp_messages_nacked_total") == 0

    wait_until(lambda: value(scrape(servd), "serv_stomp_connections") == value(before, "serv_stomp_connections"),
               message="the open-connections gauge goes back down after DISCONNECT")
    after = scrape(servd)
    assert rose(before, after, frames_in, command="DISCONNECT") == 1
    assert rose(before, after, "serv_stomp_connections_total") == 1


def test_a_message_nacked_to_its_dead_letter_queue_is_counted(servd):
    admin_put(servd, "/v1/topics/queue/metrics-poison", {"max_deliveries": 1})
    before = scrape(servd)
    client = Client(servd)
    try:
        client.subscribe("/queue/metrics-poison", id="s", ack="client-individual")
        client.send("/queue/metrics-poison", "poison")
        client.listener.wait_count(1)
        client.nack(client.messages[0])
        wait_until(lambda: rose(before, scrape(servd), "serv_stomp_messages_dead_lettered_total") == 1,
                   message="the NACKed message is counted as dead-lettered")
    finally:
        client.close()
    after = scrape(servd)
    assert rose(before, after, "serv_stomp_messages_nacked_total") == 1
    assert rose(before, after, "serv_stomp_frames_received_total", command="NACK") == 1


def test_storage_size_and_fsync_latency_and_members_of_a_single_node(servd):
    s3 = s3_client(servd)
    bucket = unique_bucket("metrics")
    s3.create_bucket(Bucket=bucket)
    before = scrape(servd)
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"z" * 100_000)
    after = scrape(servd)

    assert rose(before, after, "serv_storage_fsyncs_total") >= 1
    assert rose(before, after, "serv_storage_fsync_seconds_count") >= 1
    # One observation per fsync (give or take the one the commit thread may be counting right now).
    assert abs(value(after, "serv_storage_fsync_seconds_count") - value(after, "serv_storage_fsyncs_total")) <= 1
    assert value(after, "serv_storage_fsync_seconds_bucket", le="+Inf") == value(after, "serv_storage_fsync_seconds_count")
    assert rose(before, after, "serv_storage_fsync_seconds_sum") > 0
    assert value(after, "serv_storage_bytes") > 0

    assert value(after, "serv_cluster_members", state="alive") == 1
    assert value(after, "serv_cluster_members", state="suspect") == 0
    assert value(after, "serv_cluster_members", state="down") == 0
    assert value(after, "serv_cluster_suspicions_total") == 0
