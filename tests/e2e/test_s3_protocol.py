"""S3 protocol details as AWS answers them: what listings echo and encode, bucket listing pages,
delete-marker headers, tags set on upload, part reads, and what 304s and errors carry.

Where boto3 hides what a client sees on the wire (it asks listings for `encoding-type=url` and
decodes them; it drops headers of error answers), the requests are signed and sent raw."""

import xml.etree.ElementTree as ET
from urllib.parse import quote

import requests
from botocore.exceptions import ClientError

from conftest import error_code, s3_error, signed_request, unique_bucket

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def listing(node, bucket, **params):
    """The XML root of a raw GET on `bucket` with query `params` (which must succeed)."""
    response = signed_request(node, "GET", f"/{bucket}", params=params)
    assert response.status_code == 200, response.text
    return ET.fromstring(response.content)


def text(root, name):
    """The text of `root`'s child element `name` ("" when empty), or None when it is absent."""
    element = root.find(NS + name)
    return None if element is None else (element.text or "")


def keys_and_prefixes(root):
    keys = [e.findtext(NS + "Key") for e in root.findall(NS + "Contents")]
    prefixes = [e.findtext(NS + "Prefix") for e in root.findall(NS + "CommonPrefixes")]
    return keys, prefixes


# ---------------------------------------------------------------------------------------------
# Listings

def test_an_empty_delimiter_is_not_echoed(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="dir/file", Body=b"x")
    for version in ({}, {"list-type": "2"}):
        empty = listing(servd, bucket, delimiter="", **version)
        assert text(empty, "Delimiter") is None, ET.tostring(empty)
        assert keys_and_prefixes(empty) == (["dir/file"], []), "an empty delimiter rolls nothing up"
        slash = listing(servd, bucket, delimiter="/", **version)
        assert text(slash, "Delimiter") == "/"
        assert keys_and_prefixes(slash) == ([], ["dir/"])


def test_v1_listing_echoes_marker_and_prefix_even_when_empty(servd, s3, bucket):
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    plain = listing(servd, bucket)
    assert (text(plain, "Marker"), text(plain, "Prefix")) == ("", "")
    after = listing(servd, bucket, marker="a")
    assert text(after, "Marker") == "a"
    assert keys_and_prefixes(after)[0] == ["b", "c"]
    v2 = listing(servd, bucket, **{"list-type": "2"})
    assert text(v2, "Prefix") == "" and text(v2, "Marker") is None


def test_names_are_url_encoded_only_when_encoding_type_url_is_asked(servd, s3, bucket):
    key = "a b/c+d&\u00e9"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=bucket, Key="a b=top", Body=b"x")
    for version in ({}, {"list-type": "2", "start-after": "a b"}):
        raw = listing(servd, bucket, prefix="a b", delimiter="/", **version)
        assert text(raw, "EncodingType") is None
        assert text(raw, "Prefix") == "a b" and text(raw, "Delimiter") == "/"
        assert keys_and_prefixes(raw) == (["a b=top"], ["a b/"])
        flat = listing(servd, bucket, prefix="a b/", **version)
        assert keys_and_prefixes(flat)[0] == [key], "keys are sent as they are, in XML"

        encoded = listing(servd, bucket, prefix="a b", delimiter="/", **{"encoding-type": "url"}, **version)
        assert text(encoded, "EncodingType") == "url"
        assert text(encoded, "Prefix") == "a%20b"
        assert keys_and_prefixes(encoded) == (["a%20b%3Dtop"], ["a%20b/"])
        if version:
            assert text(raw, "StartAfter") == "a b" and text(encoded, "StartAfter") == "a%20b"
        flat = listing(servd, bucket, prefix="a b/", **{"encoding-type": "url"}, **version)
        assert keys_and_prefixes(flat)[0] == [quote(key, safe="/")]

    # boto3 asks for url encoding and decodes: its client sees the keys as written.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="a b/")["Contents"]] == [key]

    refused = signed_request(servd, "GET", f"/{bucket}", params={"encoding-type": "base64"})
    assert (refused.status_code, error_code(refused)) == (400, "InvalidArgument")


