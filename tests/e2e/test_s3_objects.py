"""S3 buckets and objects through boto3: CRUD, metadata, ranges, conditions, checksums, copies."""

import base64
import gzip
import hashlib
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import requests
from botocore.exceptions import ClientError

from conftest import md5_hex, s3_client, s3_error, unique_bucket


def keys_of(s3, bucket, **kwargs):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, **kwargs).get("Contents", [])]


def test_bucket_lifecycle(s3):
    name = unique_bucket()
    assert s3.create_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket=name).get("LocationConstraint") in (None, "", "us-east-1")
    assert s3_error(s3.create_bucket, Bucket=name) == (409, "BucketAlreadyOwnedByYou")

    s3.put_object(Bucket=name, Key="keep-me", Body=b"x")
    assert s3_error(s3.delete_bucket, Bucket=name) == (409, "BucketNotEmpty")
    assert keys_of(s3, name) == ["keep-me"], "a refused DeleteBucket leaves the objects"

    s3.delete_object(Bucket=name, Key="keep-me")
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3_error(s3.head_bucket, Bucket=name)[0] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3_error(s3.delete_bucket, Bucket=name) == (404, "NoSuchBucket")
    # the name is free again
    s3.create_bucket(Bucket=name)
    assert keys_of(s3, name) == [], "a re-created bucket starts empty"


def test_invalid_bucket_names_are_refused(s3):
    bad = ["ab", "UPPER", "has_underscore", "a" * 64, "-starts-with-dash", "ends-with-dash-",
           "two..dots", "192.168.5.4"]
    for name in bad:
        assert s3_error(s3.create_bucket, Bucket=name) == (400, "InvalidBucketName"), name
    listed = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not set(bad) & set(listed)
    # the limits themselves are fine
    for name in ["abc", "a" * 63, "with.dots-and-1-digit"]:
        s3.create_bucket(Bucket=name)
        s3.head_bucket(Bucket=name)


def test_operations_on_a_missing_bucket_are_no_such_bucket(s3):
    missing = unique_bucket("missing")
    assert s3_error(s3.put_object, Bucket=missing, Key="k", Body=b"x") == (404, "NoSuchBucket")
    assert s3_error(s3.get_object, Bucket=missing, Key="k") == (404, "NoSuchBucket")
    assert s3_error(s3.list_objects_v2, Bucket=missing) == (404, "NoSuchBucket")
    assert s3_error(s3.head_bucket, Bucket=missing)[0] == 404
    assert missing not in [b["Name"] for b in s3.list_buckets()["Buckets"]], "a PUT must not create the bucket"


