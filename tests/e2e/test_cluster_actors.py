"""Any node serves any entity: a message for an entity served by another node (its partition's
Raft leader) is forwarded over the mesh (ractor_cluster sessions on QUIC streams) to that node,
which activates it on demand.

Each test starts a 3-node cluster through one seed and waits until every node's /v1/actors lists
the supervisors of all three nodes, which needs the actor sessions between every pair."""

import hashlib
import json
import os
import signal
import time
import uuid

import pytest
import requests

from botocore.exceptions import ClientError

from conftest import s3_client, wait_until
from test_s3_keys import create_key
from test_stomp import WAIT, Client

FAST = ["--probe-period-ms", "200", "--suspect-timeout-ms", "1000"]


def node_id(node):
    return node.get("/v1/node").json()["id"]


def actors(server, **params):
    return server.get("/v1/actors", params=params).json()["actors"]


def owner_of(node, key):
    """The node that serves `key`: its partition's leader (waited for while one is elected)."""
    owner = None

    def known():
        nonlocal owner
        owner = node.get("/v1/cluster/ring/owner", params={"key": key}).json()["leader"]
        return owner is not None
    wait_until(known, timeout=30, message=f"{key}'s partition has a leader")
    return owner


@pytest.fixture
def trio(start_servd, tmp_path):
    seed = start_servd(args=FAST, data_dir=tmp_path / "n1").wait_ready()
    seeds = ["--seeds", f"127.0.0.1:{seed.mesh_port}"]
    nodes = [seed] + [start_servd(args=[*FAST, *seeds], data_dir=tmp_path / f"n{i}").wait_ready()
                      for i in (2, 3)]
    wait_settled(nodes)
    return nodes


def wait_settled(nodes):
    """Until every node lists the actors of every node (sessions up) and is settled on the ring
    of all of them (every hand-off done)."""
    ids = sorted(node_id(n) for n in nodes)
    for node in nodes:
        wait_until(lambda node=node: sorted({a["node"] for a in actors(node, kind="node")}) == ids,
                   timeout=20, message=f"{node_id(node)} lists the actors of every node")
        wait_until(lambda node=node: (lambda r: r["settled"] and sorted(n["id"] for n in r["nodes"]) == ids)(
            node.get("/v1/cluster/ring").json()), timeout=30, message=f"{node_id(node)} settles on the ring")


def states(node):
    return {m["id"]: m["state"] for m in node.get("/v1/cluster/members").json()["members"]}


def kill_and_wait_down(victim, observer):
    """SIGKILLs `victim` and waits until `observer` sees it down."""
    victim_id = node_id(victim)
    victim.stop(signal.SIGKILL)
    wait_until(lambda: states(observer).get(victim_id) == "down", timeout=15,
               message=f"{victim_id} not seen down")


def test_a_queue_owned_elsewhere_serves_producers_and_consumers_on_every_node(trio):
    n1, n2, n3 = trio
    # The producer is on node 1, the group's members on nodes 2 and 3; the queue is served by
    # its partition's leader, wherever that is.
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    producer, members = Client(n1), [Client(n2), Client(n3)]
    try:
        for i, member in enumerate(members):
            member.subscribe(f"/queue/{queue}", id=f"m{i}", ack="client-individual",
                             headers={"prefetch-count": "4"})
            member.listener.on_each = lambda frame, m=member: m.conn.ack(frame.headers["ack"])
        sent = [f"order-{i}" for i in range(60)]
        for body in sent:
            producer.send(f"/queue/{queue}", body)  # waits for each RECEIPT: durable on the owner
        wait_until(lambda: sum(len(m.bodies()) for m in members) >= len(sent), timeout=WAIT,
                   message=f"members got {[len(m.bodies()) for m in members]}")
        got = [m.bodies() for m in members]
        assert sorted(got[0] + got[1]) == sorted(sent), "every message delivered exactly once"
        assert not set(got[0]) & set(got[1])
        assert got[0] and got[1], f"both members get a share: {[len(g) for g in got]}"
        # Acks crossed the mesh: nothing stays in flight on the owner.
        wait_until(lambda: "in_flight=0" in topic_group_state(n1, queue), timeout=WAIT,
                   message=f"the queue's group still has messages in flight: {topic_group_state(n1, queue)}")
    finally:
        for client in (producer, *members):
            client.close()


