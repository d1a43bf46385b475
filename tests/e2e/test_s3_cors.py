"""S3 CORS: bucket CORS configurations through boto3, browsers' preflight OPTIONS requests
(unauthenticated, with `requests`) and the Access-Control-* headers on actual requests."""

import xml.etree.ElementTree as ET

import requests
from botocore import UNSIGNED

from conftest import s3_client, s3_error, signed_request, unique_bucket

APP = "https://app.example.com"

RULES = [
    {
        "ID": "uploads",
        "AllowedOrigins": [APP],
        "AllowedMethods": ["PUT", "POST", "DELETE"],
        "AllowedHeaders": ["content-type", "x-amz-*"],
        "ExposeHeaders": ["ETag", "x-amz-version-id"],
        "MaxAgeSeconds": 3000,
    },
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]


def preflight(node, path, origin=APP, method="PUT", headers=None):
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return requests.options(node.s3 + path, headers=sent, timeout=30)


def error_of(response):
    root = ET.fromstring(response.content)
    return root.findtext("Code"), root.findtext("Message")


def test_cors_configuration_is_put_read_and_deleted(s3, bucket):
    assert s3_error(s3.get_bucket_cors, Bucket=bucket) == (404, "NoSuchCORSConfiguration")

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES

    assert s3.delete_bucket_cors(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3_error(s3.get_bucket_cors, Bucket=bucket) == (404, "NoSuchCORSConfiguration")
    assert s3_error(s3.get_bucket_cors, Bucket=unique_bucket("missing")) == (404, "NoSuchBucket")


def test_cors_configurations_outside_s3_limits_are_refused(s3, bucket):
    too_many = [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101
    assert s3_error(s3.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": too_many}) == (
        400, "MalformedXML")
    patch = [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]
    assert s3_error(s3.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": patch}) == (
        400, "InvalidRequest")
    two_wildcards = [{"AllowedOrigins": ["https://*.*.example.com"], "AllowedMethods": ["GET"]}]
    assert s3_error(s3.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": two_wildcards}) == (
        400, "InvalidRequest")
    huge = [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["h" * 70_000]}]
    assert s3_error(s3.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": huge}) == (
        400, "InvalidRequest")
    assert s3_error(s3.get_bucket_cors, Bucket=bucket) == (404, "NoSuchCORSConfiguration"), "nothing was stored"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": too_many[:100]})
    assert len(s3.get_bucket_cors(Bucket=bucket)["CORSRules"]) == 100


def test_only_the_owner_may_configure_cors(servd, s3, bucket):
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    anonymous = s3_client(servd, signature_version=UNSIGNED)
    assert s3_error(anonymous.put_bucket_cors, Bucket=bucket, CORSConfiguration={"CORSRules": RULES})[0] == 403
    assert s3_error(anonymous.get_bucket_cors, Bucket=bucket)[0] == 403


def test_a_preflight_that_a_rule_allows_gets_its_grant(servd, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})

    answer = preflight(servd, f"/{bucket}/photos/cat.jpg", headers="Content-Type, X-Amz-Date")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert answer.headers["Access-Control-Allow-Methods"] == "PUT, POST, DELETE"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Amz-Date"
    assert answer.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-version-id"
    assert answer.headers["Access-Control-Max-Age"] == "3000"
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in answer.headers["Vary"]

    # The second rule, open to every origin, answers `*` and names no credentials.
    answer = preflight(servd, f"/{bucket}", origin="https://elsewhere.org", method="GET")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_a_preflight_no_rule_allows_is_forbidden(servd, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    refused = [
        preflight(servd, f"/{bucket}/k", origin="https://evil.example.org", method="PUT"),
        preflight(servd, f"/{bucket}/k", method="PUT", headers="x-not-allowed"),
        preflight(servd, f"/{bucket}/k", origin="https://elsewhere.org", method="DELETE"),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.text
        code, message = error_of(answer)
        assert code == "AccessForbidden"
        assert message.startswith("CORSResponse: This CORS request is not allowed")
        assert "Access-Control-Allow-Origin" not in answer.headers
    assert ET.fromstring(refused[0].content).findtext("ResourceType") == "OBJECT"


def test_preflights_without_cors_or_without_what_they_must_name(servd, s3, bucket):
    answer = preflight(servd, f"/{bucket}/k")
    assert answer.status_code == 403
    assert error_of(answer) == ("AccessForbidden", "CORSResponse: CORS is not enabled for this bucket.")

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    assert preflight(servd, f"/{bucket}/k", origin=None).status_code == 400
    assert preflight(servd, f"/{bucket}/k", method=None).status_code == 400
    missing = preflight(servd, f"/{unique_bucket('missing')}/k")
    assert missing.status_code == 403
    assert error_of(missing) == ("AccessForbidden", "CORSResponse: Bucket not found")


def test_actual_cross_origin_requests_carry_the_grant(servd, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")

    allowed = signed_request(servd, "GET", f"/{bucket}/k", headers={"Origin": "https://any.example.net"})
    assert allowed.status_code == 200 and allowed.content == b"hello"
    assert allowed.headers["Access-Control-Allow-Origin"] == "*"

    put = signed_request(servd, "PUT", f"/{bucket}/up", data=b"x", headers={"Origin": APP})
    assert put.status_code == 200
    assert put.headers["Access-Control-Allow-Origin"] == APP
    assert put.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-version-id"

    # No rule lets another origin PUT: the answer carries no grant (the browser hides it).
    other = signed_request(servd, "PUT", f"/{bucket}/up", data=b"y", headers={"Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = signed_request(servd, "GET", f"/{bucket}/k")
    assert "Access-Control-Allow-Origin" not in plain.headers, "no Origin, no CORS headers"


def test_cors_rules_survive_a_restart(start_servd):
    node = start_servd().wait_ready()
    s3 = s3_client(node)
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": RULES})
    node.stop()

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    assert s3_client(restarted).get_bucket_cors(Bucket=name)["CORSRules"] == RULES
    assert preflight(restarted, f"/{name}/k").status_code == 200
