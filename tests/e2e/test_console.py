"""The web console at /console, driven in headless Chromium (playwright-core) against a real
3-node cluster with a bucket and a topic carrying traffic. Screenshots of each page are saved
under the test's tmp dir (`shots/`). Skipped where Chromium or playwright-core is missing (.ci/run
installs both)."""

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import s3_client, unique_bucket
from test_cluster_actors import owner_of, trio, wait_settled  # noqa: F401 (fixture)
from test_stomp import Client

JS = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not (JS / "node_modules" / "playwright-core").exists() or shutil.which("node") is None,
    reason="the console tests need Debian's chromium and playwright-core (npm ci in tests/e2e/js)")


def test_a_person_logs_in_and_sees_members_the_ring_and_live_actors(trio, tmp_path):
    n1 = trio[0]
    bucket = unique_bucket("console")
    s3 = s3_client(n1)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"seen in the console")
    topic = "console-t"
    stop = threading.Event()

    def produce():
        client = Client(trio[1])
        while not stop.is_set():
            client.send(f"/topic/{topic}", "tick")
            stop.wait(0.05)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        done = subprocess.run(["node", str(JS / "console.mjs"), n1.admin, n1.token, str(shots), f"bucket/{bucket}",
                               f"topic/topic/{topic}"], capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        producer.join(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    phases = seen["phases"]

    assert "refused" in phases["wrongToken"]["error"] and phases["wrongToken"]["navHidden"]
    ids = sorted(n.get("/v1/node").json()["id"] for n in trio)
    assert sorted(m["id"] for m in phases["members"]) == ids
    assert {m["state"] for m in phases["members"]} == {"alive"}
    owner = owner_of(n1, f"bucket/{bucket}")
    assert phases["owner"]["owner"] == owner and phases["owner"]["marked"]
    assert phases["bucket"]["nodes"] == [owner], "the bucket actor runs on its ring owner only"
    assert phases["live"]["later"] > phases["live"]["first"], "the handled counter grew without a reload"
    assert phases["filter"]["kinds"] == ["topic"]
    assert phases["sorted"] == sorted(phases["sorted"], reverse=True) and phases["sortLabel"] == "descending"
    assert phases["keyboard"]["page"] == "#/actors", "the pages are reachable from the keyboard"
    assert phases["phone"]["overflow"] <= 0, "nothing sticks out sideways at a phone's width"
    # The only console error is the refused login's 401, in that step.
    unexpected = [e for e in seen["consoleErrors"] if not (e["phase"] == "wrong-token" and "401" in e["text"])]
    assert unexpected == []
    for name in ("login-refused", "cluster", "actors", "actors-phone"):
        assert (shots / f"{name}.png").stat().st_size > 5_000
