"""WASM modules: uploaded through /v1/modules, attached to a topic as its transform, run on every
node with fuel, memory and time limits; what a transform refuses or fails on goes to the topic's
dead-letter queue, and a bad module costs its message, never the node.

The modules are the WAT files in tests/wasm (also used by the Rust unit tests)."""

import signal
import time
import uuid
from pathlib import Path

import requests

from conftest import wait_until
from test_cluster_actors import FAST, kill_and_wait_down, node_id, owner_of, wait_settled
from test_gateway import upstreams  # noqa: F401 (a fixture)
from test_stomp import Client, clients  # noqa: F401 (clients is a fixture)

WASM = Path(__file__).resolve().parent.parent / "wasm"


def wat(name):
    return (WASM / f"{name}.wat").read_bytes()


def call(node, method, path, token="default", **kwargs):
    token = node.token if token == "default" else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{node.admin}{path}", headers=headers, timeout=15, **kwargs)


def upload(node, name, module):
    response = call(node, "PUT", f"/v1/modules/{name}", data=module)
    assert response.status_code == 200, response.text
    return response.json()


def attach(node, topic, module):
    response = call(node, "PUT", f"/v1/topics/{topic}", json={"transform": module})
    assert response.status_code == 200, response.text
    return response.json()


def listed(node):
    body = call(node, "GET", "/v1/modules").json()
    return {m["name"]: m for m in body["modules"]}


def error(response):
    return response.status_code, response.json()["code"]


def test_a_module_is_uploaded_inspected_downloaded_and_a_bad_one_is_refused(start_servd):
    node = start_servd(args=["--wasm-max-module-bytes", "4000"]).wait_ready()
    head = upload(node, "upper", wat("upper"))
    assert (head["name"], head["version"], head["hooks"]) == ("upper", 1, ["transform"])
    assert len(head["hash"]) == 64 and head["size"] > 0
    assert call(node, "GET", "/v1/modules/upper").json() == head
    binary = call(node, "GET", "/v1/modules/upper/wasm")
    assert binary.headers["content-type"] == "application/wasm"
    assert binary.content[:4] == b"\0asm" and len(binary.content) == head["size"], "WAT is stored as binary"
    assert upload(node, "upper", binary.content) == head, "the same binary again is the same version"
    second = upload(node, "upper", wat("reverse"))
    assert second["version"] == 2 and second["hash"] != head["hash"]

    refusals = {
        b"(module": "expected",  # not even WAT
        b'(module (import "env" "f" (func)) (memory (export "memory") 1))': "imports env.f",
        b'(module (memory (export "memory") 1))': "serv_alloc",
        b"\0asm\x01\0\0\0garbage": "",
    }
    for module, reason in refusals.items():
        response = call(node, "PUT", "/v1/modules/bad", data=module)
        assert error(response) == (400, "InvalidModule"), response.text
        assert reason in response.json()["error"], response.json()
    too_big = call(node, "PUT", "/v1/modules/big", data=b" " * 5000 + wat("upper"))
    assert error(too_big) == (413, "BodyTooLarge") and "4000" in too_big.json()["error"]
    assert error(call(node, "PUT", "/v1/modules/Bad Name", data=wat("upper"))) == (400, "InvalidParameter")
    assert error(call(node, "GET", "/v1/modules/bad")) == (404, "NotFound"), "a refused upload stores nothing"
    assert call(node, "PUT", "/v1/modules/x", token=None, data=wat("upper")).status_code == 401
    assert list(listed(node)) == ["upper"]

    entries = call(node, "GET", "/v1/audit").json()["entries"]
    uploads = [(e["target"], e["outcome"].split(":")[0]) for e in entries if e["action"] == "upload"]
    assert ("module/upper", "ok") in uploads and ("module/bad", "module bad") in uploads, uploads

    # Kept across a crash.
    node.stop(signal.SIGKILL)
    again = start_servd(data_dir=node.data_dir).wait_ready()
    assert call(again, "GET", "/v1/modules/upper").json() == second
    assert call(again, "DELETE", "/v1/modules/upper").status_code == 204
    assert error(call(again, "GET", "/v1/modules/upper")) == (404, "NotFound")


