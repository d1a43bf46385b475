"""The S3 edge driven by real clients, aws-cli (s3 and s3api) and rclone, configured only with the
endpoint and the root keys (environment variables and flags: no ~/.aws, no rclone.conf).

Every command's exit code is checked, and what a user would see (listed names and sizes, the bytes
downloaded) is compared with the local files.
"""

import filecmp
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, SECRET_KEY, md5_hex, s3_client, unique_bucket

MiB = 1024 * 1024

# SERV_LOG_LEVEL for the nodes of this file, e.g. E2E_SERV_LOG_LEVEL=debug to see failed requests.
LOG_LEVEL = os.environ.get("E2E_SERV_LOG_LEVEL")


@pytest.fixture
def node(start_servd):
    return start_servd(env={"SERV_LOG_LEVEL": LOG_LEVEL} if LOG_LEVEL else None).wait_ready()


def base_env(tmp_path: Path) -> dict:
    """The caller's environment without any AWS or rclone setting, and a HOME of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    return env


def run(cmd, env, node, timeout, check=True, input=None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}\n--- servd log (tail)\n{node.output()[-6000:]}")
    return result


# ---------------------------------------------------------------------------------------------
# Local trees


def write_random(path: Path, size: int, rng: random.Random):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def make_tree(root: Path, count: int, rng: random.Random, max_size=4096) -> dict:
    """`count` files of random content and size (one empty) in nested dirs; returns {rel: size}."""
    sizes = {}
    for i in range(count):
        depth = i % 4
        parts = [f"d{(i // 7) % 5}", f"sub{(i // 3) % 3}", "deep"][:depth]
        rel = "/".join([*parts, f"file-{i:04d}.bin"])
        size = 0 if i == 0 else rng.randint(1, max_size)
        write_random(root / rel, size, rng)
        sizes[rel] = size
    return sizes


def tree(root: Path) -> dict:
    """{relative path: (size, sha256)} of every file under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(MiB), b""):
                    digest.update(block)
            out[path.relative_to(root).as_posix()] = (path.stat().st_size, digest.hexdigest())
    return out


