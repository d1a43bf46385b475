"""A single servd node seen from outside: readiness, inspection, metrics, errors, lifecycle."""

import json
import os
import re
import signal
import socket
import stat
import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, run_servd, s3_client, s3_error, wait_until

RECORD_FIELDS = {"key", "kind", "node", "state", "mailbox_depth", "handled", "restarts", "last_error", "uptime_ms"}
KINDS = ("bucket", "topic", "group", "route", "module")


def test_fresh_node_is_ready_and_lists_its_supervisors(servd):
    node = servd.get("/v1/node").json()
    assert len(node["id"]) == 16 and node["version"]
    assert node["addresses"]["admin"] == f"127.0.0.1:{servd.admin_port}"
    assert node["uptime_ms"] >= 0

    actors = servd.get("/v1/actors").json()["actors"]
    keys = {a["key"] for a in actors}
    assert {"supervisor/node", *(f"supervisor/{k}" for k in KINDS)} <= keys
    for actor in actors:
        assert RECORD_FIELDS <= actor.keys(), actor
        assert actor["node"] == node["id"]
        assert actor["status"] == "running"

    supervisors = servd.get("/v1/actors", params={"kind": "supervisor"}).json()["actors"]
    assert {a["key"] for a in supervisors} == {f"supervisor/{k}" for k in KINDS}
    on_node = servd.get("/v1/actors", params={"node": node["id"]}).json()["actors"]
    assert {a["key"] for a in on_node} == keys
    assert servd.get("/v1/actors", params={"node": "someone-else"}).json()["actors"] == []


def test_the_actors_of_deleted_entities_are_not_listed_unless_asked_for(servd):
    """A deleted bucket's or topic's actor runs on (holding nothing) until it passivates, as does
    the actor of a name that was never created: /v1/actors leaves them out, `absent=true` shows
    them."""
    s3 = s3_client(servd)
    s3.create_bucket(Bucket="kept")
    s3.create_bucket(Bucket="deleted")
    s3.delete_bucket(Bucket="deleted")
    assert s3_error(s3.head_bucket, Bucket="never-created")[0] == 404
    auth = {"Authorization": f"Bearer {servd.token}"}
    for name in ("kept", "deleted"):
        assert requests.put(f"{servd.admin}/v1/topics/topic/{name}", headers=auth, timeout=10).status_code == 200
    assert requests.delete(f"{servd.admin}/v1/topics/topic/deleted", headers=auth, timeout=10).status_code == 204
    gone = {"bucket/deleted", "bucket/never-created", "topic/topic/deleted"}

    def keys(**params):
        return {a["key"] for a in servd.get("/v1/actors", params=params).json()["actors"]}

    assert {"bucket/kept", "topic/topic/kept"} <= keys() and not gone & keys()
    assert not gone & keys(kind="bucket") and not gone & keys(kind="topic")
    absent = [a for a in servd.get("/v1/actors", params={"absent": "true"}).json()["actors"] if a["key"] in gone]
    assert sorted(a["key"] for a in absent) == sorted(gone) and {a["state"] for a in absent} == {"absent"}
    assert keys(absent="false") == keys()
    assert servd.get("/v1/actors", params={"absent": "maybe"}).status_code == 400


def test_the_events_feed_streams_actors_and_members_for_live_views(servd):
    """GET /v1/events (Server-Sent Events, what the console follows): `actors` and `members`
    events every interval_ms, each the body of the matching endpoint."""
    assert servd.get("/v1/events", token=None).status_code == 401
    bad = servd.get("/v1/events", params={"interval_ms": "5"})
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameter" and "250" in bad.json()["error"]
    node_id = servd.get("/v1/node").json()["id"]
    started = time.monotonic()
    with servd.get("/v1/events", params={"interval_ms": "250"}, stream=True) as feed:
        assert feed.headers["content-type"].startswith("text/event-stream")
        events, kind = [], None
        for line in feed.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
            if len(events) == 6:
                break
    elapsed = time.monotonic() - started
    assert [k for k, _ in events] == ["actors", "members"] * 3
    actors = events[0][1]["actors"]
    assert {"supervisor/node"} <= {a["key"] for a in actors} and all(a["node"] == node_id for a in actors)
    assert events[1][1]["members"][0]["id"] == node_id
    assert elapsed >= 0.4, "three rounds at 250 ms take at least two intervals"


