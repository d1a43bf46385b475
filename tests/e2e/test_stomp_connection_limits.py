"""Per-connection STOMP limits (issue #16): one connection cannot make the node hold unbounded
subscriptions or create unbounded destinations. Past --stomp-max-subscriptions a SUBSCRIBE, and
past --stomp-max-new-destinations a SEND or SUBSCRIBE to a destination that does not exist yet,
gets an ERROR naming the limit; destinations that exist stay usable, and other connections are
not affected."""

import requests

from test_stomp import RawStomp

LIMITS = ["--stomp-max-subscriptions", "5", "--stomp-max-new-destinations", "4"]


def topics(node):
    response = requests.get(f"{node.admin}/v1/topics", headers={"Authorization": f"Bearer {node.token}"}, timeout=10)
    return {t["name"] for t in response.json()["topics"]}


def answer(raw):
    """The next RECEIPT or ERROR (messages delivered meanwhile are skipped)."""
    while True:
        frame = raw.read_frame()
        if frame.command in ("RECEIPT", "ERROR"):
            return frame


def test_a_connection_past_its_subscriptions_gets_an_error_naming_the_limit(start_servd):
    node = start_servd(args=LIMITS).wait_ready()
    raw = RawStomp(node)
    raw.connect()
    for i in range(5):
        raw.send_frame("SUBSCRIBE", [("id", f"s{i}"), ("destination", "/topic/many"), ("receipt", f"r{i}")])
        assert raw.read_frame().command == "RECEIPT"
    raw.send_frame("SUBSCRIBE", [("id", "s5"), ("destination", "/topic/many"), ("receipt", "r5")])
    error = raw.read_frame()
    assert error.command == "ERROR" and error.headers["message"] == "Too many subscriptions", error.headers
    assert "--stomp-max-subscriptions" in error.body.decode() and "5" in error.body.decode()
    raw.close()
    # Another connection still subscribes.
    other = RawStomp(node)
    other.connect()
    other.send_frame("SUBSCRIBE", [("id", "x"), ("destination", "/topic/many"), ("receipt", "rx")])
    assert other.read_frame().command == "RECEIPT"
    other.close()


def test_a_connection_past_its_new_destinations_gets_an_error_and_existing_ones_still_work(start_servd):
    node = start_servd(args=LIMITS).wait_ready()
    raw = RawStomp(node)
    raw.connect()
    for i in range(4):
        raw.send_frame("SEND", [("destination", f"/queue/new-{i}"), ("receipt", f"r{i}")], b"x")
        assert raw.read_frame().command == "RECEIPT"
    # Sending to one it created already is no creation.
    raw.send_frame("SEND", [("destination", "/queue/new-0"), ("receipt", "again")], b"y")
    assert raw.read_frame().headers.get("receipt-id") == "again"
    raw.send_frame("SEND", [("destination", "/queue/new-4"), ("receipt", "r4")], b"x")
    error = raw.read_frame()
    assert error.command == "ERROR" and error.headers["message"] == "Too many destinations", error.headers
    assert "--stomp-max-new-destinations" in error.body.decode()
    assert error.headers.get("receipt-id") == "r4"
    raw.close()
    names = topics(node)
    assert {f"queue/new-{i}" for i in range(4)} <= names and "queue/new-4" not in names, names

    # A SUBSCRIBE that would create one counts the same; one to an existing destination does not.
    sub = RawStomp(node)
    sub.connect()
    for i in range(4):
        sub.send_frame("SUBSCRIBE", [("id", f"s{i}"), ("destination", f"/queue/new-{i}"), ("receipt", f"e{i}")])
        assert answer(sub).command == "RECEIPT", "existing destinations are no creation"
    for i in range(4):
        sub.send_frame("SEND", [("destination", f"/topic/fresh-{i}"), ("receipt", f"f{i}")], b"x")
        assert answer(sub).headers.get("receipt-id") == f"f{i}"
    sub.send_frame("SUBSCRIBE", [("id", "over"), ("destination", "/topic/fresh-4"), ("receipt", "o")])
    error = answer(sub)
    assert error.command == "ERROR" and error.headers["message"] == "Too many destinations", error.headers
    sub.close()
