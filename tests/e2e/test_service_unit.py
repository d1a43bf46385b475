"""contrib/servd.service, the systemd unit: systemd-analyze verifies it (no warning either), and
servd runs as the unit runs it: data dir from SERV_DATA_DIR, config file, reload with SIGHUP,
stop with SIGTERM and exit 0."""

import os
import signal
import subprocess

import requests

from conftest import ROOT, free_port, servd_bin, wait_until

UNIT = ROOT / "contrib" / "servd.service"


def unit_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_verifies_and_is_sandboxed(tmp_path):
    unit = tmp_path / "servd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/servd", servd_bin()))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), verified.stdout + verified.stderr
    settings = unit_settings()
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("DynamicUser", "yes"),
                       ("CapabilityBoundingSet", ""), ("UMask", "0077"), ("StateDirectoryMode", "0700"),
                       ("KillSignal", "SIGTERM")]:
        assert settings.get(key) == [value], (key, settings.get(key))
    assert "--config /etc/serv/servd.toml" in settings["ExecStart"][0]


def test_servd_runs_as_the_unit_runs_it(tmp_path):
    settings = unit_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERV_")}
    for assignment in settings["Environment"]:
        key, value = assignment.split("=", 1)
        env[key] = value.replace("/var/lib/serv", str(tmp_path / "state"))
    env.update(SERV_ADMIN_TOKEN="unit-token", SERV_CLUSTER_SECRET="unit-cluster-secret-0123456789abcd")
    admin = free_port()
    config = tmp_path / "servd.toml"
    ports = {name: free_port() for name in ("s3", "stomp", "stomp_ws", "http", "mesh")}
    config.write_text(f'admin_addr = "127.0.0.1:{admin}"\n'
                      + "".join(f'{name}_addr = "127.0.0.1:{port}"\n' for name, port in ports.items()))
    command = settings["ExecStart"][0].replace("/usr/local/bin/servd", servd_bin()).replace(
        "/etc/serv/servd.toml", str(config)).split()
    log = open(tmp_path / "servd.log", "wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = lambda: requests.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200  # noqa: E731
        wait_until(lambda: proc.poll() is None and _quiet(ready), timeout=30, message="servd ready")
        node = requests.get(f"http://127.0.0.1:{admin}/v1/node", headers={"Authorization": "Bearer unit-token"},
                            timeout=5).json()
        assert node["data_dir"] == str(tmp_path / "state"), "the data dir comes from the unit's SERV_DATA_DIR"
        proc.send_signal(signal.SIGHUP)  # ExecReload
        assert proc.poll() is None and _quiet(ready)
        proc.send_signal(signal.SIGTERM)  # KillSignal
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _quiet(check):
    try:
        return check()
    except requests.RequestException:
        return False
