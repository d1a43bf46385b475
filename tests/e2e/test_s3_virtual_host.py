"""Virtual-host-style addressing (bucket.DOMAIN) next to path style, with --s3-domain."""

import socket

from conftest import s3_client, unique_bucket

DOMAIN = "s3.serv.test"


def test_virtual_host_style_requests_reach_the_bucket(start_servd, monkeypatch):
    node = start_servd(args=["--s3-domain", DOMAIN]).wait_ready()
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        # Every name under the test domain is this machine (no DNS is involved in the test).
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    class VirtualNode:
        s3 = f"http://{DOMAIN}:{node.s3_port}"

    virtual = s3_client(VirtualNode, s3={"addressing_style": "virtual"})
    path = s3_client(node)
    bucket = unique_bucket("vhost")
    virtual.create_bucket(Bucket=bucket)
    seen = []
    virtual.meta.events.register("before-send", lambda request, **_: seen.append(request.url))
    virtual.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello virtual host")
    assert seen and seen[-1].startswith(f"http://{bucket}.{DOMAIN}:"), seen
    assert path.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == b"hello virtual host"
    assert [o["Key"] for o in virtual.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/hello.txt"]
    assert virtual.get_object(Bucket=bucket, Key="dir/hello.txt", Range="bytes=6-")["Body"].read() == (
        b"virtual host")
