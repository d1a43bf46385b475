"""STOMP fidelity: the protocol points where clients written against RabbitMQ and ActiveMQ notice a
difference (issue #20): CONNECTED's heart-beat, redelivered:false, cumulative NACK, receipts
inside transactions, the host header, headers a SEND may not carry, ERROR frames and limits, and
repeated acknowledgements. Each test asserts the frames a client receives."""

import threading

import pytest
import stomp

from conftest import ACCESS_KEY, SECRET_KEY
from test_stomp import WAIT, Collector, RawStomp, clients, expect_error_then_close, marker_received  # noqa: F401

MiB = 1024 * 1024


def connect_frame(raw, **headers):
    """Sends CONNECT with the root credentials and `headers` (None drops a header)."""
    base = {"accept-version": "1.2", "host": "localhost", "login": ACCESS_KEY, "passcode": SECRET_KEY}
    base.update(headers)
    raw.send_frame("CONNECT", {k: v for k, v in base.items() if v is not None}, escaped=False)


def receipts_until_disconnect(raw):
    """DISCONNECTs with a receipt; returns (command, receipt-id) of everything the server sent."""
    raw.send_frame("DISCONNECT", {"receipt": "bye"})
    return [(f.command, f.headers.get("receipt-id")) for f in raw.read_until_closed()]


# ---------------------------------------------------------------------------------------------
# 1. CONNECTED always carries heart-beat


@pytest.mark.parametrize("headers, expected", [
    ({"accept-version": None, "heart-beat": None}, ("1.0", "0,0")),  # a 1.0 client: no negotiation
    ({"accept-version": "1.0", "heart-beat": "5000,5000"}, ("1.0", "0,0")),  # 1.0 has no heart-beats
    ({"accept-version": "1.1"}, ("1.1", "0,0")),  # no heart-beat header: none agreed
    ({"heart-beat": "0,0"}, ("1.2", "0,0")),
    ({"heart-beat": "5000,0"}, ("1.2", "0,10000")),  # the client sends at the server's 10 s ask
    ({"heart-beat": "5000,20000"}, ("1.2", "20000,10000")),
])
def test_connected_always_carries_the_agreed_heart_beat(servd, headers, expected):
    raw = RawStomp(servd)
    connect_frame(raw, **headers)
    connected = raw.read_frame()
    assert connected.command == "CONNECTED", connected
    assert (connected.headers.get("version"), connected.headers.get("heart-beat")) == expected, connected
    raw.close()


# ---------------------------------------------------------------------------------------------
# 2. redelivered on every MESSAGE: test_stomp.py's NACK, ack-mode and group tests assert
# `redelivered:false` on first deliveries next to `true` on repeats.


# ---------------------------------------------------------------------------------------------
# 3. NACK in client mode is cumulative


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_in_client_mode_rejects_every_message_up_to_the_one_it_names(servd, clients, version):
    producer = clients(servd)
    consumer = clients(servd, version=version)
    consumer.subscribe("/queue/nack-through", id="s", ack="client")
    for i in range(4):
        producer.send("/queue/nack-through", f"m{i}")
    consumer.listener.wait_count(4)
    consumer.nack(consumer.messages[2])  # m0, m1 and m2 go back; m3 stays with the consumer
    consumer.listener.wait_count(7)
    repeats = consumer.messages[4:]
    assert sorted(m.body for m in repeats) == ["m0", "m1", "m2"], consumer.bodies()
    assert all(m.headers.get("redelivered") == "true" for m in repeats), [m.headers for m in repeats]
    marker_received(consumer, "/queue/nack-through", producer)
    assert consumer.bodies()[7:] == ["marker"], "m3 was not rejected, so it does not come again"
    assert consumer.listener.errors == []


# ---------------------------------------------------------------------------------------------
# 4. Receipts inside a transaction come at COMMIT