def test_list_buckets_pages_with_max_buckets_and_a_continuation_token(servd, s3):
    family = unique_bucket("paged")
    names = sorted(f"{family}-{i}" for i in range(5))
    for name in names:
        s3.create_bucket(Bucket=name)
    s3.create_bucket(Bucket=unique_bucket("other"))

    listed, token, pages = [], None, 0
    while True:
        page = s3.list_buckets(MaxBuckets=2, Prefix=family, **({"ContinuationToken": token} if token else {}))
        pages += 1
        assert len(page["Buckets"]) <= 2 and page["Prefix"] == family
        listed += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert (listed, pages) == (names, 3)

    everything = s3.list_buckets()
    assert "ContinuationToken" not in everything and len(everything["Buckets"]) == 6
    assert s3_error(s3.list_buckets, MaxBuckets=10_001) == (400, "InvalidArgument")


# ---------------------------------------------------------------------------------------------
# Versions and delete markers

def test_reads_of_a_key_behind_a_delete_marker_say_so(servd, s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket=bucket, Key="gone", Body=b"old")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="gone")["VersionId"]

    for method in ("GET", "HEAD"):
        current = signed_request(servd, method, f"/{bucket}/gone")
        assert current.status_code == 404
        assert current.headers.get("x-amz-delete-marker") == "true"
        assert current.headers.get("x-amz-version-id") == marker
        by_id = signed_request(servd, method, f"/{bucket}/gone", params={"versionId": marker})
        assert by_id.status_code == 405
        assert by_id.headers.get("x-amz-delete-marker") == "true"
        assert by_id.headers.get("x-amz-version-id") == marker
        assert by_id.headers.get("last-modified", "").endswith(" GMT")
        never = signed_request(servd, method, f"/{bucket}/never-written")
        assert never.status_code == 404 and "x-amz-delete-marker" not in never.headers
    assert error_code(signed_request(servd, "GET", f"/{bucket}/gone")) == "NoSuchKey"
    assert error_code(signed_request(servd, "GET", f"/{bucket}/gone", params={"versionId": marker})) == (
        "MethodNotAllowed")

    older = signed_request(servd, "GET", f"/{bucket}/gone", params={"versionId": kept})
    assert older.status_code == 200 and older.content == b"old"
    assert "x-amz-delete-marker" not in older.headers and older.headers["x-amz-version-id"] == kept


def test_answers_of_an_unversioned_bucket_carry_no_version_id(servd, s3, bucket):
    def headers(answer):
        return answer["ResponseMetadata"]["HTTPHeaders"]

    answers = [
        s3.put_object(Bucket=bucket, Key="k", Body=b"x"),
        s3.head_object(Bucket=bucket, Key="k"),
        s3.get_object(Bucket=bucket, Key="k"),
        s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"}),
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
        s3.get_object_tagging(Bucket=bucket, Key="k"),
    ]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    answers.append(s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}))
    answers.append(s3.delete_object(Bucket=bucket, Key="k"))
    for answer in answers:
        assert "VersionId" not in answer and "x-amz-version-id" not in headers(answer), answer
        assert "x-amz-delete-marker" not in headers(answer), answer
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}, {"Key": "mp"}]})
    assert all("VersionId" not in d and "DeleteMarker" not in d for d in deleted["Deleted"]), deleted


# ---------------------------------------------------------------------------------------------
# Tags set with the object

def tag_set(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_put_object_with_x_amz_tagging_stores_the_tags(servd, s3, bucket):
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="team=blue&note=a%20b%26c&empty=")
    assert tag_set(s3, bucket, "tagged") == {"team": "blue", "note": "a b&c", "empty": ""}
    assert s3.get_object(Bucket=bucket, Key="tagged")["TagCount"] == 3
    head = signed_request(servd, "HEAD", f"/{bucket}/tagged")
    assert head.status_code == 200 and head.headers.get("x-amz-tagging-count") == "3"

    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="plain")
    assert "x-amz-tagging-count" not in signed_request(servd, "HEAD", f"/{bucket}/plain").headers

    s3.put_object(Bucket=bucket, Key="tagged", Body=b"y")
    assert tag_set(s3, bucket, "tagged") == {}, "a new object starts without the old one's tags"


