"""S3 Object Lock (WORM): buckets created with lock, default retention, GOVERNANCE and
COMPLIANCE retention, legal holds, what deletes they refuse, the headers a read carries, and
lock state that survives a node killed and restarted on the same data."""

import base64
import hashlib
import signal
from datetime import datetime, timedelta, timezone

from conftest import error_code, s3_client, s3_error, signed_request, unique_bucket


def locked_bucket(s3, **default):
    """A new bucket created with object lock, with `default` retention (Mode, Days|Years) if given."""
    name = unique_bucket("lock")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    if default:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": default}},
        )
    return name


def in_days(days):
    return datetime.now(timezone.utc) + timedelta(days=days)


def test_a_bucket_created_with_lock_is_versioned_for_good(s3):
    name = locked_bucket(s3)
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    config = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert config == {"ObjectLockEnabled": "Enabled"}
    suspend = {"Status": "Suspended"}
    assert s3_error(s3.put_bucket_versioning, Bucket=name, VersioningConfiguration=suspend) == (
        409, "InvalidBucketState")
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"


def test_lock_configuration_of_a_bucket_without_lock_is_not_found(s3, bucket):
    assert s3_error(s3.get_object_lock_configuration, Bucket=bucket) == (404, "ObjectLockConfigurationNotFoundError")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    until = in_days(1)
    assert s3_error(s3.put_object_retention, Bucket=bucket, Key="k",
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}) == (400, "InvalidRequest")
    assert s3_error(s3.put_object, Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                    ObjectLockRetainUntilDate=until) == (400, "InvalidRequest")
    # Lock needs versioning; once versioning is on, an existing bucket may enable it (as S3 allows since 2023).
    enabled = {"ObjectLockEnabled": "Enabled"}
    assert s3_error(s3.put_object_lock_configuration, Bucket=bucket, ObjectLockConfiguration=enabled) == (
        409, "InvalidBucketState")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=enabled)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == enabled


def test_default_retention_applies_to_a_new_version_and_shows_on_head(s3):
    name = locked_bucket(s3, Mode="GOVERNANCE", Days=1)
    rule = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["Rule"]
    assert rule == {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    version = s3.put_object(Bucket=name, Key="doc", Body=b"kept")["VersionId"]
    retention = s3.get_object_retention(Bucket=name, Key="doc", VersionId=version)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    assert in_days(1) - timedelta(minutes=5) < retention["RetainUntilDate"] <= in_days(1)
    head = s3.head_object(Bucket=name, Key="doc", VersionId=version)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] == retention["RetainUntilDate"]
    assert "ObjectLockLegalHoldStatus" not in head
    got = s3.get_object(Bucket=name, Key="doc")
    assert (got["ObjectLockMode"], got["Body"].read()) == ("GOVERNANCE", b"kept")


def test_governance_version_delete_is_refused_then_allowed_with_bypass(s3):
    name = locked_bucket(s3)
    until = in_days(2)
    version = s3.put_object(Bucket=name, Key="g", Body=b"governed", ObjectLockMode="GOVERNANCE",
                            ObjectLockRetainUntilDate=until)["VersionId"]
    assert s3_error(s3.delete_object, Bucket=name, Key="g", VersionId=version) == (403, "AccessDenied")
    # Lengthening needs no bypass; shortening does.
    s3.put_object_retention(Bucket=name, Key="g", VersionId=version,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": in_days(3)})
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": in_days(1)}
    assert s3_error(s3.put_object_retention, Bucket=name, Key="g", VersionId=version, Retention=shorter) == (
        403, "AccessDenied")
    s3.put_object_retention(Bucket=name, Key="g", VersionId=version, Retention=shorter,
                            BypassGovernanceRetention=True)
    errors = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "g", "VersionId": version}]})["Errors"]
    assert [(e["Key"], e["Code"]) for e in errors] == [("g", "AccessDenied")]
    s3.delete_object(Bucket=name, Key="g", VersionId=version, BypassGovernanceRetention=True)
    assert s3_error(s3.head_object, Bucket=name, Key="g", VersionId=version)[0] == 404


def test_compliance_can_be_neither_shortened_nor_deleted_even_with_bypass(s3):
    name = locked_bucket(s3)
    until = in_days(2)
    version = s3.put_object(Bucket=name, Key="c", Body=b"complied", ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=until)["VersionId"]
    for retention in [{"Mode": "COMPLIANCE", "RetainUntilDate": in_days(1)},
                      {"Mode": "GOVERNANCE", "RetainUntilDate": in_days(5)}, {}]:
        assert s3_error(s3.put_object_retention, Bucket=name, Key="c", VersionId=version, Retention=retention,
                        BypassGovernanceRetention=True) == (403, "AccessDenied"), retention
    assert s3_error(s3.delete_object, Bucket=name, Key="c", VersionId=version,
                    BypassGovernanceRetention=True) == (403, "AccessDenied")
    longer = in_days(4)
    s3.put_object_retention(Bucket=name, Key="c", VersionId=version,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer})
    retention = s3.get_object_retention(Bucket=name, Key="c", VersionId=version)["Retention"]
    assert retention["Mode"] == "COMPLIANCE" and retention["RetainUntilDate"] > until


