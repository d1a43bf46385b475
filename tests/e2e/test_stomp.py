"""STOMP: what a client of servd's broker sees, over stomp.py and raw sockets.

Each test starts its own node (fast) and names its destinations after itself. Waits are bounded
conditions on what the client received; the few checks that something does NOT arrive send a
later marker message and wait for it instead, or (where nothing can come after, as with a full
prefetch window) watch for a short bounded while.
"""

import socket
import threading
import time

import pytest
import requests
import stomp
from stomp.exception import ConnectFailedException

from conftest import ACCESS_KEY, SECRET_KEY, wait_until

WAIT = 10.0  # the longest any single wait in these tests may take


# ---------------------------------------------------------------------------------------------
# stomp.py helpers


class Collector(stomp.ConnectionListener):
    """Records what a connection receives; wait(...) blocks until a condition on it holds."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []  # stomp.utils.Frame, in arrival order
        self.arrival = []  # time.monotonic() of each message
        self.errors = []
        self.receipts = []
        self.receipt_headers = {}  # receipt-id -> the RECEIPT's headers
        self.connected = None
        self.disconnected = False
        self.on_each = None  # optional callback(frame) run for every MESSAGE

    def on_connected(self, frame):
        with self.cond:
            self.connected = frame
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.arrival.append(time.monotonic())
            self.cond.notify_all()
        if self.on_each is not None:
            self.on_each(frame)

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.append(frame.headers["receipt-id"])
            self.receipt_headers[frame.headers["receipt-id"]] = dict(frame.headers)
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait(self, predicate, timeout=WAIT, what="condition"):
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(
                    f"{what} not met within {timeout}s; messages={self.bodies()} "
                    f"errors={[(e.headers, e.body) for e in self.errors]} receipts={self.receipts}")

    def wait_receipt(self, receipt_id, timeout=WAIT):
        self.wait(lambda c: receipt_id in c.receipts, timeout, f"RECEIPT {receipt_id}")

    def wait_count(self, n, timeout=WAIT):
        self.wait(lambda c: len(c.messages) >= n, timeout, f"{n} messages")

    def wait_body(self, body, timeout=WAIT):
        self.wait(lambda c: body in c.bodies(), timeout, f"message {body!r}")

    def bodies(self):
        with self.cond:
            return [m.body for m in self.messages]

    def snapshot(self):
        with self.cond:
            return list(self.messages)


class Client:
    """A stomp.py connection with its Collector and helpers that wait for receipts."""

    def __init__(self, node, version="1.2", login=ACCESS_KEY, passcode=SECRET_KEY, heartbeats=(0, 0)):
        classes = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
        kwargs = {} if version == "1.0" else {"heartbeats": heartbeats}
        self.conn = classes[version]([("127.0.0.1", node.stomp_port)], timeout=WAIT, **kwargs)
        self.version = version
        self.listener = Collector()
        self.conn.set_listener("collector", self.listener)
        self.conn.connect(login, passcode, wait=True)
        self._next = 0

    def _receipt(self, prefix):
        self._next += 1
        return f"{prefix}-{self._next}"

    def send(self, destination, body, headers=None, wait=True, **extra):
        """SEND with a receipt, and wait for it unless told not to or inside a transaction (whose
        frames are receipted at COMMIT)."""
        receipt = self._receipt("send")
        self.conn.send(destination, body, headers=dict(headers or {}), receipt=receipt, **extra)
        if wait and "transaction" not in extra:
            self.listener.wait_receipt(receipt)
        return receipt

    def subscribe(self, destination, id, ack="auto", headers=None):
        receipt = self._receipt("sub")
        self.conn.subscribe(destination, id=id, ack=ack, headers=dict(headers or {}), receipt=receipt)
        self.listener.wait_receipt(receipt)

    def ack(self, frame, transaction=None):
        self._acknowledge(self.conn.ack, frame, transaction)

    def nack(self, frame, transaction=None):
        self._acknowledge(self.conn.nack, frame, transaction)

    def _acknowledge(self, method, frame, transaction):
        receipt = self._receipt("ack")
        if self.version == "1.2":
            method(frame.headers["ack"], transaction=transaction, receipt=receipt)
        elif self.version == "1.1":
            method(frame.headers["message-id"], frame.headers["subscription"], transaction=transaction,
                   receipt=receipt)
        else:
            method(frame.headers["message-id"], transaction=transaction, receipt=receipt)
        if transaction is None:  # inside a transaction, the receipt comes at COMMIT
            self.listener.wait_receipt(receipt)
        return receipt

    @property
    def messages(self):
        return self.listener.snapshot()

    def bodies(self):
        return self.listener.bodies()

    def close(self):
        """DISCONNECT and wait until the socket is gone."""
        if self.conn.is_connected():
            self.conn.disconnect(receipt=self._receipt("bye"))
            self.listener.wait(lambda c: c.disconnected, what="disconnect")


@pytest.fixture
def clients():
    """Factory: clients(node, **kwargs) -> Client; all are disconnected after the test."""
    made = []

    def make(node, **kwargs):
        client = Client(node, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        try:
            if client.conn.is_connected():
                client.conn.disconnect()
        except Exception:
            pass


def marker_received(client, destination, sender, body="marker"):
    """Sends `body` to `destination` through `sender` and waits until `client` receives it."""
    sender.send(destination, body)
    client.listener.wait_body(body)


def offset_of(frame):
    return int(frame.headers["message-id"].rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------------
# Raw-socket helpers


def escape(value, version="1.2"):
    if version == "1.0":
        return value
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    return value.replace("\r", "\\r") if version == "1.2" else value


def unescape(value):
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({"n": "\n", "r": "\r", "c": ":", "\\": "\\"}[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class RawFrame:
    def __init__(self, command, headers, body):
        self.command, self.headers, self.body = command, headers, body

    def __repr__(self):
        return f"RawFrame({self.command!r}, {self.headers!r}, {self.body[:200]!r})"


class RawStomp:
    """A STOMP client on a bare socket, for frames stomp.py will not send."""

    def __init__(self, node):
        self.sock = socket.create_connection(("127.0.0.1", node.stomp_port), timeout=WAIT)
        self.buf = b""
        self.eof = False

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, command, headers=(), body=b"", escaped=True):
        lines = [command]
        for name, value in dict(headers).items():
            lines.append(f"{name}:{escape(value) if escaped else value}")
        self.send_raw(("\n".join(lines) + "\n\n").encode() + body + b"\x00")

    def connect(self, heart_beat=None, version="1.2", login=ACCESS_KEY, passcode=SECRET_KEY):
        headers = {"accept-version": version, "host": "localhost", "login": login, "passcode": passcode}
        if heart_beat:
            headers["heart-beat"] = heart_beat
        self.send_frame("CONNECT", headers, escaped=False)
        frame = self.read_frame()
        assert frame is not None and frame.command == "CONNECTED", frame
        return frame

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"nothing more from the server in time; buffered {self.buf[:200]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"nothing more from the server in time; buffered {self.buf[:200]!r}")
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data

    def read_frame(self, timeout=WAIT):
        """The next frame (heart-beat EOLs skipped), or None once the server has closed."""
        deadline = time.monotonic() + timeout
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            end = self.buf.find(b"\n\n")
            if end >= 0:
                break
            if self.eof:
                assert not self.buf, f"connection closed mid-frame: {self.buf[:200]!r}"
                return None
            self._fill(deadline)
        head = self.buf[:end].decode().replace("\r\n", "\n").split("\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(unescape(name), unescape(value))
        rest = self.buf[end + 2:]
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) - (end + 2) < length + 1:
                assert not self.eof, "connection closed mid-body"
                self._fill(deadline)
            rest = self.buf[end + 2:]
            body, self.buf = rest[:length], rest[length + 1:]
        else:
            while b"\x00" not in self.buf[end + 2:]:
                assert not self.eof, "connection closed mid-body"
                self._fill(deadline)
            rest = self.buf[end + 2:]
            nul = rest.index(b"\x00")
            body, self.buf = rest[:nul], rest[nul + 1:]
        return RawFrame(head[0], headers, body)

    def read_until_closed(self, timeout=WAIT):
        """Every frame until the server closes the connection (fails if it does not)."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(timeout=max(0.0, deadline - time.monotonic()))
            if frame is None:
                return frames
            frames.append(frame)

    def close(self):
        self.sock.close()