def sizes_of(root: Path) -> dict:
    """{relative path: size} of every file under root."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# aws-cli


class Aws:
    """Runs `aws` (the awscli package of this Python) against one node."""

    def __init__(self, node, tmp_path: Path):
        self.node = node
        self.env = base_env(tmp_path)
        self.env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
        })

    def __call__(self, *args, check=True, timeout=120) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", self.node.s3, *map(str, args)]
        return run(cmd, self.env, self.node, timeout, check=check)

    def json(self, *args, **kwargs):
        out = self(*args, "--output", "json", **kwargs).stdout
        return json.loads(out) if out.strip() else {}


def ls_recursive(aws, url) -> dict:
    """{key: size} from `aws s3 ls --recursive` ("DATE TIME SIZE KEY" lines)."""
    listed = {}
    for line in aws("s3", "ls", "--recursive", url).stdout.splitlines():
        _date, _time, size, key = line.split(None, 3)
        listed[key] = int(size)
    return listed


def test_aws_s3_commands(node, tmp_path):
    aws = Aws(node, tmp_path)
    rng = random.Random(1)
    bucket = unique_bucket("awscli")

    assert f"make_bucket: {bucket}" in aws("s3", "mb", f"s3://{bucket}").stdout
    listed = [line.split()[-1] for line in aws("s3", "ls").stdout.splitlines()]
    assert bucket in listed

    # cp: a small file and a 20 MiB one (aws-cli uploads it in 8 MiB parts).
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"hello from aws-cli\n")
    write_random(big, 20 * MiB, rng)
    aws("s3", "cp", small, f"s3://{bucket}/one/small.txt")
    aws("s3", "cp", big, f"s3://{bucket}/one/big.bin")
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "one/big.bin")
    assert head["ContentLength"] == 20 * MiB
    assert head["ETag"].strip('"').endswith("-3"), f"a 3-part multipart ETag, got {head['ETag']}"
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "one/small.txt")
    assert head["ETag"].strip('"') == md5_hex(small.read_bytes())

    down = tmp_path / "down"
    aws("s3", "cp", f"s3://{bucket}/one/small.txt", down / "small.txt")
    aws("s3", "cp", f"s3://{bucket}/one/big.bin", down / "big.bin")
    assert (down / "small.txt").read_bytes() == small.read_bytes()
    assert filecmp.cmp(down / "big.bin", big, shallow=False)
    assert ls_recursive(aws, f"s3://{bucket}") == {"one/small.txt": small.stat().st_size, "one/big.bin": 20 * MiB}

    # sync a tree up, list it, sync it back down into a fresh dir.
    src = tmp_path / "src"
    sizes = make_tree(src, 40, rng, max_size=64 * 1024)
    aws("s3", "sync", src, f"s3://{bucket}/tree")
    assert ls_recursive(aws, f"s3://{bucket}/tree/") == {f"tree/{rel}": size for rel, size in sizes.items()}
    again = aws("s3", "sync", src, f"s3://{bucket}/tree")
    assert again.stdout.strip() == "", f"a second sync of an unchanged tree uploads nothing:\n{again.stdout}"

    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{bucket}/tree", back)
    assert tree(back) == tree(src)

    # sync --delete after local changes: changed files go up, deleted ones go away.
    by_name = {rel.rsplit("/", 1)[-1]: rel for rel in sizes}
    (src / by_name["file-0001.bin"]).unlink()
    (src / by_name["file-0002.bin"]).write_bytes(b"changed size")
    write_random(src / "d0/sub1/new.bin", 1000, rng)
    aws("s3", "sync", "--delete", src, f"s3://{bucket}/tree")
    assert ls_recursive(aws, f"s3://{bucket}/tree/") == {f"tree/{rel}": size for rel, size in sizes_of(src).items()}
    back2 = tmp_path / "back2"
    aws("s3", "sync", f"s3://{bucket}/tree", back2)
    assert tree(back2) == tree(src)

    # a non-recursive ls shows the prefixes and objects of one level
    top = aws("s3", "ls", f"s3://{bucket}/tree/").stdout.splitlines()
    assert "PRE d0/" in [line.strip() for line in top]
    assert any(line.split()[-1] == "file-0000.bin" and line.split()[-2] == "0" for line in top), top

    # rm --recursive, then rb
    aws("s3", "rm", "--recursive", f"s3://{bucket}/tree/")
    assert ls_recursive(aws, f"s3://{bucket}") == {"one/small.txt": small.stat().st_size, "one/big.bin": 20 * MiB}
    refused = aws("s3", "rb", f"s3://{bucket}", check=False)
    assert refused.returncode != 0 and "BucketNotEmpty" in refused.stderr, refused
    aws("s3", "rm", "--recursive", f"s3://{bucket}")
    assert ls_recursive(aws, f"s3://{bucket}") == {}
    assert f"remove_bucket: {bucket}" in aws("s3", "rb", f"s3://{bucket}").stdout
    assert bucket not in [line.split()[-1] for line in aws("s3", "ls").stdout.splitlines()]
    missing = aws("s3", "ls", f"s3://{bucket}", check=False)
    assert missing.returncode != 0 and "NoSuchBucket" in missing.stderr, missing


def test_aws_s3api_commands(node, tmp_path):
    aws = Aws(node, tmp_path)
    rng = random.Random(2)
    bucket = unique_bucket("s3api")
    aws("s3api", "create-bucket", "--bucket", bucket)

    body = tmp_path / "body.bin"
    data = rng.randbytes(1000)
    body.write_bytes(data)
    put = aws.json("s3api", "put-object", "--bucket", bucket, "--key", "docs/a.bin", "--body", body,
                   "--content-type", "application/x-test", "--metadata", "owner=alice,purpose=e2e")
    assert put["ETag"].strip('"') == md5_hex(data)

    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "docs/a.bin")
    assert head["ContentLength"] == 1000
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"owner": "alice", "purpose": "e2e"}
    assert head["ETag"] == put["ETag"]
    missing = aws("s3api", "head-object", "--bucket", bucket, "--key", "docs/none", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr, missing

    out = tmp_path / "range.bin"
    got = aws.json("s3api", "get-object", "--bucket", bucket, "--key", "docs/a.bin", "--range", "bytes=100-199", out)
    assert out.read_bytes() == data[100:200]
    assert got["ContentLength"] == 100
    assert got["ContentRange"] == "bytes 100-199/1000"
    aws.json("s3api", "get-object", "--bucket", bucket, "--key", "docs/a.bin", "--range", "bytes=-10", out)
    assert out.read_bytes() == data[-10:]
    aws.json("s3api", "get-object", "--bucket", bucket, "--key", "docs/a.bin", out)
    assert out.read_bytes() == data

    # list-objects-v2 with a prefix and a delimiter
    for key in ["docs/b.txt", "docs/sub/c.txt", "docs/sub/d.txt", "docs/other/e.txt", "top.txt"]:
        aws("s3api", "put-object", "--bucket", bucket, "--key", key, "--body", body)
    listing = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "docs/", "--delimiter", "/")
    assert [o["Key"] for o in listing["Contents"]] == ["docs/a.bin", "docs/b.txt"]
    assert [o["Size"] for o in listing["Contents"]] == [1000, 1000]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["docs/other/", "docs/sub/"]
    listing = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--delimiter", "/")
    assert [o["Key"] for o in listing["Contents"]] == ["top.txt"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["docs/"]
    # aws-cli pages through with continuation tokens when asked for small pages
    listing = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--page-size", "2")
    assert [o["Key"] for o in listing["Contents"]] == sorted(
        ["docs/a.bin", "docs/b.txt", "docs/sub/c.txt", "docs/sub/d.txt", "docs/other/e.txt", "top.txt"])

    # multipart through s3api: two parts (5 MiB and a short last one), completed from a JSON file
    part1, part2 = rng.randbytes(5 * MiB), rng.randbytes(12345)
    (tmp_path / "p1").write_bytes(part1)
    (tmp_path / "p2").write_bytes(part2)
    upload_id = aws.json("s3api", "create-multipart-upload", "--bucket", bucket, "--key", "mp/object.bin",
                         "--content-type", "application/x-mp")["UploadId"]
    uploads = aws.json("s3api", "list-multipart-uploads", "--bucket", bucket)
    assert [(u["Key"], u["UploadId"]) for u in uploads["Uploads"]] == [("mp/object.bin", upload_id)]
    etags = []
    for number, path in [(1, tmp_path / "p1"), (2, tmp_path / "p2")]:
        part = aws.json("s3api", "upload-part", "--bucket", bucket, "--key", "mp/object.bin", "--upload-id", upload_id,
                        "--part-number", number, "--body", path)
        assert part["ETag"].strip('"') == md5_hex(path.read_bytes())
        etags.append(part["ETag"])
    parts = aws.json("s3api", "list-parts", "--bucket", bucket, "--key", "mp/object.bin", "--upload-id", upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in parts["Parts"]] == [(1, 5 * MiB), (2, 12345)]
    layout = tmp_path / "parts.json"
    layout.write_text(json.dumps({"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]}))
    done = aws.json("s3api", "complete-multipart-upload", "--bucket", bucket, "--key", "mp/object.bin",
                    "--upload-id", upload_id, "--multipart-upload", f"file://{layout}")
    expected_etag = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest() + "-2"
    assert done["ETag"].strip('"') == expected_etag
    assert done["Key"] == "mp/object.bin" and done["Bucket"] == bucket
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "mp/object.bin")
    assert head["ContentLength"] == 5 * MiB + 12345
    assert head["ContentType"] == "application/x-mp"
    assert head["ETag"].strip('"') == expected_etag
    aws.json("s3api", "get-object", "--bucket", bucket, "--key", "mp/object.bin", out)
    assert out.read_bytes() == part1 + part2
    aws.json("s3api", "get-object", "--bucket", bucket, "--key", "mp/object.bin",
             "--range", f"bytes={5 * MiB - 5}-{5 * MiB + 4}", out)
    assert out.read_bytes() == (part1 + part2)[5 * MiB - 5:5 * MiB + 5], "a range across the part boundary"
    assert aws.json("s3api", "list-multipart-uploads", "--bucket", bucket).get("Uploads", []) == []

    # an aborted upload leaves nothing behind
    upload_id = aws.json("s3api", "create-multipart-upload", "--bucket", bucket, "--key", "mp/aborted")["UploadId"]
    aws.json("s3api", "upload-part", "--bucket", bucket, "--key", "mp/aborted", "--upload-id", upload_id,
             "--part-number", 1, "--body", tmp_path / "p2")
    aws("s3api", "abort-multipart-upload", "--bucket", bucket, "--key", "mp/aborted", "--upload-id", upload_id)
    assert aws.json("s3api", "list-multipart-uploads", "--bucket", bucket).get("Uploads", []) == []
    gone = aws("s3api", "head-object", "--bucket", bucket, "--key", "mp/aborted", check=False)
    assert gone.returncode != 0 and "404" in gone.stderr, gone

    # copy-object and delete-object
    aws.json("s3api", "copy-object", "--bucket", bucket, "--key", "copy.bin", "--copy-source", f"{bucket}/docs/a.bin")
    aws.json("s3api", "get-object", "--bucket", bucket, "--key", "copy.bin", out)
    assert out.read_bytes() == data
    aws("s3api", "delete-object", "--bucket", bucket, "--key", "copy.bin")
    gone = aws("s3api", "head-object", "--bucket", bucket, "--key", "copy.bin", check=False)
    assert gone.returncode != 0 and "404" in gone.stderr, gone


def test_aws_cli_upload_after_an_empty_file_does_not_stall(node, tmp_path):
    """An empty file then a non-empty one on one pooled connection.

    botocore sends `Expect: 100-continue` with an empty body too; answered without a 100, it keeps
    that final status line for the next Expect request on the connection, which then misreads its
    response and stalls until the read timeout (boto/botocore#3755) unless the server closes the
    connection after such an answer.
    """
    aws = Aws(node, tmp_path)
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n  max_concurrent_requests = 1\n")
    aws.env["AWS_CONFIG_FILE"] = str(config)
    bucket = unique_bucket("awsempty")
    aws("s3", "mb", f"s3://{bucket}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-empty").write_bytes(b"")
    (src / "b-data").write_bytes(b"x" * 1000)
    started = time.monotonic()
    aws("--cli-read-timeout", "5", "s3", "sync", src, f"s3://{bucket}")
    elapsed = time.monotonic() - started
    assert ls_recursive(aws, f"s3://{bucket}") == {"a-empty": 0, "b-data": 1000}
    assert elapsed < 4, f"aws s3 sync of two tiny files took {elapsed:.1f}s (stalled until the read timeout)"


# ---------------------------------------------------------------------------------------------
# rclone


class Rclone:
    """Runs rclone against one node through an env-defined remote named `serv`."""

    def __init__(self, node, tmp_path: Path):
        self.node = node
        self.env = base_env(tmp_path)  # also drops AWS_CA_BUNDLE (LoadCustomCABundleError)
        self.env.update({
            "RCLONE_CONFIG": str(tmp_path / "no-rclone.conf"),
            "RCLONE_CONFIG_SERV_TYPE": "s3",
            "RCLONE_CONFIG_SERV_PROVIDER": "Other",
            "RCLONE_CONFIG_SERV_ACCESS_KEY_ID": ACCESS_KEY,
            "RCLONE_CONFIG_SERV_SECRET_ACCESS_KEY": SECRET_KEY,
            "RCLONE_CONFIG_SERV_ENDPOINT": node.s3,
            "RCLONE_CONFIG_SERV_REGION": "us-east-1",
        })

    def __call__(self, *args, check=True, timeout=120) -> subprocess.CompletedProcess:
        cmd = ["rclone", "--retries", "1", "--low-level-retries", "1", *map(str, args)]
        return run(cmd, self.env, self.node, timeout, check=check)


TRANSFER = ["--transfers", "4", "--checkers", "8",
            # so the 100 MiB file goes up in multipart (the default cutoff is 200 MiB)
            "--s3-upload-cutoff", "32M", "--s3-chunk-size", "16M", "--s3-upload-concurrency", "2"]


def lsf(rclone, remote) -> dict:
    """{path: size} from `rclone lsf -R --files-only --format ps`."""
    out = rclone("lsf", "-R", "--files-only", "--format", "ps", "--separator", "\t", remote).stdout
    return {path: int(size) for path, size in (line.split("\t") for line in out.splitlines())}


def assert_check(rclone, local, remote):
    result = rclone("check", local, remote, "--checkers", "8", check=False)
    assert result.returncode == 0 and "0 differences found" in result.stderr, (
        f"rclone check exited {result.returncode}\n{result.stderr[-4000:]}\n--- servd log\n{rclone.node.output()[-4000:]}")


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed (.ci/run installs it)")
def test_rclone_copy_check_sync_purge(node, tmp_path):
    rclone = Rclone(node, tmp_path)
    rng = random.Random(3)
    bucket = unique_bucket("rclone")
    remote = f"serv:{bucket}"

    local = tmp_path / "local"
    make_tree(local, 300, rng)
    write_random(local / "large/hundred.bin", 100 * MiB, rng)
    (local / "notes.txt").write_text("hello from rclone\n")

    rclone("mkdir", remote)
    assert bucket in rclone("lsd", "serv:").stdout
    rclone("copy", local, remote, *TRANSFER)
    head = s3_client(node).head_object(Bucket=bucket, Key="large/hundred.bin")
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].strip('"').endswith("-7"), f"rclone uploads it in 7 parts of 16 MiB, got {head['ETag']}"
    assert_check(rclone, local, remote)
    assert lsf(rclone, remote) == sizes_of(local)
    size = json.loads(rclone("size", "--json", remote).stdout)
    assert (size["count"], size["bytes"]) == (302, sum(sizes_of(local).values())), size
    assert rclone("cat", f"{remote}/notes.txt").stdout == "hello from rclone\n"

    # change some files (same size and new size), delete some, add some: sync makes the remote match
    by_name = {rel.rsplit("/", 1)[-1]: rel for rel in sizes_of(local)}
    for i in (5, 6, 7):
        path = local / by_name[f"file-{i:04d}.bin"]
        write_random(path, path.stat().st_size + (0 if i == 5 else 100), rng)
    for i in (10, 11, 12, 13):
        (local / by_name[f"file-{i:04d}.bin"]).unlink()
    write_random(local / "added/one.bin", 777, rng)
    write_random(local / "added/deeper/two.bin", 0, rng)
    rclone("sync", local, remote, *TRANSFER)
    assert_check(rclone, local, remote)
    assert lsf(rclone, remote) == sizes_of(local)
    size = json.loads(rclone("size", "--json", remote).stdout)
    assert (size["count"], size["bytes"]) == (len(sizes_of(local)), sum(sizes_of(local).values())), size

    # everything back down into a fresh dir, byte for byte
    fresh = tmp_path / "fresh"
    rclone("copy", remote, fresh, *TRANSFER)
    assert tree(fresh) == tree(local)

    # delete: the files under one dir only
    rclone("delete", f"{remote}/d1")
    expected = {p: s for p, s in sizes_of(local).items() if not p.startswith("d1/")}
    assert lsf(rclone, remote) == expected

    # purge: the rest and the bucket
    rclone("purge", remote)
    assert bucket not in rclone("lsd", "serv:").stdout
    gone = rclone("lsf", remote, check=False)
    assert gone.returncode != 0, gone