def test_put_get_head_round_trip_headers_and_metadata(s3, bucket):
    body = gzip.compress(b"hello, serv\n" * 100)
    put = s3.put_object(
        Bucket=bucket, Key="docs/report.txt", Body=body,
        Metadata={"colour": "blue", "Mixed-Case": "Value With Spaces"},
        ContentType="text/plain; charset=utf-8", ContentEncoding="gzip",
        ContentDisposition='attachment; filename="report.txt"', CacheControl="max-age=3600")
    assert put["ETag"] == f'"{md5_hex(body)}"'

    for response in (s3.head_object(Bucket=bucket, Key="docs/report.txt"),
                     s3.get_object(Bucket=bucket, Key="docs/report.txt")):
        assert response["ETag"] == put["ETag"]
        assert response["ContentLength"] == len(body)
        assert response["ContentType"] == "text/plain; charset=utf-8"
        assert response["ContentEncoding"] == "gzip"
        assert response["ContentDisposition"] == 'attachment; filename="report.txt"'
        assert response["CacheControl"] == "max-age=3600"
        assert response["Metadata"] == {"colour": "blue", "mixed-case": "Value With Spaces"}
        age = datetime.now(timezone.utc) - response["LastModified"]
        assert timedelta(seconds=-5) < age < timedelta(minutes=2), response["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="docs/report.txt")["Body"].read() == body

    # an overwrite replaces body and metadata (nothing is merged)
    s3.put_object(Bucket=bucket, Key="docs/report.txt", Body=b"v2", Metadata={"other": "1"})
    head = s3.head_object(Bucket=bucket, Key="docs/report.txt")
    assert head["Metadata"] == {"other": "1"}
    assert head["ContentLength"] == 2 and "ContentEncoding" not in head
    assert s3.get_object(Bucket=bucket, Key="docs/report.txt")["Body"].read() == b"v2"


def test_default_content_type_and_empty_object(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    head = s3.head_object(Bucket=bucket, Key="empty")
    assert head["ContentLength"] == 0 and head["ETag"] == put["ETag"]
    assert head["ContentType"] in ("binary/octet-stream", "application/octet-stream")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("empty", 0)]


def test_an_empty_put_does_not_stall_the_next_put(servd, bucket):
    """boto3 sends `Expect: 100-continue` even with an empty body. Answered without an interim
    `100 Continue`, that leaves botocore's pooled connection misreading the next PUT's response:
    a 60 s stall, then a silent retry (boto/botocore#3755). Users would see it after any
    zero-byte object (directory markers, empty files)."""
    client = s3_client(servd, read_timeout=5)
    client.put_object(Bucket=bucket, Key="dir/", Body=b"")
    started = time.monotonic()
    client.put_object(Bucket=bucket, Key="dir/file", Body=b"abc")
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"the PUT after an empty PUT took {elapsed:.1f} s"
    assert client.get_object(Bucket=bucket, Key="dir/file")["Body"].read() == b"abc"


def test_missing_and_deleted_keys(s3, bucket):
    assert s3_error(s3.get_object, Bucket=bucket, Key="never") == (404, "NoSuchKey")
    assert s3_error(s3.head_object, Bucket=bucket, Key="never")[0] == 404
    assert s3.delete_object(Bucket=bucket, Key="never")["ResponseMetadata"]["HTTPStatusCode"] == 204

    s3.put_object(Bucket=bucket, Key="gone-soon", Body=b"bye")
    assert s3.delete_object(Bucket=bucket, Key="gone-soon")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3_error(s3.get_object, Bucket=bucket, Key="gone-soon") == (404, "NoSuchKey")
    assert keys_of(s3, bucket) == []


def test_content_md5_is_checked(s3, bucket):
    body = b"checked body"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert s3.put_object(Bucket=bucket, Key="k", Body=body, ContentMD5=good)["ETag"] == f'"{md5_hex(body)}"'

    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    assert s3_error(s3.put_object, Bucket=bucket, Key="k", Body=b"replacement", ContentMD5=wrong) == (400, "BadDigest")
    assert s3_error(s3.put_object, Bucket=bucket, Key="new", Body=b"x", ContentMD5=wrong) == (400, "BadDigest")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body, "a refused PUT leaves the old body"
    assert keys_of(s3, bucket) == ["k"], "a refused PUT creates nothing"


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bitwise; fine for the few KiB used here."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def test_crc32c_and_sha256_checksums(s3, bucket):
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    body = os.urandom(4096)
    good_crc = base64.b64encode(crc32c(body).to_bytes(4, "big")).decode()
    bad_crc = base64.b64encode(crc32c(body[:-1]).to_bytes(4, "big")).decode()
    bad_sha = base64.b64encode(hashlib.sha256(b"other").digest()).decode()

    # botocore computes CRC32C only with awscrt, so the header is given ready-made
    s3.put_object(Bucket=bucket, Key="crc32c", Body=body, ChecksumCRC32C=good_crc)
    s3.put_object(Bucket=bucket, Key="sha256", Body=body, ChecksumAlgorithm="SHA256")
    for key in ("crc32c", "sha256"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    assert s3_error(s3.put_object, Bucket=bucket, Key="bad-crc", Body=body, ChecksumCRC32C=bad_crc) == (400, "BadDigest")
    assert s3_error(s3.put_object, Bucket=bucket, Key="bad-sha", Body=body, ChecksumSHA256=bad_sha) == (400, "BadDigest")
    assert sorted(keys_of(s3, bucket)) == ["crc32c", "sha256"], "a refused PUT creates nothing"


def test_ranged_gets(s3, bucket):
    body = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="r", Body=body)

    def get(spec):
        response = s3.get_object(Bucket=bucket, Key="r", Range=spec)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 206, spec
        return response["ContentRange"], response["ContentLength"], response["Body"].read()

    assert get("bytes=0-0") == ("bytes 0-0/1000", 1, body[:1])
    assert get("bytes=999-999") == ("bytes 999-999/1000", 1, body[999:])
    assert get("bytes=-10") == ("bytes 990-999/1000", 10, body[-10:])
    assert get("bytes=100-199") == ("bytes 100-199/1000", 100, body[100:200])
    assert get("bytes=990-") == ("bytes 990-999/1000", 10, body[990:])
    assert get("bytes=995-5000") == ("bytes 995-999/1000", 5, body[995:]), "the end is clamped to the size"

    for spec in ("bytes=1000-", "bytes=2000-3000"):
        assert s3_error(s3.get_object, Bucket=bucket, Key="r", Range=spec) == (416, "InvalidRange"), spec
    # the whole object is still there
    assert s3.get_object(Bucket=bucket, Key="r")["Body"].read() == body


def test_conditional_gets(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    earlier = modified - timedelta(hours=1)

    def status(**conditions):
        try:
            return s3.get_object(Bucket=bucket, Key="c", **conditions)["ResponseMetadata"]["HTTPStatusCode"]
        except ClientError as error:
            return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]

    assert status(IfMatch=etag) == 200
    assert status(IfMatch='"0123456789abcdef0123456789abcdef"') == (412, "PreconditionFailed")
    assert status(IfNoneMatch=etag)[0] == 304
    assert status(IfNoneMatch='"0123456789abcdef0123456789abcdef"') == 200
    assert status(IfModifiedSince=modified)[0] == 304, "not modified since its own Last-Modified"
    assert status(IfModifiedSince=earlier) == 200
    assert status(IfUnmodifiedSince=earlier) == (412, "PreconditionFailed")
    assert status(IfUnmodifiedSince=modified) == 200
    assert s3_error(s3.head_object, Bucket=bucket, Key="c", IfMatch='"00"')[0] == 412


def test_delete_objects_in_batches(s3, bucket):
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"batch/{i}", Body=b"x")

    loud = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "batch/0"}, {"Key": "batch/1"}, {"Key": "batch/2"}, {"Key": "batch/never-existed"}]})
    assert sorted(d["Key"] for d in loud.get("Deleted", [])) == [
        "batch/0", "batch/1", "batch/2", "batch/never-existed"]
    assert loud.get("Errors", []) == []

    quiet = s3.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": [{"Key": "batch/3"}, {"Key": "batch/4"}]})
    assert quiet.get("Deleted", []) == [] and quiet.get("Errors", []) == []
    assert keys_of(s3, bucket) == ["batch/5"]