def test_restarting_an_actor_counts_one_restart_and_is_audited_durably(start_servd, tmp_path):
    node = start_servd(data_dir=tmp_path / "n").wait_ready()
    assert requests.put(f"{node.admin}/v1/topics/topic/audited", headers={"Authorization": f"Bearer {node.token}"},
                        timeout=10).status_code == 200
    restart = lambda body: requests.post(f"{node.admin}/v1/actors/restart", data=body,  # noqa: E731
                                         headers={"Authorization": f"Bearer {node.token}"}, timeout=10)
    assert restart('{"key": "nonsense"}').json()["code"] == "InvalidParameter"
    assert restart("not json").status_code == 400
    missing = restart('{"key": "bucket/never-used"}')
    assert missing.status_code == 404 and "not running" in missing.json()["error"]
    done = restart('{"key": "topic/topic/audited"}')
    assert done.status_code == 200 and done.json() == {"key": "topic/topic/audited", "action": "restart", "done": True}
    actor = [a for a in node.get("/v1/actors").json()["actors"] if a["key"] == "topic/topic/audited"][0]
    assert actor["restarts"] == 1 and actor["last_error"] is None
    info = node.get("/v1/topics/topic/audited").json()
    assert info["name"] == "topic/audited", "the restarted topic still answers from its stored state"

    passivated = requests.post(f"{node.admin}/v1/actors/passivate", data='{"key": "topic/topic/audited"}',
                               headers={"Authorization": f"Bearer {node.token}"}, timeout=10)
    assert passivated.status_code == 200 and passivated.json()["action"] == "passivate"
    assert "topic/topic/audited" not in {a["key"] for a in node.get("/v1/actors").json()["actors"]}
    assert node.get("/v1/topics/topic/audited").status_code == 200, "its next message starts it again"
    assert "topic/topic/audited" in {a["key"] for a in node.get("/v1/actors").json()["actors"]}

    entries = node.get("/v1/audit").json()["entries"]
    assert [(e["action"], e["target"], e["outcome"] == "ok") for e in entries] == [
        ("passivate", "topic/topic/audited", True), ("restart", "topic/topic/audited", True),
        ("restart", "bucket/never-used", False), ("put", "topic/topic/audited", True)]
    assert all(e["trace_id"] and e["at_ms"] > 0 and e["actor"] == "admin token" for e in entries)
    assert node.get("/v1/audit", params={"limit": "1"}).json()["entries"] == entries[:1]
    assert node.get("/v1/audit", params={"limit": "0"}).status_code == 400
    node.stop()
    again = start_servd(data_dir=tmp_path / "n").wait_ready()
    assert again.get("/v1/audit").json()["entries"] == entries, "the audit log survives a restart"