def test_a_send_in_a_transaction_is_receipted_at_commit_and_never_after_an_abort(servd, clients):
    consumer = clients(servd)
    consumer.subscribe("/queue/tx-receipts", id="s")
    raw = RawStomp(servd)
    raw.connect()
    raw.send_frame("BEGIN", {"transaction": "dropped"})
    raw.send_frame("SEND", {"destination": "/queue/tx-receipts", "transaction": "dropped", "receipt": "s-dropped"},
                   b"dropped")
    raw.send_frame("SEND", {"destination": "/queue/tx-receipts", "receipt": "plain"}, b"plain")
    raw.send_frame("ABORT", {"transaction": "dropped", "receipt": "abort"})
    raw.send_frame("BEGIN", {"transaction": "kept"})
    raw.send_frame("SEND", {"destination": "/queue/tx-receipts", "transaction": "kept", "receipt": "s-kept"},
                   b"kept")
    raw.send_frame("COMMIT", {"transaction": "kept", "receipt": "commit"})
    # The dropped SEND is never receipted; the committed one is, when durable, before its COMMIT.
    assert receipts_until_disconnect(raw) == [
        ("RECEIPT", "plain"), ("RECEIPT", "abort"), ("RECEIPT", "s-kept"), ("RECEIPT", "commit"), ("RECEIPT", "bye")]
    raw.close()
    consumer.listener.wait_count(2)
    assert consumer.bodies() == ["plain", "kept"]


def test_an_ack_in_a_transaction_is_receipted_at_commit(servd, clients):
    producer = clients(servd)
    producer.send("/queue/tx-ack-receipts", "work")
    raw = RawStomp(servd)
    raw.connect()
    raw.send_frame("SUBSCRIBE", {"destination": "/queue/tx-ack-receipts", "id": "s", "ack": "client-individual"})
    message = raw.read_frame()
    assert message.command == "MESSAGE", message
    raw.send_frame("BEGIN", {"transaction": "t"})
    raw.send_frame("ACK", {"id": message.headers["ack"], "transaction": "t", "receipt": "ack"})
    raw.send_frame("COMMIT", {"transaction": "t", "receipt": "commit"})
    assert receipts_until_disconnect(raw) == [("RECEIPT", "ack"), ("RECEIPT", "commit"), ("RECEIPT", "bye")]
    raw.close()


# ---------------------------------------------------------------------------------------------
# 5. The host header names a virtual host


@pytest.mark.parametrize("host", ["host://", "/orders", "stomp://localhost:61613", "local host"])
def test_a_virtual_host_this_broker_does_not_have_is_refused(servd, host):
    raw = RawStomp(servd)
    connect_frame(raw, host=host)
    error = expect_error_then_close(raw, f"Virtual host '{host}'")
    assert error.headers["message"] == "Bad CONNECT", error
    raw.close()


@pytest.mark.parametrize("host", [None, "", "/", "localhost", "127.0.0.1", "127.0.0.1:61613", "[::1]",
                                  "mq.example.com"])
def test_the_default_virtual_host_and_the_brokers_names_are_accepted(servd, host):
    raw = RawStomp(servd)
    connect_frame(raw, host=host)
    assert raw.read_frame().command == "CONNECTED"
    raw.close()


# ---------------------------------------------------------------------------------------------
# 6. Headers a SEND may not carry


@pytest.mark.parametrize("header", ["message-id", "subscription", "ack", "redelivered", "redelivery-count"])
@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_send_setting_a_header_only_the_server_sets_is_refused_for_that_reason(servd, clients, header,
                                                                                   in_transaction):
    bystander = clients(servd)
    bystander.subscribe("/queue/forged", id="s")
    raw = RawStomp(servd)
    raw.connect()
    # Everything else about this SEND is wrong too; the forbidden header is the reason given.
    headers = {header: "forged", "destination": "/bin/nowhere", "receipt": "r"}
    if in_transaction:
        headers["transaction"] = "never-begun"
    raw.send_frame("SEND", headers, b"forged")
    error = expect_error_then_close(raw, f"'{header}' is not allowed on 'SEND'")
    assert (error.headers["message"], error.headers.get("receipt-id")) == ("Invalid header", "r"), error
    raw.close()
    marker_received(bystander, "/queue/forged", bystander)
    assert bystander.bodies() == ["marker"]


# ---------------------------------------------------------------------------------------------
# 7. ERROR frames: summary, detail, close; limits


