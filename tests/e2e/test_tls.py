"""TLS on every client edge: one certificate (made here with `trustme`, a test CA) served by the S3,
gateway, admin, STOMP and STOMP-over-WebSocket TLS listeners, checked by real clients (boto3,
aws-cli, curl, requests, stomp.py, stompjs over wss) that trust the CA; SIGHUP re-reads it."""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import types
from pathlib import Path

import pytest
import requests
import stomp
import trustme

from conftest import ACCESS_KEY, SECRET_KEY, free_port, run_servd, s3_client, unique_bucket, wait_until
from test_gateway import Upstream
from test_s3_clients import Aws
from test_stomp import WAIT, Collector, admin_put

JS = Path(__file__).parent / "js"
HOST = "127.0.0.1"  # the certificates name it (and localhost); every listener binds it
HANDSHAKE_TIMEOUT_MS = 1000


class Certs:
    """A test CA and the certificate files servd is given; `issue` writes a new pair to them."""

    def __init__(self, directory: Path):
        self.cert, self.key = directory / "servd-cert.pem", directory / "servd-key.pem"
        self.directory = directory
        self.issue("first")

    def issue(self, name, key_type=trustme.KeyType.ECDSA):
        """A new CA and a certificate for HOST and localhost from it, written over the served
        files. trustme writes keys in the traditional form: SEC1 for ECDSA, PKCS#1 for RSA."""
        self.ca = trustme.CA(key_type=key_type)
        self.leaf = self.ca.issue_cert(HOST, "localhost", key_type=key_type)
        self.ca_file = self.directory / f"ca-{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems))
        self.key.write_bytes(self.leaf.private_key_pem.bytes())
        return self.ca_file

    def leaf_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.leaf.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


@pytest.fixture
def tls_node(start_servd, certs):
    """A node with every TLS listener on, serving `certs`; its ports as node.tls[edge]."""
    ports = {edge: free_port() for edge in ("s3", "http", "admin", "stomp", "stomp-wss")}
    args = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
            "--tls-handshake-timeout-ms", str(HANDSHAKE_TIMEOUT_MS)]
    for edge, port in ports.items():
        flag = "--stomp-wss-addr" if edge == "stomp-wss" else f"--{edge}-tls-addr"
        args += [flag, f"{HOST}:{port}"]
    node = start_servd(args=args).wait_ready()
    node.tls = ports
    return node