def test_metrics_are_prometheus_text(servd):
    response = requests.get(f"{servd.admin}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    rss = families["serv_process_resident_memory_bytes"].samples[0].value
    assert 1_000_000 < rss < 2_000_000_000
    assert families["serv_uptime_seconds"].samples[0].value >= 0
    actors = {s.labels["kind"]: s.value for s in families["serv_actors"].samples}
    assert actors["supervisor"] == len(KINDS) and actors["node"] == 1
    assert families["serv_actor_messages_handled"].type == "counter"
    assert families["serv_actor_restarts"].type == "counter"
    assert families["serv_storage_fsyncs"].type == "counter"
    histogram = families["serv_storage_group_commit_size"]
    assert histogram.type == "histogram"
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" for s in histogram.samples)


def test_a_console_session_works_until_it_expires_and_cannot_be_stretched(start_servd, tmp_path):
    """POST /v1/sessions trades the admin token for a session token that expires: it works like
    the admin token until then, is refused with TokenExpired after, and cannot open another."""
    node = start_servd(args=["--admin-session-ttl-ms", "60000"], data_dir=tmp_path / "n1").wait_ready()

    def open_session(body=None, token=node.token):
        return requests.post(f"{node.admin}/v1/sessions", headers={"Authorization": f"Bearer {token}"},
                             data=json.dumps(body) if body is not None else None, timeout=10)

    def code(response):
        return response.status_code, response.json()["code"]

    before = int(time.time() * 1000)  # whole ms, as the node counts
    longest = open_session()
    assert longest.status_code == 201, longest.text
    session, expires = longest.json()["token"], longest.json()["expires_at_ms"]
    assert before + 60000 <= expires <= time.time() * 1000 + 60000, "the configured longest session"
    assert node.token not in session
    assert node.get("/v1/node", token=session).status_code == 200
    assert node.get("/v1/actors", token=session).json()["actors"]
    assert code(open_session(token=session)) == (403, "Forbidden"), "a session cannot extend itself"
    assert code(open_session({"ttl_ms": 60001})) == (400, "InvalidParameter")
    assert code(open_session({"ttl_ms": 0})) == (400, "InvalidParameter")
    assert code(open_session({"ttl": 5})) == (400, "InvalidParameter")
    assert code(open_session(token="wrong")) == (401, "InvalidToken")
    # Its end is signed: moving it makes the token worthless.
    assert session.startswith("serv-session.v1.")
    expiry = session.split(".")[2]
    moved = session.replace(f".{expiry}.", f".{int(expiry) + 3600000}.", 1)
    assert code(node.get("/v1/node", token=moved)) == (401, "InvalidToken")
    # Another node with another admin token does not take it.
    other = start_servd(args=["--admin-session-ttl-ms", "60000"], data_dir=tmp_path / "n2", token="another-token")
    assert code(other.wait_ready().get("/v1/node", token=session)) == (401, "InvalidToken")

    short = open_session({"ttl_ms": 1500}).json()
    assert node.get("/v1/node", token=short["token"]).status_code == 200
    # A live feed opened with it ends when it does.
    with node.get("/v1/events", token=short["token"], params={"interval_ms": "250"}, stream=True) as feed:
        lines = sum(1 for line in feed.iter_lines() if line.startswith(b"event:"))
    assert time.time() * 1000 >= short["expires_at_ms"] and lines >= 2
    expired = node.get("/v1/node", token=short["token"])
    assert code(expired) == (401, "TokenExpired") and "sign in again" in expired.json()["error"]
    assert node.get("/v1/node", token=session).status_code == 200, "the longer session still works"


def test_errors_are_json_with_code_and_trace_id(servd):
    def check(response, status, code):
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error", "code", "trace_id"}, body
        assert body["code"] == code and body["error"]
        assert len(body["trace_id"]) == 32
        return body

    check(servd.get("/no/such/path"), 404, "NotFound")
    check(servd.get("/v1/actors", params={"kind": "spaceship"}), 400, "InvalidParameter")
    check(servd.get("/v1/actors", params={"colour": "red"}), 400, "InvalidParameter")
    missing = servd.get("/v1/actors", token=None)
    check(missing, 401, "MissingToken")
    assert missing.headers["www-authenticate"] == "Bearer"
    check(servd.get("/v1/node", token="wrong"), 401, "InvalidToken")
    check(requests.post(f"{servd.admin}/healthz", timeout=10), 405, "MethodNotAllowed")

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = check(servd.get("/nope", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}), 404, "NotFound")
    assert body["trace_id"] == trace, "the caller's trace continues"

    # health, readiness and metrics need no token
    assert requests.get(f"{servd.admin}/healthz", timeout=10).status_code == 200


def test_sigterm_drains_and_exits_zero(servd):
    assert servd.stop(signal.SIGTERM) == 0
    assert "stopped cleanly" in servd.output()