@pytest.mark.parametrize("frames, summary, detail", [
    ([("SEND", {"receipt": "r"})], "Missing header", "SEND must include a 'destination' header"),
    ([("SUBSCRIBE", {"destination": "/queue/x"})], "Missing header", "SUBSCRIBE must include an 'id' header"),
    ([("SUBSCRIBE", {"destination": "/queue/x", "id": "s", "ack": "sometimes"})], "Invalid header", "'ack'"),
    ([("BEGIN", {})], "Missing header", "BEGIN must include a 'transaction' header"),
    ([("COMMIT", {"transaction": "nope"})], "Bad transaction", "there is no transaction 'nope'"),
    ([("BEGIN", {"transaction": "t"}), ("BEGIN", {"transaction": "t"})], "Bad transaction", "already begun"),
    ([("UNSUBSCRIBE", {"id": "nope"})], "No subscription found", "nope"),
    ([("ACK", {})], "Missing header", "ACK must include the 'id' header"),
    ([("MESSAGE", {})], "Bad command", "a client may not send MESSAGE"),
    ([("CONNECT", {})], "Bad command", "CONNECT may be sent once"),
])
def test_errors_carry_a_capitalised_summary_and_the_detail_then_close(servd, frames, summary, detail):
    raw = RawStomp(servd)
    raw.connect()
    for command, headers in frames:
        raw.send_frame(command, headers)
    error = expect_error_then_close(raw, detail)
    assert error.headers["message"] == summary, error
    assert detail in error.body.decode(), error
    raw.close()


def test_bad_credentials_name_the_user_the_way_rabbitmq_does(servd):
    raw = RawStomp(servd)
    connect_frame(raw, login="mallory", passcode="guess")
    error = expect_error_then_close(raw, "Access refused for user 'mallory'")
    assert error.headers["message"] == "Bad CONNECT", error
    raw.close()


def test_a_16_mib_message_gets_an_error_naming_the_limit_and_how_to_raise_it(servd):
    listener = Collector()
    conn = stomp.Connection12([("127.0.0.1", servd.stomp_port)], heartbeats=(0, 0), timeout=WAIT)
    conn.set_listener("collector", listener)
    conn.connect(ACCESS_KEY, SECRET_KEY, wait=True)
    try:
        conn.send("/queue/huge", b"x" * (16 * MiB), receipt="huge")
    except Exception:
        pass  # the server may close before the client has written it all
    listener.wait(lambda c: c.errors, what="ERROR frame")
    error = listener.errors[0]
    assert error.headers.get("message") == "Frame too large", error.headers
    assert str(4 * MiB) in error.body and "--stomp-max-body-bytes" in error.body, error.body
    listener.wait(lambda c: c.disconnected, what="connection closed")
    assert listener.receipts == []


def test_a_body_without_content_length_over_the_limit_gets_the_error_too(start_servd):
    node = start_servd(args=["--stomp-max-body-bytes", "1024"]).wait_ready()
    raw = RawStomp(node)
    raw.connect()
    collected = {}
    reader = threading.Thread(target=lambda: collected.update(frames=raw.read_until_closed()), daemon=True)
    reader.start()
    try:
        raw.send_raw(b"SEND\ndestination:/queue/big\n\n" + b"x" * MiB + b"\x00")
    except OSError:
        pass
    reader.join(WAIT + 1)
    frames = collected.get("frames")
    assert frames is not None and [f.command for f in frames] == ["ERROR"], frames
    assert frames[0].headers["message"] == "Frame too large", frames[0]
    assert b"1024 bytes" in frames[0].body and b"--stomp-max-body-bytes" in frames[0].body, frames[0]
    raw.close()


def test_a_body_just_under_the_default_4_mib_limit_is_delivered(servd, clients):
    client = clients(servd)
    client.subscribe("/queue/large", id="s")
    body = "y" * (4 * MiB - 1024)
    client.send("/queue/large", body)
    client.listener.wait_count(1)
    assert client.messages[0].body == body


# ---------------------------------------------------------------------------------------------
# 8. Repeated acknowledgements


@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_acknowledging_a_message_again_is_a_receipted_no_op(servd, clients, mode):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/ack-twice", id="s", ack=mode)
    for i in range(3):
        producer.send("/queue/ack-twice", f"m{i}")
    consumer.listener.wait_count(3)
    first, _, third = consumer.messages
    consumer.ack(third)
    consumer.ack(third)  # a retry: each waits for its RECEIPT
    consumer.nack(third)
    consumer.ack(first)  # settled by the cumulative ACK in client mode; ACK of its own otherwise
    consumer.ack(first)
    marker_received(consumer, "/queue/ack-twice", producer)
    assert consumer.listener.errors == []
    expected = ["m0", "m1", "m2", "marker"]
    assert consumer.bodies() == expected, "nothing was rejected or delivered again"
