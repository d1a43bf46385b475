"""S3 conditional writes through boto3: If-None-Match and If-Match on PutObject and
CompleteMultipartUpload, If-Match on DeleteObject and DeleteObjects, and races between writers."""

import threading

from botocore.exceptions import ClientError

from conftest import s3_client, s3_error

STALE_ETAG = '"0123456789abcdef0123456789abcdef"'


def content(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_put_if_none_match_writes_only_a_free_key(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 200

    assert s3_error(s3.put_object, Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*") == (
        412, "PreconditionFailed")
    assert content(s3, bucket, "once") == b"first", "a refused conditional put leaves the object as it was"
    assert s3.head_object(Bucket=bucket, Key="once")["ETag"] == first["ETag"]

    s3.delete_object(Bucket=bucket, Key="once")
    s3.put_object(Bucket=bucket, Key="once", Body=b"again", IfNoneMatch="*")
    assert content(s3, bucket, "once") == b"again", "a deleted key is free again"


def test_put_if_none_match_treats_a_delete_marker_as_no_object(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="v", Body=b"old")
    assert s3_error(s3.put_object, Bucket=bucket, Key="v", Body=b"x", IfNoneMatch="*") == (412, "PreconditionFailed")
    s3.delete_object(Bucket=bucket, Key="v")  # a delete marker is now the current version

    s3.put_object(Bucket=bucket, Key="v", Body=b"new", IfNoneMatch="*")
    assert content(s3, bucket, "v") == b"new"
    versions = s3.list_object_versions(Bucket=bucket, Prefix="v")
    assert len(versions["Versions"]) == 2 and len(versions["DeleteMarkers"]) == 1, "older versions are kept"


def test_put_if_match_replaces_only_the_object_the_writer_read(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="doc", Body=b"v1")["ETag"]

    replaced = s3.put_object(Bucket=bucket, Key="doc", Body=b"v2", IfMatch=etag)
    assert content(s3, bucket, "doc") == b"v2"

    assert s3_error(s3.put_object, Bucket=bucket, Key="doc", Body=b"v3", IfMatch=etag) == (412, "PreconditionFailed")
    assert s3_error(s3.put_object, Bucket=bucket, Key="doc", Body=b"v3", IfMatch=STALE_ETAG) == (
        412, "PreconditionFailed")
    assert content(s3, bucket, "doc") == b"v2", "a stale If-Match leaves the object as it was"
    s3.put_object(Bucket=bucket, Key="doc", Body=b"v3", IfMatch=replaced["ETag"].strip('"'))
    assert content(s3, bucket, "doc") == b"v3", "an unquoted ETag matches too"


def test_put_if_match_on_a_missing_key_is_no_such_key(s3, bucket):
    assert s3_error(s3.put_object, Bucket=bucket, Key="nothing", Body=b"x", IfMatch=STALE_ETAG) == (404, "NoSuchKey")
    assert s3_error(s3.head_object, Bucket=bucket, Key="nothing")[0] == 404, "nothing was written"

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    etag = s3.put_object(Bucket=bucket, Key="gone", Body=b"x")["ETag"]
    s3.delete_object(Bucket=bucket, Key="gone")
    assert s3_error(s3.put_object, Bucket=bucket, Key="gone", Body=b"y", IfMatch=etag) == (404, "NoSuchKey"), \
        "a delete marker is no object to match"


def test_write_condition_headers_s3_does_not_take_are_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    assert s3_error(s3.put_object, Bucket=bucket, Key="k", Body=b"x", IfNoneMatch=etag) == (501, "NotImplemented")
    assert s3_error(s3.put_object, Bucket=bucket, Key="k", Body=b"x", IfNoneMatch="*", IfMatch=etag) == (
        400, "InvalidRequest")
    assert content(s3, bucket, "k") == b"kept"


def multipart(s3, bucket, key, data):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=data)
    return upload, {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}


def test_complete_multipart_if_none_match_refuses_an_existing_key_and_keeps_the_upload(s3, bucket):
    s3.put_object(Bucket=bucket, Key="mp", Body=b"original")
    upload, parts = multipart(s3, bucket, "mp", b"from the upload")

    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=upload,
                    MultipartUpload=parts, IfNoneMatch="*") == (412, "PreconditionFailed")
    assert content(s3, bucket, "mp") == b"original"
    listed = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert upload in listed, "the refused upload stays, to be aborted or completed without the condition"

    s3.delete_object(Bucket=bucket, Key="mp")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts,
                                        IfNoneMatch="*")
    assert done["ETag"].endswith('-1"')
    assert content(s3, bucket, "mp") == b"from the upload"


