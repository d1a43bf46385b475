"""STOMP durability: what was receipted survives a crash, and delayed messages a restart."""

import os
import signal
import time

from stomp.exception import StompException

from test_stomp import WAIT, Client

N = int(os.environ.get("STOMP_DURABILITY_N", "10000"))  # the count the issue names


def test_every_receipted_message_survives_a_crash(start_servd):
    node = start_servd().wait_ready()
    producer = Client(node)
    sent = [f"msg-{i:06d}" for i in range(N)]
    started = time.monotonic()
    killed = False
    attempted = 0
    try:
        for i, body in enumerate(sent):
            if i == N // 2:
                # SIGKILL halfway through the sends, from the sending thread itself (a killer
                # thread woke too late on a loaded machine and found all of them receipted),
                # once the node has receipted a tenth of them.
                producer.listener.wait(lambda c: len(c.receipts) >= N // 10, what="a tenth receipted")
                node.proc.send_signal(signal.SIGKILL)
                killed = True
            producer.conn.send("/queue/durable", body, receipt=body)
            attempted = i + 1
    except (StompException, OSError):
        pass
    assert killed
    node.proc.wait(timeout=WAIT)
    producer.listener.wait(lambda c: c.disconnected, what="producer sees the crash")
    receipted = set(producer.listener.receipts)
    assert receipted <= set(sent)
    assert 0 < len(receipted) < N, (
        f"the crash should land partway: {len(receipted)} of {N} receipted ({attempted} sent)")
    print(f"killed after {time.monotonic() - started:.2f}s: {len(receipted)} of {N} receipted, {attempted} sent")
    node.log.close()

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    consumer = Client(restarted)
    consumer.listener.on_each = lambda frame: consumer.conn.ack(frame.headers["ack"])
    consumer.subscribe("/queue/durable", id="drain", ack="client-individual")
    consumer.listener.wait(lambda c: receipted <= set(c.bodies()), timeout=30,
                           what=f"all {len(receipted)} receipted messages delivered")
    # Everything stored comes before this marker in the queue, so once it is here the drain is done.
    consumer.send("/queue/durable", "marker")
    consumer.listener.wait_body("marker")

    frames = consumer.messages
    seen = set()
    for frame in frames:
        if frame.body == "marker":
            continue
        assert frame.body in set(sent), frame.body
        if frame.body in seen:
            assert frame.headers.get("redelivered") == "true", (
                f"{frame.body} delivered again without redelivered:true: {frame.headers}")
        seen.add(frame.body)
    missing = receipted - seen
    assert not missing, f"{len(missing)} receipted messages lost, e.g. {sorted(missing)[:5]}"
    assert consumer.listener.errors == []
    consumer.close()


def test_a_delayed_message_survives_a_restart_and_arrives_when_due(start_servd):
    node = start_servd().wait_ready()
    producer = Client(node)
    sent_at = time.monotonic()
    producer.send("/queue/delayed", "three seconds later", headers={"delay": "3000"})
    producer.send("/queue/delayed", "right away")
    producer.close()
    assert node.stop(signal.SIGTERM) == 0, node.output()

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    consumer = Client(restarted)
    consumer.subscribe("/queue/delayed", id="s")
    consumer.listener.wait_body("right away")
    assert consumer.bodies() == ["right away"], "the delayed message is held past the restart"
    consumer.listener.wait_count(2)
    arrived = consumer.listener.arrival[1] - sent_at
    assert consumer.bodies() == ["right away", "three seconds later"]
    assert arrived >= 3.0 - 0.05, f"the delayed message arrived {arrived:.2f}s after it was sent"
    assert arrived <= 3.0 + WAIT
    consumer.close()