def test_legal_hold_blocks_deletion_until_turned_off(s3):
    name = locked_bucket(s3)
    version = s3.put_object(Bucket=name, Key="h", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=version)["LegalHold"] == {"Status": "ON"}
    assert s3.head_object(Bucket=name, Key="h", VersionId=version)["ObjectLockLegalHoldStatus"] == "ON"
    assert s3_error(s3.delete_object, Bucket=name, Key="h", VersionId=version,
                    BypassGovernanceRetention=True) == (403, "AccessDenied")
    s3.put_object_legal_hold(Bucket=name, Key="h", VersionId=version, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=version)["LegalHold"] == {"Status": "OFF"}
    s3.delete_object(Bucket=name, Key="h", VersionId=version)
    assert s3.list_object_versions(Bucket=name).get("Versions", []) == []


def test_a_plain_delete_adds_a_marker_and_the_locked_version_stays_readable(s3):
    name = locked_bucket(s3, Mode="COMPLIANCE", Days=1)
    version = s3.put_object(Bucket=name, Key="m", Body=b"still here")["VersionId"]
    deleted = s3.delete_object(Bucket=name, Key="m")
    assert deleted["DeleteMarker"] is True
    assert s3_error(s3.get_object, Bucket=name, Key="m") == (404, "NoSuchKey")
    assert s3.get_object(Bucket=name, Key="m", VersionId=version)["Body"].read() == b"still here"
    # The marker itself is not locked.
    s3.delete_object(Bucket=name, Key="m", VersionId=deleted["VersionId"])
    assert s3.get_object(Bucket=name, Key="m")["Body"].read() == b"still here"


def test_a_multipart_upload_gets_its_lock_on_complete(s3):
    name = locked_bucket(s3)
    until = in_days(1)
    upload = s3.create_multipart_upload(Bucket=name, Key="mp", ObjectLockMode="COMPLIANCE",
                                        ObjectLockRetainUntilDate=until)["UploadId"]
    etag = s3.upload_part(Bucket=name, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    version = s3.complete_multipart_upload(Bucket=name, Key="mp", UploadId=upload,
                                           MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})["VersionId"]
    assert s3.head_object(Bucket=name, Key="mp", VersionId=version)["ObjectLockMode"] == "COMPLIANCE"
    assert s3_error(s3.delete_object, Bucket=name, Key="mp", VersionId=version)[0] == 403


def test_lock_state_survives_a_killed_node(start_servd):
    node = start_servd().wait_ready()
    s3 = s3_client(node)
    name = locked_bucket(s3, Mode="GOVERNANCE", Years=1)
    retained = s3.put_object(Bucket=name, Key="r", Body=b"retained")["VersionId"]
    held = s3.put_object(Bucket=name, Key="r", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
    until = s3.get_object_retention(Bucket=name, Key="r", VersionId=retained)["Retention"]["RetainUntilDate"]
    node.stop(signal.SIGKILL)

    restarted = start_servd(data_dir=node.data_dir).wait_ready()
    s3 = s3_client(restarted)
    config = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert config["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Years": 1}
    retention = s3.get_object_retention(Bucket=name, Key="r", VersionId=retained)["Retention"]
    assert retention == {"Mode": "GOVERNANCE", "RetainUntilDate": until}
    assert s3.get_object_legal_hold(Bucket=name, Key="r", VersionId=held)["LegalHold"] == {"Status": "ON"}
    for version in (retained, held):
        assert s3_error(s3.delete_object, Bucket=name, Key="r", VersionId=version) == (403, "AccessDenied")


def test_a_put_given_retention_needs_content_md5_or_a_checksum(servd, s3):
    name = locked_bucket(s3, Mode="GOVERNANCE", Days=1)
    bare = signed_request(servd, "PUT", f"/{name}/plain", data=b"no digest")
    assert (bare.status_code, error_code(bare)) == (400, "InvalidRequest")
    md5 = base64.b64encode(hashlib.md5(b"digest").digest()).decode()
    digested = signed_request(servd, "PUT", f"/{name}/plain", data=b"digest", headers={"Content-MD5": md5})
    assert digested.status_code == 200, digested.text
    # Without a retention to give (no default, none asked for) no digest is needed.
    plain = locked_bucket(s3)
    assert signed_request(servd, "PUT", f"/{plain}/k", data=b"x").status_code == 200
