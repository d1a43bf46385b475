"""A cluster across separate network hosts: each node runs in its own network namespace (made
here with `ip netns`, joined by a bridge on a private subnet), binds only its own address, and
they join through a seed. Skipped, saying why, where namespaces cannot be made (not root, no
`ip`)."""

import os
import shutil
import subprocess

import pytest

from conftest import wait_until

FAST = ["--probe-period-ms", "200", "--suspect-timeout-ms", "1000"]


def sh(*command):
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture
def hosts():
    """Three network hosts: (namespace, address) pairs on a bridge; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    tag = os.getpid() % 10000
    subnet = f"10.213.{os.getpid() % 250}"
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
        for ns in made:
            sh("ip", "netns", "del", ns)
        sh("ip", "link", "del", bridge)


def test_nodes_on_separate_hosts_join_through_a_seed(start_servd, tmp_path, hosts):
    nodes = []
    for i, (ns, address) in enumerate(hosts):
        seeds = ["--seeds", f"{hosts[0][1]}:{nodes[0].mesh_port}"] if nodes else []
        node = start_servd(args=[*FAST, *seeds], data_dir=tmp_path / f"host{i}", host=address,
                           wrap=["ip", "netns", "exec", ns]).wait_ready()
        nodes.append(node)
    ids = sorted(n.get("/v1/node").json()["id"] for n in nodes)
    for node in nodes:
        def all_alive(node=node):
            members = node.get("/v1/cluster/members").json()["members"]
            return sorted(m["id"] for m in members if m["state"] == "alive") == ids
        wait_until(all_alive, timeout=20, message=f"{node.host} does not see all three hosts")
    mesh = {m["mesh_addr"] for m in nodes[1].get("/v1/cluster/members").json()["members"]}
    assert mesh == {f"{address}:{node.mesh_port}" for (_, address), node in zip(hosts, nodes)}
