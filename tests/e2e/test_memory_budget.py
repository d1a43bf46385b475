"""The memory budget (issue #16): a node near --max-memory-bytes refuses new work with each
protocol's back-off answer instead of growing (S3 503 SlowDown for writes, a STOMP ERROR for SEND
and SUBSCRIBE, gateway 503), keeps serving reads, acks and the admin API, and says so in
/metrics and on the console's overview. A node within its budget refuses nothing."""

import requests

from conftest import metric, rss_bytes, s3_client, s3_error, unique_bucket, wait_until
from test_console import drive
from test_console import pytestmark as needs_chromium
from test_stomp import RawStomp


def test_a_node_near_its_memory_budget_refuses_new_work_with_each_protocols_answer(start_servd):
    # A debug servd takes more than 20 MB at rest: this node is near its budget from the start.
    node = start_servd(args=["--max-memory-bytes", "20000000"]).wait_ready()
    assert rss_bytes(node) > 20_000_000
    wait_until(lambda: metric(node, "serv_memory_refusing") == 1, timeout=10, message="the node refuses")
    assert metric(node, "serv_memory_limit_bytes") == 20_000_000

    s3 = s3_client(node)
    status, code = s3_error(s3.create_bucket, Bucket=unique_bucket("short"))
    assert (status, code) == (503, "SlowDown")
    assert s3.list_buckets()["Buckets"] == [], "reads and listings go on"
    assert metric(node, "serv_memory_refused_total", edge="s3") >= 1

    raw = RawStomp(node)
    raw.connect()
    raw.send_frame("SEND", [("destination", "/queue/short"), ("receipt", "r1")], b"x")
    error = raw.read_frame()
    assert error.command == "ERROR" and error.headers["message"] == "Memory limit reached", error.headers
    assert error.headers.get("receipt-id") == "r1" and "--max-memory-bytes" in error.body.decode()
    raw.close()

    route = requests.put(f"{node.admin}/v1/routes/api", json={"path_prefix": "/api", "upstreams": ["http://127.0.0.1:9"]},
                         headers={"Authorization": f"Bearer {node.token}"}, timeout=10)
    assert route.status_code == 200, "the admin API still takes writes: " + route.text
    gateway = requests.get(f"{node.http}/api/anything", timeout=10)
    assert gateway.status_code == 503 and gateway.json()["code"] == "Overloaded", gateway.text
    assert gateway.headers["retry-after"] == "1"

    assert requests.get(f"{node.admin}/healthz", timeout=10).status_code == 200, "the admin API is served"
    for edge in ("stomp", "gateway"):
        assert metric(node, "serv_memory_refused_total", edge=edge) >= 1, edge


def test_a_node_within_its_budget_refuses_nothing(servd):
    assert metric(servd, "serv_memory_refusing") == 0
    assert metric(servd, "serv_memory_limit_bytes") > 64 * 1024 * 1024, "the default is a share of the machine"
    bucket = unique_bucket("plenty")
    s3_client(servd).create_bucket(Bucket=bucket)
    assert sum(metric(servd, "serv_memory_refused_total", edge=e) for e in ("s3", "stomp", "gateway")) == 0


def test_a_budget_below_the_floor_is_refused(tmp_path):
    from conftest import run_servd

    result = run_servd(["--max-memory-bytes", "1000", "--data-dir", str(tmp_path / "d")])
    assert result.returncode == 2 and "max_memory_bytes" in result.stderr, result.stderr


@needs_chromium
def test_the_console_shows_each_nodes_budget_and_that_it_refuses_new_work(start_servd, tmp_path):
    near = start_servd(args=["--max-memory-bytes", "20000000"]).wait_ready()
    wait_until(lambda: metric(near, "serv_memory_refusing") == 1, timeout=10, message="the node refuses")
    seen = drive("memory.mjs", near.admin, near.token, tmp_path)
    memory = seen["phases"]["memory"]
    # 20,000,000 bytes are 19.07 MiB, read to one decimal.
    assert " of 19.1 MiB" in memory["text"] and "refusing new work" in memory["text"], memory
    assert "refusing" in memory["className"].split() and memory["color"] == "rgb(180, 35, 24)", memory
    assert seen["consoleErrors"] == []