def topic_group_state(node, queue):
    records = [a for a in actors(node, kind="group") if a["key"] == f"group/queue/{queue}#queue"]
    return " ".join(a["state"] for a in records)


def test_a_topic_actor_runs_on_its_partition_leader_only_and_every_node_lists_it(trio):
    n1, n2, n3 = trio
    audited = []
    for sender_node in (n1, n2, n3):
        topic = f"events-{uuid.uuid4().hex[:8]}"
        sender = Client(sender_node)
        try:
            sender.send(f"/topic/{topic}", "hello")
        finally:
            sender.close()
        owner_id = owner_of(n1, f"topic/topic/{topic}")
        for node in trio:
            records = [a for a in actors(node, kind="topic") if a["key"] == f"topic/topic/{topic}"]
            assert [r["node"] for r in records] == [owner_id], records
        # Every node's admin API lists the destination once, wherever it lives.
        for node in trio:
            assert [t["name"] for t in node.get("/v1/topics").json()["topics"]].count(f"topic/{topic}") == 1
        # The listing filters by node across the cluster.
        assert [a["key"] for a in actors(n3, kind="topic", node=owner_id)
                if a["key"] == f"topic/topic/{topic}"] == [f"topic/topic/{topic}"]
        # Restarted through the API of a node that does not serve it: audited there, listed everywhere.
        via = next(n for n in trio if node_id(n) != owner_id)
        restarted = requests.post(f"{via.admin}/v1/actors/restart", data=json.dumps({"key": f"topic/topic/{topic}"}),
                                  headers={"Authorization": f"Bearer {via.token}"}, timeout=10)
        assert restarted.status_code == 200, restarted.text
        audited.append((node_id(via), f"topic/topic/{topic}"))
    for node in trio:
        audit = node.get("/v1/audit").json()
        assert [(e["node"], e["target"]) for e in audit["entries"]] == audited[::-1], "every node's, newest first"
        assert audit["unreachable"] == []


def test_a_queue_without_a_majority_refuses_clearly_and_comes_back_with_it(trio, start_servd, tmp_path):
    n1, n2, n3 = trio
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    producer = Client(n1)
    producer.send(f"/queue/{queue}", "before")
    producer.close()

    # Two of three replicas gone: no write can reach a majority, so none is acknowledged.
    victims = sorted([node_id(n2), node_id(n3)])
    kill_and_wait_down(n2, n1)
    kill_and_wait_down(n3, n1)
    client = Client(n1)
    started = time.monotonic()
    client.conn.send(f"/queue/{queue}", "while down", receipt="r-down")
    client.listener.wait(lambda c: c.errors, what="an ERROR frame", timeout=30)
    took = time.monotonic() - started
    error = client.listener.errors[0]
    assert "unavailable" in error.headers.get("message", "") + error.body, (error.headers, error.body)
    assert "r-down" not in client.listener.receipts, "nothing is acknowledged without a majority"
    assert took < 20.0, f"refused after the failover wait, not the call timeout: {took:.1f}s"
    # The admin API of the node left keeps working meanwhile, and says whose rows it lacks.
    assert n1.get("/healthz").status_code == 200
    for listing in ("/v1/audit", "/v1/topics", "/v1/buckets", "/v1/routes"):
        assert sorted(n1.get(listing).json()["unreachable"]) == victims, listing

    # One replica comes back (same data dir, same id): a majority again, the message with it.
    back = start_servd(args=[*FAST, "--seeds", f"127.0.0.1:{n1.mesh_port}"], data_dir=tmp_path / "n3").wait_ready()
    assert node_id(back) in victims
    wait_until(lambda: node_id(n1) in {a["node"] for a in actors(back, kind="node")}, timeout=20,
               message="the returning node's actor session with node 1 is up")
    consumer = Client(back)
    try:
        consumer.subscribe(f"/queue/{queue}", id="s")
        consumer.listener.wait_body("before", timeout=30)
    finally:
        consumer.close()


