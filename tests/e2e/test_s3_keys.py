"""Access keys from the admin API, and who may do what on whose bucket (owner, canned ACLs)."""

import requests

from conftest import s3_client, s3_error, unique_bucket


def create_key(node, name):
    response = requests.post(f"{node.admin}/v1/keys", json={"name": name},
                             headers={"Authorization": f"Bearer {node.token}"}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def test_keys_are_created_listed_without_secrets_and_revoked(servd):
    key = create_key(servd, "alt")
    assert set(key) == {"access_key", "secret_key", "name"} and key["name"] == "alt"

    listed = servd.get("/v1/keys").json()["keys"]
    assert [(k["access_key"], k["name"]) for k in listed] == [(key["access_key"], "alt")]
    assert key["secret_key"] not in servd.get("/v1/keys").text, "a listing never carries secrets"

    taken = requests.post(f"{servd.admin}/v1/keys", json={"name": "alt"},
                          headers={"Authorization": f"Bearer {servd.token}"}, timeout=10)
    assert (taken.status_code, taken.json()["code"]) == (409, "Conflict")
    bad = requests.post(f"{servd.admin}/v1/keys", json={"name": "has space"},
                        headers={"Authorization": f"Bearer {servd.token}"}, timeout=10)
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidParameter")
    unauthenticated = requests.post(f"{servd.admin}/v1/keys", json={"name": "x"}, timeout=10)
    assert unauthenticated.status_code == 401

    alt = s3_client(servd, key["access_key"], key["secret_key"])
    assert alt.list_buckets()["Buckets"] == []

    revoke = requests.delete(f"{servd.admin}/v1/keys/{key['access_key']}",
                             headers={"Authorization": f"Bearer {servd.token}"}, timeout=10)
    assert revoke.status_code == 204
    assert s3_error(alt.list_buckets) == (403, "InvalidAccessKeyId")
    again = requests.delete(f"{servd.admin}/v1/keys/{key['access_key']}",
                            headers={"Authorization": f"Bearer {servd.token}"}, timeout=10)
    assert (again.status_code, again.json()["code"]) == (404, "NotFound")
    assert key["secret_key"] not in servd.output(), "secrets are never logged"


def test_keys_survive_a_restart(start_servd):
    node = start_servd().wait_ready()
    key = create_key(node, "durable")
    assert node.stop() == 0
    again = start_servd(data_dir=node.data_dir).wait_ready()
    alt = s3_client(again, key["access_key"], key["secret_key"])
    name = unique_bucket()
    alt.create_bucket(Bucket=name)
    assert [b["Name"] for b in alt.list_buckets()["Buckets"]] == [name]


def test_a_second_key_is_denied_on_a_private_bucket_and_allowed_by_canned_acls(servd):
    root = s3_client(servd)
    key = create_key(servd, "other")
    alt = s3_client(servd, key["access_key"], key["secret_key"])

    private, public, shared = unique_bucket("priv"), unique_bucket("pub"), unique_bucket("rw")
    root.create_bucket(Bucket=private)
    root.put_object(Bucket=private, Key="k", Body=b"private bytes")
    root.create_bucket(Bucket=public, ACL="public-read")
    root.put_object(Bucket=public, Key="k", Body=b"public bytes")
    root.create_bucket(Bucket=shared)
    root.put_bucket_acl(Bucket=shared, ACL="public-read-write")

    assert s3_error(alt.get_object, Bucket=private, Key="k") == (403, "AccessDenied")
    assert s3_error(alt.list_objects_v2, Bucket=private) == (403, "AccessDenied")
    assert s3_error(alt.put_object, Bucket=private, Key="new", Body=b"x") == (403, "AccessDenied")
    assert s3_error(alt.delete_bucket, Bucket=private) == (403, "AccessDenied")

    assert alt.get_object(Bucket=public, Key="k")["Body"].read() == b"public bytes"
    assert [o["Key"] for o in alt.list_objects_v2(Bucket=public)["Contents"]] == ["k"]
    assert s3_error(alt.put_object, Bucket=public, Key="new", Body=b"x") == (403, "AccessDenied")

    alt.put_object(Bucket=shared, Key="from-alt", Body=b"written by alt")
    assert root.get_object(Bucket=shared, Key="from-alt")["Body"].read() == b"written by alt"

    # Anonymous: reads of the public-read bucket only.
    assert requests.get(f"{servd.s3}/{public}/k", timeout=10).content == b"public bytes"
    assert requests.get(f"{servd.s3}/{private}/k", timeout=10).status_code == 403
    assert requests.put(f"{servd.s3}/{public}/anon", data=b"x", timeout=10).status_code == 403

    # A bucket belongs to the key that made it; each key lists its own, root sees all.
    mine = unique_bucket("alt")
    alt.create_bucket(Bucket=mine)
    assert [b["Name"] for b in alt.list_buckets()["Buckets"]] == [mine]
    assert {private, public, shared, mine} <= {b["Name"] for b in root.list_buckets()["Buckets"]}
    assert s3_error(alt.create_bucket, Bucket=private) == (409, "BucketAlreadyExists")
    acl = root.get_bucket_acl(Bucket=public)
    assert {(g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]} >= {
        ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")}
