"""The DBaaS seed's curl examples replayed (host and ids aside) with their documented shapes."""
from __future__ import annotations

import re

import psycopg
import pytest

from tests.api.harness import wait_request

DATABASE_KEYS = {"_links", "id", "name", "endpoint", "plan", "environment", "project", "quarantine_dt",
                 "total_size_in_bytes", "used_size_in_bytes", "credentials"}


def login(endpoint: str, user: str, password: str):
    host, port, dbname = re.match(r"postgresql://<user>:<password>@([^:]+):(\d+)/(.+)$", endpoint).groups()
    return psycopg.connect(host=host, port=int(port), user=user, password=password, dbname=dbname, connect_timeout=5)


def refused(endpoint, user, password) -> bool:
    try:
        login(endpoint, user, password).close()
    except psycopg.OperationalError:
        return True
    return False


@pytest.fixture(scope="module")
def database(server):
    with server.client() as admin:
        response = admin.post("/api/database/", json={
            "name": "test database2", "plan": "/api/plan/1/", "environment": "/api/environment/1/"})
        assert response.status_code == 201, response.text
        body = response.json()
        yield body
        for _ in range(2):  # quarantine, then destroy, whatever the tests left
            if admin.delete(f"/api/database/{body['id']}/").status_code == 404:
                break


@pytest.fixture(scope="module")
def second_database(server, database):
    """A second database record (on the first one's cluster, through /v1: no second provision),
    so that a listing has more than one page of one. It goes with that cluster."""
    with server.client() as admin:
        (cluster,) = [c for c in admin.get("/v1/clusters", params={"name": database["name"], "size": 1000})
                      .json()["contents"] if c["name"] == database["name"] and c["service_state"] != "TERMINATED"]
        response = admin.post(f"/v1/clusters/{cluster['id']}/databases", json={
            "name": "tdbaas_more", "owner": "u_tdbaas_more", "owner_password": "More-pass-12345"})
        assert response.status_code == 202, response.text
        assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
        endpoint = database["endpoint"].rsplit("/", 1)[0] + "/tdbaas_more"
        return next(d for d in admin.get("/api/database/", params={"page_size": 1000}).json()["database"]
                    if d["endpoint"] == endpoint)


def test_create_database_example(server, database):
    assert set(database) == DATABASE_KEYS
    assert database["name"] == "test_database2"
    assert database["_links"]["self"] == f"{server.url}/api/database/{database['id']}/"
    assert database["plan"] == f"{server.url}/api/plan/1/"
    assert database["environment"] == f"{server.url}/api/environment/1/"
    assert database["project"] is None and database["quarantine_dt"] is None
    assert database["endpoint"].startswith("postgresql://<user>:<password>@127.0.0.1:")
    assert database["endpoint"].endswith("/test_database2")
    assert database["total_size_in_bytes"] == 1 << 30 and database["used_size_in_bytes"] > 0
    assert len(database["credentials"]) == 1 and database["credentials"][0].startswith(f"{server.url}/api/credential/")


def test_list_and_get_database_examples(server, admin, database, second_database):
    listing = admin.get("/api/database/").json()
    assert set(listing) == {"_links", "database"}
    assert set(listing["_links"]) == {"count", "self", "previous", "next"}
    assert listing["_links"]["self"] == f"{server.url}/api/database/"
    assert any(d["id"] == database["id"] for d in listing["database"])
    one = admin.get(f"/api/database/{database['id']}/").json()
    assert set(one) == DATABASE_KEYS and one["name"] == "test_database2"
    paged = admin.get("/api/database/", params={"page_size": 1}).json()
    assert paged["_links"]["count"] == listing["_links"]["count"] >= 2
    assert len(paged["database"]) == 1 and paged["_links"]["previous"] is None
    next_link = paged["_links"]["next"]
    assert next_link and "page=2" in next_link and "page_size=1" in next_link
    following = admin.get(next_link.replace(server.url, "")).json()
    assert len(following["database"]) == 1 and following["database"][0]["id"] != paged["database"][0]["id"]
    assert "page=1" in following["_links"]["previous"]
    every = admin.get("/api/database/", params={"page_size": 1000}).json()["database"]
    assert {database["id"], second_database["id"]} <= {d["id"] for d in every}


def test_default_credential_and_credential_examples(server, admin, database):
    default_url = database["credentials"][0]
    default = admin.get(default_url.replace(server.url, "")).json()
    assert set(default) == {"_links", "id", "user", "database", "password"}
    assert default["user"] == "u_test_database2" and default["database"] == database["_links"]["self"]
    login(database["endpoint"], default["user"], default["password"]).close()

    listing = admin.get("/api/credential/").json()
    assert set(listing) == {"_links", "credential"} and set(listing["_links"]) == {"count", "self", "previous", "next"}
    assert all("password" not in c for c in listing["credential"])

    created = admin.post("/api/credential/", json={"user": "u_myusr1", "database": f"/api/database/{database['id']}/"})
    assert created.status_code == 201, created.text
    created = created.json()
    assert created["user"] == "u_myusr1" and created["password"]
    login(database["endpoint"], "u_myusr1", created["password"]).close()

    reset = admin.post(f"/api/credential/{created['id']}/reset_password/", content=b"")
    assert reset.status_code == 200
    assert reset.json()["password"] != created["password"]
    assert refused(database["endpoint"], "u_myusr1", created["password"])
    login(database["endpoint"], "u_myusr1", reset.json()["password"]).close()

    assert admin.delete(f"/api/credential/{created['id']}/").status_code == 204
    assert refused(database["endpoint"], "u_myusr1", reset.json()["password"])
    assert admin.get(f"/api/credential/{created['id']}/").status_code == 404


def test_plan_environment_project_resources(server, admin):
    plans = admin.get("/api/plan/").json()["plan"]
    assert [p["id"] for p in plans] == [1, 2, 3] and plans[0]["total_size_in_bytes"] == 1 << 30
    environment = admin.get("/api/environment/1/").json()
    assert environment["name"] == "pgdbaas_hosts" and environment["hosts"] == ["localhost"]
    project = admin.post("/api/project/", json={"name": "billing"}).json()
    assert admin.get(f"/api/project/{project['id']}/").json()["name"] == "billing"
    assert admin.delete(f"/api/project/{project['id']}/").status_code == 204
    assert admin.post("/api/database/", json={"name": "x1", "plan": "/api/plan/99/",
                                              "environment": "/api/environment/1/"}).status_code == 404
    assert admin.post("/api/database/", json={"name": "x1", "plan": "nonsense",
                                              "environment": "/api/environment/1/"}).status_code == 400


def test_delete_quarantines_then_destroys(server, admin, database):
    default = admin.get(database["credentials"][0].replace(server.url, "")).json()
    assert admin.delete(f"/api/database/{database['id']}/").status_code == 204
    quarantined = admin.get(f"/api/database/{database['id']}/").json()
    assert quarantined["quarantine_dt"] is not None
    assert refused(database["endpoint"], default["user"], default["password"])
    assert admin.get(database["credentials"][0].replace(server.url, "")).json()["password"] is None

    assert admin.delete(f"/api/database/{database['id']}/").status_code == 204
    assert admin.get(f"/api/database/{database['id']}/").status_code == 404
    port = int(re.search(r":(\d+)/", database["endpoint"]).group(1))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="nobody", dbname="postgres", connect_timeout=3)