def expect_error_then_close(raw, message_fragment):
    """The server answers with one ERROR frame whose message names the fault, then closes."""
    frames = raw.read_until_closed()
    commands = [f.command for f in frames]
    assert commands == ["ERROR"], frames
    error = frames[0]
    text = error.headers.get("message", "") + " " + error.body.decode(errors="replace")
    assert message_fragment in text, error
    return error


def admin_put(node, path, body):
    response = requests.put(f"{node.admin}{path}", headers={"Authorization": f"Bearer {node.token}"},
                            json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------
# Connecting


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_each_protocol_version_connects_sends_and_receives(servd, clients, version):
    client = clients(servd, version=version)
    connected = client.listener.connected
    assert connected.headers.get("version") == version, connected.headers
    # What was agreed: this client asked for none (1.0 has none), so none both ways.
    assert connected.headers.get("heart-beat") == "0,0", connected.headers
    client.subscribe("/queue/versions", id="v-sub", ack="client-individual")
    client.send("/queue/versions", "hello", headers={"x-colour": "blue"})
    client.listener.wait_count(1)
    message = client.messages[0]
    assert message.body == "hello"
    assert message.headers["x-colour"] == "blue"
    assert message.headers["destination"] == "/queue/versions"
    assert message.headers["subscription"] == "v-sub"
    assert message.headers["message-id"] == "v-sub:0"
    client.ack(message)  # 1.2: id=<ack>, 1.1: message-id + subscription, 1.0: message-id
    assert client.listener.errors == []
    client.close()

    # Acknowledged: a later subscriber on the queue does not get it again.
    other = clients(servd, version=version)
    other.subscribe("/queue/versions", id="v-sub-2")
    marker_received(other, "/queue/versions", other)
    assert other.bodies() == ["marker"]


def test_bad_credentials_are_refused(servd, clients):
    for login, passcode in [(ACCESS_KEY, "wrong-secret"), ("NOSUCHKEY", SECRET_KEY), (ACCESS_KEY, "")]:
        conn = stomp.Connection12([("127.0.0.1", servd.stomp_port)], heartbeats=(0, 0), timeout=WAIT)
        listener = Collector()
        conn.set_listener("collector", listener)
        with pytest.raises(ConnectFailedException):
            conn.connect(login, passcode, wait=True)
        listener.wait(lambda c: c.errors, what="ERROR frame")
        assert listener.errors[0].headers.get("message") == "Bad CONNECT", listener.errors[0].headers
        assert listener.errors[0].body == f"Access refused for user '{login}'", listener.errors[0].body
        listener.wait(lambda c: c.disconnected, what="connection closed")

    # The same over a raw socket: ERROR, then the server closes.
    raw = RawStomp(servd)
    raw.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "login": ACCESS_KEY,
                               "passcode": "nope"}, escaped=False)
    expect_error_then_close(raw, "Access refused for user")
    raw.close()

    # The right credentials still work.
    good = clients(servd)
    assert good.listener.connected is not None