def test_a_drain_that_runs_out_of_time_abandons_what_is_in_flight_and_exits_zero(start_servd):
    node = start_servd(args=["--drain-timeout-ms", "1500"]).wait_ready()
    s3 = s3_client(node)
    s3.create_bucket(Bucket="drained")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "drained", "Key": "slow"}, ExpiresIn=120)
    sent = threading.Event()

    def slowly():  # 10 MiB announced, 64 KiB every 200 ms: still in flight when the drain ends
        for _ in range(160):
            yield b"x" * 65536
            sent.set()
            time.sleep(0.2)

    class Body:  # a length, so that requests sends Content-Length rather than chunks
        def __len__(self):
            return 160 * 65536

        def __iter__(self):
            return slowly()

    def upload():
        try:
            requests.put(url, data=Body(), timeout=60)
        except requests.RequestException:
            pass  # cut off when the node stops: expected

    threading.Thread(target=upload, daemon=True).start()
    assert sent.wait(10)
    time.sleep(0.5)
    started = time.monotonic()
    assert node.stop(signal.SIGTERM) == 0, node.output()
    assert time.monotonic() - started < 10, "the drain ends at its timeout"
    assert "the drain ran out of time" in node.output() and "closing S3 connections" in node.output()
    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    missing = s3_error(s3_client(restarted).head_object, Bucket="drained", Key="slow")
    assert missing[0] == 404, "the abandoned upload was never acknowledged, and is not there"


def blocks_sigterm(pid) -> bool:
    """True once the process's main thread blocks SIGTERM: servd's first act in main."""
    try:
        with open(f"/proc/{pid}/status") as status:
            blocked = next(line for line in status if line.startswith("SigBlk:")).split()[1]
    except (FileNotFoundError, StopIteration):
        return False
    return bool(int(blocked, 16) & (1 << (signal.SIGTERM - 1)))


def test_a_stop_signal_in_the_first_milliseconds_is_a_drain_and_exits_zero(start_servd, tmp_path):
    # Before the runtime or the handlers existed, a SIGTERM killed the process (-15). The first
    # node is signalled the moment main has run its first line (from exec to main the loader
    # runs, which no program can guard), the others after fixed delays.
    first = start_servd(data_dir=tmp_path / "early-first")
    deadline = time.monotonic() + 10
    while not blocks_sigterm(first.proc.pid):
        assert time.monotonic() < deadline and first.proc.poll() is None, first.output()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=60) == 0, f"SIGTERM at main's first line:\n{first.output()}"
    first.log.close()
    for i, delay in enumerate([0.02, 0.05, 0.1]):
        node = start_servd(data_dir=tmp_path / f"early-{i}")
        time.sleep(delay)
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=60) == 0, f"SIGTERM {delay * 1000:.0f} ms after start:\n{node.output()}"
        node.log.close()
    hup = start_servd(data_dir=tmp_path / "early-hup")
    wait_until(lambda: blocks_sigterm(hup.proc.pid), timeout=10, interval=0)
    hup.proc.send_signal(signal.SIGHUP)  # re-reads TLS files: never a stop, also this early
    hup.wait_ready()
    assert hup.stop() == 0


def test_the_data_dir_and_everything_in_it_are_the_users_alone(servd):
    assert servd.get("/v1/node").status_code == 200
    modes = {path: stat.S_IMODE(os.lstat(path).st_mode) for path in [servd.data_dir, *servd.data_dir.rglob("*")]}
    assert modes[servd.data_dir] == 0o700, oct(modes[servd.data_dir])
    exposed = {str(path): oct(mode) for path, mode in modes.items() if mode & 0o077}
    assert not exposed, f"readable by others: {exposed}"
    assert len(modes) > 5, "the database's files were checked"


def test_sigint_also_exits_zero(servd):
    assert servd.stop(signal.SIGINT) == 0


def test_second_servd_on_the_same_data_dir_is_refused(servd, start_servd):
    second = start_servd(data_dir=servd.data_dir)
    assert second.proc.wait(timeout=30) != 0
    output = second.output()
    assert "in use" in output and str(servd.data_dir) in output, output
    assert "panicked" not in output
    # the first node is unharmed
    assert servd.get("/v1/node").status_code == 200


