"""Starts real `servd` processes on free loopback ports for end-to-end tests.

The binary is $SERVD_BIN, or target/debug/servd under $CARGO_TARGET_DIR (or ./target).
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

# Root credentials every test node starts with (SERV_ACCESS_KEY / SERV_SECRET_KEY).
ACCESS_KEY = "SVTESTROOTKEY"
SECRET_KEY = "test-root-secret-key-0123456789"


def servd_bin() -> str:
    if os.environ.get("SERVD_BIN"):
        return os.environ["SERVD_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "servd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servd:
    """One running servd: its process, data dir, admin URL and token."""

    def __init__(self, data_dir: Path, args=(), env=None, token="test-admin-token", admin_addr="auto"):
        self.data_dir = data_dir
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        if admin_addr == "auto":
            admin_addr = f"127.0.0.1:{self.admin_port}"
        self.token = token
        self.s3_port = free_port()
        self.s3 = f"http://127.0.0.1:{self.s3_port}"
        self.log_path = data_dir.parent / f"servd-{self.admin_port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SERV_")}
        if token is not None:
            full_env["SERV_ADMIN_TOKEN"] = token
        full_env.setdefault("SERV_ACCESS_KEY", ACCESS_KEY)
        full_env.setdefault("SERV_SECRET_KEY", SECRET_KEY)
        full_env.update(env or {})
        self.args = [servd_bin(), "--data-dir", str(data_dir), "--s3-addr", f"127.0.0.1:{self.s3_port}", *args]
        if admin_addr is not None:
            self.args += ["--admin-addr", admin_addr]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"servd exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.admin}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"servd not ready within {timeout}s:\n{self.output()}")

    def get(self, path, token="default", **kwargs):
        headers = kwargs.pop("headers", {})
        token = self.token if token == "default" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(f"{self.admin}{path}", headers=headers, timeout=10, **kwargs)

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"servd did not stop within {timeout}s after {sig!r}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_servd(tmp_path):
    """Factory: start_servd(args=..., env=..., data_dir=...) -> Servd (not yet waited on).

    admin_addr="auto" picks a free port; None passes no --admin-addr (config decides).
    """
    started = []

    def start(args=(), env=None, data_dir=None, token="test-admin-token", admin_addr="auto"):
        node = Servd(data_dir or tmp_path / "data", args=args, env=env, token=token, admin_addr=admin_addr)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        node.log.close()


@pytest.fixture
def servd(start_servd):
    """A ready single node with the default test token."""
    return start_servd().wait_ready()


def run_servd(args, env=None, timeout=30):
    """Runs servd to completion (for commands that must fail fast)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SERV_")}
    full_env.update(env or {})
    return subprocess.run([servd_bin(), *args], capture_output=True, text=True, env=full_env, timeout=timeout)
