"""Starts real `servd` processes on free loopback ports for end-to-end tests.

The binary is $SERVD_BIN, or target/debug/servd under $CARGO_TARGET_DIR (or ./target).
"""

import itertools
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
CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef"


def servd_bin() -> str:
    if os.environ.get("SERVD_BIN"):
        return os.environ["SERVD_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "servd")


TEST_PORTS = range(20000, 32000)
_NEXT_PORT = itertools.count((os.getpid() * 7919) % len(TEST_PORTS))


def free_port() -> int:
    """A loopback port that is free for both TCP and UDP and not among the last 12,000 this test run handed out.

    Ports come from below the kernel's ephemeral range (32768+), so a client connection can't take one
    between the check and servd's bind, and two calls never return the same port (the kernel's own
    `bind(0)` may hand a just-closed port out twice, which made nodes collide)."""
    for _ in TEST_PORTS:
        port = TEST_PORTS[next(_NEXT_PORT) % len(TEST_PORTS)]
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free loopback port left in {TEST_PORTS}")


class Servd:
    """One running servd: its process, data dir, admin URL and token."""

    def __init__(self, data_dir: Path, args=(), env=None, token="test-admin-token", admin_addr="auto",
                 host="127.0.0.1", wrap=()):
        """`host` is the address every listener binds; `wrap` prefixes the command line (e.g.
        `ip netns exec NS` to run the node on another network host)."""
        self.data_dir = data_dir
        self.host = host
        self.admin_port = free_port()
        self.admin = f"http://{host}:{self.admin_port}"
        if admin_addr == "auto":
            admin_addr = f"{host}:{self.admin_port}"
        self.token = token
        self.s3_port = free_port()
        self.s3 = f"http://{host}:{self.s3_port}"
        self.stomp_port = free_port()
        self.stomp_ws_port = free_port()
        self.http_port = free_port()
        self.http = f"http://{host}:{self.http_port}"
        self.mesh_port = free_port()
        self.log_path = data_dir.parent / f"servd-{self.admin_port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SERV_")}
        if token is not None:
            full_env["SERV_ADMIN_TOKEN"] = token
        full_env.setdefault("SERV_ACCESS_KEY", ACCESS_KEY)
        full_env.setdefault("SERV_SECRET_KEY", SECRET_KEY)
        full_env.setdefault("SERV_CLUSTER_SECRET", CLUSTER_SECRET)
        full_env.update(env or {})
        self.args = [*wrap, servd_bin(), "--data-dir", str(data_dir), "--s3-addr", f"{host}:{self.s3_port}",
                     "--stomp-addr", f"{host}:{self.stomp_port}",
                     "--stomp-ws-addr", f"{host}:{self.stomp_ws_port}",
                     "--http-addr", f"{host}:{self.http_port}",
                     "--mesh-addr", f"{host}:{self.mesh_port}", *args]
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

    def start(args=(), env=None, data_dir=None, token="test-admin-token", admin_addr="auto", host="127.0.0.1",
              wrap=()):
        node = Servd(data_dir or tmp_path / "data", args=args, env=env, token=token, admin_addr=admin_addr,
                     host=host, wrap=wrap)
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


# ---------------------------------------------------------------------------------------------
# S3 helpers: boto3 clients, signed raw requests, metrics.

import hashlib  # noqa: E402
import types  # noqa: E402
import uuid  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from urllib.parse import quote, urlencode  # noqa: E402

import boto3  # noqa: E402
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

REGION = "us-east-1"


def s3_client(node, access=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=None, verify=None, **config):
    """A boto3 S3 client for `node`: path-style, SigV4, no retries (so no error is hidden).
    `endpoint_url` replaces the node's plain S3 address (e.g. with its https:// one), and `verify`
    names the CA bundle that checks its certificate."""
    options = {
        "region_name": REGION,
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "retries": {"max_attempts": 1, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 120,
        "max_pool_connections": 32,
    }
    options.update(config)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or node.s3, verify=verify, aws_access_key_id=access,
        aws_secret_access_key=secret, config=Config(**options))


def unique_bucket(prefix="e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3(servd):
    """A boto3 client for the `servd` node."""
    return s3_client(servd)


@pytest.fixture
def bucket(s3):
    """A freshly created, uniquely named bucket on the `servd` node."""
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    return name


def s3_error(call, *args, **kwargs):
    """Runs a boto3 call that must fail; returns (HTTP status, S3 error code)."""
    try:
        call(*args, **kwargs)
    except ClientError as error:
        return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]
    raise AssertionError(f"{getattr(call, '__name__', call)} succeeded but should have failed")


def signed_headers(node, method, path, *, params=None, data=b"", headers=None, access=ACCESS_KEY,
                   secret=SECRET_KEY, sign_payload=True):
    """(url, headers) of a SigV4-signed request to `node`'s S3 edge, headers including Host.

    `path` is already URL-encoded ("/bucket/key"); `params` is a dict (value "" for a bare
    sub-resource like ?uploads). sign_payload=False signs x-amz-content-sha256: UNSIGNED-PAYLOAD.
    """
    url = node.s3 + path
    if params:
        # %20 for a space, as SigV4's canonical query has it (urlencode's default "+" is a plus).
        url += "?" + urlencode(params, quote_via=quote)
    request = AWSRequest(method=method, url=url, data=data, headers=dict(headers or {}))
    request.context["client_config"] = types.SimpleNamespace(s3={"payload_signing_enabled": sign_payload})
    S3SigV4Auth(Credentials(access, secret), "s3", REGION).add_auth(request)
    signed = dict(request.headers.items())
    signed["Host"] = f"127.0.0.1:{node.s3_port}"
    return url, signed


def signed_request(node, method, path, *, data=b"", timeout=30, **kwargs):
    """Sends a SigV4-signed request (see signed_headers) with `requests`."""
    url, headers = signed_headers(node, method, path, data=data, **kwargs)
    return requests.request(method, url, data=data, headers=headers, timeout=timeout)


def error_code(response) -> str:
    """The <Code> of an S3 XML error body (fails if the body is not one)."""
    assert "xml" in response.headers.get("content-type", ""), (response.status_code, response.headers, response.text)
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.text
    code = root.findtext("Code")
    assert code, response.text
    return code


def metric(node, name, **labels) -> float:
    """The value of one sample in `node`'s /metrics."""
    text = requests.get(f"{node.admin}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name}{labels or ''} in /metrics")


def wait_until(check, timeout=10.0, interval=0.1, message="condition not met in time"):
    """Polls check() until it returns a truthy value (returned), failing after `timeout` with
    `message` (or what `message()` says then, when it is a function)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def rss_bytes(node) -> float:
    """The node's resident memory, from /metrics."""
    for line in node.get("/metrics").text.splitlines():
        if line.startswith("serv_process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("no RSS metric")