def test_a_client_that_promised_heart_beats_and_goes_silent_is_closed(start_servd):
    # The agreed client-to-server interval is the larger of the client's offer and the server's
    # ask (STOMP 1.2), so the server asks for 1000 ms here to make the deadline ~2 s.
    servd = start_servd(args=["--stomp-heart-beat-ms", "1000"]).wait_ready()
    silent, beating = RawStomp(servd), RawStomp(servd)
    connected = silent.connect(heart_beat="1000,0")
    # What was agreed: the server sends none (the client asked for none), the client every 1000 ms.
    assert connected.headers.get("heart-beat") == "0,1000", connected.headers
    beating.connect(heart_beat="1000,0")
    started = time.monotonic()

    stop = threading.Event()

    def beat():
        while not stop.wait(0.3):
            try:
                beating.send_raw(b"\n")
            except OSError:
                return

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        try:
            frames = silent.read_until_closed(timeout=6.0)
        except AssertionError as error:
            raise AssertionError(
                "a client that promised heart-beats every 1000 ms (CONNECT heart-beat:1000,0) and then "
                f"went silent was still connected after 6 s (CONNECTED heart-beat: {connected.headers.get('heart-beat')})"
            ) from error
        closed_after = time.monotonic() - started
        assert frames == [], frames
        assert 1.0 <= closed_after <= 6.0, f"closed after {closed_after:.2f}s; expected ~2s (2 x 1000 ms)"
        # The client that kept beating is still served well past the silent one's deadline.
        wait_until(lambda: time.monotonic() - started > 3.0, timeout=WAIT, interval=0.05)
    finally:
        stop.set()
        beater.join(timeout=WAIT)
    beating.send_frame("SEND", {"destination": "/queue/beats", "receipt": "alive"}, b"still here")
    frame = beating.read_frame()
    assert frame is not None and frame.command == "RECEIPT" and frame.headers["receipt-id"] == "alive", frame
    silent.close()
    beating.close()


# ---------------------------------------------------------------------------------------------
# Destinations


def test_a_queue_gives_each_message_to_one_subscriber_a_topic_to_every_subscriber(servd, clients):
    producer = clients(servd)

    # Queue: two consumers share; nothing is delivered twice, nothing lost.
    q1, q2 = clients(servd), clients(servd)
    q1.subscribe("/queue/work", id="a", headers={"prefetch-count": "1"}, ack="client-individual")
    q2.subscribe("/queue/work", id="b", headers={"prefetch-count": "1"}, ack="client-individual")
    for q in (q1, q2):
        q.listener.on_each = lambda frame, q=q: q.conn.ack(frame.headers["ack"])
    sent = [f"job-{i}" for i in range(20)]
    for body in sent:
        producer.send("/queue/work", body)
    wait_until(lambda: len(q1.bodies()) + len(q2.bodies()) >= 20, timeout=WAIT,
               message=f"queue consumers got {q1.bodies()} and {q2.bodies()}")
    got1, got2 = q1.bodies(), q2.bodies()
    assert sorted(got1 + got2) == sorted(sent), (got1, got2)
    assert not set(got1) & set(got2)
    assert got1 and got2, f"both consumers of a queue take part: {got1} / {got2}"
    for q in (q1, q2):
        offsets = [offset_of(m) for m in q.messages]
        assert offsets == sorted(offsets), "one consumer sees a queue in order"

    # Topic: every subscription gets every message published after it subscribed.
    producer.send("/topic/news", "before anyone listened")
    t1, t2 = clients(servd), clients(servd)
    t1.subscribe("/topic/news", id="t1")
    t2.subscribe("/topic/news", id="t2")
    news = [f"news-{i}" for i in range(10)]
    for body in news:
        producer.send("/topic/news", body)
    for t in (t1, t2):
        t.listener.wait_count(10)
    assert t1.bodies() == news and t2.bodies() == news

    # A queue keeps what was sent before anyone subscribed (it starts at the earliest message).
    producer.send("/queue/early", "waiting")
    late = clients(servd)
    late.subscribe("/queue/early", id="late")
    late.listener.wait_body("waiting")


