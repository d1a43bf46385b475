"""STOMP over WebSocket: @stomp/stompjs (with `ws`, as a browser page would run it) sends and
receives through /ws, and a wrong passcode is refused."""

import json
import subprocess
from pathlib import Path

from conftest import ACCESS_KEY, SECRET_KEY

JS = Path(__file__).parent / "js"


def run_client(node, passcode, count=5):
    url = f"ws://127.0.0.1:{node.stomp_ws_port}/ws"
    done = subprocess.run(["node", str(JS / "stomp_ws.mjs"), url, ACCESS_KEY, passcode, str(count)],
                          capture_output=True, text=True, timeout=60, cwd=JS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stompjs_over_websocket_sends_and_receives(servd):
    seen = run_client(servd, SECRET_KEY)
    assert seen["outcome"] == "ok", seen
    assert seen["version"] == "1.2"
    assert sorted(m["body"] for m in seen["received"]) == [f"from the browser {i}" for i in range(5)]
    # Acknowledged: nothing is left for the next consumer.
    again = run_client(servd, SECRET_KEY, count=1)
    assert [m["body"] for m in again["received"]] == ["from the browser 0"], "only the new message"


def test_stompjs_with_a_wrong_passcode_is_refused(servd):
    seen = run_client(servd, "wrong")
    assert seen["outcome"] in ("stomp-error", "closed"), seen
    assert seen["received"] == []
    if seen["outcome"] == "stomp-error":
        assert seen["message"] == "Bad CONNECT"
