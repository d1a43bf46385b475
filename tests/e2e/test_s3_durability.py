"""What S3 objects do to storage: dedup, garbage collection, inspection, and a crash mid-write."""

import os
import random
import re
import signal
import threading
import time

from conftest import md5_hex, metric, s3_client, unique_bucket, wait_until

MIB = 1024 * 1024


def bucket_record(node, name):
    records = node.get("/v1/actors", params={"kind": "bucket"}).json()["actors"]
    return next((r for r in records if r["key"] == f"bucket/{name}"), None)


def test_identical_bodies_share_blocks_and_deletes_free_them(servd, s3, bucket):
    blocks_before = metric(servd, "serv_blocks_stored")
    bytes_before = metric(servd, "serv_block_bytes_stored")
    body = os.urandom(3 * MIB)

    s3.put_object(Bucket=bucket, Key="a", Body=body)
    blocks_with_a = metric(servd, "serv_blocks_stored")
    bytes_with_a = metric(servd, "serv_block_bytes_stored")
    assert blocks_with_a > blocks_before
    assert bytes_with_a - bytes_before >= 3 * MIB * 0.99, "random data is stored in full"

    s3.put_object(Bucket=bucket, Key="b", Body=body)
    assert metric(servd, "serv_blocks_stored") == blocks_with_a, "the same bytes are stored once"
    assert metric(servd, "serv_block_bytes_stored") == bytes_with_a
    for key in ("a", "b"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    # deleting one copy frees nothing the other still uses
    s3.delete_object(Bucket=bucket, Key="a")
    time.sleep(0.5)
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == body
    assert metric(servd, "serv_blocks_stored") == blocks_with_a

    s3.delete_object(Bucket=bucket, Key="b")
    wait_until(lambda: metric(servd, "serv_blocks_stored") == blocks_before, timeout=10,
               message=f"blocks not collected: {metric(servd, 'serv_blocks_stored')} != {blocks_before}")
    assert metric(servd, "serv_block_bytes_stored") == bytes_before


def test_bucket_actor_is_inspectable(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="one", Body=b"x" * 1000)
    s3.put_object(Bucket=bucket, Key="two", Body=b"y" * 234)

    def summary():
        record = bucket_record(servd, bucket)
        return record if record and "objects=2" in record["state"] else None

    record = wait_until(summary, timeout=5, message=f"no bucket record with objects=2: {bucket_record(servd, bucket)}")
    assert record["kind"] == "bucket"
    assert re.search(r"\bbytes=1234\b", record["state"]), record["state"]

    s3.delete_object(Bucket=bucket, Key="one")
    wait_until(lambda: (r := bucket_record(servd, bucket)) and "objects=1" in r["state"]
               and re.search(r"\bbytes=234\b", r["state"]), timeout=5,
               message=f"summary not updated after a delete: {bucket_record(servd, bucket)}")


def test_sigkill_during_puts_loses_nothing_acknowledged(start_servd):
    node = start_servd().wait_ready()
    name = unique_bucket()
    s3_client(node).create_bucket(Bucket=name)

    acknowledged = {}
    stop = threading.Event()

    def writer():
        client = s3_client(node, connect_timeout=2, read_timeout=10)
        rng = random.Random(7)
        i = 0
        while not stop.is_set():
            body = os.urandom(rng.randint(64 * 1024, 1536 * 1024))
            key = f"stream/{i:05d}"
            i += 1
            try:
                client.put_object(Bucket=name, Key=key, Body=body)
            except Exception:  # noqa: BLE001 - the node died under us
                return
            acknowledged[key] = md5_hex(body)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(2.0)
    node.stop(signal.SIGKILL)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(acknowledged) >= 3, "too few PUTs before the kill to prove anything"

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    s3 = s3_client(restarted)
    s3.head_bucket(Bucket=name)
    for key, md5 in acknowledged.items():
        assert md5_hex(s3.get_object(Bucket=name, Key=key)["Body"].read()) == md5, f"{key} lost or changed"

    listed = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name) for o in page.get("Contents", [])]
    assert set(acknowledged) <= {o["Key"] for o in listed}
    for entry in listed:  # no partial object is visible: whatever is listed reads back whole
        got = s3.get_object(Bucket=name, Key=entry["Key"])
        body = got["Body"].read()
        assert len(body) == entry["Size"] == got["ContentLength"], entry["Key"]
        assert f'"{md5_hex(body)}"' == entry["ETag"], entry["Key"]

    for entry in listed:
        s3.delete_object(Bucket=name, Key=entry["Key"])
    s3.delete_bucket(Bucket=name)
    wait_until(lambda: metric(restarted, "serv_blocks_stored") == 0, timeout=10,
               message=f"orphan blocks survive GC: {metric(restarted, 'serv_blocks_stored')}")
    assert metric(restarted, "serv_block_bytes_stored") == 0
