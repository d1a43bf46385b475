"""S3 listings: ListObjectsV2 and ListObjects (v1) with prefixes, delimiters and pagination."""

from concurrent.futures import ThreadPoolExecutor

from conftest import md5_hex, s3_error, unique_bucket


def put_keys(s3, bucket, keys, body=b"x"):
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=body), keys))


def byte_order(keys):
    return sorted(keys, key=lambda k: k.encode())


def list_v2_all(s3, bucket, **kwargs):
    """Every page of a ListObjectsV2 walk, following continuation tokens."""
    pages, token = [], None
    while True:
        args = dict(kwargs, **({"ContinuationToken": token} if token else {}))
        page = s3.list_objects_v2(Bucket=bucket, **args)
        pages.append(page)
        if not page["IsTruncated"]:
            return pages
        token = page["NextContinuationToken"]
        assert len(pages) < 100, "pagination does not end"


def test_prefix_and_delimiter(s3, bucket):
    keys = ["a.txt", "dir1/x", "dir1/y", "dir1/sub/z", "dir2/w", "e/f/g", "dirt"]
    put_keys(s3, bucket, keys)

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a.txt", "dirt"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir1/", "dir2/", "e/"]
    assert top["KeyCount"] == 5 and top["IsTruncated"] is False
    assert top["Delimiter"] == "/"

    dir1 = s3.list_objects_v2(Bucket=bucket, Prefix="dir1/", Delimiter="/")
    assert [o["Key"] for o in dir1["Contents"]] == ["dir1/x", "dir1/y"]
    assert [p["Prefix"] for p in dir1["CommonPrefixes"]] == ["dir1/sub/"]
    assert dir1["Prefix"] == "dir1/"

    flat = s3.list_objects_v2(Bucket=bucket, Prefix="dir")
    assert [o["Key"] for o in flat["Contents"]] == ["dir1/sub/z", "dir1/x", "dir1/y", "dir2/w", "dirt"]
    assert "CommonPrefixes" not in flat

    none = s3.list_objects_v2(Bucket=bucket, Prefix="nothing/")
    assert none["KeyCount"] == 0 and "Contents" not in none

    entry = s3.list_objects_v2(Bucket=bucket, Prefix="a.txt")["Contents"][0]
    assert entry["Size"] == 1 and entry["ETag"] == f'"{md5_hex(b"x")}"'
    head_modified = s3.head_object(Bucket=bucket, Key="a.txt")["LastModified"]
    assert abs((entry["LastModified"] - head_modified).total_seconds()) < 1


def test_v2_max_keys_continuation_and_start_after(s3, bucket):
    keys = [f"key-{i:03d}" for i in range(25)]
    put_keys(s3, bucket, keys)

    pages = list_v2_all(s3, bucket, MaxKeys=10)
    assert [p["KeyCount"] for p in pages] == [10, 10, 5]
    assert [p["IsTruncated"] for p in pages] == [True, True, False]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="key-012")
    assert [o["Key"] for o in after["Contents"]] == keys[13:]
    after_missing = s3.list_objects_v2(Bucket=bucket, StartAfter="key-0125")
    assert [o["Key"] for o in after_missing["Contents"]] == keys[13:], "StartAfter need not be a key"

    paged_after = list_v2_all(s3, bucket, StartAfter="key-019", MaxKeys=2)
    assert [o["Key"] for p in paged_after for o in p["Contents"]] == keys[20:]


def test_v2_pagination_with_common_prefixes(s3, bucket):
    keys = [f"p{d}/obj{i}" for d in range(5) for i in range(3)] + ["top-a", "top-b", "top-c"]
    put_keys(s3, bucket, keys)

    pages = list_v2_all(s3, bucket, Delimiter="/", MaxKeys=2)
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    contents = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert prefixes == [f"p{d}/" for d in range(5)], "each common prefix exactly once"
    assert contents == ["top-a", "top-b", "top-c"]
    for page in pages:
        assert page["KeyCount"] == len(page.get("Contents", [])) + len(page.get("CommonPrefixes", [])) <= 2


def test_v1_marker_and_next_marker(s3, bucket):
    keys = [f"m/{i:02d}" for i in range(12)] + ["n/1", "n/2", "o"]
    put_keys(s3, bucket, keys)

    listed, marker = [], ""
    for _ in range(20):
        page = s3.list_objects(Bucket=bucket, Marker=marker, MaxKeys=5)
        page_keys = [o["Key"] for o in page.get("Contents", [])]
        assert len(page_keys) <= 5
        listed += page_keys
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker") or page_keys[-1]
    assert listed == keys

    started = s3.list_objects(Bucket=bucket, Marker="m/09")
    assert [o["Key"] for o in started["Contents"]] == keys[10:]

    # with a delimiter, a truncated v1 page carries NextMarker
    first = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert first["IsTruncated"] is True
    assert [p["Prefix"] for p in first["CommonPrefixes"]] == ["m/"]
    assert first["NextMarker"] == "m/"
    rest = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=first["NextMarker"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["n/"]
    assert [o["Key"] for o in rest["Contents"]] == ["o"]
    assert rest["IsTruncated"] is False


def test_2500_keys_each_listed_once_in_byte_order(s3, bucket):
    prefixes = ["a/", "B/", "\u00e9/", "\U0001F600/", "~/"]  # ASCII, Latin-1, astral plane
    keys = [f"{prefixes[i % 5]}{i:04d}" for i in range(2500)]
    put_keys(s3, bucket, keys)

    pages = list_v2_all(s3, bucket)
    assert all(len(p.get("Contents", [])) <= 1000 for p in pages)
    assert len(pages) >= 3
    listed = [o["Key"] for p in pages for o in p["Contents"]]
    assert len(listed) == len(set(listed)) == 2500
    assert listed == byte_order(keys)

    capped = s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)
    assert len(capped["Contents"]) <= 1000 and capped["IsTruncated"] is True

    by_prefix = list_v2_all(s3, bucket, Prefix="\U0001F600/", MaxKeys=300)
    assert [o["Key"] for p in by_prefix for o in p["Contents"]] == byte_order(k for k in keys if k.startswith("\U0001F600/"))


def test_listing_a_missing_bucket(s3):
    missing = unique_bucket("missing")
    assert s3_error(s3.list_objects_v2, Bucket=missing) == (404, "NoSuchBucket")
    assert s3_error(s3.list_objects, Bucket=missing) == (404, "NoSuchBucket")
