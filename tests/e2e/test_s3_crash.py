"""SIGKILL under concurrent writers that overwrite and delete: every key comes back as its last
acknowledged state (or as the one operation still in flight when the node died), never older."""

import os
import random
import signal
import threading
import time

from botocore.exceptions import ClientError

from conftest import md5_hex, metric, s3_client, unique_bucket, wait_until

WRITERS = 8
KEYS_PER_WRITER = 6


def test_sigkill_under_concurrent_overwrites_and_deletes(start_servd):
    node = start_servd().wait_ready()
    name = unique_bucket()
    s3_client(node).create_bucket(Bucket=name)
    # key -> (last acknowledged state, state of the operation in flight); a state is an MD5 or None
    states = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        client = s3_client(node, connect_timeout=2, read_timeout=10)
        rng = random.Random(w)
        while not stop.is_set():
            key = f"w{w}/k{rng.randrange(KEYS_PER_WRITER)}"
            body = None if rng.random() < 0.25 else os.urandom(rng.randint(1, 96 * 1024))
            target = None if body is None else md5_hex(body)
            with lock:
                acked = states.get(key, (None, None))[0]
                states[key] = (acked, target)
            try:
                if body is None:
                    client.delete_object(Bucket=name, Key=key)
                else:
                    client.put_object(Bucket=name, Key=key, Body=body)
            except Exception:  # noqa: BLE001 - the node died under us; the op stays "in flight"
                return
            with lock:
                states[key] = (target, target)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    node.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(states) >= WRITERS, "too few operations before the kill to prove anything"

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    s3 = s3_client(restarted)
    for key, (acked, in_flight) in sorted(states.items()):
        try:
            found = md5_hex(s3.get_object(Bucket=name, Key=key)["Body"].read())
        except ClientError as error:
            assert error.response["Error"]["Code"] == "NoSuchKey", error
            found = None
        assert found in {acked, in_flight}, f"{key}: found {found}, acknowledged {acked}, in flight {in_flight}"

    # Counts in the bucket's summary agree with what is listed.
    listed = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name) for o in page.get("Contents", [])]
    records = restarted.get("/v1/actors", params={"kind": "bucket"}).json()["actors"]
    state = next(r["state"] for r in records if r["key"] == f"bucket/{name}")
    assert f"objects={len(listed)} " in state and f"bytes={sum(o['Size'] for o in listed)} " in state, state

    for entry in listed:
        s3.delete_object(Bucket=name, Key=entry["Key"])
    wait_until(lambda: metric(restarted, "serv_blocks_stored") == 0, timeout=10,
               message=f"orphan blocks survive GC: {metric(restarted, 'serv_blocks_stored')}")
