"""Per-destination max length and overflow policy (issue #20), as RabbitMQ's queue length limits:
`max_length` / `max_length_bytes` and `overflow` (`reject-publish` or `drop-head`) set with
PUT /v1/topics. A full destination refuses a SEND with the ERROR `Message rejected` (never
receipted, never stored; then the connection closes, as after every ERROR) and a webhook with 503
`DestinationFull`; under drop-head the oldest ready messages move to NAME.dlq with `dlq-reason:
maxlen`. The length counts ready messages (not those in flight), so a delivery makes room."""

import requests

from conftest import wait_until
from test_metrics import rose, scrape
from test_stomp import WAIT, RawStomp, clients  # noqa: F401 (clients is a fixture)


def call(node, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {node.token}"}
    return requests.request(method, f"{node.admin}{path}", headers=headers, timeout=10, **kwargs)


def configure(node, name, **settings):
    response = call(node, "PUT", f"/v1/topics/{name}", json=settings)
    assert response.status_code == 200, response.text
    return response.json()


def info(node, name):
    response = call(node, "GET", f"/v1/topics/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def stored(node, name):
    """Messages the destination holds (0 while it does not exist)."""
    response = call(node, "GET", f"/v1/topics/{name}")
    if response.status_code == 404:
        return 0
    topic = response.json()
    return topic["next_offset"] - topic["first_offset"]


def raw_sends(node, destination, bodies):
    """Connects on a bare socket and sends one SEND per body, each with receipt `r<i>`, in one
    write (so that they arrive together); returns the connection."""
    raw = RawStomp(node)
    raw.connect()
    frames = b""
    for i, body in enumerate(bodies, 1):
        head = f"SEND\ndestination:{destination}\nreceipt:r{i}\ncontent-length:{len(body)}\n\n"
        frames += head.encode() + body + b"\x00"
    raw.send_raw(frames)
    return raw


def test_a_full_queue_refuses_the_next_send_with_an_error_and_no_receipt(servd, clients):
    configure(servd, "queue/capped", max_length=3)
    before = scrape(servd)
    raw = raw_sends(servd, "/queue/capped", [b"m1", b"m2", b"m3", b"m4", b"m5"])
    frames = raw.read_until_closed()
    raw.close()
    assert [(f.command, f.headers.get("receipt-id")) for f in frames] == [
        ("RECEIPT", "r1"), ("RECEIPT", "r2"), ("RECEIPT", "r3"), ("ERROR", "r4")], frames
    error = frames[-1]
    assert error.headers["message"] == "Message rejected", error
    detail = error.body.decode()
    assert "/queue/capped" in detail and "max_length of 3 messages" in detail, detail
    assert rose(before, scrape(servd), "serv_stomp_messages_rejected_total") == 1

    topic = info(servd, "queue/capped")
    assert stored(servd, "queue/capped") == 3, "neither the refused SEND nor the ones after it are stored"
    assert topic["config"]["max_length"] == 3 and topic["config"]["overflow"] == "reject-publish"
    assert topic["length"] == {"messages": 3, "bytes": 6}

    # A delivery takes one from the ready messages: there is room for exactly one more.
    consumer = clients(servd)
    consumer.subscribe("/queue/capped", id="c", ack="client-individual", headers={"prefetch-count": "1"})
    consumer.listener.wait_count(1)
    assert consumer.bodies() == ["m1"]
    wait_until(lambda: info(servd, "queue/capped")["length"]["messages"] == 2)
    producer = clients(servd)
    producer.send("/queue/capped", "m6")
    assert stored(servd, "queue/capped") == 4
    raw = raw_sends(servd, "/queue/capped", [b"m7"])
    assert [(f.command, f.headers.get("receipt-id")) for f in raw.read_until_closed()] == [("ERROR", "r1")]
    raw.close()
    assert stored(servd, "queue/capped") == 4


def test_a_send_past_max_length_bytes_is_refused_naming_that_limit(servd):
    configure(servd, "queue/bytes", max_length_bytes=10)
    raw = raw_sends(servd, "/queue/bytes", [b"x" * 6, b"y" * 5])
    frames = raw.read_until_closed()
    raw.close()
    assert [(f.command, f.headers.get("receipt-id")) for f in frames] == [("RECEIPT", "r1"), ("ERROR", "r2")]
    assert "max_length_bytes of 10 body bytes" in frames[-1].body.decode(), frames[-1]
    assert info(servd, "queue/bytes")["length"] == {"messages": 1, "bytes": 6}


def test_drop_head_keeps_the_newest_and_moves_the_oldest_to_the_dead_letter_topic(servd, clients):
    configure(servd, "queue/latest", max_length=3, overflow="drop-head")
    before = scrape(servd)
    producer = clients(servd)
    for n in range(1, 6):
        producer.send("/queue/latest", f"m{n}")  # every one receipted: drop-head never refuses
    wait_until(lambda: stored(servd, "queue/latest.dlq") == 2, message="the two oldest dead-lettered")
    wait_until(lambda: info(servd, "queue/latest")["length"] == {"messages": 3, "bytes": 6})
    assert rose(before, scrape(servd), "serv_stomp_messages_dropped_total") == 2

    consumer = clients(servd)
    consumer.subscribe("/queue/latest", id="kept")
    consumer.subscribe("/queue/latest.dlq", id="dropped")
    consumer.listener.wait_count(5)
    by_subscription = {}
    for message in consumer.messages:
        by_subscription.setdefault(message.headers["subscription"], []).append(message)
    assert [m.body for m in by_subscription["kept"]] == ["m3", "m4", "m5"]
    assert [m.body for m in by_subscription["dropped"]] == ["m1", "m2"]
    for message in by_subscription["dropped"]:
        assert message.headers["dlq-reason"] == "maxlen", message.headers
        assert message.headers["dlq-original-destination"] == "/queue/latest", message.headers


def test_drop_head_never_drops_a_message_in_flight(servd, clients):
    configure(servd, "queue/busy", max_length=1, overflow="drop-head")
    worker = clients(servd)
    worker.subscribe("/queue/busy", id="w", ack="client-individual", headers={"prefetch-count": "1"})
    producer = clients(servd)
    producer.send("/queue/busy", "first")
    worker.listener.wait_count(1)  # in flight, unacknowledged
    for body in ["second", "third", "fourth"]:
        producer.send("/queue/busy", body)
    wait_until(lambda: stored(servd, "queue/busy.dlq") == 2)
    worker.ack(worker.messages[0])  # still acknowledgeable: it was never dropped
    worker.listener.wait_count(2)
    assert worker.bodies() == ["first", "fourth"]


def test_length_settings_and_the_length_survive_a_restart(start_servd, tmp_path):
    node = start_servd(data_dir=tmp_path / "n").wait_ready()
    configure(node, "queue/durable", max_length=2, max_length_bytes=1000)
    raw = raw_sends(node, "/queue/durable", [b"a", b"b"])
    assert [raw.read_frame().command for _ in range(2)] == ["RECEIPT", "RECEIPT"]
    raw.close()
    node.stop()
    node = start_servd(data_dir=tmp_path / "n").wait_ready()
    topic = info(node, "queue/durable")
    assert (topic["config"]["max_length"], topic["config"]["max_length_bytes"]) == (2, 1000)
    assert topic["config"]["overflow"] == "reject-publish"
    assert topic["length"] == {"messages": 2, "bytes": 2}
    raw = raw_sends(node, "/queue/durable", [b"c"])
    error = raw.read_until_closed()[-1]
    raw.close()
    assert error.command == "ERROR" and error.headers["message"] == "Message rejected", error
    # null removes a limit; without any, the length is not counted.
    topic = configure(node, "queue/durable", max_length=None, max_length_bytes=None)
    assert topic["config"]["max_length"] is None and topic["length"] is None


def test_bad_length_settings_are_json_errors(servd):
    for body in [{"max_length": 0}, {"max_length": -1}, {"max_length": "ten"}, {"max_length_bytes": 0},
                 {"max_length": 1_000_000_001}, {"max_length_bytes": 2 ** 40 + 1},
                 {"overflow": "drop-tail"}]:
        response = call(servd, "PUT", "/v1/topics/queue/bad-limits", json=body)
        assert (response.status_code, response.json()["code"]) == (400, "InvalidParameter"), (body, response.text)
    assert "from 1 to 1000000000" in call(servd, "PUT", "/v1/topics/queue/bad-limits",
                                           json={"max_length": 0}).json()["error"]
    assert "drop-head" in call(servd, "PUT", "/v1/topics/queue/bad-limits",
                               json={"overflow": "drop-tail"}).json()["error"]
    assert call(servd, "GET", "/v1/topics/queue/bad-limits").status_code == 404, "nothing was created"


def test_a_webhook_to_a_full_destination_is_refused_with_503_destination_full(servd):
    route = call(servd, "PUT", "/v1/routes/capped-hooks",
                 json={"path_prefix": "/capped", "methods": ["POST"], "topic": "queue/capped-hooks"})
    assert route.status_code == 200, route.text
    configure(servd, "queue/capped-hooks", max_length=1)
    first = requests.post(f"{servd.http}/capped", data=b"one", timeout=WAIT)
    assert first.status_code == 202, first.text
    refused = requests.post(f"{servd.http}/capped", data=b"two", timeout=WAIT)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "DestinationFull", refused.text
    assert "max_length of 1 messages" in refused.json()["error"]
    assert stored(servd, "queue/capped-hooks") == 1
