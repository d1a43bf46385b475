"""Five nodes with five replicas per partition survive the loss of any two: SIGKILL of the
nodes that lead a bucket and a queue loses no acknowledged object or receipted message, and
writes are served again through the other three within seconds (the time is printed)."""

import signal
import time

from conftest import s3_client
from test_cluster_actors import FAST, node_id
from test_cluster_actors import owner_of as leader_of
from test_replication import (consume_all, put_until_served, send_until_receipted, wait_replicated,
                              write_acknowledged)


def test_five_replicas_lose_nothing_acknowledged_when_two_nodes_die(start_servd, tmp_path):
    args = [*FAST, "--replication-factor", "5", "--partitions", "16"]
    seed = start_servd(args=args, data_dir=tmp_path / "n1").wait_ready()
    seeds = ["--seeds", f"127.0.0.1:{seed.mesh_port}"]
    nodes = [seed] + [start_servd(args=[*args, *seeds], data_dir=tmp_path / f"n{i}").wait_ready()
                      for i in range(2, 6)]
    started = time.monotonic()
    wait_replicated(nodes)
    print(f"\n5 nodes: every partition on 5 replicas with a leader, "
          f"{time.monotonic() - started:.1f} s after the last node was ready")
    by_id = {node_id(n): n for n in nodes}

    bucket, bodies, destination, sent = write_acknowledged(nodes, "five")

    # The bucket's leader and the queue's leader die, or the bucket's leader and another node.
    first = by_id[leader_of(seed, f"bucket/{bucket}")]
    second = by_id[leader_of(seed, f"topic/queue/{destination.split('/')[-1]}")]
    if second is first:
        second = next(n for n in nodes if n is not first)
    survivors = [n for n in nodes if n is not first and n is not second]
    first.stop(signal.SIGKILL)
    second.stop(signal.SIGKILL)
    killed = time.monotonic()
    served = put_until_served(s3_client(survivors[0]), bucket, "after", b"written by three of five", killed)
    print(f"S3 writes served again {served:.2f} s after SIGKILL of two of five nodes")
    bodies["after"] = b"written by three of five"
    receipted = send_until_receipted(survivors[1], destination, "after", killed)
    print(f"STOMP sends receipted again {receipted:.2f} s after the kill")
    sent.append("after")
    for node in survivors:
        s3 = s3_client(node)
        for key, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, f"{key} via {node_id(node)}"
    consume_all(survivors[2], destination, sent)
