"""S3 refusals: authentication, XML error bodies, malformed and truncated requests."""

import base64
import hashlib
import os
import socket
import time

import pytest
import requests

from conftest import (ACCESS_KEY, SECRET_KEY, error_code, s3_client, s3_error, signed_headers, signed_request,
                      unique_bucket)


@pytest.fixture
def canary(s3, bucket):
    """An object whose plain GET must keep working after every bad request."""
    s3.put_object(Bucket=bucket, Key="canary", Body=b"still here")

    def check():
        assert s3.get_object(Bucket=bucket, Key="canary")["Body"].read() == b"still here"

    return check


def test_wrong_secret_is_signature_does_not_match(servd, s3, bucket):
    wrong = s3_client(servd, secret=SECRET_KEY + "x")
    assert s3_error(wrong.list_buckets) == (403, "SignatureDoesNotMatch")
    assert s3_error(wrong.put_object, Bucket=bucket, Key="k", Body=b"x") == (403, "SignatureDoesNotMatch")
    assert s3_error(wrong.create_bucket, Bucket=unique_bucket()) == (403, "SignatureDoesNotMatch")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]


def test_unknown_access_key_is_invalid_access_key_id(servd, s3, bucket):
    stranger = s3_client(servd, access="SVNOSUCHKEY0000000", secret=SECRET_KEY)
    assert s3_error(stranger.list_buckets) == (403, "InvalidAccessKeyId")
    assert s3_error(stranger.put_object, Bucket=bucket, Key="k", Body=b"x") == (403, "InvalidAccessKeyId")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_unsigned_requests_are_access_denied(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"not for everyone")
    new_bucket = unique_bucket()
    for method, path in [("GET", "/"), ("GET", f"/{bucket}"), ("GET", f"/{bucket}/private"),
                         ("HEAD", f"/{bucket}/private"), ("PUT", f"/{bucket}/planted"),
                         ("DELETE", f"/{bucket}/private"), ("PUT", f"/{new_bucket}")]:
        response = requests.request(method, servd.s3 + path, data=b"x" if method == "PUT" else None, timeout=10)
        assert response.status_code == 403, (method, path, response.status_code)
        if method != "HEAD":
            assert error_code(response) == "AccessDenied", (method, path)
        assert b"not for everyone" not in response.content
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["private"]
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]


def test_errors_are_xml_with_a_code(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="one-byte", Body=b"1")
    cases = [
        (signed_request(servd, "GET", f"/{unique_bucket('missing')}"), 404, "NoSuchBucket"),
        (signed_request(servd, "GET", f"/{bucket}/missing"), 404, "NoSuchKey"),
        (signed_request(servd, "PUT", "/Bad_Name"), 400, "InvalidBucketName"),
        (signed_request(servd, "GET", f"/{bucket}/one-byte", headers={"Range": "bytes=100-200"}), 416, "InvalidRange"),
        (signed_request(servd, "GET", "/", secret="wrong"), 403, "SignatureDoesNotMatch"),
        (signed_request(servd, "GET", "/", access="SVNOSUCHKEY0000000"), 403, "InvalidAccessKeyId"),
    ]
    for response, status, code in cases:
        assert (response.status_code, error_code(response)) == (status, code), response.text


def test_malformed_xml_on_complete_multipart_upload(servd, s3, bucket, canary):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"only part")["ETag"]
    for body in (b"this is not xml", b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
                 b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part>"
                 b"</CompleteMultipartUpload>"):
        response = signed_request(servd, "POST", f"/{bucket}/mp", params={"uploadId": upload}, data=body)
        assert (response.status_code, error_code(response)) == (400, "MalformedXML"), (body, response.text)
        canary()
    assert s3_error(s3.get_object, Bucket=bucket, Key="mp") == (404, "NoSuchKey")
    # the upload survived the bad requests
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"only part"


def test_malformed_xml_on_delete_objects(servd, s3, bucket, canary):
    s3.put_object(Bucket=bucket, Key="a", Body=b"a")
    for body in (b"<Delete><Object><Key>a</Key></Object", b"{\"Objects\": [\"a\"]}"):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        response = signed_request(servd, "POST", f"/{bucket}", params={"delete": ""}, data=body,
                                  headers={"Content-MD5": md5, "Content-Type": "application/xml"})
        assert (response.status_code, error_code(response)) == (400, "MalformedXML"), (body, response.text)
        canary()
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"a"


def send_raw(node, data: bytes, read_reply=True) -> bytes:
    """Writes bytes to the S3 port, closes the sending side, returns whatever came back.

    The server may refuse and hang up before reading everything; that is not an error here.
    """
    with socket.create_connection(("127.0.0.1", node.s3_port), timeout=10) as sock:
        reply = b""
        try:
            sock.sendall(data)
            if not read_reply:
                return b""
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                reply += chunk
        except (OSError, socket.timeout):
            pass
        return reply


def request_head(method, url, headers) -> bytes:
    path = url.split("/", 3)[3]
    lines = [f"{method} /{path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("sign_payload", [True, False], ids=["signed-payload", "unsigned-payload"])
def test_truncated_body_creates_nothing(servd, s3, bucket, canary, sign_payload):
    body = os.urandom(200_000)
    url, headers = signed_headers(servd, "PUT", f"/{bucket}/truncated", data=body, sign_payload=sign_payload)
    headers["Content-Length"] = str(len(body))
    send_raw(servd, request_head("PUT", url, headers) + body[:120_000], read_reply=False)  # then hang up

    time.sleep(1.0)  # give a wrongly-accepting server time to commit
    assert s3_error(s3.head_object, Bucket=bucket, Key="truncated")[0] == 404
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["canary"]
    canary()
    # the same signed request, sent whole, works
    response = requests.put(url, data=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert s3.get_object(Bucket=bucket, Key="truncated")["Body"].read() == body


def test_garbage_and_malformed_requests_leave_the_node_serving(servd, canary):
    send_raw(servd, b"NOT HTTP AT ALL\r\n\r\n")
    send_raw(servd, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200))  # a TLS hello
    send_raw(servd, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n")
    canary()
    for authorization in ("AWS4-HMAC-SHA256 nonsense", "Bearer abc",
                          f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/bad-scope, SignedHeaders=host, Signature=00"):
        response = requests.get(servd.s3 + "/", headers={"Authorization": authorization,
                                                          "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                                          "x-amz-date": "20240101T000000Z"}, timeout=10)
        assert response.status_code in (400, 403), (authorization, response.status_code, response.text)
        assert error_code(response), authorization
        canary()
