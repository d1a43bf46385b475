"""The HTTP gateway: routes made through the admin API send requests to real upstream HTTP
servers (Python http.server on 127.0.0.1), with retries, timeouts, a circuit breaker, rate
limits and an on/off switch, or publish them to a topic (webhooks, read back with stomp.py);
every refusal is a JSON error with a code."""

import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_until
from test_cluster_actors import kill_and_wait_down, node_id, owner_of, trio  # noqa: F401 (trio is a fixture)
from test_stomp import Client


class Upstream:
    """An upstream service: echoes what it got as JSON; `/slow?ms=N` waits first, `/fail`
    answers 503, `/status/N` answers N. Counts the requests it got by path."""

    def __init__(self, name):
        self.name, self.hits, self.lock = name, {}, threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                path = self.path.split("?")[0]
                with upstream.lock:
                    upstream.hits[path] = upstream.hits.get(path, 0) + 1
                if path == "/slow":
                    time.sleep(int(self.path.split("ms=")[1]) / 1000)
                status = 503 if path == "/fail" else int(path.split("/")[2]) if path.startswith("/status/") else 200
                reply = json.dumps({"upstream": upstream.name, "method": self.command, "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.send_header("x-upstream", upstream.name)
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_DELETE = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path):
        with self.lock:
            return self.hits.get(path, 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstreams():
    made = []

    def make(name):
        made.append(Upstream(name))
        return made[-1]

    yield make
    for upstream in made:
        upstream.close()


def admin(node, method, path, body=None):
    return requests.request(method, f"{node.admin}{path}", headers={"Authorization": f"Bearer {node.token}"},
                            data=json.dumps(body) if body is not None else None, timeout=10)


def put_route(node, name, **config):
    response = admin(node, "PUT", f"/v1/routes/{name}", config)
    assert response.status_code == 200, response.text
    return response.json()


def routes(node):
    return {r["name"]: r for r in admin(node, "GET", "/v1/routes").json()["routes"]}


def error_code(response):
    assert response.headers["content-type"] == "application/json", response.headers
    return response.status_code, response.json()["code"]


def test_a_route_forwards_to_its_upstreams_in_turn_with_the_forwarding_headers(servd, upstreams):
    one, two = upstreams("one"), upstreams("two")
    created = put_route(servd, "api", path_prefix="/api", strip_prefix=True, upstreams=[one.url, two.url])
    assert created["enabled"] and created["config"]["retries"] == 2, "defaults fill what was left out"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen = []
    for _ in range(4):
        answer = requests.get(f"{servd.http}/api/echo?x=1", timeout=10,
                              headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "connection": "x-private",
                                       "x-private": "hop"})
        assert answer.status_code == 200 and answer.headers["x-serv-route"] == "api"
        got = answer.json()
        seen.append(got["upstream"])
        assert got["path"] == "/echo?x=1", "the prefix is stripped, the query kept"
        assert got["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert got["headers"]["x-forwarded-host"] == f"127.0.0.1:{servd.http_port}"
        assert got["headers"]["traceparent"].split("-")[1] == trace, "the caller's trace goes upstream"
        assert "x-private" not in got["headers"], "headers named by Connection stay on the client's hop"
    assert seen == ["one", "two", "one", "two"], "round robin over the upstreams"
    posted = requests.post(f"{servd.http}/api/orders", data="a body", timeout=10).json()
    assert (posted["method"], posted["path"], posted["body"]) == ("POST", "/orders", "a body")
    # curl, a second client, sees the same.
    curl = subprocess.run(["curl", "-s", "-i", f"{servd.http}/api/curl"], capture_output=True, text=True, timeout=10)
    assert curl.stdout.startswith("HTTP/1.1 200") and "x-serv-route: api" in curl.stdout.lower()
    # A more specific route takes precedence; a host-bound route only for its host.
    put_route(servd, "api-v2", path_prefix="/api/v2", upstreams=[two.url])
    put_route(servd, "tenant", host="*.example.test", path_prefix="/api", upstreams=[one.url])
    assert requests.get(f"{servd.http}/api/v2/x", timeout=10).headers["x-serv-route"] == "api-v2"
    hosted = requests.get(f"{servd.http}/api/v2/x", headers={"host": "shop.example.test:8080"}, timeout=10)
    assert hosted.headers["x-serv-route"] == "tenant" and hosted.json()["headers"]["x-forwarded-host"] == "shop.example.test:8080"
    listed = routes(servd)
    assert set(listed) == {"api", "api-v2", "tenant"}
    assert listed["api"]["stats"]["requests"] == 6 and listed["api"]["stats"]["status_2xx"] == 6
    assert list(listed["api"]["stats"]["breaker"].values()) == ["closed"]


def test_no_route_methods_bodies_and_bad_configs_get_clear_errors(servd, upstreams):
    one = upstreams("one")
    assert error_code(requests.get(f"{servd.http}/nothing", timeout=10)) == (404, "NoRoute")
    put_route(servd, "small", path_prefix="/small", methods=["GET", "POST"], max_body_bytes=1000, upstreams=[one.url])
    refused = requests.delete(f"{servd.http}/small/x", timeout=10)
    assert error_code(refused) == (405, "MethodNotAllowed") and refused.headers["allow"] == "GET, POST"
    assert error_code(requests.post(f"{servd.http}/small/x", data=b"x" * 1001, timeout=10)) == (413, "BodyTooLarge")

    def chunks():
        for _ in range(20):
            yield b"y" * 100
    assert error_code(requests.post(f"{servd.http}/small/x", data=chunks(), timeout=10)) == (413, "BodyTooLarge"), \
        "a chunked body is counted as it comes"
    assert requests.post(f"{servd.http}/small/x", data=b"x" * 1000, timeout=10).json()["body"] == "x" * 1000
    assert error_code(requests.get(f"{servd.http}/smaller", timeout=10)) == (404, "NoRoute"), "prefixes end at a /"
    for config, field in [({"path_prefix": "nope", "upstreams": [one.url]}, "path_prefix"),
                          ({"upstreams": []}, "upstreams"),
                          ({"upstreams": ["https://x:1"]}, "http://"),
                          ({"upstreams": [one.url], "timeout_ms": 0}, "timeout_ms"),
                          ({"upstreams": [one.url], "colour": "red"}, "colour")]:
        bad = admin(servd, "PUT", "/v1/routes/bad", config)
        assert error_code(bad) == (400, "InvalidParameter") and field in bad.json()["error"], bad.text
    assert error_code(admin(servd, "PUT", "/v1/routes/Bad Name", {"upstreams": [one.url]})) == (400, "InvalidParameter")
    assert error_code(admin(servd, "GET", "/v1/routes/ghost")) == (404, "NotFound")
    assert admin(servd, "DELETE", "/v1/routes/small").status_code == 204
    wait_until(lambda: requests.get(f"{servd.http}/small/x", timeout=10).status_code == 404, timeout=5,
               message="a deleted route stops taking requests")


def test_retries_timeouts_and_the_circuit_breaker(servd, upstreams):
    up = upstreams("up")
    dead = f"http://127.0.0.1:{free_port()}"
    # An unreachable upstream is skipped for the next one, whatever the method.
    put_route(servd, "half", path_prefix="/half", upstreams=[dead, up.url], retries=1, breaker_failures=100)
    for _ in range(4):
        assert requests.post(f"{servd.http}/half/x", data="once", timeout=10).status_code == 200
    assert up.count("/half/x") == 4, "each request reached the live upstream exactly once"
    # A timeout answers 504 promptly.
    put_route(servd, "slow", path_prefix="/slow", upstreams=[up.url], timeout_ms=300, retries=0)
    started = time.monotonic()
    assert error_code(requests.get(f"{servd.http}/slow?ms=2000", timeout=10)) == (504, "UpstreamTimeout")
    assert time.monotonic() - started < 1.5
    # A 503 is retried for an idempotent request only.
    put_route(servd, "fail", path_prefix="/fail", upstreams=[up.url], retries=2, breaker_failures=100)
    assert requests.get(f"{servd.http}/fail", timeout=10).status_code == 503
    assert up.count("/fail") == 3, "GET: tried three times"
    assert requests.post(f"{servd.http}/fail", timeout=10).status_code == 503
    assert up.count("/fail") == 4, "POST: tried once, the upstream may have acted on it"
    # Failures in a row open the circuit: refused at once, then one trial after breaker_open_ms.
    put_route(servd, "down", path_prefix="/down", upstreams=[dead], retries=0, breaker_failures=3, breaker_open_ms=1500)
    for _ in range(3):
        assert error_code(requests.get(f"{servd.http}/down", timeout=10)) == (502, "UpstreamUnreachable")
    refused = requests.get(f"{servd.http}/down", timeout=10)
    assert error_code(refused) == (503, "CircuitOpen") and 1 <= int(refused.headers["retry-after"]) <= 2
    assert list(routes(servd)["down"]["stats"]["breaker"].values()) == ["open"]
    time.sleep(1.6)
    assert error_code(requests.get(f"{servd.http}/down", timeout=10)) == (502, "UpstreamUnreachable"), "the trial"
    assert error_code(requests.get(f"{servd.http}/down", timeout=10)) == (503, "CircuitOpen"), "failed: open again"
    # The upstream comes back (the route now points at a live one): the next trial closes it.
    put_route(servd, "down", path_prefix="/down", upstreams=[up.url], retries=0, breaker_failures=3,
              breaker_open_ms=300)
    wait_until(lambda: requests.get(f"{servd.http}/down", timeout=10).status_code == 200, timeout=5,
               message="the route works again")
    assert list(routes(servd)["down"]["stats"]["breaker"].values()) == ["closed"]
    stats = routes(servd)["down"]["stats"]
    assert stats["upstream_failures"] >= 4 and stats["refused"] >= 2 and stats["status_5xx"] >= 5, stats


def test_a_rate_limited_route_answers_429_with_retry_after(servd, upstreams):
    up = upstreams("up")
    put_route(servd, "limited", path_prefix="/limited", upstreams=[up.url], rate_limit_per_s=5)
    session = requests.Session()
    answers = [session.get(f"{servd.http}/limited", timeout=10) for _ in range(20)]
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert 5 <= len(ok) <= 8 and len(ok) + len(limited) == 20, [a.status_code for a in answers]
    assert limited[0].json()["code"] == "RateLimited" and int(limited[0].headers["retry-after"]) >= 1
    assert up.count("/limited") == len(ok), "refused requests never reached the upstream"
    stats = routes(servd)["limited"]["stats"]
    assert (stats["requests"], stats["refused"]) == (20, len(limited))
    # Prometheus sees the same, by route.
    metrics = {(s.name, s.labels.get("route"), s.labels.get("class")): s.value
               for f in text_string_to_metric_families(requests.get(f"{servd.admin}/metrics", timeout=10).text)
               for s in f.samples}
    assert metrics[("serv_gateway_refused_total", "limited", None)] == len(limited)
    assert metrics[("serv_gateway_responses_total", "limited", "2xx")] == len(ok)
    assert metrics[("serv_gateway_responses_total", "limited", "4xx")] == len(limited)
    assert metrics[("serv_gateway_circuit_open", "limited", None)] == 0
    time.sleep(1.1)
    assert session.get(f"{servd.http}/limited", timeout=10).status_code == 200, "the budget refills"


def test_a_route_is_served_by_every_node_switched_off_and_on_with_an_audit_entry(trio, upstreams):
    n1, n2, n3 = trio
    up = upstreams("up")
    put_route(n2, "shared", path_prefix="/shared", upstreams=[up.url])
    for node in trio:
        wait_until(lambda node=node: requests.get(f"{node.http}/shared/x", timeout=10).status_code == 200,
                   timeout=10, message=f"{node_id(node)}'s gateway takes the new route")
    switched = admin(n3, "POST", "/v1/routes/shared/disable")
    assert switched.status_code == 200 and switched.json()["enabled"] is False
    for node in trio:
        wait_until(lambda node=node: requests.get(f"{node.http}/shared/x", timeout=10).status_code == 503,
                   timeout=10, message="every node refuses a disabled route")
    refused = requests.get(f"{n1.http}/shared/x", timeout=10)
    assert error_code(refused) == (503, "RouteDisabled")
    before = up.count("/shared/x")
    assert admin(n1, "POST", "/v1/routes/shared/enable").json()["enabled"] is True
    for node in trio:
        wait_until(lambda node=node: requests.get(f"{node.http}/shared/x", timeout=10).status_code == 200,
                   timeout=10, message="enabled again")
    assert up.count("/shared/x") > before
    audit = admin(n2, "GET", "/v1/audit").json()["entries"]
    assert [(e["action"], e["target"], e["node"]) for e in audit[:2]] == [
        ("enable", "route/shared", node_id(n1)), ("disable", "route/shared", node_id(n3))]
    # The listing sums every node's counters and shows each node's circuit.
    stats = routes(n3)["shared"]["stats"]
    assert sorted(stats["breaker"]) == sorted(node_id(n) for n in trio)
    assert stats["refused"] >= 4 and stats["status_2xx"] >= 3
    assert error_code(admin(n1, "POST", "/v1/routes/ghost/enable")) == (404, "NotFound")
    # Its owner dies: the other gateways keep serving the route as they last saw it.
    owner = owner_of(n1, "route/shared")
    victim = next(n for n in trio if node_id(n) == owner)
    survivors = [n for n in trio if n is not victim]
    kill_and_wait_down(victim, survivors[0])
    time.sleep(2.5)  # a few refreshes with the owner down
    for node in survivors:
        assert requests.get(f"{node.http}/shared/x", timeout=10).status_code == 200, "served while its owner is down"
    # Another replica of its partition takes it over: it can be changed again within seconds.
    wait_until(lambda: admin(survivors[0], "POST", "/v1/routes/shared/disable").status_code == 200, timeout=30,
               message="the route can be changed once its partition has a new leader")


def test_a_webhook_route_publishes_each_body_once_durably_to_its_topic(start_servd, tmp_path):
    """A route with a topic instead of upstreams (the webhook bridge): each request's body becomes
    a message, answered 202 once durable; an Idempotency-Key stores a retried webhook once."""
    node = start_servd(data_dir=tmp_path / "n1").wait_ready()
    bad = admin(node, "PUT", "/v1/routes/both", {"topic": "queue/x", "upstreams": ["http://127.0.0.1:1"]})
    assert error_code(bad) == (400, "InvalidParameter") and "not both" in bad.json()["error"]
    bad = admin(node, "PUT", "/v1/routes/nameless", {"topic": "hooks"})
    assert error_code(bad) == (400, "InvalidParameter") and "queue/NAME" in bad.json()["error"]
    put_route(node, "hooks", path_prefix="/hooks", methods=["POST"], topic="queue/webhooks")

    def post(body, key=None, path="/hooks/orders?source=shop"):
        headers = {"content-type": "application/json", **({"idempotency-key": key} if key else {})}
        return requests.post(f"{node.http}{path}", data=body, headers=headers, timeout=10)

    first = post('{"order": 1}', key="order-1")
    assert first.status_code == 202 and first.json() == {"topic": "queue/webhooks", "offset": 0, "duplicate": False,
                                                             "dead_letter": None}
    again = post('{"order": 1}', key="order-1")
    assert again.status_code == 202 and again.json()["duplicate"] is True and again.json()["offset"] == 0
    assert post('{"order": 2}').json()["offset"] == 1
    assert error_code(requests.get(f"{node.http}/hooks/orders", timeout=10)) == (405, "MethodNotAllowed")

    # Acknowledged means durable: killed at once, the node restarts with both messages.
    node.stop(signal.SIGKILL)
    node = start_servd(data_dir=tmp_path / "n1").wait_ready()
    consumer = Client(node)
    try:
        consumer.subscribe("/queue/webhooks", id="hooks")
        consumer.listener.wait_count(2)
        time.sleep(0.3)
        messages = consumer.listener.snapshot()
        assert [m.body for m in messages] == ['{"order": 1}', '{"order": 2}'], "each webhook stored once, in order"
        headers = messages[0].headers
        assert headers["http-method"] == "POST" and headers["http-path"] == "/hooks/orders?source=shop"
        assert headers["content-type"] == "application/json" and headers["x-serv-route"] == "hooks"
    finally:
        consumer.close()
    assert routes(node)["hooks"]["config"]["topic"] == "queue/webhooks"


def test_a_webhook_route_takes_only_requests_with_its_token_or_its_signature(servd, upstreams):
    """A route may require a bearer token, or an HMAC-SHA256 signature of the body under its key
    (X-Hub-Signature-256, as GitHub sends): anything else is refused with 401 and never published
    or forwarded; the secret is never shown back."""
    key = "webhook-signing-key-0123456789"
    put_route(servd, "signed", path_prefix="/signed", methods=["POST"], topic="queue/signed",
              auth={"hmac_sha256": key})
    body = b'{"action": "opened", "number": 7}'
    signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()

    def post(data, headers):
        return requests.post(f"{servd.http}/signed", data=data, headers=headers, timeout=10)

    assert error_code(post(body, {})) == (401, "InvalidSignature")
    assert error_code(post(body, {"x-hub-signature-256": "sha256=" + "0" * 64})) == (401, "InvalidSignature")
    tampered = post(body + b" ", {"x-hub-signature-256": signature})
    assert error_code(tampered) == (401, "InvalidSignature"), "the signature covers the exact body"
    accepted = post(body, {"x-hub-signature-256": signature})
    assert accepted.status_code == 202 and accepted.json()["offset"] == 0, accepted.text
    assert post(body, {"x-hub-signature-256": signature}).json()["offset"] == 1, "only signed bodies were stored"

    one = upstreams("one")
    put_route(servd, "private", path_prefix="/private", upstreams=[one.url], auth={"bearer": "route-token-0123456789"})
    assert error_code(requests.get(f"{servd.http}/private/x", timeout=10)) == (401, "MissingToken")
    wrong = requests.get(f"{servd.http}/private/x", headers={"authorization": "Bearer not-the-route-token"}, timeout=10)
    assert error_code(wrong) == (401, "InvalidToken")
    right = requests.get(f"{servd.http}/private/x", headers={"authorization": "Bearer route-token-0123456789"},
                         timeout=10)
    assert right.status_code == 200 and right.json()["upstream"] == "one"

    shown = admin(servd, "GET", "/v1/routes/private").json()
    assert shown["config"]["auth"] == "bearer" and "route-token" not in json.dumps(shown)
    assert key not in admin(servd, "GET", "/v1/routes").text
    short = admin(servd, "PUT", "/v1/routes/weak", {"upstreams": [one.url], "auth": {"bearer": "short"}})
    assert error_code(short) == (400, "InvalidParameter") and "16" in short.json()["error"]
    unknown = admin(servd, "PUT", "/v1/routes/weak", {"upstreams": [one.url], "auth": {"basic": "x" * 20}})
    assert error_code(unknown) == (400, "InvalidParameter")


def test_request_bodies_held_at_once_are_bounded(start_servd, upstreams):
    """Bodies are kept whole until forwarding ends (for retries): --http-max-inflight-bodies caps
    how many at once, so memory stays bounded; past it, 503 Overloaded with Retry-After."""
    node = start_servd(args=["--http-max-inflight-bodies", "1"]).wait_ready()
    up = upstreams("up")
    put_route(node, "slow", path_prefix="/slow", upstreams=[up.url], retries=0)
    held = []
    holder = threading.Thread(target=lambda: held.append(
        requests.post(f"{node.http}/slow?ms=1500", data="held", timeout=10).status_code))
    holder.start()
    wait_until(lambda: up.count("/slow") == 1, timeout=5, message="the first body reached the upstream")
    refused = requests.post(f"{node.http}/slow?ms=0", data="second", timeout=10)
    assert error_code(refused) == (503, "Overloaded") and refused.headers["retry-after"] == "1"
    assert requests.get(f"{node.http}/slow?ms=0", timeout=10).status_code == 200, "a request without a body passes"
    holder.join()
    assert held == [200]
    assert requests.post(f"{node.http}/slow?ms=0", data="third", timeout=10).status_code == 200, "the permit is back"
