"""A cluster across separate network hosts: each node runs in its own network namespace (made
here with `ip netns`, joined by a bridge on a private subnet), binds only its own address, and
they join through a seed. A node cut off from the others (blackhole routes) acknowledges nothing
and serves no stale read, while the majority goes on. Skipped, saying why, where namespaces cannot be made (not root, no
`ip`)."""

import itertools
import os
import shutil
import subprocess
import time
import uuid

import pytest
import stomp
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, SECRET_KEY, s3_client, wait_until
from test_cluster_actors import node_id, owner_of
from test_replication import put_until_served, wait_replicated
from test_stomp import Collector

FAST = ["--probe-period-ms", "200", "--suspect-timeout-ms", "1000"]

FIXTURES = itertools.count()


def sh(*command):
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture
def hosts():
    """Three network hosts: (namespace, address) pairs on a bridge; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    # Names and subnet unique to this fixture: the kernel removes a namespace's links after
    # `ip netns del` returns, so the next test cannot reuse them at once.
    made_before = next(FIXTURES)
    tag = (os.getpid() % 1000) * 10 + made_before % 10
    subnet = f"10.{213 + made_before % 10}.{os.getpid() % 250}"
    bridge = f"svbr{tag}"
    made = []
    try:
        for step in (["ip", "link", "add", bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge],
                     ["ip", "link", "set", bridge, "up"]):
            done = sh(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot make a bridge here: {done.stderr.strip()}")
        for i in range(1, 4):
            ns, outside, inside, address = f"sv{tag}n{i}", f"svh{tag}{i}", f"svn{tag}{i}", f"{subnet}.{10 + i}"
            made.append(ns)
            for step in (["ip", "netns", "add", ns],
                         ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
                         ["ip", "link", "set", inside, "netns", ns],
                         ["ip", "link", "set", outside, "master", bridge],
                         ["ip", "link", "set", outside, "up"],
                         ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", inside],
                         ["ip", "netns", "exec", ns, "ip", "link", "set", inside, "up"],
                         ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]):
                done = sh(*step)
                assert done.returncode == 0, f"{' '.join(step)}: {done.stderr}"
        yield [(ns, f"{subnet}.{10 + i}") for i, ns in enumerate(made, start=1)]
    finally:
        for i, ns in enumerate(made, start=1):
            sh("ip", "link", "del", f"svh{tag}{i}")
            sh("ip", "netns", "del", ns)
        sh("ip", "link", "del", bridge)


def start_on_hosts(start_servd, tmp_path, hosts):
    """A node on each host, joining through the first."""
    nodes = []
    for i, (ns, address) in enumerate(hosts):
        seeds = ["--seeds", f"{hosts[0][1]}:{nodes[0].mesh_port}"] if nodes else []
        node = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / f"host{i}", host=address,
                           wrap=["ip", "netns", "exec", ns]).wait_ready()
        nodes.append(node)
    return nodes


def test_nodes_on_separate_hosts_join_through_a_seed(start_servd, tmp_path, hosts):
    nodes = start_on_hosts(start_servd, tmp_path, hosts)
    ids = sorted(n.get("/v1/node").json()["id"] for n in nodes)
    for node in nodes:
        def all_alive(node=node):
            members = node.get("/v1/cluster/members").json()["members"]
            return sorted(m["id"] for m in members if m["state"] == "alive") == ids
        wait_until(all_alive, timeout=20, message=f"{node.host} does not see all three hosts")
    mesh = {m["mesh_addr"] for m in nodes[1].get("/v1/cluster/members").json()["members"]}
    assert mesh == {f"{address}:{node.mesh_port}" for (_, address), node in zip(hosts, nodes)}


def cut_off(hosts, index, verb="add"):
    """Cuts host `index` off from the other hosts, both ways (blackhole routes, as the chaos
    harness does), or heals the cut with `verb` "del". The test process still reaches every
    host over the bridge."""
    ns, address = hosts[index]
    for other, (peer_ns, peer_address) in enumerate(hosts):
        if other == index:
            continue
        for namespace, target in ((ns, peer_address), (peer_ns, address)):
            done = sh("ip", "netns", "exec", namespace, "ip", "route", verb, "blackhole", f"{target}/32")
            assert done.returncode == 0, f"route {verb} blackhole {target} in {namespace}: {done.stderr}"


def stomp_send(node, destination, body, wait=10.0):
    """SENDs with a receipt to `node` (on its host address): "receipt", "error" or "nothing"."""
    listener = Collector()
    conn = stomp.Connection12([(node.host, node.stomp_port)], timeout=wait)
    conn.set_listener("collector", listener)
    conn.connect(ACCESS_KEY, SECRET_KEY, wait=True)
    try:
        conn.send(destination, body, receipt="r1")
        try:
            listener.wait(lambda c: "r1" in c.receipts or c.errors, timeout=wait)
        except AssertionError:
            return "nothing"
        return "receipt" if "r1" in listener.receipts else "error"
    finally:
        if conn.is_connected():
            conn.disconnect()


def test_a_node_cut_off_in_a_minority_acknowledges_nothing_and_serves_no_stale_read(
        start_servd, tmp_path, hosts):
    nodes = start_on_hosts(start_servd, tmp_path, hosts)
    wait_replicated(nodes)
    bucket = f"cut-{uuid.uuid4().hex[:8]}"
    s3_client(nodes[0]).create_bucket(Bucket=bucket)
    s3_client(nodes[0]).put_object(Bucket=bucket, Key="k", Body=b"before the cut")
    queue = f"/queue/cut-{uuid.uuid4().hex[:8]}"
    assert stomp_send(nodes[0], queue, "before the cut") == "receipt"
    # The node cut off leads the bucket's partition: the minority side starts with its leader.
    leader = owner_of(nodes[0], f"bucket/{bucket}")
    index = next(i for i, n in enumerate(nodes) if node_id(n) == leader)
    minority, majority = nodes[index], [n for i, n in enumerate(nodes) if i != index]
    cut_off(hosts, index)
    try:
        cut = time.monotonic()
        served = put_until_served(s3_client(majority[0]), bucket, "k", b"after the cut", cut)
        print(f"\nthe majority serves writes again {served:.2f} s after the cut")
        assert stomp_send(majority[1], queue, "after the cut") == "receipt"
        # The minority acknowledges nothing and answers no read from what it held.
        with pytest.raises(ClientError) as refused:
            s3_client(minority).put_object(Bucket=bucket, Key="minority", Body=b"never acknowledged")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, refused.value.response
        with pytest.raises(ClientError) as stale:
            s3_client(minority).get_object(Bucket=bucket, Key="k")
        assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, stale.value.response
        assert stomp_send(minority, queue, "from the minority") in ("error", "nothing"), \
            "a node without a majority receipted a SEND"
    finally:
        cut_off(hosts, index, "del")
    # Healed: the node serves again, with the majority's writes and none of its own refused ones.
    wait_replicated(nodes)
    s3 = s3_client(minority)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"after the cut"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["k"]
