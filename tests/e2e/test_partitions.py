"""Partitions: every write of every entity goes through the Raft log of its key's partition. On
one node each partition is a group of one; what a user sees is the layout in the admin API and
metrics, a partition count that a data dir keeps, and writes that survive SIGKILL through the
log's replay."""

import signal

from conftest import metric, s3_client, unique_bucket, wait_until
from test_stomp import Client


def partitions(node):
    response = node.get("/v1/cluster/partitions")
    assert response.status_code == 200, response.text
    return response.json()


def applied(node) -> int:
    return sum(p["applied_index"] or 0 for p in partitions(node)["partitions"])


def test_s3_and_stomp_writes_go_through_the_partition_logs(start_servd):
    node = start_servd(args=["--partitions", "16"]).wait_ready()
    layout = partitions(node)
    node_id = node.get("/v1/node").json()["id"]
    assert layout["count"] == 16 and layout["node"] == node_id
    assert [p["partition"] for p in layout["partitions"]] == list(range(16))
    for p in layout["partitions"]:
        assert p["replicas"] == [node_id] and p["leader"] == node_id and p["role"] == "leader", p
        assert p["term"] >= 1 and p["applied_index"] == p["last_log_index"] == p["commit_index"], p
        # A node of one is every replica its partitions want.
        assert p["lag"] == {node_id: 0} and not p["under_replicated"] and p["shortfalls"] == [], p
    assert metric(node, "serv_partitions") == 16
    assert metric(node, "serv_partitions_led") == 16
    assert metric(node, "serv_partitions_under_replicated") == 0
    before_applied, before_proposals = applied(node), metric(node, "serv_raft_proposals_total")

    s3 = s3_client(node)
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    for i in range(10):
        s3.put_object(Bucket=name, Key=f"k{i}", Body=b"x" * i)
    producer = Client(node)
    for i in range(5):
        producer.send("/queue/partitioned", f"m{i}")

    # One bucket creation, ten objects and five messages: at least sixteen committed proposals,
    # each applied through a log entry.
    proposals = metric(node, "serv_raft_proposals_total") - before_proposals
    assert proposals >= 16, proposals
    wait_until(lambda: applied(node) - before_applied >= 16, message="sixteen entries applied")
    assert metric(node, "serv_raft_proposals_failed_total") == 0
    assert metric(node, "serv_raft_proposal_seconds_count") >= proposals
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == [f"k{i}" for i in range(10)]


def test_a_data_dir_keeps_its_partition_count(start_servd, tmp_path):
    data = tmp_path / "node"
    node = start_servd(args=["--partitions", "8"], data_dir=data).wait_ready()
    s3 = s3_client(node)
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="kept", Body=b"before")
    assert node.stop() == 0

    refused = start_servd(args=["--partitions", "32"], data_dir=data)
    assert refused.proc.wait(timeout=30) != 0
    assert "8 partitions" in refused.output() and "--partitions 32" in refused.output(), refused.output()

    again = start_servd(data_dir=data).wait_ready()
    assert partitions(again)["count"] == 8
    assert s3_client(again).get_object(Bucket=name, Key="kept")["Body"].read() == b"before"


def test_sigkill_right_after_acknowledged_writes_loses_none_of_them(start_servd, tmp_path):
    data = tmp_path / "node"
    node = start_servd(data_dir=data).wait_ready()
    s3 = s3_client(node)
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    bodies = {f"obj{i}": bytes([i]) * (100 + i) for i in range(40)}
    for key, body in bodies.items():
        s3.put_object(Bucket=name, Key=key, Body=body)
    producer = Client(node)
    for i in range(20):
        producer.send("/queue/killed", f"m{i}", wait=False)
    producer.listener.wait(lambda c: len(c.receipts) == 20, what="every message receipted")
    before = applied(node)
    node.stop(sig=signal.SIGKILL)

    # The entries applied before the kill may not have reached the disk as applied state; the
    # log holds them, and the restarted node applies them again before it serves.
    again = start_servd(data_dir=data).wait_ready()
    assert applied(again) >= before
    s3 = s3_client(again)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=name, Key=key)["Body"].read() == body, key
    consumer = Client(again)
    consumer.subscribe("/queue/killed", id="s")
    consumer.listener.wait(lambda c: len(c.bodies()) >= 20, what="the 20 receipted messages delivered")
    assert consumer.listener.bodies() == [f"m{i}" for i in range(20)], "all of them, in order"
