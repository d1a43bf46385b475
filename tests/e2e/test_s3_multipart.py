"""S3 multipart uploads: the whole protocol, its ETags, its refusals, and boto3's transfer manager."""

import hashlib
import os

from boto3.s3.transfer import TransferConfig

from conftest import md5_hex, s3_error

MIB = 1024 * 1024


def multipart_etag(parts) -> str:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_64_mib_in_8_mib_parts_round_trips(s3, bucket):
    body = os.urandom(64 * MIB)
    chunks = [body[i:i + 8 * MIB] for i in range(0, len(body), 8 * MIB)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big/object", ContentType="application/x-big",
                                        Metadata={"purpose": "multipart"})["UploadId"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        etag = s3.upload_part(Bucket=bucket, Key="big/object", UploadId=upload, PartNumber=number, Body=chunk)["ETag"]
        assert etag == f'"{md5_hex(chunk)}"'
        parts.append({"PartNumber": number, "ETag": etag})
    assert s3_error(s3.get_object, Bucket=bucket, Key="big/object") == (404, "NoSuchKey"), "invisible until complete"

    done = s3.complete_multipart_upload(Bucket=bucket, Key="big/object", UploadId=upload,
                                        MultipartUpload={"Parts": parts})
    assert done["ETag"] == multipart_etag(chunks)

    head = s3.head_object(Bucket=bucket, Key="big/object")
    assert head["ContentLength"] == 64 * MIB and head["ETag"] == done["ETag"]
    assert head["ContentType"] == "application/x-big" and head["Metadata"] == {"purpose": "multipart"}
    got = s3.get_object(Bucket=bucket, Key="big/object")
    assert sha256(got["Body"].read()) == sha256(body)

    boundary = 3 * 8 * MIB
    across = s3.get_object(Bucket=bucket, Key="big/object", Range=f"bytes={boundary - 100}-{boundary + 99}")
    assert across["Body"].read() == body[boundary - 100:boundary + 100], "a range across a part boundary"

    [listed] = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert (listed["Key"], listed["Size"], listed["ETag"]) == ("big/object", 64 * MIB, done["ETag"])
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_transfer_manager_upload_and_download(s3, bucket, tmp_path):
    source, target = tmp_path / "up.bin", tmp_path / "down.bin"
    source.write_bytes(os.urandom(64 * MIB))
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)

    s3.upload_file(str(source), bucket, "transfer/file.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="transfer/file.bin")
    assert head["ContentLength"] == 64 * MIB
    assert head["ETag"].endswith('-8"'), head["ETag"]

    s3.download_file(bucket, "transfer/file.bin", str(target), Config=config)
    assert sha256(target.read_bytes()) == sha256(source.read_bytes())


def test_list_parts_list_uploads_and_abort(s3, bucket):
    first = s3.create_multipart_upload(Bucket=bucket, Key="pending/a")["UploadId"]
    second = s3.create_multipart_upload(Bucket=bucket, Key="pending/b")["UploadId"]
    assert first != second
    big = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key="pending/a", UploadId=first, PartNumber=1, Body=big)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="pending/a", UploadId=first, PartNumber=2, Body=b"tail")["ETag"]

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in uploads) == [("pending/a", first), ("pending/b", second)]
    parts = s3.list_parts(Bucket=bucket, Key="pending/a", UploadId=first)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 5 * MIB, e1), (2, 4, e2)]
    assert s3.list_parts(Bucket=bucket, Key="pending/b", UploadId=second).get("Parts", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket), "uploads in progress are not objects"

    assert s3.abort_multipart_upload(Bucket=bucket, Key="pending/a", UploadId=first)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3_error(s3.list_parts, Bucket=bucket, Key="pending/a", UploadId=first) == (404, "NoSuchUpload")
    assert s3_error(s3.upload_part, Bucket=bucket, Key="pending/a", UploadId=first, PartNumber=3,
                    Body=b"late") == (404, "NoSuchUpload")
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="pending/a", UploadId=first,
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
                    ) == (404, "NoSuchUpload")
    assert s3_error(s3.get_object, Bucket=bucket, Key="pending/a") == (404, "NoSuchKey")
    assert s3_error(s3.list_parts, Bucket=bucket, Key="pending/a", UploadId="no-such-upload-id") == (
        404, "NoSuchUpload")

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("pending/b", second)]
    s3.abort_multipart_upload(Bucket=bucket, Key="pending/b", UploadId=second)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_upload_part_copy_and_a_replaced_part(s3, bucket):
    source = os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]

    whole = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "src"})["CopyPartResult"]["ETag"]
    assert whole == f'"{md5_hex(source)}"'
    ranged = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=2,
                                 CopySource={"Bucket": bucket, "Key": "src"},
                                 CopySourceRange=f"bytes={MIB}-{6 * MIB - 1}")["CopyPartResult"]["ETag"]
    assert ranged == f'"{md5_hex(source[MIB:])}"'
    s3.upload_part(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=3, Body=b"first try")
    tail = s3.upload_part(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=3, Body=b"second try")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="assembled", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 6 * MIB), (2, 5 * MIB), (3, 10)]

    done = s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": whole}, {"PartNumber": 2, "ETag": ranged}, {"PartNumber": 3, "ETag": tail}]})
    expected = [source, source[MIB:], b"second try"]
    assert done["ETag"] == multipart_etag(expected)
    assert sha256(s3.get_object(Bucket=bucket, Key="assembled")["Body"].read()) == sha256(b"".join(expected))
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == source, "the source is untouched"