def test_a_bucket_made_on_one_node_takes_writes_on_another_and_reads_on_a_third(trio):
    n1, n2, n3 = trio
    for _ in range(2):
        bucket = f"photos-{uuid.uuid4().hex[:8]}"
        s3_client(n1).create_bucket(Bucket=bucket)
        small, large = os.urandom(1000), os.urandom(3 * 1024 * 1024 + 17)  # large spans 4 blocks
        s3_client(n2).put_object(Bucket=bucket, Key="small.bin", Body=small)
        s3_client(n2).put_object(Bucket=bucket, Key="large.bin", Body=large)
        for reader in trio:
            got = s3_client(reader).get_object(Bucket=bucket, Key="large.bin")["Body"].read()
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(large).hexdigest()
        assert s3_client(n3).get_object(Bucket=bucket, Key="small.bin")["Body"].read() == small
        ranged = s3_client(n3).get_object(Bucket=bucket, Key="large.bin", Range="bytes=1048570-1048589")
        assert ranged["Body"].read() == large[1048570:1048590]
        listed = s3_client(n2).list_objects_v2(Bucket=bucket)
        assert sorted(o["Key"] for o in listed["Contents"]) == ["large.bin", "small.bin"]
        # Every node lists every bucket once, though every node holds a replica of it.
        for node in trio:
            assert [b["Name"] for b in s3_client(node).list_buckets()["Buckets"]].count(bucket) == 1
        # The bucket's actor runs on its partition's leader only, and every node's listing says so.
        owner = owner_of(n1, f"bucket/{bucket}")
        for node in trio:
            runs = [a["node"] for a in actors(node, kind="bucket") if a["key"] == f"bucket/{bucket}"]
            assert runs == [owner], runs


