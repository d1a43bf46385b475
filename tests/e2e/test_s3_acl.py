"""S3 ACLs and owners: accounts behind access keys, bucket and object ACLs with grants, access
decided by them, and ExpectedBucketOwner."""

import boto3
import requests
from botocore import UNSIGNED
from botocore.config import Config

from conftest import REGION, s3_client, s3_error, unique_bucket
from test_s3_keys import create_key

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def second_key(node, name):
    """A second access key, its client, and its account's canonical id (as its ListBuckets shows)."""
    key = create_key(node, name)
    client = s3_client(node, key["access_key"], key["secret_key"])
    return client, client.list_buckets()["Owner"]["ID"]


def anonymous(node):
    return boto3.session.Session().client(
        "s3", endpoint_url=node.s3, region_name=REGION,
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"}))


def test_the_owner_is_the_same_account_in_every_answer(servd):
    root = s3_client(servd)
    name = unique_bucket("own")
    root.create_bucket(Bucket=name)
    root.put_object(Bucket=name, Key="k", Body=b"x")

    owner = root.list_buckets()["Owner"]
    assert len(owner["ID"]) == 64 and all(c in "0123456789abcdef" for c in owner["ID"])
    assert owner["ID"] != "SVTESTROOTKEY" and owner["DisplayName"] == "root"
    acl = root.get_bucket_acl(Bucket=name)
    assert acl["Owner"] == owner
    assert acl["Grants"][0] == {"Grantee": {"Type": "CanonicalUser", **owner}, "Permission": "FULL_CONTROL"}
    listed = root.list_objects_v2(Bucket=name, FetchOwner=True)["Contents"][0]
    assert listed["Owner"] == owner
    assert "Owner" not in root.list_objects_v2(Bucket=name)["Contents"][0], "V2 shows owners only when fetched"
    assert root.list_objects(Bucket=name)["Contents"][0]["Owner"] == owner
    assert root.get_object_acl(Bucket=name, Key="k")["Owner"] == owner
    assert root.list_object_versions(Bucket=name)["Versions"][0]["Owner"] == owner
    upload = root.create_multipart_upload(Bucket=name, Key="big")["UploadId"]
    listed = root.list_multipart_uploads(Bucket=name)["Uploads"][0]
    assert (listed["Owner"], listed["Initiator"]) == (owner, owner)
    parts = root.list_parts(Bucket=name, Key="big", UploadId=upload)
    assert (parts["Owner"], parts["Initiator"]) == (owner, owner)

    alt, alt_id = second_key(servd, "own-alt")
    assert alt_id != owner["ID"], "each key is its own account"


def test_a_read_grant_lets_another_account_get_but_not_put(servd):
    root = s3_client(servd)
    alt, alt_id = second_key(servd, "reader")
    by_header, by_body = unique_bucket("hdr"), unique_bucket("xml")
    for name in (by_header, by_body):
        root.create_bucket(Bucket=name)
        root.put_object(Bucket=name, Key="k", Body=b"shared")
        assert s3_error(alt.get_object, Bucket=name, Key="k") == (403, "AccessDenied")

    root.put_object_acl(Bucket=by_header, Key="k", GrantRead=f'id="{alt_id}"')
    owner = root.get_object_acl(Bucket=by_body, Key="k")["Owner"]
    root.put_object_acl(Bucket=by_body, Key="k", AccessControlPolicy={
        "Owner": owner,
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": alt_id}, "Permission": "READ"}],
    })
    for name in (by_header, by_body):
        assert alt.get_object(Bucket=name, Key="k")["Body"].read() == b"shared"
        grants = root.get_object_acl(Bucket=name, Key="k")["Grants"]
        assert {"Grantee": {"Type": "CanonicalUser", "ID": alt_id}, "Permission": "READ"} in grants
        assert s3_error(alt.put_object, Bucket=name, Key="k", Body=b"no") == (403, "AccessDenied")
        assert s3_error(alt.get_object_acl, Bucket=name, Key="k") == (403, "AccessDenied")
        assert s3_error(alt.put_object_acl, Bucket=name, Key="k", ACL="public-read") == (403, "AccessDenied")

    # Bucket grants: READ lists, WRITE puts.
    root.put_bucket_acl(Bucket=by_header, GrantRead=f'id="{alt_id}"', GrantWrite=f'id="{alt_id}"')
    assert [o["Key"] for o in alt.list_objects_v2(Bucket=by_header)["Contents"]] == ["k"]
    alt.put_object(Bucket=by_header, Key="from-alt", Body=b"mine")
    listed = root.list_objects_v2(Bucket=by_header, FetchOwner=True)["Contents"]
    assert {o["Key"]: o["Owner"]["ID"] for o in listed}["from-alt"] == alt_id, "the writer owns what it wrote"
    assert s3_error(alt.get_bucket_acl, Bucket=by_header) == (403, "AccessDenied")
    root.put_bucket_acl(Bucket=by_body, GrantReadACP=f'id="{alt_id}"')
    assert alt.get_bucket_acl(Bucket=by_body)["Owner"] == owner


def test_public_read_opens_anonymous_gets_and_private_closes_them(servd):
    root = s3_client(servd)
    anon = anonymous(servd)
    name = unique_bucket("anon")
    root.create_bucket(Bucket=name)
    root.put_object(Bucket=name, Key="open", Body=b"for all", ACL="public-read")
    root.put_object(Bucket=name, Key="closed", Body=b"not for all")
    assert anon.get_object(Bucket=name, Key="open")["Body"].read() == b"for all"
    assert s3_error(anon.get_object, Bucket=name, Key="closed") == (403, "AccessDenied")
    grants = root.get_object_acl(Bucket=name, Key="open")["Grants"]
    assert {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"} in grants

    root.put_object_acl(Bucket=name, Key="open", ACL="private")
    assert s3_error(anon.get_object, Bucket=name, Key="open") == (403, "AccessDenied")
    root.put_object_acl(Bucket=name, Key="closed", GrantRead=f'uri="{ALL_USERS}"')
    assert anon.get_object(Bucket=name, Key="closed")["Body"].read() == b"not for all"

    # The ACL CreateMultipartUpload names is the completed object's.
    upload = root.create_multipart_upload(Bucket=name, Key="multi", ACL="public-read")["UploadId"]
    etag = root.upload_part(Bucket=name, Key="multi", UploadId=upload, PartNumber=1, Body=b"parts")["ETag"]
    root.complete_multipart_upload(Bucket=name, Key="multi", UploadId=upload,
                                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert anon.get_object(Bucket=name, Key="multi")["Body"].read() == b"parts"


def bucket_with_object(root, prefix):
    """A new bucket of `root`'s holding the object `k`."""
    name = unique_bucket(prefix)
    root.create_bucket(Bucket=name)
    root.put_object(Bucket=name, Key="k", Body=b"x")
    return name


def test_acl_requests_are_refused_as_s3_refuses_them(servd):
    root = s3_client(servd)
    _, alt_id = second_key(servd, "refused")
    name = bucket_with_object(root, "bad")
    assert s3_error(root.put_bucket_acl, Bucket=name, ACL="public-read",
                    GrantRead=f'id="{alt_id}"') == (400, "InvalidRequest")
    assert s3_error(root.put_object_acl, Bucket=name, Key="k", ACL="private",
                    GrantRead=f'id="{alt_id}"') == (400, "InvalidRequest")
    assert s3_error(root.put_bucket_acl, Bucket=name,
                    GrantRead='emailAddress="someone@example.com"') == (400, "InvalidArgument")
    assert s3_error(root.put_bucket_acl, Bucket=name, GrantRead='id="not-an-id"') == (400, "InvalidArgument")


def test_expected_bucket_owner_must_match(servd):
    root = s3_client(servd)
    _, alt_id = second_key(servd, "expect")
    name = bucket_with_object(root, "exp")
    owner_id = root.list_buckets()["Owner"]["ID"]
    assert root.get_object(Bucket=name, Key="k", ExpectedBucketOwner=owner_id)["Body"].read() == b"x"
    assert s3_error(root.get_object, Bucket=name, Key="k", ExpectedBucketOwner=alt_id) == (403, "AccessDenied")
    assert s3_error(root.list_objects_v2, Bucket=name, ExpectedBucketOwner=alt_id) == (403, "AccessDenied")
    assert s3_error(root.get_bucket_acl, Bucket=name, ExpectedBucketOwner=alt_id) == (403, "AccessDenied")
    root.list_objects_v2(Bucket=name, ExpectedBucketOwner=owner_id)


def test_acls_survive_a_restart(start_servd):
    node = start_servd().wait_ready()
    root = s3_client(node)
    key = create_key(node, "durable-acl")
    alt = s3_client(node, key["access_key"], key["secret_key"])
    alt_id = alt.list_buckets()["Owner"]["ID"]
    name = unique_bucket("dur")
    root.create_bucket(Bucket=name)
    root.put_object(Bucket=name, Key="k", Body=b"kept")
    root.put_object_acl(Bucket=name, Key="k", GrantRead=f'id="{alt_id}"')
    root.put_bucket_acl(Bucket=name, ACL="public-read")
    before = (root.get_bucket_acl(Bucket=name), root.get_object_acl(Bucket=name, Key="k"))
    assert node.stop() == 0

    again = start_servd(data_dir=node.data_dir).wait_ready()
    root = s3_client(again)
    alt = s3_client(again, key["access_key"], key["secret_key"])
    after = (root.get_bucket_acl(Bucket=name), root.get_object_acl(Bucket=name, Key="k"))
    for old, new in zip(before, after):
        assert (old["Owner"], old["Grants"]) == (new["Owner"], new["Grants"])
    assert alt.get_object(Bucket=name, Key="k")["Body"].read() == b"kept"
    assert requests.get(f"{again.s3}/{name}?list-type=2", timeout=10).status_code == 200
