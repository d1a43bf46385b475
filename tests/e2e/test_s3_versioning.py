"""Bucket versioning: versions, delete markers, reads and deletes by version id, suspension."""

from conftest import s3_error


def versions_of(s3, bucket, **kwargs):
    listing = s3.list_object_versions(Bucket=bucket, **kwargs)
    versions = [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in listing.get("Versions", [])]
    markers = [(m["Key"], m["VersionId"], m["IsLatest"]) for m in listing.get("DeleteMarkers", [])]
    return versions, markers


def test_versions_delete_markers_and_reads_by_version_id(s3, bucket):
    s3.put_object(Bucket=bucket, Key="doc", Body=b"before versioning")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"first")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="doc", Body=b"second!")["VersionId"]
    assert len({v1, v2, "null"}) == 3
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"second!"
    head = s3.head_object(Bucket=bucket, Key="doc")
    assert head["VersionId"] == v2
    for version, body in [(v1, b"first"), ("null", b"before versioning")]:
        got = s3.get_object(Bucket=bucket, Key="doc", VersionId=version)
        assert (got["Body"].read(), got["VersionId"]) == (body, version)

    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    assert s3_error(s3.get_object, Bucket=bucket, Key="doc") == (404, "NoSuchKey")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    versions, markers = versions_of(s3, bucket)
    assert versions == [("doc", v2, False, 7), ("doc", v1, False, 5), ("doc", "null", False, 17)]
    assert markers == [("doc", marker, True)]
    assert s3_error(s3.get_object, Bucket=bucket, Key="doc", VersionId=marker)[0] == 405
    assert s3_error(s3.get_object, Bucket=bucket, Key="doc", VersionId="not-a-version")[0] == 400

    # Removing the marker brings the newest version back; removing that, the one before.
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"second!"
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"first"
    assert s3_error(s3.delete_bucket, Bucket=bucket) == (409, "BucketNotEmpty")

    for key, version, _, _ in versions_of(s3, bucket)[0]:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert versions_of(s3, bucket) == ([], [])
    s3.delete_bucket(Bucket=bucket)


def test_suspended_versioning_replaces_the_null_version(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"null one").get("VersionId") == "null"
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"null two").get("VersionId") == "null"
    versions, markers = versions_of(s3, bucket)
    assert versions == [("k", "null", True, 8), ("k", kept, False, 4)] and markers == []
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=kept)["Body"].read() == b"kept"


def test_version_listing_pages_with_markers(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    written = []
    for key in ["a", "b", "c"]:
        for n in range(3):
            written.append((key, s3.put_object(Bucket=bucket, Key=key, Body=f"{key}{n}".encode())["VersionId"]))
    seen, params = [], {}
    while True:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=2, **params)
        seen += [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])]
        if not page["IsTruncated"]:
            break
        params = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    expected = []
    for key in ["a", "b", "c"]:
        ids = [v for k, v in written if k == key][::-1]
        expected += [(key, v, i == 0) for i, v in enumerate(ids)]
    assert seen == expected
