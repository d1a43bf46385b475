"""Removing a dead member (`DELETE /v1/cluster/members/ID`): refused for a member that is up,
for the node asked and for an id no one knows; audited. Afterwards no node lists the member,
and every partition's replicas are the members left. A node whose data dir was wiped rejoins
under a new id; once the old id is removed it becomes a replica of every partition, with every
acknowledged object and message, and the cluster then survives the loss of another node."""

import shutil
import time
import uuid

import requests
from botocore.exceptions import BotoCoreError, ClientError

from conftest import s3_client, wait_until
from test_cluster_actors import FAST, kill_and_wait_down, node_id, states, trio  # noqa: F401 (trio is a fixture)
from test_replication import consume_all, partitions, wait_replicated, write_acknowledged


def remove(via, member):
    return requests.delete(f"{via.admin}/v1/cluster/members/{member}",
                           headers={"Authorization": f"Bearer {via.token}"}, timeout=10)


def wait_replicas(nodes, ids):
    """Until every node sees every partition with exactly `ids` as its voters."""
    for node in nodes:
        wait_until(lambda node=node: all(sorted(p["replicas"]) == sorted(ids) and not p["changing"]
                                         for p in partitions(node)),
                   timeout=90, message=f"every partition's replicas are {ids} on {node_id(node)}")


def test_a_dead_member_is_removed_everywhere_and_its_partitions_stay_on_the_others(trio, start_servd):
    wait_replicated(trio)
    n1, n2, n3 = trio
    victim = node_id(n3)
    refused = remove(n1, victim)
    assert refused.status_code == 409, refused.text
    assert "only a member that is down can be removed" in refused.json()["error"]
    assert remove(n1, node_id(n1)).status_code == 409, "a node does not remove itself"
    assert remove(n1, "0123456789abcdef").status_code == 404
    bucket = f"rm-{uuid.uuid4().hex[:8]}"
    s3_client(n1).create_bucket(Bucket=bucket)
    s3_client(n1).put_object(Bucket=bucket, Key="before", Body=b"written with three")

    kill_and_wait_down(n3, n1)
    wait_until(lambda: states(n2).get(victim) == "down", timeout=15, message="n2 sees the victim down")
    removed = remove(n2, victim)
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"removed": victim}
    assert remove(n2, victim).status_code == 200, "removing again changes nothing"
    for node in (n1, n2):
        wait_until(lambda node=node: victim not in states(node), timeout=20,
                   message=f"{node_id(node)} still lists the removed member")
    wait_replicas([n1, n2], [node_id(n1), node_id(n2)])
    s3_client(n1).put_object(Bucket=bucket, Key="after", Body=b"written with two")
    s3 = s3_client(n2)
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"written with three"
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"written with two"
    # Should the removed node come back on its old data dir, it learns it was removed, says so,
    # and the others go on without it.
    back = start_servd(args=[*FAST, "--seeds", f"127.0.0.1:{n1.mesh_port}"], data_dir=n3.data_dir)

    def says_removed():
        try:
            answer = requests.get(f"{back.admin}/readyz", timeout=2)
        except requests.ConnectionError:
            return False
        return answer.status_code == 503 and "removed this node" in answer.json()["error"]
    wait_until(says_removed, timeout=30, message="the removed node does not say it was removed")
    assert victim not in states(n1)
    s3_client(n2).put_object(Bucket=bucket, Key="later", Body=b"written while it is back")
    assert s3_client(n1).get_object(Bucket=bucket, Key="later")["Body"].read() == b"written while it is back"
    entries = n1.get("/v1/audit").json()["entries"]
    audited = [(e["node"], e["action"], e["target"], e["outcome"]) for e in entries]
    assert (node_id(n2), "remove-member", victim, "ok") in audited, audited
    assert any(e[0] == node_id(n1) and e[1] == "remove-member" and "down" in e[3] for e in audited), \
        "the refused removal is audited with its reason"


def get_when_served(node, bucket, key):
    """The object's bytes through `node`, asked again while a failover is under way."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return s3_client(node).get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_wiped_node_rejoins_under_a_new_id_and_is_refilled_once_the_old_id_is_removed(trio, start_servd):
    wait_replicated(trio)
    n1, n2, n3 = trio
    bucket, bodies, destination, sent = write_acknowledged(trio, "wipe")

    old = node_id(n3)
    kill_and_wait_down(n3, n1)
    shutil.rmtree(n3.data_dir)
    fresh = start_servd(args=[*FAST, "--seeds", f"127.0.0.1:{n1.mesh_port}"], data_dir=n3.data_dir).wait_ready()
    new = node_id(fresh)
    assert new != old, "a wiped data dir is a new member"
    assert remove(n1, old).status_code == 200
    started = time.monotonic()
    wait_replicas([n1, n2, fresh], [node_id(n1), node_id(n2), new])
    print(f"\nthe wiped node became a replica of every partition {time.monotonic() - started:.1f} s "
          "after the old id was removed")

    # Losing another node: the refilled node and the other survivor are a majority, with
    # everything that was acknowledged before the wipe.
    kill_and_wait_down(n1, n2)
    for key, body in bodies.items():
        assert get_when_served(fresh, bucket, key) == body, key
    consume_all(fresh, destination, sent)
