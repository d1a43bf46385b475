"""Nodes join by naming a seed: SWIM membership over the QUIC mesh. Every node lists every member
alive; a node with the wrong cluster secret is never listed; a killed node is seen down and
rejoins with its old id."""

import signal
import time

import pytest
import requests

from conftest import wait_until

FAST = ["--probe-period-ms", "200", "--suspect-timeout-ms", "1000"]


def members(node):
    return {m["id"]: m for m in node.get("/v1/cluster/members").json()["members"]}


def answers(url):
    try:
        return requests.get(url, timeout=5).ok
    except requests.ConnectionError:
        return False


def node_id(node):
    return node.get("/v1/node").json()["id"]


def alive(node):
    return sorted(i for i, m in members(node).items() if m["state"] == "alive")


@pytest.mark.parametrize("size", [3, 5])
def test_nodes_join_through_one_seed_and_a_stranger_is_refused(start_servd, tmp_path, size):
    seed = start_servd(args=FAST, data_dir=tmp_path / "n1").wait_ready()
    seed_mesh = f"127.0.0.1:{seed.mesh_port}"
    others = [start_servd(args=[*FAST, "--seeds", seed_mesh], data_dir=tmp_path / f"n{i}").wait_ready()
              for i in range(2, size + 1)]
    stranger = start_servd(args=[*FAST, "--seeds", seed_mesh], data_dir=tmp_path / "stranger",
                           env={"SERV_CLUSTER_SECRET": "another-cluster-entirely-0123456789"})
    nodes = [seed, *others]
    ids = sorted(node_id(n) for n in nodes)
    for node in nodes:
        wait_until(lambda node=node: alive(node) == ids, timeout=15,
                   message=f"{node_id(node)} sees {members(node)}")
    # Every node knows every member's edges and version, from the members' own broadcasts.
    for node in nodes:
        for other in nodes:
            wait_until(lambda node=node, other=other: members(node)[node_id(other)]["s3_addr"] is not None,
                       timeout=10, message="metadata did not spread")
            seen = members(node)[node_id(other)]
            assert seen["mesh_addr"] == f"127.0.0.1:{other.mesh_port}"
            assert seen["s3_addr"] == f"127.0.0.1:{other.s3_port}"
            assert seen["stomp_addr"] == f"127.0.0.1:{other.stomp_port}"
            assert seen["admin_addr"] == f"127.0.0.1:{other.admin_port}"
            assert seen["version"]
    # Every node gives the same start time for a member (its own broadcast), and its uptime.
    started = {node_id(n): members(n)[node_id(n)]["started_ms"] for n in nodes}
    now_ms = time.time() * 1000
    for node in nodes:
        for member_id, member in members(node).items():
            assert member["started_ms"] == started[member_id]
            assert 0 <= member["uptime_ms"] <= now_ms - member["started_ms"] + 5000, member
    assert started[node_id(seed)] < min(started[node_id(n)] for n in others), "the seed started first"
    wait_until(lambda: answers(f"{stranger.admin}/healthz"), timeout=30, message="the stranger runs")
    stranger_id = node_id(stranger)
    time.sleep(1.0)
    for node in nodes:
        assert stranger_id not in members(node), "a node without the cluster secret is never listed"
    assert list(members(stranger)) == [stranger_id]
    # It never joins, and its readiness says so (a load balancer keeps traffic away from it).
    not_ready = requests.get(f"{stranger.admin}/readyz", timeout=5)
    assert not_ready.status_code == 503 and "not joined" in not_ready.json()["error"], not_ready.text
    # And its log says why, every few seconds: the seed refused its handshake.
    wait_until(lambda: "not joined the cluster yet" in stranger.output(), timeout=15,
               message="the stranger warns that it has not joined")
    warning = next(line for line in stranger.output().splitlines() if "not joined the cluster yet" in line)
    assert "WARN" in warning and seed_mesh in warning and "SERV_CLUSTER_SECRET" in warning, warning

    # Every node computes the same ring from the same view.
    ring = seed.get("/v1/cluster/ring").json()["nodes"]
    assert sorted(n["id"] for n in ring) == ids and all(len(n["tokens"]) == 64 for n in ring)
    for key in ["bucket/photos", "topic/queue/orders", "group/topic/t#g"]:
        lists = {tuple(n.get("/v1/cluster/ring/owner", params={"key": key}).json()["preference_list"])
                 for n in nodes}
        assert len(lists) == 1, f"{key}: nodes disagree {lists}"
        (chosen,) = lists
        assert len(chosen) == 3 and len(set(chosen)) == 3 and set(chosen) <= set(ids)
    bad = seed.get("/v1/cluster/ring/owner")
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidParameter")


def test_a_killed_node_is_seen_down_and_rejoins_with_its_old_id(start_servd, tmp_path):
    seed = start_servd(args=FAST, data_dir=tmp_path / "n1").wait_ready()
    seed_mesh = f"127.0.0.1:{seed.mesh_port}"
    second = start_servd(args=[*FAST, "--seeds", seed_mesh], data_dir=tmp_path / "n2").wait_ready()
    victim = start_servd(args=[*FAST, "--seeds", seed_mesh], data_dir=tmp_path / "n3").wait_ready()
    victim_id = node_id(victim)
    for node in (seed, second):
        wait_until(lambda node=node: victim_id in alive(node), timeout=15, message="the victim joins")

    # Its start time comes with its metadata, which may trail its first sighting.
    wait_until(lambda: members(seed)[victim_id]["started_ms"] is not None, timeout=15,
               message="the victim's start time is known")
    first_start = members(seed)[victim_id]["started_ms"]
    victim.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    for node in (seed, second):
        wait_until(lambda node=node: members(node).get(victim_id, {}).get("state") == "down", timeout=15,
                   message=f"{victim_id} not seen down: {members(node)}")
    assert members(seed)[victim_id]["uptime_ms"] is None, "a down member has no uptime"
    detection = time.monotonic() - killed_at
    assert detection < 10, f"detected down after {detection:.1f}s (probe 200 ms, suspicion 1 s)"

    back = start_servd(args=[*FAST, "--seeds", seed_mesh], data_dir=tmp_path / "n3").wait_ready()
    assert node_id(back) == victim_id
    for node in (seed, second):
        wait_until(lambda node=node: victim_id in alive(node), timeout=15,
                   message=f"{victim_id} did not rejoin: {members(node)}")
        wait_until(lambda node=node: members(node)[victim_id]["started_ms"] > first_start, timeout=10,
                   message="the rejoined node's uptime counts from its restart")