def test_generated_secrets_are_stored_0600_and_printed_once(start_servd, tmp_path):
    no_creds = {"SERV_ACCESS_KEY": "", "SERV_SECRET_KEY": "", "SERV_CLUSTER_SECRET": ""}  # empty: generate
    first = start_servd(token=None, env=no_creds).wait_ready()
    token_file = first.data_dir / "admin-token"
    creds_file = first.data_dir / "root-credentials"
    cluster_file = first.data_dir / "cluster-secret"
    for path in (token_file, creds_file, cluster_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    token = token_file.read_text().strip()
    assert len(token) == 64
    assert f"generated admin token {token}" in first.output()
    assert "generated root credentials" in first.output()
    assert f"generated cluster secret {cluster_file.read_text().strip()}" in first.output()
    assert first.get("/v1/node", token=token).status_code == 200
    node_id = first.get("/v1/node", token=token).json()["id"]
    assert first.stop() == 0

    second = start_servd(token=None, env=no_creds, data_dir=first.data_dir).wait_ready()
    assert second.get("/v1/node", token=token).json()["id"] == node_id, "node id is stable"
    assert token not in second.output(), "the token is printed only when generated"
    assert "servd: generated" not in second.output()


def test_bad_command_lines_and_config_files_exit_2(tmp_path):
    unknown = run_servd(["--no-such-flag"])
    assert unknown.returncode == 2 and "--no-such-flag" in unknown.stderr

    bad_addr = run_servd(["--admin-addr", "not-an-address"])
    assert bad_addr.returncode == 2 and "admin-addr" in bad_addr.stderr

    malformed = tmp_path / "bad.toml"
    malformed.write_text('admin_addr = "127.0.0.1:1\n')
    result = run_servd(["--config", str(malformed), "--data-dir", str(tmp_path / "d")])
    assert result.returncode == 2 and "bad.toml" in result.stderr, result.stderr

    unknown_key = tmp_path / "typo.toml"
    unknown_key.write_text('admin_adr = "127.0.0.1:1"\n')
    result = run_servd(["--config", str(unknown_key), "--data-dir", str(tmp_path / "d")])
    assert result.returncode == 2 and "admin_adr" in result.stderr, result.stderr

    clash = run_servd(["--s3-addr", "127.0.0.1:9999", "--http-addr", "127.0.0.1:9999"])
    assert clash.returncode == 2 and "s3_addr" in clash.stderr

    bad_level = run_servd(["--log-level", "info,=nonsense=="])
    assert bad_level.returncode == 2 and "log_level" in bad_level.stderr, bad_level.stderr

    short_session = run_servd(["--admin-session-ttl-ms", "10"])
    assert short_session.returncode == 2 and "admin_session_ttl_ms" in short_session.stderr

    for flag, value in [("--wasm-memory-bytes", "1000"), ("--wasm-fuel", "0"), ("--wasm-deadline-ms", "0")]:
        bad_wasm = run_servd([flag, value])
        assert bad_wasm.returncode == 2 and flag[2:].replace("-", "_") in bad_wasm.stderr, (flag, bad_wasm.stderr)


def test_flag_beats_env_beats_file(start_servd, tmp_path):
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "servd.toml"
    config.write_text(f'admin_addr = "127.0.0.1:{file_port}"\nlog_format = "json"\n')

    def listens(port):
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    # the file alone chooses the admin address and JSON logs
    from_file = start_servd(args=["--config", str(config)], data_dir=tmp_path / "a", admin_addr=None)
    wait_for(lambda: listens(file_port))
    assert from_file.stop() == 0
    lines = [json.loads(line) for line in from_file.output().splitlines() if line.startswith("{")]
    assert any(line["fields"].get("message") == "servd is ready" for line in lines), from_file.output()

    # the environment beats the file
    env = {"SERV_ADMIN_ADDR": f"127.0.0.1:{env_port}"}
    from_env = start_servd(args=["--config", str(config)], env=env, data_dir=tmp_path / "b", admin_addr=None)
    wait_for(lambda: listens(env_port))
    assert not listens(file_port)
    assert from_env.stop() == 0

    # a flag beats the environment
    from_flag = start_servd(args=["--config", str(config)], env=env, data_dir=tmp_path / "c",
                            admin_addr=f"127.0.0.1:{flag_port}")
    wait_for(lambda: listens(flag_port))
    assert not listens(env_port) and not listens(file_port)
    assert from_flag.stop() == 0


def test_unusable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_servd(["--data-dir", str(blocker / "data"), "--admin-addr", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 1
    assert str(blocker / "data") in result.stderr and "panicked" not in result.stderr, result.stderr


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_refused_s3_requests_are_logged_at_debug_and_failures_in_one_info_line(start_servd):
    """A 404 or a 403 is the client's business: at the default level the node logs no line for
    it (the S3 library's error-level dump of each refusal is off); a 5xx is one info line; with
    debug, each refusal is one line too."""
    import boto3
    from botocore.exceptions import ClientError

    from conftest import s3_client

    quiet = start_servd().wait_ready()
    s3 = s3_client(quiet)
    s3.create_bucket(Bucket="logged-bucket")
    stranger = boto3.client("s3", endpoint_url=quiet.s3, aws_access_key_id="AKIDUNKNOWN",
                            aws_secret_access_key="x" * 40, region_name="us-east-1")
    for attempt in (lambda: s3.head_bucket(Bucket="no-such-bucket"),
                    lambda: s3.get_object(Bucket="no-such-bucket", Key="k"),
                    lambda: stranger.list_buckets(),
                    lambda: s3.get_bucket_ownership_controls(Bucket="logged-bucket")):
        try:
            attempt()
            raise AssertionError("the request was not refused")
        except ClientError:
            pass
    assert quiet.stop() == 0
    output = re.sub(r"\x1b\[[0-9;]*m", "", quiet.output())
    assert "servd is ready" in output
    noisy = [line for line in output.splitlines() if " ERROR " in line or " WARN " in line]
    assert noisy == [], noisy
    assert "no-such-bucket" not in output and "AKIDUNKNOWN" not in output
    failed = [line for line in output.splitlines() if "S3 request failed" in line]
    assert len(failed) == 1 and " INFO " in failed[0] and "status=501" in failed[0], failed

    chatty = start_servd(args=["--log-level", "debug"]).wait_ready()
    try:
        s3_client(chatty).get_object(Bucket="no-such-bucket", Key="k")
    except ClientError as error:
        assert error.response["Error"]["Code"] == "NoSuchBucket"
    assert chatty.stop() == 0
    refused = [line for line in chatty.output().splitlines() if "S3 request refused" in line]
    assert any("/no-such-bucket/k" in line and "404" in line for line in refused), refused[-3:]


def test_every_admin_change_is_audited_with_who_asked(servd):
    """Routes, topics and keys put and deleted, with the admin token or a console session: each
    change is in the audit log with its actor (a session by its token's fingerprint, never the
    token), and a refused change with why."""
    token = {"Authorization": f"Bearer {servd.token}"}
    session = requests.post(f"{servd.admin}/v1/sessions", headers=token, timeout=10).json()["token"]
    as_session = {"Authorization": f"Bearer {session}"}
    route = {"upstreams": ["http://127.0.0.1:9"]}
    calls = [
        ("PUT", "/v1/routes/audited", token, json.dumps(route)),
        ("DELETE", "/v1/routes/audited", as_session, None),
        ("PUT", "/v1/topics/queue/audited", as_session, None),
        ("DELETE", "/v1/topics/queue/audited", token, None),
        ("POST", "/v1/keys", token, json.dumps({"name": "audited-key"})),
        ("POST", "/v1/keys", token, json.dumps({"name": "audited-key"})),
    ]
    for method, path, headers, body in calls:
        answer = requests.request(method, f"{servd.admin}{path}", headers={**headers, "Content-Type": "application/json"},
                                  data=body, timeout=10)
        assert answer.status_code < 500, (path, answer.text)
    access_key = next(k["access_key"] for k in servd.get("/v1/keys").json()["keys"] if k["name"] == "audited-key")
    assert requests.delete(f"{servd.admin}/v1/keys/{access_key}", headers=as_session, timeout=10).status_code == 204
    entries = servd.get("/v1/audit").json()["entries"][::-1]  # oldest first
    seen = [(e["action"], e["target"], e["actor"].split()[0], e["outcome"] == "ok") for e in entries]
    assert seen == [
        ("put", "route/audited", "admin", True), ("delete", "route/audited", "session", True),
        ("put", "topic/queue/audited", "session", True), ("delete", "topic/queue/audited", "admin", True),
        ("create", "key/audited-key", "admin", True), ("create", "key/audited-key", "admin", False),
        ("revoke", f"key/{access_key}", "session", True)], seen
    actors = {e["actor"] for e in entries if e["actor"].startswith("session ")}
    assert len(actors) == 1 and session not in str(entries), "one session, known by a fingerprint only"
