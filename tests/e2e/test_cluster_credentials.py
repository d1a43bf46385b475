"""One cluster, one admin token and one root key pair: the README's 3-node recipe run as written,
and rotations that reach every node, also one that was down when it was made."""

import os
import re
import signal
import subprocess

import boto3
import botocore
import pytest
import requests
import stomp
from botocore.config import Config

from conftest import CLUSTER_SECRET, ROOT, s3_client, servd_bin, unique_bucket, wait_until

FAST = ["--probe-period-ms", "200", "--suspect-timeout-ms", "1000"]
# Founders and joiners make or adopt the credentials: nothing pins them.
UNPINNED = {"SERV_ACCESS_KEY": "", "SERV_SECRET_KEY": "", "SERV_ADMIN_TOKEN": ""}


def readme_recipe() -> str:
    """The first shell block under the README's "### A cluster", with servd for `cargo run`."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### A cluster"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert "cargo run --release --" in block, block
    return block.replace("cargo run --release --", '"$SERVD_BIN"')


def status(url, token):
    try:
        return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code
    except requests.RequestException:
        return None


def client(endpoint, access, secret):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30))


@pytest.fixture
def recipe_cluster(tmp_path):
    """Runs the README recipe in its own session (so that every node it starts is ours to end)."""
    log = open(tmp_path / "recipe.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERV_")}
    env.update(SERVD_BIN=servd_bin(), SERV_CLUSTER_SECRET=CLUSTER_SECRET)
    shell = subprocess.Popen(["bash", "-c", readme_recipe() + "\nwait\n"], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield tmp_path
    try:
        os.killpg(shell.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    shell.wait()
    log.close()


def test_the_readme_cluster_recipe_works_with_the_founders_credentials_on_every_node(recipe_cluster):
    workdir = recipe_cluster
    admins = [f"http://127.0.0.1:909{i}" for i in (1, 2, 3)]
    output = lambda: (workdir / "recipe.log").read_text(errors="replace")  # noqa: E731
    for admin in admins:
        wait_until(lambda: status(f"{admin}/readyz", "") == 200, timeout=60,
                   message=f"{admin} not ready:\n{output()}")

    token = (workdir / "n1" / "admin-token").read_text().strip()
    access, secret = (workdir / "n1" / "root-credentials").read_text().strip().split(":")
    printed = output()
    assert printed.count("servd: generated admin token") == 1, printed
    assert printed.count("servd: generated root credentials") == 1, printed
    assert f"generated admin token {token}" in printed, "the founder prints the token it made"
    for n in (2, 3):
        assert (workdir / f"n{n}" / "admin-token").read_text().strip() == token, f"node {n} keeps the cluster's"

    for admin in admins:
        members = requests.get(f"{admin}/v1/cluster/members", headers={"Authorization": f"Bearer {token}"},
                               timeout=5)
        assert members.status_code == 200, (admin, members.text)
        assert len(members.json()["members"]) == 3

    bucket = unique_bucket("recipe")
    client("http://127.0.0.1:9003", access, secret).create_bucket(Bucket=bucket)
    client("http://127.0.0.1:9003", access, secret).put_object(Bucket=bucket, Key="k", Body=b"from node 3")
    got = client("http://127.0.0.1:9002", access, secret).get_object(Bucket=bucket, Key="k")["Body"].read()
    assert got == b"from node 3"

    conn = stomp.Connection([("127.0.0.1", 61703)], heartbeats=(0, 0))
    conn.connect(access, secret, wait=True)
    assert conn.is_connected(), "node 3's STOMP edge takes node 1's root pair"
    conn.disconnect()

    # Rotated through node 2, the token changes everywhere.
    rotated = requests.post(f"{admins[1]}/v1/cluster/rotate-admin-token",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert rotated.status_code == 200, rotated.text
    new_token = rotated.json()["token"]
    assert new_token != token
    for admin in admins:
        wait_until(lambda: status(f"{admin}/v1/node", new_token) == 200, timeout=10,
                   message=f"{admin} does not take the rotated token")
        assert status(f"{admin}/v1/node", token) == 401, f"{admin} still takes the old token"
    assert (workdir / "n1" / "admin-token").read_text().strip() == new_token
    audit = requests.get(f"{admins[1]}/v1/audit", headers={"Authorization": f"Bearer {new_token}"},
                         timeout=10).json()["entries"]
    assert any(e["action"] == "rotate" and e["target"] == "cluster/admin-token" for e in audit), audit
    assert new_token not in output(), "a rotated token is answered, never logged"


def test_a_node_down_during_a_rotation_adopts_it_when_back(start_servd, tmp_path):
    founder = start_servd(args=FAST, token=None, env=UNPINNED, data_dir=tmp_path / "a").wait_ready()
    token = (founder.data_dir / "admin-token").read_text().strip()
    access, secret = (founder.data_dir / "root-credentials").read_text().strip().split(":")
    seed = ["--seeds", f"127.0.0.1:{founder.mesh_port}"]
    joiner = start_servd(args=[*FAST, *seed], token=None, env=UNPINNED, data_dir=tmp_path / "b").wait_ready()
    assert "servd: generated" not in joiner.output(), "a joining node makes up nothing"
    assert joiner.get("/v1/node", token=token).status_code == 200
    assert joiner.stop() == 0

    rotated = requests.post(f"{founder.admin}/v1/cluster/rotate-root-credentials",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["access_key"] == access, "the root access key stays (it owns buckets)"
    new_secret = rotated.json()["secret_key"]
    assert new_secret != secret
    token_rotation = requests.post(f"{founder.admin}/v1/cluster/rotate-admin-token",
                                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
    new_token = token_rotation.json()["token"]

    back = start_servd(args=[*FAST, *seed], token=None, env=UNPINNED, data_dir=tmp_path / "b").wait_ready()
    wait_until(lambda: back.get("/v1/node", token=new_token).status_code == 200, timeout=15,
               message="the node that was down never adopted the rotated token")
    assert back.get("/v1/node", token=token).status_code == 401
    bucket = unique_bucket("rotated")
    s3_client(back, access=access, secret=new_secret).create_bucket(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3_client(back, access=access, secret=secret).list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_a_pinned_token_is_not_rotated_and_a_joiner_without_peers_serves_no_admin_api(start_servd, tmp_path):
    pinned = start_servd(args=FAST).wait_ready()  # SERV_ADMIN_TOKEN given: pinned
    refused = requests.post(f"{pinned.admin}/v1/cluster/rotate-admin-token",
                            headers={"Authorization": f"Bearer {pinned.token}"}, timeout=10)
    assert refused.status_code == 409 and "SERV_ADMIN_TOKEN" in refused.json()["error"], refused.text
    assert pinned.get("/v1/node").status_code == 200, "the pinned token still works"

    # A joining node whose seed never answers has no token of its own to accept.
    lonely = start_servd(args=[*FAST, "--seeds", "127.0.0.1:1"], token=None, env=UNPINNED,
                         data_dir=tmp_path / "lonely")
    wait_until(lambda: status(f"{lonely.admin}/healthz", "") == 200, timeout=30)
    ready = requests.get(f"{lonely.admin}/readyz", timeout=5)
    assert ready.status_code == 503
    answer = requests.get(f"{lonely.admin}/v1/node", headers={"Authorization": "Bearer anything"}, timeout=5)
    assert answer.status_code == 503 and answer.json()["code"] == "NotReady", answer.text
    assert not (lonely.data_dir / "admin-token").exists()
    assert "servd: generated admin token" not in lonely.output()