def test_copy_object_copies_tags_unless_told_to_replace_them(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x", Tagging="a=1&b=2")
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "src"})
    assert tag_set(s3, bucket, "copied") == {"a": "1", "b": "2"}
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="c=3")
    assert tag_set(s3, bucket, "replaced") == {"c": "3"}


def test_a_completed_multipart_upload_gets_the_tags_it_was_created_with(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="stage=final&n=1")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert tag_set(s3, bucket, "mp") == {"stage": "final", "n": "1"}
    assert s3.head_object(Bucket=bucket, Key="mp")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"


def test_tags_past_s3_limits_are_invalid_tag(s3, bucket):
    eleven = "&".join(f"k{i}=v" for i in range(11))
    too_long_key, too_long_value = f"{'k' * 129}=v", f"k={'v' * 257}"
    for tagging in (eleven, too_long_key, too_long_value, "dup=1&dup=2"):
        assert s3_error(s3.put_object, Bucket=bucket, Key="t", Body=b"x", Tagging=tagging) == (400, "InvalidTag")
        assert s3_error(s3.create_multipart_upload, Bucket=bucket, Key="t", Tagging=tagging) == (400, "InvalidTag")
    assert s3_error(s3.head_object, Bucket=bucket, Key="t")[0] == 404, "a refused put writes nothing"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    # Lengths count characters, not bytes: 128 two-byte characters make a valid key.
    long_key = "\u00e9" * 128
    at_limits = "&".join([f"{quote(long_key)}={'v' * 256}"] + [f"k{i}=v" for i in range(9)])
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging=at_limits)
    tags = tag_set(s3, bucket, "t")
    assert len(tags) == 10 and tags[long_key] == "v" * 256


# ---------------------------------------------------------------------------------------------
# Multipart uploads

MIB = 1024 * 1024


def complete(s3, bucket, key, upload, parts):
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})


def test_a_repeated_complete_answers_as_the_first_did_while_the_object_is_its_own(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"a" * MIB * 5)["ETag"]
    second = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
    done = complete(s3, bucket, "mp", upload, [(1, first), (2, second)])

    again = complete(s3, bucket, "mp", upload, [(1, first), (2, second)])
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (again["ETag"], again["VersionId"]) == (done["ETag"], done["VersionId"])
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 1, "a repeat writes no new version"

    assert s3_error(complete, s3, bucket, "mp", upload, [(1, first)]) == (404, "NoSuchUpload"), \
        "other parts than the first completion's"
    assert s3_error(complete, s3, bucket, "other", upload, [(1, first), (2, second)]) == (404, "NoSuchUpload")
    s3.put_object(Bucket=bucket, Key="mp", Body=b"replaced")
    assert s3_error(complete, s3, bucket, "mp", upload, [(1, first), (2, second)]) == (404, "NoSuchUpload"), \
        "the key holds another object now"


def test_an_upload_of_another_key_is_no_such_upload_on_complete(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mine")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mine", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    assert s3_error(complete, s3, bucket, "yours", upload, [(1, etag)]) == (404, "NoSuchUpload")
    assert complete(s3, bucket, "mine", upload, [(1, etag)])["ETag"].endswith('-1"'), "the upload is intact"


def test_a_reuploaded_part_replaces_the_earlier_one(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="redo")["UploadId"]
    old = s3.upload_part(Bucket=bucket, Key="redo", UploadId=upload, PartNumber=1, Body=b"first try")["ETag"]
    new = s3.upload_part(Bucket=bucket, Key="redo", UploadId=upload, PartNumber=1, Body=b"second")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="redo", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, new, 6)]
    assert s3_error(complete, s3, bucket, "redo", upload, [(1, old)]) == (400, "InvalidPart")
    complete(s3, bucket, "redo", upload, [(1, new)])
    assert s3.get_object(Bucket=bucket, Key="redo")["Body"].read() == b"second"


