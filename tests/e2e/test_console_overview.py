"""The console's overview, its landing page: live charts of every node's traffic, errors, memory
and disk drawn as inline SVG from /v1/series, driven in headless Chromium (playwright-core)
against a real 3-node cluster carrying S3 and STOMP traffic; every page at a phone's width; and
the actors page leaving out a bucket once it is deleted. Screenshots are saved under the test's
tmp dir (`shots/`)."""

import re
import threading
import uuid
from contextlib import contextmanager

import requests

from conftest import s3_client, wait_until
from test_cluster_actors import node_id, trio  # noqa: F401 (trio is a fixture)
from test_console import drive, pytestmark  # noqa: F401 (skipped where Chromium is missing)
from test_series import bad_login, series, traffic_seen
from test_stomp import Client

TRAFFIC_CHARTS = ("messages-in", "messages-out", "s3-requests", "errors")
UNITS = {"messages-in": "msg/s", "messages-out": "msg/s", "s3-requests": "req/s", "errors": "err/s",
         "memory": "MiB", "disk": "MiB"}
PHONE_WIDTH = 390


@contextmanager
def running(work):
    """Runs `work(stop)` on a thread for the `with` block; sets `stop` and waits for it after."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_overview_charts_every_nodes_traffic_errors_memory_and_disk_and_fits_a_phone(trio, tmp_path):
    n1, n2, n3 = trio
    ids = sorted(node_id(n) for n in trio)
    traffic, doomed, topic = f"traffic-{uuid.uuid4().hex[:8]}", f"doomed-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:6]}"
    s3 = s3_client(n1)
    s3.create_bucket(Bucket=traffic)
    s3.create_bucket(Bucket=doomed)
    s3.put_object(Bucket=doomed, Key="k", Body=b"deleted while the actors page is open")
    subscriber = Client(n2)
    subscriber.subscribe(f"/topic/{topic}", id="s")
    shots = tmp_path / "shots"
    shots.mkdir()

    def produce(stop):
        """S3 requests on every node (unsigned ones refused, 4xx), STOMP messages in on node 2 and
        out to its subscriber, and a refused STOMP login now and then (an ERROR frame)."""
        publisher = Client(n2)
        clients = [s3_client(n) for n in trio]
        i = 0
        while not stop.is_set():
            s3c = clients[i % 3]
            s3c.put_object(Bucket=traffic, Key=f"k{i % 10}", Body=b"x" * 100)
            s3c.get_object(Bucket=traffic, Key=f"k{i % 10}")["Body"].read()
            requests.get(f"{trio[i % 3].s3}/{traffic}/missing", timeout=10)
            publisher.send(f"/topic/{topic}", f"m{i}")
            if i % 20 == 0:
                bad_login(n1)
            i += 1
            stop.wait(0.1)
        publisher.close()

    def delete_bucket(ask):
        assert ask == "delete-bucket"
        s3.delete_object(Bucket=doomed, Key="k")
        s3.delete_bucket(Bucket=doomed)

    with running(produce):
        # The series moved before the page is opened: the charts have something to show.
        wait_until(lambda: traffic_seen(n1), timeout=40, message=lambda: f"no traffic in {series(n1)}")
        seen = drive("overview.mjs", n1.admin, n1.token, shots, len(trio), f"bucket/{doomed}", on_ask=delete_bucket,
                     timeout=180)
    subscriber.close()
    phases = seen["phases"]

    assert phases["landing"]["hash"] == "#/overview", "the overview is where a person lands after login"
    charts = {chart["id"]: chart for chart in phases["charts"]}
    assert sorted(charts) == sorted(UNITS), charts.keys()
    for chart_id, chart in charts.items():
        assert chart["svgs"] == 1 and chart["unit"] == UNITS[chart_id], chart
        assert UNITS[chart_id] in chart["caption"], chart
        assert sorted(path["node"] for path in chart["paths"]) == ids, "one line per node"
        for path in chart["paths"]:
            # Real points: as many coordinates as the line says it has, each inside the plot.
            coordinates = re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", path["d"])
            assert len(coordinates) == path["points"] >= 2, path
            assert all(float(x) >= 0 and float(y) >= 0 for x, y in coordinates), path
        assert len({path["stroke"] for path in chart["paths"]}) == len(ids), "a colour per node"
        assert len(chart["legend"]) == len(ids) and all(UNITS[chart_id] in item for item in chart["legend"]), chart
        # Axis labels: values from 0 up, and times.
        assert chart["ticks"][0] in ("0", "0.0", "0.00", "0.000") and any(":" in t for t in chart["ticks"]), chart
    for chart_id in TRAFFIC_CHARTS:
        assert charts[chart_id]["peak"] > 0, f"{chart_id} rose with the traffic: {charts[chart_id]}"
    assert charts["memory"]["peak"] > 1 and charts["disk"]["peak"] > 0
    assert sorted(row["node"] for row in phases["nodesTable"]) == ids
    assert all(row["memory"].endswith("MiB") and row["disk"].endswith("MiB") for row in phases["nodesTable"])
    assert phases["refresh"]["after"] > phases["refresh"]["before"], "the charts refresh without a reload"

    for page, layout in phases["phone"].items():
        assert layout["innerWidth"] == PHONE_WIDTH
        assert layout["scrollWidth"] <= layout["innerWidth"], f"the {page} page scrolls sideways at a phone's width"
        assert layout["navOutside"] == 0 and layout["chartsOutside"] == 0, (page, layout)

    assert phases["deleted"]["goneAfterMs"] < 20_000
    # The actor of the deleted bucket still runs (until it passivates): the listing leaves it out.
    absent = n1.get("/v1/actors", params={"absent": "true"}).json()["actors"]
    assert f"bucket/{doomed}" in {a["key"] for a in absent}
    assert f"bucket/{doomed}" not in {a["key"] for a in n3.get("/v1/actors").json()["actors"]}

    assert seen["consoleErrors"] == []
    for name in ("overview", "overview-phone", "actors-phone", "actors-after-delete"):
        assert (shots / f"{name}.png").stat().st_size > 5_000