def test_complete_multipart_if_match_needs_the_current_etag(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="mp", Body=b"original")["ETag"]
    upload, parts = multipart(s3, bucket, "mp", b"replacement")

    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=upload,
                    MultipartUpload=parts, IfMatch=STALE_ETAG) == (412, "PreconditionFailed")
    assert content(s3, bucket, "mp") == b"original"
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts, IfMatch=etag)
    assert content(s3, bucket, "mp") == b"replacement"

    upload, parts = multipart(s3, bucket, "absent", b"x")
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="absent", UploadId=upload,
                    MultipartUpload=parts, IfMatch=etag) == (404, "NoSuchKey")


def test_delete_if_match_deletes_only_the_object_the_caller_saw(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="d", Body=b"keep")["ETag"]

    assert s3_error(s3.delete_object, Bucket=bucket, Key="d", IfMatch=STALE_ETAG) == (412, "PreconditionFailed")
    assert content(s3, bucket, "d") == b"keep", "a refused conditional delete leaves the object"

    assert s3.delete_object(Bucket=bucket, Key="d", IfMatch=etag)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3_error(s3.head_object, Bucket=bucket, Key="d")[0] == 404
    # As S3 does: a conditional delete of a key with no object succeeds.
    assert s3.delete_object(Bucket=bucket, Key="d", IfMatch=etag)["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_objects_checks_each_etag(s3, bucket):
    a = s3.put_object(Bucket=bucket, Key="a", Body=b"a")["ETag"]
    s3.put_object(Bucket=bucket, Key="b", Body=b"b")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "ETag": a}, {"Key": "b", "ETag": STALE_ETAG}]})
    assert [d["Key"] for d in result.get("Deleted", [])] == ["a"]
    assert [(e["Key"], e["Code"]) for e in result.get("Errors", [])] == [("b", "PreconditionFailed")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["b"]


def race(servd, count, attempt):
    """Runs attempt(client, i) on `count` threads released together; returns each outcome:
    "ok" or the (status, code) of the refusal."""
    clients = [s3_client(servd) for _ in range(count)]
    start = threading.Barrier(count)
    outcomes = [None] * count

    def run(i):
        start.wait()
        try:
            attempt(clients[i], i)
            outcomes[i] = "ok"
        except ClientError as error:
            outcomes[i] = (error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_racing_if_none_match_puts_leave_exactly_one_winner(servd, s3, bucket):
    writers = 16
    for round_ in range(3):
        key = f"lock-{round_}"
        outcomes = race(servd, writers, lambda client, i: client.put_object(
            Bucket=bucket, Key=key, Body=f"writer {i}".encode(), IfNoneMatch="*"))
        winners = [i for i, outcome in enumerate(outcomes) if outcome == "ok"]
        assert len(winners) == 1, outcomes
        losers = [outcome for outcome in outcomes if outcome != "ok"]
        # S3 answers a loser 412, or 409 when the winner was still being written.
        assert all(outcome in [(412, "PreconditionFailed"), (409, "ConditionalRequestConflict")]
                   for outcome in losers), losers
        assert content(s3, bucket, key) == f"writer {winners[0]}".encode(), "the winner's bytes stay"


def test_if_match_makes_a_read_modify_write_counter_exact(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="counter", Body=b"0")
    workers, increments = 4, 5

    def increment(client, _):
        for _ in range(increments):
            while True:
                got = client.get_object(Bucket=bucket, Key="counter")
                value = int(got["Body"].read())
                try:
                    client.put_object(Bucket=bucket, Key="counter", Body=str(value + 1).encode(),
                                      IfMatch=got["ETag"])
                    break
                except ClientError as error:
                    if error.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                        raise

    assert race(servd, workers, increment) == ["ok"] * workers
    assert content(s3, bucket, "counter") == str(workers * increments).encode(), "no increment was lost"