def test_copies_and_multipart_uploads_across_nodes(trio):
    n1, n2, n3 = trio
    source, target = f"src-{uuid.uuid4().hex[:8]}", f"dst-{uuid.uuid4().hex[:8]}"
    client = s3_client(n2)
    client.create_bucket(Bucket=source)
    client.create_bucket(Bucket=target)
    body = os.urandom(2 * 1024 * 1024 + 5)
    client.put_object(Bucket=source, Key="a", Body=body)
    # The buckets are (most likely) in different partitions: the copy carries the blocks to the
    # target's replicas.
    client.copy_object(Bucket=target, Key="b", CopySource={"Bucket": source, "Key": "a"})
    client.delete_object(Bucket=source, Key="a")
    assert s3_client(n1).get_object(Bucket=target, Key="b")["Body"].read() == body

    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1234)]
    upload = client.create_multipart_upload(Bucket=target, Key="mp")["UploadId"]
    etags = [s3_client(node).upload_part(Bucket=target, Key="mp", UploadId=upload, PartNumber=i + 1,
                                         Body=part)["ETag"]
             for i, (node, part) in enumerate(zip((n1, n2), parts))]
    s3_client(n1).complete_multipart_upload(
        Bucket=target, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    assert s3_client(n2).get_object(Bucket=target, Key="mp")["Body"].read() == b"".join(parts)


def test_a_bucket_without_a_majority_answers_503_and_acknowledges_nothing(trio):
    n1, n2, n3 = trio
    bucket = f"gone-{uuid.uuid4().hex[:8]}"
    s3_client(n1).create_bucket(Bucket=bucket)
    s3_client(n1).put_object(Bucket=bucket, Key="k", Body=b"v")
    kill_and_wait_down(n3, n1)
    kill_and_wait_down(n2, n1)
    for call in (lambda c: c.get_object(Bucket=bucket, Key="k"),
                 lambda c: c.put_object(Bucket=bucket, Key="k2", Body=b"x")):
        started = time.monotonic()
        with pytest.raises(ClientError) as refused:
            call(s3_client(n1))
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert time.monotonic() - started < 20.0, "the failover wait, not the call timeout"


def test_an_access_key_made_on_one_node_works_on_every_node_until_revoked_anywhere(trio, start_servd, tmp_path):
    n1, n2, n3 = trio
    key = create_key(n1, "team")
    bucket = f"team-{uuid.uuid4().hex[:8]}"
    as_team = lambda node: s3_client(node, access=key["access_key"], secret=key["secret_key"])
    as_team(n2).create_bucket(Bucket=bucket)  # at once: the key was pushed before it was answered
    Client(n3, login=key["access_key"], passcode=key["secret_key"]).close()
    for node in trio:
        listed = node.get("/v1/keys").json()["keys"]
        assert [k["access_key"] for k in listed if k["name"] == "team"] == [key["access_key"]]
        assert key["secret_key"] not in node.get("/v1/keys").text

    # A node that was down when a key was made catches up when it is back.
    n3.stop(signal.SIGTERM)
    late = create_key(n2, "late")
    back = start_servd(args=[*FAST, "--seeds", f"127.0.0.1:{n1.mesh_port}"], data_dir=tmp_path / "n3").wait_ready()
    wait_until(lambda: "late" in [k["name"] for k in back.get("/v1/keys").json()["keys"]], timeout=20,
               message="the restarted node pulls the key made while it was down")
    s3_client(back, access=late["access_key"], secret=late["secret_key"]).list_buckets()

    # Revoked on node 2: refused everywhere.
    revoked = requests.delete(f"{n2.admin}/v1/keys/{key['access_key']}",
                              headers={"Authorization": f"Bearer {n2.token}"}, timeout=10)
    assert revoked.status_code == 204
    def refused(node):
        try:
            as_team(node).list_buckets()
            return False
        except ClientError as error:
            return error.response["Error"]["Code"] == "InvalidAccessKeyId"

    for node in (n1, n2, back):
        wait_until(lambda node=node: refused(node), timeout=15, message="the revocation reached every node")


def test_a_node_restarted_while_another_is_down_keeps_it_a_replica_and_serves_with_a_majority(
        trio, start_servd, tmp_path):
    n1, n2, n3 = trio
    victim = node_id(n3)
    queue = f"kept-{uuid.uuid4().hex[:8]}"
    producer = Client(n1)
    producer.send(f"/queue/{queue}", "before")
    producer.close()
    replicas = n1.get("/v1/cluster/ring/owner", params={"key": f"topic/queue/{queue}"}).json()["preference_list"]
    kill_and_wait_down(n3, n1)

    # Node 2 restarts and only ever hears of node 1: it remembers node 3 from its data dir, so
    # the replica sets stay as they were (nothing moves to a smaller ring).
    n2.stop(signal.SIGTERM)
    back = start_servd(args=[*FAST, "--seeds", f"127.0.0.1:{n1.mesh_port}"], data_dir=tmp_path / "n2").wait_ready()
    assert states(back).get(victim) == "down"
    assert sorted(n["id"] for n in back.get("/v1/cluster/ring").json()["nodes"]) == \
        sorted(n["id"] for n in n1.get("/v1/cluster/ring").json()["nodes"])
    assert back.get("/v1/cluster/ring/owner",
                    params={"key": f"topic/queue/{queue}"}).json()["preference_list"] == replicas
    # Nodes 1 and 2 are a majority of every partition: the queue takes writes and serves them.
    # While leadership settles after the restart a SEND may be refused (perhaps handled): it is
    # sent again under one dedup-id, as a retrying application does.
    for _ in range(50):
        client = Client(back)
        try:
            client.send(f"/queue/{queue}", "while down", headers={"dedup-id": "while-down"})
            break
        except AssertionError:
            client.close()
            time.sleep(0.2)
    else:
        raise AssertionError("the SEND through the restarted node was never receipted")
    try:
        client.subscribe(f"/queue/{queue}", id="s")
        client.listener.wait_count(2, timeout=30)
        assert sorted(client.bodies()) == ["before", "while down"]
    finally:
        client.close()


def test_a_node_that_joins_becomes_a_replica_that_serves_everything_when_the_founder_dies(
        start_servd, tmp_path):
    """Data made on two nodes; a third joins and becomes a replica of every partition: with the
    founder (which leads every partition) killed, the two others serve every object, message and
    group position as before."""
    n1 = start_servd(args=FAST, data_dir=tmp_path / "n1").wait_ready()
    seeds = ["--seeds", f"127.0.0.1:{n1.mesh_port}"]
    n2 = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / "n2").wait_ready()
    wait_settled([n1, n2])

    s3 = s3_client(n1)
    bodies = {}
    for i in range(20):
        bucket = f"moving-{i}-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        body = os.urandom(2 * 1024 * 1024 + 3 if i % 5 == 0 else 100 + i)  # some span 3 blocks
        s3.put_object(Bucket=bucket, Key="k", Body=body)
        bodies[bucket] = body
    queues = [f"work-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    producer = Client(n2)
    for queue in queues:
        for m in range(4):
            producer.send(f"/queue/{queue}", f"{queue}-m{m}")
    producer.close()
    # Each queue's first message is consumed and acknowledged before the join.
    consumer = Client(n1)
    for queue in queues:
        consumer.subscribe(f"/queue/{queue}", id=queue, ack="client-individual",
                           headers={"prefetch-count": "1"})
        consumer.listener.wait_body(f"{queue}-m0")
        frame = next(f for f in consumer.messages if f.body == f"{queue}-m0")
        consumer.ack(frame)
    consumer.close()

    n3 = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / "n3").wait_ready()
    nodes = [n1, n2, n3]
    wait_settled(nodes)
    # (Killing a node while a change of voters is half done could leave a partition without a
    # majority in its old configuration: the test waits for the changes to be done.)
    for node in nodes:
        wait_until(lambda node=node: all(len(p["replicas"]) == 3 and not p["changing"] for p in
                                         node.get("/v1/cluster/partitions").json()["partitions"]),
                   timeout=60, message="every partition has the new node as a voter")
    founder = node_id(n1)
    n1.stop(signal.SIGKILL)
    nodes = [n2, n3]
    for bucket, body in bodies.items():
        for node in nodes:
            wait_until(lambda node=node, bucket=bucket: owner_of(node, f"bucket/{bucket}") != founder,
                       timeout=30, message=f"bucket/{bucket} has a new leader")
            assert s3_client(node).get_object(Bucket=bucket, Key="k")["Body"].read() == body, bucket
    listed = [b["Name"] for b in s3_client(n2).list_buckets()["Buckets"]]
    assert all(listed.count(b) == 1 for b in bodies), "each bucket listed once"

    # Every queue resumes after its acknowledged message, through either survivor.
    for i, queue in enumerate(queues):
        reader = Client(nodes[i % 2])
        try:
            reader.subscribe(f"/queue/{queue}", id="r")
            reader.listener.wait_count(3)
            assert sorted(reader.bodies()) == [f"{queue}-m{m}" for m in (1, 2, 3)], reader.bodies()
        finally:
            reader.close()


