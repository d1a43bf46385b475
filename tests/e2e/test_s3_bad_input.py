"""Bad input at the S3 edge: each gets a protocol-correct S3 error and the node keeps serving."""

import datetime
import os
import socket

import botocore.auth
import requests

from conftest import error_code, s3_client, s3_error, signed_headers, unique_bucket


def test_objects_and_parts_over_the_size_limit_are_entity_too_large(start_servd):
    node = start_servd(args=["--s3-max-object-bytes", str(1024 * 1024)]).wait_ready()
    s3 = s3_client(node)
    bucket = unique_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fits", Body=b"x" * (1024 * 1024))
    assert s3_error(s3.put_object, Bucket=bucket, Key="too-big", Body=b"x" * (1024 * 1024 + 1)) == (
        400, "EntityTooLarge")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    assert s3_error(s3.upload_part, Bucket=bucket, Key="parts", UploadId=upload, PartNumber=1,
                    Body=b"y" * (2 * 1024 * 1024)) == (400, "EntityTooLarge")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["fits"]
    assert s3.list_parts(Bucket=bucket, Key="parts", UploadId=upload).get("Parts", []) == []


def test_a_request_signed_an_hour_ago_is_request_time_too_skewed(servd, bucket, monkeypatch):
    an_hour_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: an_hour_ago)
    url, headers = signed_headers(servd, "GET", f"/{bucket}")
    response = requests.get(url, headers=headers, timeout=10)
    assert (response.status_code, error_code(response)) == (403, "RequestTimeTooSkewed")


def test_a_key_that_is_not_utf8_is_refused(servd, s3, bucket):
    url, headers = signed_headers(servd, "PUT", f"/{bucket}/bad%FF%FEkey", data=b"body")
    response = requests.put(url, data=b"body", headers=headers, timeout=10)
    assert response.status_code == 400 and error_code(response), (response.status_code, response.text)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.put_object(Bucket=bucket, Key="fine", Body=b"ok")
    assert s3.get_object(Bucket=bucket, Key="fine")["Body"].read() == b"ok"


def test_a_content_length_shorter_than_the_signed_body_stores_nothing(servd, s3, bucket):
    body = os.urandom(4096)
    url, headers = signed_headers(servd, "PUT", f"/{bucket}/short", data=body)
    headers["Content-Length"] = "1000"  # the signature covers all 4096 bytes
    head = "\r\n".join([f"PUT /{bucket}/short HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""])
    with socket.create_connection(("127.0.0.1", servd.s3_port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        reply = sock.recv(4096)
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 403), reply
    assert s3_error(s3.head_object, Bucket=bucket, Key="short")[0] == 404
    s3.put_object(Bucket=bucket, Key="after", Body=body)
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == body