def test_a_transform_rewrites_messages_and_sends_what_it_refuses_to_the_dead_letter_queue(servd, clients):
    upload(servd, "upper", wat("upper"))
    upload(servd, "gate", wat("gate"))
    info = attach(servd, "queue/orders", "upper")
    assert info["config"]["transform"] == "upper"
    wrong_hook = call(servd, "PUT", "/v1/topics/queue/orders", json={"transform": "gate"})
    assert error(wrong_hook) == (400, "InvalidParameter") and "no transform hook" in wrong_hook.json()["error"]
    assert error(call(servd, "PUT", "/v1/topics/queue/orders", json={"transform": "nothing"})) == (404, "NotFound")

    consumer = clients(servd)
    consumer.subscribe("/queue/orders", id="c")
    producer = clients(servd)
    stored = producer.send("/queue/orders", "hello, world", headers={"x-order": "1"})
    refused = producer.send("/queue/orders", "!refused", headers={"x-order": "2"})  # durable in the DLQ
    producer.send("/queue/orders", "last one", headers={"x-order": "3"})
    # The RECEIPT of the refused message says where it went and why; the others say nothing more.
    told = producer.listener.receipt_headers[refused]
    assert told["dead-letter"] == "/queue/orders.dlq" and "code 33" in told["dead-letter-reason"], told
    assert "dead-letter" not in producer.listener.receipt_headers[stored]
    consumer.listener.wait_count(2)
    assert consumer.bodies() == ["HELLO, WORLD", "LAST ONE"]
    assert [m.headers["x-order"] for m in consumer.messages] == ["1", "3"]

    dead = clients(servd)
    dead.subscribe("/queue/orders.dlq", id="d")
    dead.listener.wait_count(1)
    letter = dead.messages[0]
    assert letter.body == "!refused", "the dead letter keeps the body as published"
    assert letter.headers["dlq-original-destination"] == "/queue/orders"
    assert "transform upper refused by the module (code 33)" in letter.headers["dlq-reason"], letter.headers
    assert letter.headers["x-order"] == "2"

    module = listed(servd)["upper"]
    assert module["attached"] == [{"kind": "topic", "name": "queue/orders"}]
    assert (module["stats"]["calls"], module["stats"]["failures"]) == (3, 1), module
    assert "code 33" in module["stats"]["last_error"]

    # Attached, it cannot be replaced by a version without its hook, nor deleted; detached,
    # messages pass unchanged and it can.
    hookless = call(servd, "PUT", "/v1/modules/upper", data=wat("gate"))
    assert error(hookless) == (409, "Conflict") and "as its transform" in hookless.json()["error"], hookless.text
    assert call(servd, "GET", "/v1/modules/upper").json()["version"] == 1
    in_use = call(servd, "DELETE", "/v1/modules/upper")
    assert error(in_use) == (409, "Conflict") and "topic queue/orders" in in_use.json()["error"]
    assert attach(servd, "queue/orders", None)["config"]["transform"] is None
    producer.send("/queue/orders", "as is")
    consumer.listener.wait_body("as is")
    assert call(servd, "DELETE", "/v1/modules/upper").status_code == 204
    assert "upper" not in listed(servd)


def test_a_runaway_module_costs_only_its_message_and_never_the_node(start_servd, clients):
    node = start_servd(args=["--wasm-deadline-ms", "50", "--wasm-memory-bytes", "4194304",
                             "--wasm-fuel", "20000000"]).wait_ready()
    upload(node, "spin", wat("spin"))
    upload(node, "hungry", wat("hungry"))
    attach(node, "queue/spin", "spin")
    attach(node, "queue/hungry", "hungry")
    producer = clients(node)
    started = time.monotonic()
    for _ in range(5):
        producer.send("/queue/spin", "round and round")
        producer.send("/queue/hungry", "more")
    took = time.monotonic() - started
    assert took < 5, f"10 runaway calls took {took:.1f}s: each must stop at its limit"

    for queue, reason in [("queue/spin.dlq", "ran out of fuel"), ("queue/hungry.dlq", "memory limit of 4194304")]:
        reader = clients(node)
        reader.subscribe(f"/{queue}", id=queue)
        reader.listener.wait_count(5)
        assert all(reason in m.headers["dlq-reason"] for m in reader.messages), reader.messages[0].headers
    stats = listed(node)
    assert (stats["spin"]["stats"]["failures"], stats["hungry"]["stats"]["failures"]) == (5, 5)
    metrics = call(node, "GET", "/metrics").text
    assert 'serv_wasm_failures_total{module="spin"} 5' in metrics and 'serv_wasm_calls_total{module="hungry"} 5' in metrics

    # The node is fine: other traffic flows, and it still answers at once.
    plain = clients(node)
    plain.subscribe("/queue/plain", id="p")
    producer.send("/queue/plain", "still here")
    plain.listener.wait_body("still here")
    assert call(node, "GET", "/readyz").status_code == 200


