"""The chaos harness (`serv-chaos`, chaos/) run end to end: real servd nodes under a seeded fault
schedule, its history checked, its report written, and, against a servd built to lose every
tenth write (`--features fault-injection`, copied to `servd-lossy` by scripts/test), proof that
the checker catches a lost write and a lost message and names them."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import servd_bin, wait_until

BIN_DIR = Path(servd_bin()).parent
CHAOS = BIN_DIR / "serv-chaos"
LOSSY = BIN_DIR / "servd-lossy"


def chaos(report, *args, servd=None, timeout=240):
    command = [str(CHAOS), "run", "--report", str(report), "--servd", str(servd or servd_bin()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    result = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else None
    return done, result


def test_a_seeded_run_with_kills_pauses_and_restarts_keeps_every_acknowledged_write(tmp_path):
    report = tmp_path / "report"
    done, result = chaos(report, "--nodes", "3", "--duration", "20s", "--seed", "7", "--hosts", "loopback",
                         "--faults", "kill,pause,restart", "--fault-interval", "3s", "--max-hold", "3s",
                         "--concurrency", "3", "--heal-timeout", "45s", "--transform")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no violation" in done.stdout
    # Every destination ran a WASM transform: each delivery was checked to be its output.
    assert result["violations"] == [] and "--transform" in result["replay"]
    # The faults the schedule named were injected, in order, on the nodes it named (the last may
    # not fit: each waits until the node of the one before is whole again), and each node was
    # whole again after its heal before the next fault began.
    applied = [(f["kind"], f["node"]) for f in result["faults"] if f["kind"] != "crash"]
    assert applied == [(f["kind"], f["node"]) for f in result["schedule"]][:len(applied)]
    assert len(applied) >= 3, result["faults"]
    assert all(not f["failed"] and f["rejoined_ms"] is not None for f in result["faults"]), result["faults"]
    for earlier, later in zip(result["faults"], result["faults"][1:]):
        assert earlier["end_ms"] <= later["start_ms"], (earlier, later)
    assert not [f for f in result["faults"] if f["kind"] == "crash"], "no node exited on its own"
    stats = result["stats"]
    assert stats["acknowledged_writes"] > 100 and stats["acknowledged_messages"] > 100, stats
    assert stats["final_reads"] >= 3 * 24, "every written key was read back through all three nodes"
    assert stats["deliveries"] >= stats["acknowledged_messages"], stats
    # The report says how to replay this exact schedule, and a person can read it.
    assert "--seed 7" in result["replay"] and "--faults kill,pause,restart" in result["replay"]
    assert "--hosts loopback" in result["replay"]
    assert result["replay"] in done.stdout
    page = (report / "report.html").read_text()
    assert "Chaos run, seed 7" in page and "no violation" in page and "<svg" in page
    for fault in result["faults"]:
        assert f"<td>{fault['kind']}</td><td>n{fault['node'] + 1}</td>" in page
    for n in (1, 2, 3):
        assert (report / "nodes" / f"n{n}.log").stat().st_size > 0
        assert not (report / "nodes" / f"n{n}").exists(), "a run without a violation keeps no data dir"


NAMESPACES = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


def kernel_has_netem():
    """Whether this kernel can degrade a link (many are built without sch_netem)."""
    if not NAMESPACES:
        return False
    probe = f"servprobe{os.getpid()}"
    subprocess.run(["ip", "netns", "add", probe], check=True)
    try:
        added = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
                                "netem", "delay", "1ms"], capture_output=True)
        return added.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", probe], check=True)


@pytest.mark.skipif(not NAMESPACES, reason="network namespaces need root and iproute2 (ip, tc)")
def test_partitions_between_namespaced_nodes_heal_without_a_violation(tmp_path):
    faults = "partition,netem" if kernel_has_netem() else "partition"
    report = tmp_path / "report"
    done, result = chaos(report, "--nodes", "3", "--duration", "15s", "--seed", "3", "--hosts", "netns",
                         "--faults", faults, "--fault-interval", "2s", "--max-hold", "3s",
                         "--concurrency", "2", "--heal-timeout", "45s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["violations"] == []
    kinds = {f["kind"] for f in result["faults"]}
    assert kinds <= set(faults.split(",")) and len(result["faults"]) >= 3, result["faults"]
    assert all(not f["failed"] for f in result["faults"]), result["faults"]
    assert any("own network namespace" in note for note in result["notes"]), result["notes"]
    assert result["stats"]["acknowledged_writes"] > 50 and result["stats"]["acknowledged_messages"] > 50
    # Nothing the run made is left behind: its namespaces and bridge are gone.
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    made = [note.split(": ", 1)[1] for note in result["notes"] if "own network namespace" in note][0]
    for entry in made.split(", "):
        assert entry.split()[0] not in namespaces


@pytest.mark.skipif(not NAMESPACES or kernel_has_netem(), reason="needs namespaces on a kernel without netem")
def test_netem_faults_on_a_kernel_that_cannot_inject_them_fail_the_run_before_it_starts(tmp_path):
    report = tmp_path / "report"
    done, _ = chaos(report, "--nodes", "3", "--duration", "10s", "--seed", "3", "--hosts", "netns",
                    "--faults", "netem", "--heal-timeout", "20s", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot inject netem faults" in done.stderr and "no violation" not in done.stdout


@pytest.mark.skipif(not LOSSY.exists(), reason="servd-lossy is built by scripts/test")
def test_the_checker_catches_and_names_a_lost_write_and_a_lost_message(tmp_path):
    report = tmp_path / "report"
    done, result = chaos(report, "--nodes", "2", "--duration", "6s", "--seed", "11", "--faults", "none",
                         "--concurrency", "2", "--heal-timeout", "5s", "--servd-env", "SERV_FAULT_LOSE_EVERY=10",
                         servd=LOSSY)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (report / "nodes" / "n1" / "db").is_dir(), "a run with a violation keeps the nodes' data for a post-mortem"
    history = {op["id"]: op for op in result["history"]}
    by_invariant = {}
    for violation in result["violations"]:
        by_invariant.setdefault(violation["invariant"], []).append(violation)
    loss = {"s3-acknowledged-write-lost", "stomp-acknowledged-message-lost"}
    # A dropped PUT also shows as stale reads: GETs after its acknowledgement saw the older value.
    assert loss <= set(by_invariant) <= loss | {"s3-stale-read"}, by_invariant.keys()
    for stale in by_invariant.get("s3-stale-read", []):
        get, newer = (history[op] for op in stale["ops"])
        assert get["kind"] == "s3_get" and newer["kind"] in ("s3_put", "s3_delete") and newer["outcome"] == "ok"

    lost_write = by_invariant["s3-acknowledged-write-lost"][0]
    put = history[lost_write["ops"][0]]
    assert put["kind"] == "s3_put" and put["outcome"] == "ok", put
    assert f"PUT op {put['id']}" in lost_write["message"] and put["target"] in lost_write["message"]

    lost_message = by_invariant["stomp-acknowledged-message-lost"][0]
    send = history[lost_message["ops"][0]]
    assert send["kind"] in ("send", "tx_send") and send["outcome"] == "ok", send
    assert f"message {send['id']}" in lost_message["message"]
    delivered = {op["value"] for op in result["history"] if op["kind"] == "deliver"}
    assert send["id"] not in delivered

    # Roughly one in ten, not everything: the checker does not cry wolf on the other nine.
    acked_sends = sum(1 for op in result["history"] if op["kind"] in ("send", "tx_send") and op["outcome"] == "ok")
    lost_ids = {v["ops"][0] for v in by_invariant["stomp-acknowledged-message-lost"]}
    assert 0.05 * acked_sends < len(lost_ids) < 0.2 * acked_sends, (len(lost_ids), acked_sends)
    assert "s3-acknowledged-write-lost" in done.stdout and "stomp-acknowledged-message-lost" in done.stdout
    page = (report / "report.html").read_text()
    assert "violation(s)" in page and f"PUT op {put['id']}" in page


def test_an_interrupted_run_stops_every_node_it_started_and_removes_its_namespaces(tmp_path):
    command = [str(CHAOS), "run", "--duration", "60s", "--seed", "2", "--faults", "none", "--servd", servd_bin(),
               "--report", str(tmp_path / "report")]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tag = f"sc{run.pid % 10000}n"
    wait_until(lambda: len(children(run.pid)) == 3, timeout=30, message="the run starts three nodes")
    nodes = children(run.pid)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130 and "interrupted" in err, err
    for pid in nodes:
        assert not Path(f"/proc/{pid}").exists(), f"node process {pid} outlived the harness"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in namespaces, namespaces


def children(pid):
    """The pids of the servd processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and "servd" in stat.split("(", 1)[1].split(")")[0]:
                found.append(int(entry.name))
    return found


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    done = subprocess.run([str(CHAOS), "run", "--faults", "flood"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown fault \"flood\"" in done.stderr and "kill, pause" in done.stderr
    done = subprocess.run([str(CHAOS), "run", "--servd", str(tmp_path / "nope"), "--report", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no servd at" in done.stderr
    done = subprocess.run([str(CHAOS), "run", "--duration", "ten"], capture_output=True, text=True)
    assert done.returncode == 2 and "expected a number and a unit" in done.stderr
    done = subprocess.run([str(CHAOS), "run", "--hosts", "loopback", "--faults", "partition", "--servd", servd_bin(),
                           "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "partition and netem faults need --hosts netns" in done.stderr
