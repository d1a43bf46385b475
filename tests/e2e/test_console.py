"""The web console at /console, driven in headless Chromium (playwright-core) against a real
3-node cluster with a bucket and a topic carrying traffic. Screenshots of each page are saved
under the test's tmp dir (`shots/`). Skipped where Chromium or playwright-core is missing (.ci/run
installs both)."""

import json
import shutil
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import requests

from conftest import metric, s3_client, wait_until
from test_cluster_actors import node_id, owner_of, trio  # noqa: F401 (trio is a fixture)
from test_gateway import Upstream
from test_replication import leaders_per_node, partitions, replicated  # noqa: F401 (replicated is a fixture)
from test_stomp import Client

JS = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not (JS / "node_modules" / "playwright-core").exists() or shutil.which("node") is None,
    reason="the console tests need Debian's chromium and playwright-core (npm ci in tests/e2e/js)")


def drive(script, *args, on_kill=lambda: None, on_ask=lambda ask: None, timeout=120):
    """Runs the console driver `script` of tests/e2e/js with `args`, calling `on_kill()` when it
    asks for a node to be killed and `on_ask(what)` when it prints `{"ask": what}`; answers what
    it saw (its last line), failing with its output if it failed."""
    process = subprocess.Popen(["node", str(JS / script), *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if '"kill"' in line:
            on_kill()
        if line.startswith('{"ask":'):
            on_ask(json.loads(line)["ask"])
    err = process.stderr.read()
    process.wait(timeout=timeout)
    assert process.returncode == 0, "".join(lines) + err
    return json.loads(lines[-1])


def test_a_person_logs_in_and_sees_members_the_ring_and_live_actors(trio, tmp_path):
    ids = sorted(node_id(n) for n in trio)
    bucket, topic, idle = (f"{prefix}-{uuid.uuid4().hex[:8]}" for prefix in ("console", "console", "idle"))
    s3 = s3_client(trio[0])
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"seen in the console")
    # A bucket that only the console touches after its first write: it gets passivated.
    s3.create_bucket(Bucket=idle)
    # The bucket runs on its partition's leader, which the test kills at the end while the
    # bucket's page is open on another node's console ("n1" below); "n2" is the third node.
    owner = owner_of(trio[0], f"bucket/{bucket}")
    victim = next(n for n in trio if node_id(n) == owner)
    n1, n2 = [n for n in trio if n is not victim]
    # A dead-lettered message: a worker NACKs it once, past the queue's max_deliveries of 1.
    queue = f"retry-{uuid.uuid4().hex[:8]}"
    assert requests.put(f"{n1.admin}/v1/topics/queue/{queue}", json={"max_deliveries": 1}, timeout=10,
                        headers={"Authorization": f"Bearer {n1.token}"}).status_code == 200
    worker = Client(n2)
    worker.subscribe(f"/queue/{queue}", id="r", ack="client-individual")
    worker.send(f"/queue/{queue}", "poison")
    worker.listener.wait_body("poison")
    worker.nack(worker.messages[0])
    wait_until(lambda: any(t["name"] == f"queue/{queue}.dlq" and t["messages"] == 1
                           for t in n1.get("/v1/topics").json()["topics"]), timeout=10, message="dead-lettered")
    worker.conn.disconnect()
    # A gateway route with traffic through node 1's gateway.
    upstream = Upstream("web")
    route = f"console-{uuid.uuid4().hex[:6]}"
    assert requests.put(f"{n1.admin}/v1/routes/{route}", json={"path_prefix": f"/{route}", "upstreams": [upstream.url]},
                        headers={"Authorization": f"Bearer {n1.token}"}, timeout=10).status_code == 200
    # A transform on the topic and a middleware on the route, for the modules page.
    auth = {"Authorization": f"Bearer {n1.token}"}
    modules = Path(__file__).parent.parent / "wasm"
    for name, wat in [("shape", "upper"), ("gate", "gate")]:
        assert requests.put(f"{n2.admin}/v1/modules/{name}", data=(modules / f"{wat}.wat").read_bytes(),
                            headers=auth, timeout=10).status_code == 200
    assert requests.put(f"{n1.admin}/v1/topics/topic/{topic}", json={"transform": "shape"}, headers=auth,
                        timeout=10).status_code == 200
    config = {"path_prefix": f"/{route}", "upstreams": [upstream.url], "middleware": "gate"}
    assert requests.put(f"{n1.admin}/v1/routes/{route}", json=config, headers=auth, timeout=10).status_code == 200
    watcher = Client(n2)
    watcher.subscribe(f"/topic/{topic}", id="w", headers={"group": "watchers"})
    stop = threading.Event()

    def produce():
        client = Client(n2)
        while not stop.is_set():
            try:
                client.send(f"/topic/{topic}", "tick")
            except AssertionError:  # refused while the topic's partition fails over: send again
                client.close()
                stop.wait(0.2)
                client = Client(n2)
            requests.get(f"{n1.http}/{route}/tick", headers={"x-key": "open"}, timeout=10)
            stop.wait(0.05)
        client.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    shots = tmp_path / "shots"
    shots.mkdir()
    def kill():
        # The route the console disabled is off on node 2 before its owner may die.
        wait_until(lambda: requests.get(f"{n2.http}/{route}/x", timeout=10).status_code == 503, timeout=10,
                   message="node 2's gateway sees the route disabled")
        victim.stop(signal.SIGKILL)  # while the bucket's page is open

    try:
        seen = drive("console.mjs", n1.admin, n1.token, shots, f"bucket/{bucket}", owner, f"topic/topic/{topic}",
                     f"bucket/{idle}", owner_of(n1, f"bucket/{idle}"), f"queue/{queue}.dlq", route, "shape", "gate",
                     on_kill=kill)
    finally:
        stop.set()
        producer.join(timeout=10)
        upstream.close()
    phases = seen["phases"]

    assert "refused" in phases["wrongToken"]["error"] and phases["wrongToken"]["navHidden"]
    assert sorted(m["id"] for m in phases["members"]) == ids
    assert {m["state"] for m in phases["members"]} == {"alive"}
    assert all(m["uptime"].endswith((" s", " min", " h")) for m in phases["members"]), phases["members"]
    assert phases["owner"]["owner"] == owner and phases["owner"]["marked"]
    assert phases["bucket"]["nodes"] == [owner], "the bucket actor runs on its partition's leader only"
    assert phases["live"]["later"] > phases["live"]["first"], "the handled counter grew without a reload"
    assert phases["filter"]["kinds"] == ["topic"]
    assert phases["sorted"] == sorted(phases["sorted"], reverse=True) and phases["sortLabel"] == "descending"
    assert phases["keyboard"]["page"] == "#/actors", "the pages are reachable from the keyboard"
    assert phases["phone"]["overflow"] <= 0, "nothing sticks out sideways at a phone's width"
    assert phases["detail"]["kind"] == "bucket" and bucket in phases["detail"]["title"] and not phases["detail"]["gone"]
    restart = phases["restart"]
    assert bucket in restart["dialog"] and restart["outcome"] == "ok", restart
    assert restart["node"] == node_id(n1), "the audit entry names the node whose API took the action"
    assert restart["actor"].startswith("session "), "the console's actions are its session's"
    assert restart["after"] == restart["before"] + 1, "the restart count went up by one on screen"
    audit = n1.get("/v1/audit").json()["entries"]
    assert [(a["action"], a["target"], a["outcome"]) for a in audit[:4]] == [
        ("disable", f"route/{route}", "ok"),
        ("requeue", f"queue/{queue}.dlq", "ok: 1 message(s)"), ("passivate", f"bucket/{idle}", "ok"),
        ("restart", f"bucket/{bucket}", "ok")]
    assert phases["buckets"] == {"objects": 1, "bytes": len(b"seen in the console"), "versioning": "unversioned"}
    assert phases["passivate"]["outcome"] == "ok"
    assert f"queue/{queue}.dlq" in phases["requeue"]["dialog"] and "Requeued 1" in phases["requeue"]["result"]
    back = Client(n1)
    back.subscribe(f"/queue/{queue}", id="b")
    back.listener.wait_body("poison", timeout=30)  # requeued, it reaches a subscriber (after the failover)
    assert f"bucket/{idle}" not in {a["key"] for a in n1.get("/v1/actors").json()["actors"]}, "it stopped"
    topics = phases["topics"]
    assert topics["after"] > topics["before"] and topics["rate"] > 0 and topics["sparkline"], topics
    assert "watchers" in topics["group"]
    # Its node killed while the bucket's page was open: the page says so and the member shows down.
    assert "not running" in phases["nodeDown"]["goneText"]
    assert phases["nodeDown"]["state"] in ("suspect", "down") and phases["nodeDown"]["bodyText"] > 100
    # The route's counters grew live; disabling it from the console switched it off everywhere.
    routes = phases["routes"]
    assert routes["after"] > routes["before"] and routes["rate"] > 0 and routes["sparkline"], routes
    assert routes["circuit"] == "closed" and route in routes["dialog"] and routes["shown"] == "disabled"
    assert routes["result"].startswith(f"Disabled route {route}")
    # Still refused after the bucket's node died, whichever node serves the route: gateways keep
    # what they saw.
    refused = requests.get(f"{n2.http}/{route}/x", timeout=10)
    assert refused.status_code == 503 and refused.json()["code"] == "RouteDisabled", refused.text
    # The modules page: where each module is attached, and its calls growing live.
    mods = phases["modules"]
    assert mods["after"] > mods["before"] and mods["rate"] > 0 and mods["failures"] == 0, mods
    assert mods["transformAt"] == [f"topic:topic/{topic}"] and mods["middlewareAt"] == [f"route:{route}"], mods
    watcher.listener.wait_body("TICK")  # the transform ran on the watched topic
    # The only console error is the refused login's 401, in that step.
    unexpected = [e for e in seen["consoleErrors"] if not (e["phase"] == "wrong-token" and "401" in e["text"])]
    assert unexpected == []
    for name in ("login-refused", "cluster", "actors", "actor", "audit", "topics", "buckets", "routes", "modules",
                 "actors-phone",
                 "node-down"):
        assert (shots / f"{name}.png").stat().st_size > 5_000


def test_a_session_that_expires_sends_the_person_back_to_sign_in(start_servd, tmp_path):
    """Signing in opens a session of --admin-session-ttl-ms; when it ends, the open page says so
    and asks for the admin token again, which the browser never kept."""
    node = start_servd(args=["--admin-session-ttl-ms", "4000"]).wait_ready()
    shots = tmp_path / "shots"
    shots.mkdir()
    seen = drive("session.mjs", node.admin, node.token, shots)
    phases = seen["phases"]
    assert phases["login"]["session"].startswith("session ends") and not phases["login"]["adminTokenKept"]
    assert phases["login"]["sessionToken"].startswith("serv-session.v1.")
    expired = phases["expired"]
    assert "session expired" in expired["error"] and expired["navHidden"] and expired["loginShown"], expired
    assert not expired["bannerShown"], "no stale 'reconnecting' banner over the sign-in form"
    assert expired["afterMs"] >= 2000 and expired["stored"] == 0, "signed out when the session ended, not before"
    assert "expired session token" in phases["sessionToken"]["error"] and phases["sessionToken"]["navHidden"]
    assert phases["again"] == {"navShown": True, "error": ""}
    # The refusals the page handled are the only console errors: the feed's and the login's 401s.
    unexpected = [e for e in seen["consoleErrors"]
                  if not (e["phase"] in ("expiry", "session-token") and "401" in e["text"])]
    assert unexpected == []
    assert (shots / "session-expired.png").stat().st_size > 5_000


def test_the_cluster_page_shows_leaders_per_node_and_the_partitions_a_killed_node_leaves_under_replicated(
        replicated, tmp_path):
    """Every partition has a replica on each of the three nodes: with all up, the page shows who
    leads how many and no under-replicated partition; once one node is killed, every partition
    lacks a replica, and the page, /metrics and /v1/cluster/partitions of a survivor say so."""
    n1, n2, victim = replicated
    victim_id, ids = node_id(victim), sorted(node_id(n) for n in replicated)
    count = len(partitions(n1))
    led_before = leaders_per_node(n1)
    changes_before = metric(n1, "serv_raft_leader_changes_total")
    assert metric(n1, "serv_partitions_under_replicated") == 0
    # On a leader, every replica's lag; elsewhere, none.
    for p in partitions(n1):
        assert sorted(p["lag"]) == (sorted(p["replicas"]) if p["role"] == "leader" else []), p
    shots = tmp_path / "shots"
    shots.mkdir()

    seen = drive("partitions.mjs", n1.admin, n1.token, shots, victim_id, on_kill=lambda: victim.stop(signal.SIGKILL))

    up, down = seen["phases"]["allUp"], seen["phases"]["nodeDown"]
    assert up["leaders"] == led_before and sorted(up["leaders"]) == ids, up
    assert sum(up["leaders"].values()) == count, up
    assert up["under"] == [] and up["emptyShown"], up
    # The killed node leads nothing any more, and every partition shows why it is short.
    assert down["leaders"][victim_id] == 0 and sum(down["leaders"].values()) == count, down
    assert sorted(row["partition"] for row in down["under"]) == list(range(count)), down["state"]
    assert all(f"2 of 3 replicas alive ({victim_id[:8]} down)" in row["why"] for row in down["under"]), down["under"]
    assert not down["emptyShown"]
    assert metric(n1, "serv_partitions_under_replicated") == count
    # Each partition the killed node led has a new leader, which its survivors saw change.
    assert metric(n1, "serv_raft_leader_changes_total") >= changes_before + led_before[victim_id]
    # Writes to a partition a survivor leads reach the other survivor, not the killed node: its
    # lag grows on the leader, in /v1/cluster/partitions and in /metrics.
    bucket = next(name for name in (f"lag-{uuid.uuid4().hex[:8]}" for _ in range(1000))
                  if owner_of(n1, f"bucket/{name}") == node_id(n1))
    s3_client(n1).create_bucket(Bucket=bucket)
    for i in range(3):
        s3_client(n1).put_object(Bucket=bucket, Key=f"k{i}", Body=b"written while a replica is down")
    partition = n1.get("/v1/cluster/ring/owner", params={"key": f"bucket/{bucket}"}).json()["partition"]
    follower = node_id(n2)
    lag = wait_until(lambda: (lambda lag: lag if lag[follower] == 0 else None)(partitions(n1)[partition]["lag"]),
                     timeout=10, message="the live follower caught up")
    assert lag[victim_id] >= 4, lag  # the bucket's creation and its three objects, at least
    assert metric(n1, "serv_raft_replication_lag_entries", follower=victim_id) >= lag[victim_id]