def test_traffic_during_a_join_loses_no_receipted_message(start_servd, tmp_path):
    """A producer keeps sending (each SEND receipted, retried when refused) and consumers keep
    acknowledging while a third node joins and entities move: every receipted message arrives,
    and any repeat carries the redelivery marker.

    A SEND refused while its queue's leader changes may still have been appended (Raft can't
    tell the deposed leader whether the new one keeps its entry), so the producer names each
    message with a `dedup-id`, as an application that retries does: a retry is then never a
    second message, and a repeat the consumer sees can only be a redelivery."""
    n1 = start_servd(args=FAST, data_dir=tmp_path / "n1").wait_ready()
    seeds = ["--seeds", f"127.0.0.1:{n1.mesh_port}"]
    n2 = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / "n2").wait_ready()
    wait_settled([n1, n2])
    queues = [f"flow-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    consumer = Client(n1)
    for queue in queues:
        consumer.subscribe(f"/queue/{queue}", id=queue, ack="client-individual")
    consumer.listener.on_each = lambda frame: consumer.conn.ack(frame.headers["ack"])

    receipted = []
    producer = Client(n2)
    joined = None
    for i in range(240):
        if i == 40:
            joined = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / "n3")
        body = f"{queues[i % len(queues)]}-{i}"
        for attempt in range(100):  # a SEND refused while its queue moves is sent again
            try:
                if not producer.conn.is_connected():
                    producer = Client(n2)
                producer.send(f"/queue/{queues[i % len(queues)]}", body, headers={"dedup-id": body})
                receipted.append(body)
                break
            except AssertionError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"{body} was never receipted")
    producer.close()
    wait_settled([n1, n2, joined.wait_ready()])
    missing = lambda: sorted(set(receipted) - set(consumer.bodies()))
    wait_until(lambda: not missing(), timeout=30,
               message=lambda: f"missing {missing()[:10]}; consumer errors: {[(e.headers, e.body) for e in consumer.listener.errors]}; groups: {[(a['key'], a['node'], a['state']) for a in actors(n1, kind='group')]}; topics: {[(a['key'], a['node'], a['state']) for a in actors(n1, kind='topic')]}")
    seen = {}
    for frame in consumer.messages:
        if frame.body in seen:
            first = seen[frame.body].headers
            assert frame.headers.get("redelivered") == "true", (first, frame.headers)
        seen.setdefault(frame.body, frame)
    consumer.close()
