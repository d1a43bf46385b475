"""servd across crashes, full disks and trace export."""

import http.server
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import free_port, run_servd


def test_sigkill_then_restart_keeps_identity(start_servd):
    first = start_servd().wait_ready()
    node_id = first.get("/v1/node").json()["id"]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)

    second = start_servd(data_dir=first.data_dir).wait_ready()
    assert second.get("/v1/node").json()["id"] == node_id
    assert second.stop() == 0


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, options) -> a tmpfs mounted under tmp_path (needs root; skips otherwise)."""
    mounted = []

    def mount(name, options):
        mount_point = tmp_path / name
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_read_only_data_dir_is_a_clear_error(tmpfs):
    read_only_disk = tmpfs("read-only", "size=4m,ro")
    result = run_servd(["--data-dir", str(read_only_disk / "data"), "--admin-addr", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 1, result
    assert "Read-only file system" in result.stderr and str(read_only_disk / "data") in result.stderr, result.stderr
    assert "panicked" not in result.stderr


def test_full_disk_is_a_clear_error(tmpfs):
    small_disk = tmpfs("small-disk", "size=4m")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    result = run_servd(["--data-dir", str(small_disk / "data"), "--admin-addr", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 1, result
    assert "No space left on device" in result.stderr and str(small_disk / "data") in result.stderr, result.stderr
    assert "panicked" not in result.stderr


class Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector that keeps what it receives."""

    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Collector.received.append((self.path, self.headers.get("content-type"), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_traces_are_exported_over_otlp_when_configured(start_servd):
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
        node = start_servd(env={"SERV_OTLP_ENDPOINT": endpoint}).wait_ready()
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        response = node.get("/v1/actors", headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
        assert response.status_code == 200
        assert node.stop() == 0, node.output()
    finally:
        collector.shutdown()
    exports = [r for r in Collector.received if r[0] == "/v1/traces"]
    assert exports, f"no OTLP export received: {Collector.received}"
    assert all(content_type == "application/x-protobuf" for _, content_type, _ in exports)
    assert any(bytes.fromhex(trace_id) in body for _, _, body in exports), "the request's trace was exported"


def test_admin_connections_are_capped_busy_ones_held_and_idle_ones_closed(start_servd):
    node = start_servd(args=["--admin-max-connections", "2", "--admin-idle-timeout-ms", "1500",
                             "--max-connections-per-ip", "100"]).wait_ready()
    # Two clients in the middle of a request are busy: a third waits for a slot.
    busy = [socket.create_connection(("127.0.0.1", node.admin_port)) for _ in range(2)]
    for sock in busy:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the head never ends
    time.sleep(0.7)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{node.admin}/healthz", timeout=0.5)  # both slots are taken, by busy clients
    for sock in busy:
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the server closes a connection that stalls"
        sock.close()
    assert requests.get(f"{node.admin}/healthz", timeout=5).status_code == 200, "a freed slot serves again"

    # Two that never send a byte are idle: a new client is admitted by closing the older one.
    idle = [socket.create_connection(("127.0.0.1", node.admin_port)) for _ in range(2)]
    time.sleep(0.7)
    assert requests.get(f"{node.admin}/healthz", timeout=5).status_code == 200, "served at once"
    idle[0].settimeout(5)
    assert idle[0].recv(1) == b"", "the longest-idle connection was closed for it"
    for sock in idle:
        sock.close()
    assert node.stop() == 0