def trio_with(start_servd, tmp_path, extra):
    seed = start_servd(args=[*FAST, *extra], data_dir=tmp_path / "n1").wait_ready()
    seeds = ["--seeds", f"127.0.0.1:{seed.mesh_port}"]
    nodes = [seed] + [start_servd(args=[*FAST, *extra, *seeds], data_dir=tmp_path / f"n{i}").wait_ready()
                      for i in (2, 3)]
    wait_settled(nodes)
    return nodes


def test_a_new_version_reaches_every_node_and_the_listing_covers_the_cluster(start_servd, tmp_path, clients):
    nodes = trio_with(start_servd, tmp_path, ["--wasm-recheck-ms", "300"])
    upload(nodes[0], "shape", wat("upper"))
    topics = [f"queue/shaped-{i}" for i in range(6)]  # spread over the ring's owners
    for i, topic in enumerate(topics):
        attach(nodes[i % 3], topic, "shape")
    producers = [clients(node) for node in nodes]
    readers = []
    for i, topic in enumerate(topics):
        producers[i % 3].send(f"/{topic}", f"v1 {topic}")
        reader = clients(nodes[(i + 1) % 3])
        reader.subscribe(f"/{topic}", id=f"r{i}")
        readers.append(reader)
    for topic, reader in zip(topics, readers):
        reader.listener.wait_count(1)
        assert reader.bodies() == [f"V1 {topic}".upper()]

    assert upload(nodes[1], "shape", wat("reverse"))["version"] == 2
    time.sleep(0.5)  # every node rechecks within 300 ms
    for i, (topic, reader) in enumerate(zip(topics, readers)):
        producers[(i + 2) % 3].send(f"/{topic}", "abc")
        reader.listener.wait_count(2)
        assert reader.bodies()[1] == "cba", f"{topic}: the new version on every node"

    for node in nodes:
        module = listed(node)["shape"]
        assert module["version"] == 2
        assert sorted(a["name"] for a in module["attached"]) == topics
        assert module["stats"]["calls"] == 12, "calls summed over the nodes"

    # The module's node dies: its partition fails over to another replica, and the transform
    # keeps running on a queue served by the nodes left.
    dead_id = owner_of(nodes[0], "module/shape")
    owner_node = next(n for n in nodes if node_id(n) == dead_id)
    others = [n for n in nodes if n is not owner_node]
    topic = f"queue/kept-{uuid.uuid4().hex[:8]}"
    attach(others[0], topic, "shape")
    reader = clients(others[1])
    reader.subscribe(f"/{topic}", id="kept")
    producer = clients(others[0])
    producer.send(f"/{topic}", "before")
    reader.listener.wait_body("erofeb")
    reader.close()
    kill_and_wait_down(owner_node, others[0])

    # (A SEND that reaches the dead node's partitions while they elect a leader is refused with
    # an ERROR: a producer sends again on a new connection, as a real one would.)
    def receipted():
        sender = clients(others[0])
        receipt = sender.send(f"/{topic}", "xyz", wait=False)
        sender.listener.wait(lambda c: receipt in c.receipts or c.errors, what="a receipt or an error")
        return receipt in sender.listener.receipts

    wait_until(receipted, timeout=30, message="the SEND is receipted after the failover")
    after = clients(others[1])
    after.subscribe(f"/{topic}", id="after")
    wait_until(lambda: "zyx" in after.bodies(), timeout=15,
               message="the transform still runs after the module's node died")
    unreachable = call(others[0], "GET", "/v1/modules").json()["unreachable"]
    assert dead_id in unreachable


def test_a_webhook_into_a_transformed_topic_says_where_its_message_went(servd):
    node = servd
    upload(node, "upper", wat("upper"))
    attach(node, "queue/hooks", "upper")
    route = call(node, "PUT", "/v1/routes/hooks", json={"path_prefix": "/hooks", "topic": "queue/hooks"})
    assert route.status_code == 200, route.text
    wait_until(lambda: requests.post(f"{node.http}/hooks", data=b"probe", timeout=5).status_code == 202,
               message="the route is served")
    stored = requests.post(f"{node.http}/hooks", data=b"fine", timeout=5)
    assert stored.status_code == 202 and stored.json()["dead_letter"] is None, stored.text
    refused = requests.post(f"{node.http}/hooks", data=b"!nope", timeout=5)
    assert refused.status_code == 202, refused.text
    body = refused.json()
    assert body["offset"] is None
    assert body["dead_letter"]["topic"] == "queue/hooks.dlq" and body["dead_letter"]["offset"] == 0
    assert "code 33" in body["dead_letter"]["reason"]


