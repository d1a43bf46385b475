"""Connection admission: floods of connections that send nothing cannot lock well-behaved clients
out of the S3 edge, the gateway or the admin API. Idle connections are closed first to admit a
new client, one address holds at most its share of an edge, and a connection that never sends a
byte is closed after the first-byte timeout; the node's memory stays bounded meanwhile."""

import socket
import time

import requests

from conftest import rss_bytes, s3_client, unique_bucket, wait_until

# Generous for a loaded 2-core machine: the point is "served", not "fast".
SERVED_WITHIN = 10.0


def flood(port, count, source="127.0.0.1"):
    """`count` connections to `port` from `source` that never send a byte (those the node closes
    at once are still counted: the kernel accepted them)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sockets.append(sock)
    return sockets


def closed_by_server(sock) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True  # reset


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_silent_connections_past_the_cap_are_closed_to_admit_clients_on_every_http_edge(start_servd):
    node = start_servd(args=["--s3-max-connections", "64", "--http-max-connections", "64",
                             "--admin-max-connections", "32", "--max-connections-per-ip", "1000"]).wait_ready()
    rss_before = rss_bytes(node)
    s3 = s3_client(node)
    bucket = unique_bucket("admission")
    s3.create_bucket(Bucket=bucket)
    silent = flood(node.s3_port, 300) + flood(node.http_port, 300) + flood(node.admin_port, 150)
    time.sleep(1)  # long enough to count as idle (MIN_IDLE_TO_EVICT)
    try:
        _, put_took = timed(lambda: s3_client(node).put_object(Bucket=bucket, Key="k", Body=b"served"))
        body, get_took = timed(lambda: s3_client(node).get_object(Bucket=bucket, Key="k")["Body"].read())
        assert body == b"served" and max(put_took, get_took) < SERVED_WITHIN, (put_took, get_took)
        health, health_took = timed(lambda: requests.get(f"{node.admin}/healthz", timeout=SERVED_WITHIN))
        assert health.status_code == 200 and health_took < SERVED_WITHIN
        gateway, _ = timed(lambda: requests.get(f"{node.http}/no/route", timeout=SERVED_WITHIN))
        assert gateway.status_code == 404 and gateway.json()["code"] == "NoRoute", "the gateway answers"
        closed = sum(closed_by_server(sock) for sock in silent)
        assert closed >= 300, f"only {closed} of {len(silent)} silent connections were closed"
        assert rss_bytes(node) - rss_before < 64 * 1024 * 1024, "the flood costs the node little memory"
    finally:
        for sock in silent:
            sock.close()


def test_one_address_holds_at_most_its_share_and_silent_connections_time_out(start_servd):
    node = start_servd(args=["--max-connections-per-ip", "20", "--first-byte-timeout-ms", "1500"]).wait_ready()
    # 127.0.0.2 is another client address on the loopback interface.
    abuser = flood(node.s3_port, 100, source="127.0.0.2")
    time.sleep(0.5)
    held = [sock for sock in abuser if not closed_by_server(sock)]
    assert len(held) <= 20, f"one address holds {len(held)} S3 connections"
    stomp = flood(node.stomp_port, 40, source="127.0.0.2")
    time.sleep(0.5)
    assert sum(not closed_by_server(sock) for sock in stomp) <= 20, "the STOMP edge caps an address too"
    # Another address is served meanwhile.
    bucket = unique_bucket("share")
    s3_client(node).create_bucket(Bucket=bucket)
    # A connection that never sends a byte is closed after the first-byte timeout.
    wait_until(lambda: all(closed_by_server(sock) for sock in held), timeout=10,
               message="silent connections outlive the first-byte timeout")
    for sock in abuser + stomp:
        sock.close()