def test_copy_object_keeps_or_replaces_metadata(s3, bucket):
    body = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="src", Body=body, ContentType="application/x-src",
                  Metadata={"origin": "source"}, CacheControl="no-cache")
    other = unique_bucket()
    s3.create_bucket(Bucket=other)

    copied = s3.copy_object(Bucket=other, Key="dst/copy", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{md5_hex(body)}"'
    head = s3.head_object(Bucket=other, Key="dst/copy")
    assert head["ContentType"] == "application/x-src" and head["Metadata"] == {"origin": "source"}
    assert head["CacheControl"] == "no-cache"
    assert s3.get_object(Bucket=other, Key="dst/copy")["Body"].read() == body

    s3.copy_object(Bucket=bucket, Key="replaced", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", ContentType="text/x-new", Metadata={"fresh": "yes"})
    head = s3.head_object(Bucket=bucket, Key="replaced")
    assert head["ContentType"] == "text/x-new" and head["Metadata"] == {"fresh": "yes"}
    assert "CacheControl" not in head
    assert s3.get_object(Bucket=bucket, Key="replaced")["Body"].read() == body

    # the source is untouched, and a copy from nothing fails
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"origin": "source"}
    assert s3_error(s3.copy_object, Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "nope"}) == (
        404, "NoSuchKey")
    # a copy is independent of its source
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=other, Key="dst/copy")["Body"].read() == body