def test_route_middleware_lets_requests_through_rewritten_or_refuses_them(start_servd, upstreams):
    node = start_servd(args=["--wasm-deadline-ms", "50"]).wait_ready()
    upstream = upstreams("api")
    upload(node, "gate", wat("gate"))
    upload(node, "upper", wat("upper"))
    upload(node, "spin", wat("spin"))
    no_hook = call(node, "PUT", "/v1/routes/api", json={"path_prefix": "/api", "upstreams": [upstream.url],
                                                         "middleware": "upper"})
    assert error(no_hook) == (400, "InvalidParameter") and "no request or response hook" in no_hook.json()["error"]
    route = call(node, "PUT", "/v1/routes/api", json={"path_prefix": "/api", "upstreams": [upstream.url],
                                                       "strip_prefix": True, "middleware": "gate"})
    assert route.status_code == 200 and route.json()["config"]["middleware"] == "gate", route.text
    wait_until(lambda: requests.get(f"{node.http}/api/x", timeout=5).status_code == 401,
               message="the route and its middleware are served")

    refused = requests.post(f"{node.http}/api/orders", data=b"payload", timeout=5)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "MiddlewareRefused" and "gate" in refused.json()["error"]
    assert refused.headers["x-serv-route"] == "api"
    assert upstream.count("/orders") == 0, "a refused request never reaches the upstream"

    passed = requests.post(f"{node.http}/api/orders?n=1", data=b"payload", headers={"x-key": "open"}, timeout=5)
    assert passed.status_code == 200, passed.text
    seen = passed.json()
    assert (seen["path"], seen["body"], seen["method"]) == ("/orders?n=1", "payload", "POST")
    assert seen["headers"]["x-gate"] == "passed" and seen["headers"]["x-key"] == "open"
    # serv_response saw the upstream's answer and added its header; the body's framing is intact.
    assert passed.headers["x-gate"] == "passed" and passed.headers["x-upstream"] == "api"
    assert int(passed.headers["content-length"]) == len(passed.content)

    # A middleware with only one of the hooks leaves the other side alone.
    request_only = b"""(module (memory (export "memory") 1)
        (func (export "serv_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "serv_request") (param $p i32) (param $n i32) (result i64)
          (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n)))))"""
    assert upload(node, "same", request_only)["hooks"] == ["request"]
    call(node, "PUT", "/v1/routes/same", json={"path_prefix": "/same", "upstreams": [upstream.url],
                                                "middleware": "same"})
    wait_until(lambda: requests.get(f"{node.http}/same/x", timeout=5).status_code == 200,
               message="the request-only middleware route is served")
    plain = requests.get(f"{node.http}/same/x", timeout=5)
    assert plain.headers["x-upstream"] == "api" and "x-gate" not in plain.headers

    # A middleware that never ends fails closed, at its deadline.
    call(node, "PUT", "/v1/routes/slow", json={"path_prefix": "/slow", "upstreams": [upstream.url],
                                                "middleware": "spin"})
    wait_until(lambda: requests.get(f"{node.http}/slow", timeout=5).status_code == 500,
               message="the spinning middleware is served")
    started = time.monotonic()
    failed = requests.get(f"{node.http}/slow", headers={"x-key": "open"}, timeout=5)
    assert time.monotonic() - started < 2
    assert failed.status_code == 500 and failed.json()["code"] == "MiddlewareFailed", failed.text
    assert "ran out of fuel" in failed.json()["error"] or "deadline" in failed.json()["error"]
    assert upstream.count("/slow") == 0

    modules = listed(node)
    assert modules["gate"]["attached"] == [{"kind": "route", "name": "api"}]
    assert modules["spin"]["attached"] == [{"kind": "route", "name": "slow"}]
    assert modules["gate"]["stats"]["calls"] >= 3 and modules["gate"]["stats"]["failures"] >= 2
    refused = [m for m in call(node, "GET", "/metrics").text.splitlines()
               if m.startswith('serv_gateway_refused_total{route="api"}')]
    assert refused and float(refused[0].split()[-1]) >= 2, refused
