"""Hostile clients at the S3 socket: slow headers, huge headers, many bodies at once. Each gets
a protocol answer or a timeout, and the node keeps serving everyone else with bounded memory."""

import socket
import threading
import time

import requests

from conftest import rss_bytes, s3_client, s3_error, unique_bucket




def test_a_slowloris_is_cut_off_while_others_are_served(start_servd):
    node = start_servd(args=["--s3-header-timeout-ms", "1000"]).wait_ready()
    s3 = s3_client(node)
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)

    slow = socket.create_connection(("127.0.0.1", node.s3_port))
    slow.sendall(b"GET /" + bucket.encode() + b"/k HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    served = 0
    cut_off = None
    while time.monotonic() - started < 5 and cut_off is None:
        try:
            slow.sendall(b"X-Drip: 1\r\n")
        except OSError:
            cut_off = time.monotonic() - started
            break
        s3.put_object(Bucket=bucket, Key=f"k{served}", Body=b"still serving")
        served += 1
        time.sleep(0.2)
    if cut_off is None:  # the close may only show up on a read
        slow.settimeout(2)
        try:
            cut_off = time.monotonic() - started if slow.recv(1) == b"" else None
        except OSError:
            cut_off = time.monotonic() - started
    assert cut_off is not None and cut_off < 4, "a client that never finishes its headers is disconnected"
    assert served >= 3, "other clients were served meanwhile"


def test_huge_headers_get_431_and_memory_stays_bounded(servd):
    before = rss_bytes(servd)
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", servd.s3_port))
        sock.settimeout(10)
        try:
            sock.sendall(b"GET /b/k HTTP/1.1\r\nHost: x\r\nX-Huge: ")
            chunk = b"a" * 65536
            for _ in range(160):  # 10 MiB of one header, unless the server hangs up first
                sock.sendall(chunk)
        except OSError:
            pass
        try:
            answer = sock.recv(200)
        except OSError:
            answer = b""
        sock.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer
    assert rss_bytes(servd) - before < 32 * 1024 * 1024, "headers are never buffered beyond the cap"
    s3 = s3_client(servd)
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_bodies_past_the_inflight_cap_get_slowdown(start_servd):
    node = start_servd(args=["--s3-max-inflight-bodies", "2"]).wait_ready()
    s3 = s3_client(node)
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    presigned = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "slow"}, ExpiresIn=60)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            yield b"x" * 1024
            time.sleep(0.05)

    # Two uploads that take their time hold both slots.
    holders = [threading.Thread(target=requests.put, args=(presigned,),
                                kwargs={"data": trickle(), "timeout": 30}) for _ in range(2)]
    for t in holders:
        t.start()
    time.sleep(1.0)
    status, code = s3_error(s3.put_object, Bucket=bucket, Key="third", Body=b"x")
    assert (status, code) == (503, "SlowDown")
    stop.set()
    for t in holders:
        t.join(timeout=30)
    s3.put_object(Bucket=bucket, Key="after", Body=b"ok")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"ok"