def test_complete_refuses_bad_part_lists(s3, bucket):
    first, second = os.urandom(5 * MIB), os.urandom(5 * MIB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="strict")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="strict", UploadId=upload, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="strict", UploadId=upload, PartNumber=2, Body=second)["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key="strict", UploadId=upload, PartNumber=3, Body=b"last")["ETag"]

    def complete(parts):
        return s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="strict", UploadId=upload,
                        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    assert complete([(1, '"' + "0" * 32 + '"'), (2, e2), (3, e3)]) == (400, "InvalidPart")
    assert complete([(1, e1), (4, e3)]) == (400, "InvalidPart"), "part 4 was never uploaded"
    assert complete([(2, e2), (1, e1)]) == (400, "InvalidPartOrder")
    assert s3_error(s3.get_object, Bucket=bucket, Key="strict") == (404, "NoSuchKey")

    # the refusals left the upload intact: the right list completes it
    done = s3.complete_multipart_upload(Bucket=bucket, Key="strict", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}]})
    assert done["ETag"] == multipart_etag([first, second, b"last"])
    assert sha256(s3.get_object(Bucket=bucket, Key="strict")["Body"].read()) == sha256(first + second + b"last")


def test_parts_below_5_mib_are_entity_too_small(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="tiny-parts")["UploadId"]
    parts = []
    for number in (1, 2):
        etag = s3.upload_part(Bucket=bucket, Key="tiny-parts", UploadId=upload, PartNumber=number,
                              Body=os.urandom(MIB))["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    assert s3_error(s3.complete_multipart_upload, Bucket=bucket, Key="tiny-parts", UploadId=upload,
                    MultipartUpload={"Parts": parts}) == (400, "EntityTooSmall")
    assert s3_error(s3.get_object, Bucket=bucket, Key="tiny-parts") == (404, "NoSuchKey")
    # a single small part is fine: it is the last one
    one = s3.complete_multipart_upload(Bucket=bucket, Key="tiny-parts", UploadId=upload,
                                       MultipartUpload={"Parts": parts[:1]})
    assert one["ETag"].endswith('-1"')
    assert s3.head_object(Bucket=bucket, Key="tiny-parts")["ContentLength"] == MIB
