"""/v1/topics: destinations are created, configured, inspected and deleted through the admin
API, and each is a topic actor."""

import requests


def call(node, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {node.token}"}
    return requests.request(method, f"{node.admin}{path}", headers=headers, timeout=10, **kwargs)


def test_a_destination_is_created_configured_inspected_and_deleted(servd):
    created = call(servd, "PUT", "/v1/topics/queue/orders", json={"max_deliveries": 3})
    assert created.status_code == 200, created.text
    info = created.json()
    assert info["name"] == "queue/orders"
    assert info["config"]["max_deliveries"] == 3
    assert info["config"]["dedup_window_ms"] == 600_000, "unset fields keep their defaults"
    assert (info["first_offset"], info["next_offset"], info["bytes"]) == (0, 0, 0)

    changed = call(servd, "PUT", "/v1/topics/queue/orders", json={"retention_count": 1000}).json()
    assert changed["config"]["retention_count"] == 1000 and changed["config"]["max_deliveries"] == 3
    assert call(servd, "GET", "/v1/topics/queue/orders").json() == changed
    call(servd, "PUT", "/v1/topics/topic/prices")
    names = [t["name"] for t in call(servd, "GET", "/v1/topics").json()["topics"]]
    assert names == ["queue/orders", "topic/prices"]

    actors = servd.get("/v1/actors", params={"kind": "topic"}).json()["actors"]
    assert {a["key"] for a in actors} == {"topic/queue/orders", "topic/topic/prices"}
    assert all(a["kind"] == "topic" and "messages=0" in a["state"] for a in actors)

    assert call(servd, "DELETE", "/v1/topics/queue/orders").status_code == 204
    missing = call(servd, "GET", "/v1/topics/queue/orders")
    assert (missing.status_code, missing.json()["code"]) == (404, "NotFound")
    assert call(servd, "DELETE", "/v1/topics/queue/orders").status_code == 404


def test_bad_names_and_configurations_are_json_errors(servd):
    for path in ["/v1/topics/orders", "/v1/topics/queue/", "/v1/topics/queue/has space",
                 "/v1/topics/bin/x", "/v1/topics/queue/" + "x" * 201]:
        response = call(servd, "PUT", path)
        assert (response.status_code, response.json()["code"]) == (400, "InvalidParameter"), path
    for body in [{"max_deliveries": 0}, {"retention_count": 0}, {"no_such_field": 1}, {"retention_bytes": -1}]:
        response = call(servd, "PUT", "/v1/topics/queue/q", json=body)
        assert (response.status_code, response.json()["code"]) == (400, "InvalidParameter"), body
    assert call(servd, "GET", "/v1/topics/queue/q").status_code == 404, "a refused creation creates nothing"
    assert requests.get(f"{servd.admin}/v1/topics", timeout=10).status_code == 401


def test_a_body_is_read_as_json_whatever_its_content_type(servd):
    applied = call(servd, "PUT", "/v1/topics/queue/ct", data='{"max_deliveries": 2}')
    assert applied.status_code == 200 and applied.json()["config"]["max_deliveries"] == 2, applied.text
    refused = call(servd, "PUT", "/v1/topics/queue/ct", data="max_deliveries=3")
    assert (refused.status_code, refused.json()["code"]) == (400, "InvalidParameter")
    assert call(servd, "GET", "/v1/topics/queue/ct").json()["config"]["max_deliveries"] == 2