def test_message_frames_carry_destination_subscription_ids_and_headers(servd, clients):
    client = clients(servd)
    client.subscribe("/queue/ids", id="sub-x", ack="client")
    client.send("/queue/ids", "zero", headers={"x-order": "17", "content-type": "text/plain"})
    client.send("/queue/ids", "one")
    client.listener.wait_count(2)
    first, second = client.messages
    for frame, offset in [(first, 0), (second, 1)]:
        assert frame.headers["destination"] == "/queue/ids"
        assert frame.headers["subscription"] == "sub-x"
        assert frame.headers["message-id"] == f"sub-x:{offset}"
        assert frame.headers["ack"] == frame.headers["message-id"]
        assert frame.headers.get("redelivered") == "false", frame.headers
    assert first.headers["x-order"] == "17" and first.headers["content-type"] == "text/plain"
    assert "x-order" not in second.headers
    assert (first.body, second.body) == ("zero", "one")


@pytest.mark.parametrize("destination", ["/queue/has space", "/queue/", "/bin/x", "queue", "/queue/a/b"])
def test_an_invalid_destination_is_an_error_and_other_clients_are_unaffected(servd, clients, destination):
    bystander = clients(servd)
    bystander.subscribe("/queue/ok", id="ok")
    raw = RawStomp(servd)
    raw.connect()
    raw.send_frame("SEND", {"destination": destination, "receipt": "r"}, b"body")
    assert expect_error_then_close(raw, destination).headers["message"] == "Invalid destination"
    raw.close()
    bystander.send("/queue/ok", "still working")
    bystander.listener.wait_body("still working")


# ---------------------------------------------------------------------------------------------
# Acknowledgement modes