def test_keys_with_unicode_spaces_and_slashes(s3, bucket):
    keys = ["caf\u00e9/na\u00efve file.txt", "dir/sub dir/a+b=c&d.txt", "\u65e5\u672c\u8a9e/\u30c6\u30b9\u30c8",
            "emoji \U0001F600", "percent%20literal", "dir//double-slash", "trailing/", "tilde~and'quote",
            "question?mark#hash"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode(), key
    assert keys_of(s3, bucket) == sorted(keys, key=lambda k: k.encode())
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert listed_v1 == sorted(keys, key=lambda k: k.encode())


def test_key_length_limit(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"longest")
    assert s3.get_object(Bucket=bucket, Key="k" * 1024)["Body"].read() == b"longest"
    assert s3_error(s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == (400, "KeyTooLongError")
    # 1024 bytes, not characters: 342 three-byte characters are 1026 bytes
    assert s3_error(s3.put_object, Bucket=bucket, Key="\u20ac" * 342, Body=b"x") == (400, "KeyTooLongError")
    assert keys_of(s3, bucket) == ["k" * 1024]


def test_several_mib_round_trip_exactly(s3, bucket):
    body = os.urandom(5 * 1024 * 1024 + 12345)
    put = s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
    assert put["ETag"] == f'"{md5_hex(body)}"'
    got = s3.get_object(Bucket=bucket, Key="big.bin")
    assert got["ContentLength"] == len(body)
    assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(body).hexdigest()


def test_presigned_get_and_put(servd, s3, bucket):
    body = os.urandom(70_000)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "shared/file"}, ExpiresIn=300)
    put = requests.put(put_url, data=body, timeout=30)
    assert put.status_code == 200, put.text
    assert put.headers["ETag"] == f'"{md5_hex(body)}"'

    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/file"}, ExpiresIn=300)
    got = requests.get(get_url, timeout=30)
    assert got.status_code == 200 and got.content == body

    # a URL signed for one key does not open another, and a changed signature is refused
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    other_key = get_url.replace("/shared/file?", "/private?")
    assert other_key != get_url
    refused = requests.get(other_key, timeout=30)
    assert refused.status_code == 403 and b"secret" not in refused.content
    signature = get_url.split("X-Amz-Signature=")[1][:64]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert requests.get(get_url.replace(signature, flipped), timeout=30).status_code == 403
    longer = get_url.replace("X-Amz-Expires=300", "X-Amz-Expires=600")
    assert longer != get_url and requests.get(longer, timeout=30).status_code == 403
    # a presigned GET does not allow a PUT to the same key
    assert requests.put(get_url, data=b"overwrite", timeout=30).status_code == 403
    assert s3.get_object(Bucket=bucket, Key="shared/file")["Body"].read() == body


def test_concurrent_puts_of_one_key_are_never_mixed(servd, bucket):
    bodies = [os.urandom(2 * 1024 * 1024) for _ in range(8)]
    digests = {hashlib.sha256(b).hexdigest() for b in bodies}
    setup = s3_client(servd)
    setup.put_object(Bucket=bucket, Key="contended", Body=bodies[0])

    done = threading.Event()
    seen, errors = [], []

    def write(body):
        try:
            s3_client(servd).put_object(Bucket=bucket, Key="contended", Body=body)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    def read():
        client = s3_client(servd)
        while not done.is_set():
            try:
                seen.append(hashlib.sha256(client.get_object(Bucket=bucket, Key="contended")["Body"].read()).hexdigest())
            except Exception as error:  # noqa: BLE001
                errors.append(repr(error))

    readers = [threading.Thread(target=read) for _ in range(3)]
    writers = [threading.Thread(target=write, args=(b,)) for b in bodies]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    done.set()
    for t in readers:
        t.join(timeout=60)

    assert errors == []
    assert seen, "the readers got nothing"
    assert set(seen) <= digests, f"{len(set(seen) - digests)} GET bodies were not any written body"
    final = setup.get_object(Bucket=bucket, Key="contended")
    assert hashlib.sha256(final["Body"].read()).hexdigest() in digests
    assert final["ContentLength"] == 2 * 1024 * 1024
    assert keys_of(setup, bucket) == ["contended"]


def test_the_admin_api_lists_buckets_with_their_objects_bytes_and_versioning(servd):
    s3 = s3_client(servd)
    plain, versioned = unique_bucket("listed"), unique_bucket("listedv")
    s3.create_bucket(Bucket=plain)
    s3.create_bucket(Bucket=versioned)
    s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=plain, Key="a", Body=b"12345")
    s3.put_object(Bucket=plain, Key="b", Body=b"123")
    s3.put_object(Bucket=plain, Key="a", Body=b"1234567")  # replaces a: still two objects
    listed = {b["name"]: b for b in servd.get("/v1/buckets").json()["buckets"]}
    assert (listed[plain]["objects"], listed[plain]["bytes"], listed[plain]["versioning"]) == (2, 10, "unversioned")
    assert (listed[versioned]["objects"], listed[versioned]["versioning"]) == (0, "enabled")
    assert listed[plain]["created_ms"] > 0 and listed[plain]["owner"]
    assert servd.get("/v1/buckets", token=None).status_code == 401