def served_der(port) -> bytes:
    """The certificate a new connection to `port` is shown (not verified here)."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((HOST, port), timeout=WAIT))


def https(node, edge, path=""):
    return f"https://{HOST}:{node.tls[edge]}{path}"


def stomp_over_tls(node, ca_file):
    """A connected stomp.py 1.2 client on the STOMP TLS listener, checking the server with `ca_file`."""
    port = node.tls["stomp"]
    conn = stomp.Connection12([(HOST, port)], heartbeats=(0, 0), timeout=WAIT)
    conn.set_ssl(for_hosts=[(HOST, port)], ca_certs=str(ca_file))
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(ACCESS_KEY, SECRET_KEY, wait=True)
    return conn, listener


def round_trip(conn, listener, destination, body):
    """SEND with a receipt on a subscribed connection; waits for the receipt and the message."""
    conn.send(destination, body, receipt=f"sent-{body}")
    listener.wait_receipt(f"sent-{body}")
    listener.wait_body(body)


# ---------------------------------------------------------------------------------------------
# Each edge over TLS


def test_boto3_and_aws_cli_put_and_get_over_https_and_the_plain_listener_still_works(tls_node, certs, tmp_path):
    secure = s3_client(tls_node, endpoint_url=https(tls_node, "s3"), verify=str(certs.ca_file))
    bucket = unique_bucket("tls")
    secure.create_bucket(Bucket=bucket)
    secure.put_object(Bucket=bucket, Key="secret.txt", Body=b"sent over TLS")
    assert secure.get_object(Bucket=bucket, Key="secret.txt")["Body"].read() == b"sent over TLS"

    plain = s3_client(tls_node)
    assert plain.get_object(Bucket=bucket, Key="secret.txt")["Body"].read() == b"sent over TLS"
    plain.put_object(Bucket=bucket, Key="plain.txt", Body=b"sent in the clear")

    # aws-cli as the README shows it: --endpoint-url https://... --ca-bundle CA.
    aws = Aws(types.SimpleNamespace(s3=https(tls_node, "s3"), output=tls_node.output), tmp_path)
    listed = aws("--ca-bundle", certs.ca_file, "s3", "ls", f"s3://{bucket}").stdout
    assert "plain.txt" in listed and "secret.txt" in listed, listed


def test_curl_reaches_the_admin_api_over_https(tls_node, certs):
    def curl(*args):
        done = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(certs.ca_file), *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert json.loads(curl(https(tls_node, "admin", "/healthz"))) == {"status": "ok"}
    info = json.loads(curl("-H", f"Authorization: Bearer {tls_node.token}", https(tls_node, "admin", "/v1/node")))
    addresses = info["addresses"]
    assert addresses["admin_tls"] == https(tls_node, "admin")
    assert addresses["s3_tls"] == https(tls_node, "s3")
    assert addresses["stomp_tls"] == f"{HOST}:{tls_node.tls['stomp']}"
    assert addresses["stomp_wss"] == f"wss://{HOST}:{tls_node.tls['stomp-wss']}/ws"
    # Without the token: the same 401 as in the clear.
    refused = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(certs.ca_file),
                              https(tls_node, "admin", "/v1/node")], capture_output=True, text=True, timeout=30)
    assert refused.stdout == "401"


def test_the_gateway_over_https_routes_to_an_upstream_and_says_so(tls_node, certs):
    upstream = Upstream("secure")
    try:
        admin_put(tls_node, "/v1/routes/secure",
                  {"path_prefix": "/secure", "strip_prefix": True, "upstreams": [upstream.url]})
        answer = requests.get(https(tls_node, "http", "/secure/hello?x=1"), verify=str(certs.ca_file), timeout=WAIT)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-serv-route"] == "secure"
        got = answer.json()
        assert got["path"] == "/hello?x=1"
        assert got["headers"]["x-forwarded-proto"] == "https"
        plain = requests.get(f"{tls_node.http}/secure/hello", timeout=WAIT).json()
        assert plain["headers"]["x-forwarded-proto"] == "http"
    finally:
        upstream.close()


def test_stomp_py_over_tls_sends_and_receives_with_a_receipt(tls_node, certs):
    conn, listener = stomp_over_tls(tls_node, certs.ca_file)
    try:
        conn.subscribe("/queue/over-tls", id="1", ack="auto", receipt="subscribed")
        listener.wait_receipt("subscribed")
        round_trip(conn, listener, "/queue/over-tls", "hello over TLS")
        assert listener.messages[0].headers["destination"] == "/queue/over-tls"
    finally:
        conn.disconnect()


def test_stompjs_over_wss_connects_and_receives(tls_node, certs):
    url = https(tls_node, "stomp-wss", "/ws").replace("https://", "wss://")
    done = subprocess.run(["node", str(JS / "stomp_ws.mjs"), url, ACCESS_KEY, SECRET_KEY, "3"],
                          capture_output=True, text=True, timeout=60, cwd=JS,
                          env={**os.environ, "NODE_EXTRA_CA_CERTS": str(certs.ca_file)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["outcome"] == "ok", seen
    assert sorted(m["body"] for m in seen["received"]) == [f"from the browser {i}" for i in range(3)]


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(tls_node, certs):
    stranger = trustme.CA()
    for edge in ("s3", "admin", "stomp"):
        context = ssl.create_default_context()
        stranger.configure_trust(context)
        with socket.create_connection((HOST, tls_node.tls[edge]), timeout=WAIT) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                context.wrap_socket(raw, server_hostname=HOST)
    # curl with only the system's CAs refuses it too (exit 60: peer certificate cannot be authenticated).
    done = subprocess.run(["curl", "-sS", https(tls_node, "admin", "/healthz")], capture_output=True, timeout=30)
    assert done.returncode == 60, done.stderr


# ---------------------------------------------------------------------------------------------
# SIGHUP


def test_sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones(tls_node, certs):
    first_ca = certs.ca_file
    first = certs.leaf_der()
    assert served_der(tls_node.tls["admin"]) == first

    # Opened before the reload: a kept-alive HTTPS connection and a STOMP-over-TLS session.
    kept = http.client.HTTPSConnection(HOST, tls_node.tls["admin"], timeout=WAIT,
                                       context=ssl.create_default_context(cafile=str(first_ca)))
    kept.request("GET", "/healthz")
    assert kept.getresponse().read() == b'{"status":"ok"}'
    kept_socket = kept.sock
    conn, listener = stomp_over_tls(tls_node, first_ca)
    conn.subscribe("/queue/across-reload", id="1", ack="auto", receipt="subscribed")
    listener.wait_receipt("subscribed")

    second_ca = certs.issue("second", key_type=trustme.KeyType.RSA)  # a PKCS#1 key this time
    tls_node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "TLS certificate reloaded" in tls_node.output(), message=lambda: tls_node.output()[-3000:])

    for edge, port in tls_node.tls.items():
        assert served_der(port) == certs.leaf_der(), f"{edge}: a new connection gets the new certificate"
    assert requests.get(https(tls_node, "admin", "/healthz"), verify=str(second_ca), timeout=WAIT).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https(tls_node, "admin", "/healthz"), verify=str(first_ca), timeout=WAIT)

    kept.request("GET", "/healthz")
    assert kept.getresponse().status == 200
    assert kept.sock is kept_socket, "the same connection, not a new one"
    round_trip(conn, listener, "/queue/across-reload", "still here")
    conn.disconnect()
    assert tls_node.proc.poll() is None


def test_a_broken_certificate_on_sighup_keeps_the_old_one_served(tls_node, certs):
    first = certs.leaf_der()
    certs.cert.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    tls_node.proc.send_signal(signal.SIGHUP)
    line = wait_until(lambda: next((line for line in tls_node.output().splitlines()
                                    if "TLS certificate not reloaded" in line), None),
                      message=lambda: tls_node.output()[-3000:])
    assert "ERROR" in line and str(certs.cert) in line, line
    assert served_der(tls_node.tls["s3"]) == first
    assert requests.get(https(tls_node, "admin", "/healthz"), verify=str(certs.ca_file), timeout=WAIT).status_code == 200
    assert tls_node.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# Limits and configuration


def test_a_connection_that_never_sends_a_client_hello_is_closed_after_the_handshake_timeout(tls_node, certs):
    # The idle timeout (60 s) is far longer: what closes it is the handshake timeout (1 s here).
    with socket.create_connection((HOST, tls_node.tls["s3"]), timeout=15) as silent:
        try:
            assert silent.recv(1) == b"", "the server sends nothing before a ClientHello"
        except ConnectionResetError:
            pass
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    with socket.create_connection((HOST, tls_node.tls["s3"]), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_tls_address_without_a_certificate_is_a_configuration_error(tmp_path):
    done = run_servd(["--data-dir", str(tmp_path / "d"), "--s3-tls-addr", f"{HOST}:{free_port()}"])
    assert done.returncode == 2, done
    assert "--s3-tls-addr needs --tls-cert and --tls-key" in done.stderr
    done = run_servd(["--data-dir", str(tmp_path / "d")], env={"SERV_STOMP_WSS_ADDR": f"{HOST}:{free_port()}"})
    assert done.returncode == 2 and "--stomp-wss-addr needs" in done.stderr, done


def test_a_certificate_that_does_not_load_stops_the_start_naming_the_file(tmp_path, certs):
    certs.key.write_text("not a key\n")
    done = run_servd(["--data-dir", str(tmp_path / "d"), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
                      "--admin-tls-addr", f"{HOST}:{free_port()}"])
    assert done.returncode == 1, done
    assert str(certs.key) in done.stderr and "no private key" in done.stderr, done.stderr