def test_auto_ack_messages_are_not_delivered_again(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/auto", id="s")
    for i in range(3):
        producer.send("/queue/auto", f"m{i}")
    consumer.listener.wait_count(3)
    consumer.close()

    again = clients(servd)
    again.subscribe("/queue/auto", id="s")
    marker_received(again, "/queue/auto", producer)
    assert again.bodies() == ["marker"]


def test_client_ack_acknowledges_everything_up_to_the_message(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/cumulative", id="s", ack="client")
    for i in range(5):
        producer.send("/queue/cumulative", f"m{i}")
    consumer.listener.wait_count(5)
    consumer.ack(consumer.messages[2])  # m0, m1 and m2
    consumer.close()

    again = clients(servd)
    again.subscribe("/queue/cumulative", id="s2", ack="client")
    again.listener.wait_count(2)
    marker_received(again, "/queue/cumulative", producer)
    assert again.bodies() == ["m3", "m4", "marker"]
    for frame in again.messages[:2]:
        assert frame.headers.get("redelivered") == "true", frame.headers
        assert frame.headers.get("redelivery-count") == "1", frame.headers
    assert again.messages[2].headers.get("redelivered") == "false", again.messages[2].headers


def test_client_individual_ack_acknowledges_only_that_message(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/individual", id="s", ack="client-individual")
    for i in range(5):
        producer.send("/queue/individual", f"m{i}")
    consumer.listener.wait_count(5)
    messages = consumer.messages
    consumer.ack(messages[1])
    consumer.ack(messages[3])
    consumer.close()

    again = clients(servd)
    again.subscribe("/queue/individual", id="s2", ack="client-individual")
    again.listener.wait_count(3)
    marker_received(again, "/queue/individual", producer)
    assert sorted(again.bodies()) == ["m0", "m2", "m4", "marker"]
    for frame in again.messages:
        if frame.body != "marker":
            assert frame.headers.get("redelivered") == "true", frame.headers
            assert frame.headers.get("redelivery-count") == "1", frame.headers


def test_nack_redelivers_with_a_redelivered_marker_and_count(servd, clients):
    client = clients(servd)
    client.subscribe("/queue/retry", id="s", ack="client-individual")
    client.send("/queue/retry", "flaky")
    client.listener.wait_count(1)
    first = client.messages[0]
    assert first.headers.get("redelivered") == "false" and "redelivery-count" not in first.headers
    client.nack(first)
    client.listener.wait_count(2)
    second = client.messages[1]
    assert second.body == "flaky"
    assert second.headers.get("redelivered") == "true", second.headers
    assert second.headers.get("redelivery-count") == "1", second.headers
    assert offset_of(second) == offset_of(first)
    client.nack(second)
    client.listener.wait_count(3)
    third = client.messages[2]
    assert third.headers.get("redelivery-count") == "2", third.headers
    client.ack(third)
    # Acknowledged now: nothing more of it.
    marker_received(client, "/queue/retry", client)
    assert client.bodies() == ["flaky", "flaky", "flaky", "marker"]


def test_a_message_nacked_max_deliveries_times_goes_to_the_dead_letter_queue(servd, clients):
    assert admin_put(servd, "/v1/topics/queue/jobs", {"max_deliveries": 2})["config"]["max_deliveries"] == 2
    client = clients(servd)
    client.subscribe("/queue/jobs", id="s", ack="client-individual")
    client.send("/queue/jobs", "poison", headers={"x-job": "42"})
    client.listener.wait_count(1)
    client.nack(client.messages[0])
    client.listener.wait_count(2)
    assert client.messages[1].headers.get("redelivery-count") == "1"
    client.nack(client.messages[1])

    dlq = clients(servd)
    dlq.subscribe("/queue/jobs.dlq", id="d", ack="client-individual")
    dlq.listener.wait_count(1)
    dead = dlq.messages[0]
    assert dead.body == "poison"
    assert dead.headers["destination"] == "/queue/jobs.dlq"
    assert dead.headers.get("dlq-original-destination") == "/queue/jobs", dead.headers
    assert dead.headers.get("dlq-reason"), dead.headers
    assert dead.headers.get("x-job") == "42", "the message keeps its headers in the dead-letter queue"
    dlq.ack(dead)

    # It left the queue: only the marker comes after two deliveries.
    marker_received(client, "/queue/jobs", client)
    assert client.bodies() == ["poison", "poison", "marker"]


def test_requeued_dead_letters_go_back_to_their_queue_and_leave_the_dead_letter_queue(servd, clients):
    assert admin_put(servd, "/v1/topics/queue/retry", {"max_deliveries": 1})["config"]["max_deliveries"] == 1
    worker = clients(servd)
    worker.subscribe("/queue/retry", id="w", ack="client-individual")
    for body in ("first", "second"):
        worker.send("/queue/retry", body, headers={"x-job": body})
        worker.listener.wait_body(body)
        worker.nack([m for m in worker.messages if m.body == body][0])
    def held(name):
        info = servd.get(f"/v1/topics/{name}").json()
        return info.get("next_offset", 0) - info.get("first_offset", 0)

    wait_until(lambda: held("queue/retry.dlq") == 2, timeout=10, message="both messages are dead-lettered")
    worker.conn.disconnect()

    post = lambda body: requests.post(f"{servd.admin}/v1/dlq/requeue", data=body, timeout=10,  # noqa: E731
                                      headers={"Authorization": f"Bearer {servd.token}"})
    assert post('{"dlq": "queue/retry"}').json()["code"] == "InvalidParameter", "only a .dlq topic"
    assert post('{"dlq": "queue/nothing.dlq"}').status_code == 404
    done = post('{"dlq": "queue/retry.dlq"}')
    assert done.status_code == 200 and done.json() == {"dlq": "queue/retry.dlq", "requeued": 2}
    assert held("queue/retry.dlq") == 0, "they left the dead-letter queue"

    again = clients(servd)
    again.subscribe("/queue/retry", id="a", ack="client-individual")
    again.listener.wait_count(2)
    assert again.bodies() == ["first", "second"], "back in their queue, in order"
    assert [m.headers.get("x-job") for m in again.messages] == ["first", "second"]
    assert not any("dlq-original-destination" in m.headers for m in again.messages)
    entries = servd.get("/v1/audit").json()["entries"]
    assert (entries[0]["action"], entries[0]["target"], entries[0]["outcome"]) == (
        "requeue", "queue/retry.dlq", "ok: 2 message(s)")


def test_an_unacknowledged_message_goes_to_another_subscriber_when_its_holder_disconnects(servd, clients):
    producer = clients(servd)
    holder = clients(servd)
    holder.subscribe("/queue/handover", id="h", ack="client-individual")
    producer.send("/queue/handover", "in flight")
    holder.listener.wait_count(1)
    waiting = clients(servd)
    waiting.subscribe("/queue/handover", id="w", ack="client-individual")
    holder.close()
    waiting.listener.wait_count(1)
    frame = waiting.messages[0]
    assert frame.body == "in flight"
    assert frame.headers.get("redelivered") == "true", frame.headers


# ---------------------------------------------------------------------------------------------
# Flow control


def test_prefetch_count_limits_unacknowledged_messages_in_flight(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/prefetch", id="s", ack="client-individual", headers={"prefetch-count": "2"})
    for i in range(5):
        producer.send("/queue/prefetch", f"m{i}")
    consumer.listener.wait_count(2)

    def no_more_than(n):
        # Absence over a short bounded window: nothing else can arrive while the window is full.
        deadline = time.monotonic() + 0.7
        with consumer.listener.cond:
            while time.monotonic() < deadline:
                assert len(consumer.listener.messages) <= n, consumer.listener.messages
                consumer.listener.cond.wait(max(0.0, deadline - time.monotonic()))
            assert len(consumer.listener.messages) == n, consumer.bodies()

    no_more_than(2)
    consumer.ack(consumer.messages[0])
    consumer.listener.wait_count(3)
    no_more_than(3)
    for frame in consumer.messages[1:3]:
        consumer.ack(frame)
    consumer.listener.wait_count(5)
    assert consumer.bodies() == [f"m{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------
# Dedup, delay, transactions


def test_a_repeated_dedup_id_is_receipted_but_stored_once(servd, clients):
    client = clients(servd)
    client.subscribe("/queue/dedup", id="s")
    client.send("/queue/dedup", "first", headers={"dedup-id": "order-1"})
    client.send("/queue/dedup", "repeat", headers={"dedup-id": "order-1"})  # receipted, not stored
    client.send("/queue/dedup", "again", headers={"dedup-id": "order-1"})
    client.send("/queue/dedup", "second", headers={"dedup-id": "order-2"})
    marker_received(client, "/queue/dedup", client)
    assert client.bodies() == ["first", "second", "marker"]
    assert client.messages[0].headers.get("dedup-id") == "order-1"


def test_delayed_messages_are_held_until_due(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/later", id="s")
    sent_at = time.monotonic()
    producer.send("/queue/later", "in 1.5 s", headers={"delay": "1500"})
    due_ms = int(time.time() * 1000) + 2000
    producer.send("/queue/later", "at due time", headers={"deliver-at": str(due_ms)})
    due_at = time.monotonic() + (due_ms - time.time() * 1000) / 1000
    producer.send("/queue/later", "now")
    consumer.listener.wait_body("now")
    assert consumer.bodies() == ["now"], "delayed messages are not delivered before they are due"

    consumer.listener.wait_count(3)
    arrived = dict(zip(consumer.bodies(), consumer.listener.arrival))
    tolerance = 0.05  # the node and the test share one clock
    assert arrived["in 1.5 s"] >= sent_at + 1.5 - tolerance, arrived["in 1.5 s"] - sent_at
    assert arrived["at due time"] >= due_at - tolerance, arrived["at due time"] - due_at
    assert sorted(consumer.bodies()) == sorted(["now", "in 1.5 s", "at due time"])


def test_a_committed_transaction_delivers_and_an_aborted_one_discards(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/tx", id="s")

    producer.conn.begin("tx-1")
    producer.send("/queue/tx", "tx-1 a", transaction="tx-1")
    producer.send("/queue/tx", "tx-1 b", transaction="tx-1")
    marker_received(consumer, "/queue/tx", producer, "outside")
    assert consumer.bodies() == ["outside"], "nothing of an open transaction is delivered"
    receipt = "commit-1"
    producer.conn.commit("tx-1", receipt=receipt)
    producer.listener.wait_receipt(receipt)
    consumer.listener.wait_count(3)
    assert consumer.bodies() == ["outside", "tx-1 a", "tx-1 b"]

    producer.conn.begin("tx-2")
    producer.send("/queue/tx", "tx-2 a", transaction="tx-2")
    producer.conn.abort("tx-2", receipt="abort-2")
    producer.listener.wait_receipt("abort-2")
    marker_received(consumer, "/queue/tx", producer, "after abort")
    assert consumer.bodies() == ["outside", "tx-1 a", "tx-1 b", "after abort"]
    assert producer.listener.errors == []


def test_acks_in_a_transaction_count_only_when_committed(servd, clients):
    producer = clients(servd)
    consumer = clients(servd)
    consumer.subscribe("/queue/txack", id="s", ack="client-individual")
    producer.send("/queue/txack", "kept")
    producer.send("/queue/txack", "acked")
    consumer.listener.wait_count(2)
    kept, acked = consumer.messages
    consumer.conn.begin("aborted")
    consumer.ack(kept, transaction="aborted")
    consumer.conn.abort("aborted", receipt="abort")
    consumer.listener.wait_receipt("abort")
    consumer.conn.begin("committed")
    consumer.ack(acked, transaction="committed")
    consumer.conn.commit("committed", receipt="commit")
    consumer.listener.wait_receipt("commit")
    consumer.close()

    again = clients(servd)
    again.subscribe("/queue/txack", id="s2", ack="client-individual")
    again.listener.wait_count(1)
    marker_received(again, "/queue/txack", producer)
    assert again.bodies() == ["kept", "marker"]
    assert again.messages[0].headers.get("redelivered") == "true"


def test_every_frame_with_a_receipt_header_is_receipted(servd):
    raw = RawStomp(servd)
    raw.connect()
    frames = [
        ("SUBSCRIBE", {"destination": "/queue/receipts", "id": "s", "ack": "client-individual"}),
        ("BEGIN", {"transaction": "t"}),
        ("SEND", {"destination": "/queue/receipts", "transaction": "t"}),
        ("COMMIT", {"transaction": "t"}),
    ]
    for i, (command, headers) in enumerate(frames):
        raw.send_frame(command, {**headers, "receipt": f"r{i}"}, b"payload" if command == "SEND" else b"")
    seen, message = [], None
    while len(seen) < len(frames) or message is None:
        frame = raw.read_frame()
        assert frame is not None, f"closed early; receipts so far {seen}"
        if frame.command == "RECEIPT":
            seen.append(frame.headers["receipt-id"])
        elif frame.command == "MESSAGE":
            message = frame
        else:
            raise AssertionError(frame)
    assert seen == [f"r{i}" for i in range(len(frames))]
    assert message.body == b"payload"
    raw.send_frame("ACK", {"id": message.headers["ack"], "receipt": "ack"})
    raw.send_frame("UNSUBSCRIBE", {"id": "s", "receipt": "unsub"})
    raw.send_frame("DISCONNECT", {"receipt": "bye"})
    rest = raw.read_until_closed()
    assert [(f.command, f.headers.get("receipt-id")) for f in rest] == [
        ("RECEIPT", "ack"), ("RECEIPT", "unsub"), ("RECEIPT", "bye")]
    raw.close()


# ---------------------------------------------------------------------------------------------
# Durable consumer groups and replay


def test_members_of_a_durable_group_share_a_topic(servd, clients):
    producer = clients(servd)
    members = [clients(servd), clients(servd)]
    for i, member in enumerate(members):
        member.subscribe("/topic/orders", id=f"m{i}", ack="client-individual",
                         headers={"group": "billing", "prefetch-count": "1"})
        member.listener.on_each = lambda frame, m=member: m.conn.ack(frame.headers["ack"])
    audit = clients(servd)
    audit.subscribe("/topic/orders", id="audit")  # no group: a subscription of its own
    sent = [f"order-{i}" for i in range(20)]
    for body in sent:
        producer.send("/topic/orders", body)
    wait_until(lambda: sum(len(m.bodies()) for m in members) >= 20, timeout=WAIT,
               message=f"group members got {[m.bodies() for m in members]}")
    got = [m.bodies() for m in members]
    assert sorted(got[0] + got[1]) == sorted(sent), got
    assert not set(got[0]) & set(got[1]), got
    assert got[0] and got[1], f"each member gets a share: {got}"
    audit.listener.wait_count(20)
    assert audit.bodies() == sent, "a subscription outside the group still gets everything"


def test_a_durable_group_resumes_where_it_left_off(servd, clients):
    producer = clients(servd)
    member = clients(servd)
    member.subscribe("/topic/ledger", id="m", ack="client-individual", headers={"group": "books"})
    for i in range(6):
        producer.send("/topic/ledger", f"entry-{i}")
    member.listener.wait_count(6)
    for frame in member.messages[:3]:
        member.ack(frame)
    member.close()

    # Published while the group has no member: kept for it.
    producer.send("/topic/ledger", "entry-6")
    producer.send("/topic/ledger", "entry-7")

    back = clients(servd)
    back.subscribe("/topic/ledger", id="m", ack="client-individual", headers={"group": "books"})
    back.listener.wait_count(5)
    marker_received(back, "/topic/ledger", producer)
    by_body = {m.body: m for m in back.messages}
    assert sorted(by_body) == ["entry-3", "entry-4", "entry-5", "entry-6", "entry-7", "marker"], back.bodies()
    assert len(back.messages) == 6, back.bodies()
    for body in ["entry-3", "entry-4", "entry-5"]:
        assert by_body[body].headers.get("redelivered") == "true", by_body[body].headers
    for body in ["entry-6", "entry-7", "marker"]:
        assert by_body[body].headers.get("redelivered") == "false", by_body[body].headers


def test_a_new_group_replays_from_the_offset_it_names(servd, clients):
    producer = clients(servd)
    for i in range(3):
        producer.send("/topic/history", f"h{i}")
    after_ms = int(time.time() * 1000) + 1
    wait_until(lambda: time.time() * 1000 >= after_ms + 1, timeout=WAIT, interval=0.001)
    for i in range(3, 6):
        producer.send("/topic/history", f"h{i}")
    everything = [f"h{i}" for i in range(6)]

    earliest = clients(servd)
    earliest.subscribe("/topic/history", id="e", headers={"group": "replay", "offset": "earliest"})
    earliest.listener.wait_count(6)
    assert earliest.bodies() == everything
    assert [offset_of(m) for m in earliest.messages] == list(range(6))

    from_three = clients(servd)
    from_three.subscribe("/topic/history", id="o", headers={"group": "from-three", "offset": "3"})
    from_time = clients(servd)
    from_time.subscribe("/topic/history", id="t", headers={"group": "from-time", "offset": str(after_ms)})
    plain = clients(servd)
    plain.subscribe("/topic/history", id="p", headers={"offset": "earliest"})  # no group: still replays
    latest = clients(servd)
    latest.subscribe("/topic/history", id="l", headers={"group": "from-now"})  # topics default to latest
    from_three.listener.wait_count(3)
    from_time.listener.wait_count(3)
    plain.listener.wait_count(6)
    producer.send("/topic/history", "new")
    for client in (earliest, from_three, from_time, plain, latest):
        client.listener.wait_body("new")
    assert from_three.bodies() == ["h3", "h4", "h5", "new"]
    assert from_three.messages[0].headers["message-id"] == "o:3"
    assert from_time.bodies() == ["h3", "h4", "h5", "new"]
    assert plain.bodies() == everything + ["new"]
    assert latest.bodies() == ["new"]

    # An existing group keeps its position: offset only places a NEW group.
    earliest.close()
    rejoin = clients(servd)
    rejoin.subscribe("/topic/history", id="e", headers={"group": "replay", "offset": "earliest"})
    marker_received(rejoin, "/topic/history", producer)
    assert rejoin.bodies() == ["marker"]


# ---------------------------------------------------------------------------------------------
# Bad input


BAD_INPUTS = {
    "unknown command": (b"FROBNICATE\ndestination:/queue/x\n\nbody\x00", "unknown command"),
    "garbage bytes": (bytes(range(256))[::-1] * 4, ""),
    "oversized body": (None, "--stomp-max-body-bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_frames_get_an_error_and_a_close_while_others_keep_working(servd, clients, case):
    data, fragment = BAD_INPUTS[case]
    bystander = clients(servd)
    bystander.subscribe("/queue/calm", id="calm")
    raw = RawStomp(servd)
    raw.connect()
    if data is None:  # a body over the 4 MiB default limit, announced by content-length
        body = b"x" * (4 * 1024 * 1024 + 1)
        head = f"SEND\ndestination:/queue/big\ncontent-length:{len(body)}\n\n".encode()
        collected = {}

        def read():
            try:
                collected["frames"] = raw.read_until_closed()
            except Exception as error:  # reported below
                collected["error"] = error

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            raw.send_raw(head + body + b"\x00")
        except OSError:
            pass  # the server may close before it has read everything
        reader.join(WAIT + 1)
        assert "error" not in collected, collected
        frames = collected["frames"]
        assert [f.command for f in frames] == ["ERROR"], frames
        assert fragment in frames[0].headers.get("message", "") + frames[0].body.decode(errors="replace"), frames
    else:
        raw.send_raw(data)
        error = expect_error_then_close(raw, fragment)
        assert error.headers.get("message"), error
    raw.close()
    bystander.send("/queue/calm", "unaffected")
    bystander.listener.wait_body("unaffected")


def test_garbage_before_connect_gets_an_error_and_a_close(servd):
    raw = RawStomp(servd)
    raw.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\n\n\x00")  # e.g. a TLS hello
    frames = raw.read_until_closed()
    assert [f.command for f in frames] == ["ERROR"], frames
    raw.close()


@pytest.mark.parametrize("ack_id, summary", [
    ("s:999", "Unknown message"), ("nosuch:0", "Subscription not found"), ("not-an-id", "Invalid header")])
def test_an_ack_for_an_unknown_message_is_an_error(servd, clients, ack_id, summary):
    bystander = clients(servd)
    bystander.subscribe("/queue/calm", id="calm")
    raw = RawStomp(servd)
    raw.connect()
    raw.send_frame("SUBSCRIBE", {"destination": "/queue/acks", "id": "s", "ack": "client-individual",
                                 "receipt": "sub"})
    receipt = raw.read_frame()
    assert receipt.command == "RECEIPT", receipt
    raw.send_frame("ACK", {"id": ack_id, "receipt": "ack"})
    error = expect_error_then_close(raw, summary)
    assert error.headers["message"] == summary, error
    assert error.headers.get("receipt-id") in (None, "ack"), error
    raw.close()
    bystander.send("/queue/calm", "unaffected")
    bystander.listener.wait_body("unaffected")


# ---------------------------------------------------------------------------------------------
# Admin view


def test_the_admin_api_lists_destination_and_group_actors(servd, clients):
    client = clients(servd)
    client.subscribe("/queue/inspect", id="s", ack="client-individual")
    for i in range(3):
        client.send("/queue/inspect", f"m{i}")
    client.listener.wait_count(3)
    client.ack(client.messages[0])

    def actors(kind):
        response = servd.get("/v1/actors", params={"kind": kind})
        assert response.status_code == 200, response.text
        return {a["key"]: a for a in response.json()["actors"]}

    topics = actors("topic")
    assert "topic/queue/inspect" in topics, topics
    assert "messages=3" in topics["topic/queue/inspect"]["state"], topics
    groups = actors("group")
    mine = [a for key, a in groups.items() if "queue/inspect" in key]
    assert len(mine) == 1, groups
    state = mine[0]["state"]
    for part in ["cursor=3", "outstanding=2", "in_flight=2", "members=1", "dead_lettered=0"]:
        assert part in state, state