def test_part_number_reads_one_part_and_counts_the_parts(servd, s3, bucket):
    head, tail = b"h" * 5 * MIB, b"the tail"
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=body)["ETag"]
             for n, body in ((1, head), (2, tail))]
    complete(s3, bucket, "mp", upload, list(enumerate(etags, start=1)))
    size = len(head) + len(tail)

    for number, (body, start) in ((1, (head, 0)), (2, (tail, len(head)))):
        got = signed_request(servd, "GET", f"/{bucket}/mp", params={"partNumber": str(number)})
        assert got.status_code == 206 and got.content == body
        assert got.headers["x-amz-mp-parts-count"] == "2"
        assert got.headers["content-range"] == f"bytes {start}-{start + len(body) - 1}/{size}"
        headed = signed_request(servd, "HEAD", f"/{bucket}/mp", params={"partNumber": str(number)})
        assert headed.headers["content-length"] == str(len(body)) and headed.headers["x-amz-mp-parts-count"] == "2"
    whole = signed_request(servd, "GET", f"/{bucket}/mp")
    assert whole.status_code == 200 and len(whole.content) == size
    assert "x-amz-mp-parts-count" not in whole.headers, "S3 counts parts only for a part read"

    beyond = signed_request(servd, "GET", f"/{bucket}/mp", params={"partNumber": "3"})
    assert (beyond.status_code, error_code(beyond)) == (416, "InvalidPartNumber")
    both = signed_request(servd, "GET", f"/{bucket}/mp", params={"partNumber": "1"}, headers={"Range": "bytes=0-1"})
    assert (both.status_code, error_code(both)) == (400, "InvalidRequest")

    s3.put_object(Bucket=bucket, Key="single", Body=b"one piece")
    single = signed_request(servd, "GET", f"/{bucket}/single", params={"partNumber": "1"})
    assert single.content == b"one piece" and "x-amz-mp-parts-count" not in single.headers


# ---------------------------------------------------------------------------------------------
# What a 304 and an error carry

def test_not_modified_carries_the_etag_and_last_modified(servd, s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    head = signed_request(servd, "HEAD", f"/{bucket}/k")
    for method in ("GET", "HEAD"):
        for condition in ({"If-None-Match": put["ETag"]}, {"If-Modified-Since": head.headers["last-modified"]}):
            answer = signed_request(servd, method, f"/{bucket}/k", headers=condition)
            assert answer.status_code == 304 and answer.content == b""
            assert answer.headers.get("etag") == put["ETag"]
            assert answer.headers.get("last-modified") == head.headers["last-modified"]


def test_every_answer_has_a_request_id_and_errors_name_it(servd, s3, bucket):
    ok = signed_request(servd, "GET", f"/{bucket}", params={"list-type": "2"})
    missing = signed_request(servd, "GET", f"/{bucket}/no-such-key")
    unsigned = requests.get(f"{servd.s3}/{bucket}/no-such-key", timeout=10)
    ids = set()
    for answer in (ok, missing, unsigned):
        request_id = answer.headers.get("x-amz-request-id", "")
        assert len(request_id) == 16, answer.headers
        ids.add(request_id)
    assert len(ids) == 3, "each request has its own id"
    for error in (missing, unsigned):
        root = ET.fromstring(error.content)
        assert root.findtext("RequestId") == error.headers["x-amz-request-id"], error.text
        assert int(error.headers.get("content-length", len(error.content))) == len(error.content)
    assert "RequestId" not in ok.text

    try:
        s3.get_object(Bucket=bucket, Key="no-such-key")
    except ClientError as error:
        metadata = error.response["ResponseMetadata"]
        assert error.response["Error"]["Code"] == "NoSuchKey"
        assert metadata["RequestId"] == metadata["HTTPHeaders"]["x-amz-request-id"]
    else:
        raise AssertionError("a missing key was read")
