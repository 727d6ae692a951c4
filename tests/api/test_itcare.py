"""ITCare instance routes: the seed's create example, every validation rule, start/stop, delete."""
from __future__ import annotations

import psycopg
import pytest

from tests.api.harness import drop_instance, wait_request

# The seed's example body, verbatim but for postgreVersion: 13 is not installable here, 15 is.
SEED_CREATE = {
    "serviceId": 123, "nodeSizing": "2cpu4gb", "networkId": 132, "area": "EB-QA", "diskSize": 40,
    "admPassword": "Test123@2022", "postgreVersion": "15", "allowedReplicationLag": 10, "az": "az",
    "topology": "STANDALONE", "trigram": "tri", "tls": True, "name": "NEWPOSTGRE01",
}
ASYNC_KEYS = {"family", "id", "internalId", "lastUpdatedAt", "message", "process", "resourceName", "resourceType",
              "status"}


@pytest.fixture(scope="module")
def instance(server):
    with server.client() as admin:
        response = admin.post("/itcare/databases/postgresql", json=SEED_CREATE)
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == ASYNC_KEYS and body["status"] == "IN_PROGRESS"
        assert body["resourceName"] == "newpostgre01"
        request = wait_request(admin, body["id"])
        assert request["state"] == "SUCCESS", request
        yield body["internalId"]
        response = admin.delete(f"/itcare/databases/postgresql/{body['internalId']}")
        if response.status_code == 202:
            wait_request(admin, response.json()["id"])
        drop_instance("newpostgre01")


def test_seed_create_example_gives_an_instance_the_admin_logs_into(admin, instance):
    body = admin.get(f"/itcare/databases/postgresql/{instance}").json()
    assert body["name"] == "newpostgre01" and body["status"] == "ACTIVE" and body["topology"] == "STANDALONE"
    assert body["version"] == "15" and body["nodeCount"] == 1 and body["nodeSizing"] == "2cpu4gb"
    assert body["cpu"] == 2 and body["ram"] == 4 and body["storage"] == 40
    assert body["serviceId"] == 123 and body["networkId"] == 132 and body["area"] == "EB-QA"
    assert body["trigram"] == "tri" and body["creationUser"] and body["creationTime"]
    assert body["ipAddress"] == "127.0.0.1" and body["url"].startswith("postgresql://127.0.0.1:")
    port = int(body["url"].rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(host="127.0.0.1", port=port, user="admin", password="Test123@2022", dbname="postgres") as c:
        assert c.execute("select current_user").fetchone() == ("admin",)
    # The same id in the native dialect.
    assert admin.get(f"/v1/clusters/{instance}").json()["name"] == "newpostgre01"


def test_patch_stop_and_start(admin, instance):
    response = admin.patch(f"/itcare/databases/postgresql/{instance}", json={"operation": "stop"})
    assert response.status_code == 202 and set(response.json()) == ASYNC_KEYS
    assert wait_request(admin, response.json()["id"])["state"] == "SUCCESS"
    stopped = admin.get(f"/itcare/databases/postgresql/{instance}").json()
    assert stopped["status"] == "STOPPED" and stopped["lastRequestStatus"] == "SUCCESS"
    response = admin.patch(f"/itcare/databases/postgresql/{instance}", json={"operation": "start"})
    assert wait_request(admin, response.json()["id"])["state"] == "SUCCESS"
    assert admin.get(f"/itcare/databases/postgresql/{instance}").json()["status"] == "ACTIVE"


def test_patch_unknown_operation_lists_the_supported_ones(admin, instance):
    response = admin.patch(f"/itcare/databases/postgresql/{instance}", json={"operation": "explode"})
    assert response.status_code == 400
    assert "start" in response.json()["message"] and "stop" in response.json()["message"]


def test_unknown_instance_answers_404(admin):
    assert admin.get("/itcare/databases/postgresql/nope").status_code == 404
    assert admin.patch("/itcare/databases/postgresql/nope", json={"operation": "start"}).status_code == 404
    assert admin.delete("/itcare/databases/postgresql/nope").status_code == 404


@pytest.mark.parametrize("change, field", [
    ({"name": "abcd"}, "name"),                     # shorter than 5
    ({"name": "a" * 61}, "name"),                   # longer than 60
    ({"name": "bad-name"}, "name"),                 # not letters or digits
    ({"name": "cluster"}, "name"),                  # reserved keyword... (7 letters, passes the length rule)
    ({"admPassword": "Short1@a"}, "admPassword"),   # < 12
    ({"admPassword": "alllowercase1@"}, "admPassword"),
    ({"admPassword": "ALLUPPERCASE1@"}, "admPassword"),
    ({"admPassword": "NoDigitsHere@@"}, "admPassword"),
    ({"admPassword": "NoSpecials1234"}, "admPassword"),
    ({"diskSize": 39}, "diskSize"),
    ({"diskSize": 1025}, "diskSize"),
    ({"postgreVersion": "9"}, "postgreVersion"),
    ({"topology": "RING"}, "topology"),            # STANDALONE or HA only
    ({"allowedReplicationLag": 0}, "allowedReplicationLag"),
    ({"allowedReplicationLag": 10241}, "allowedReplicationLag"),
    ({"nodeSizing": "big"}, "nodeSizing"),
    ({"name": None}, "name"),
])
def test_each_validation_rule_answers_400_naming_the_field(admin, change, field):
    before = admin.get("/v1/clusters", params={"size": 1000}).json()["count"]
    body = {**SEED_CREATE, "name": "rulecheck01", **change}
    if change.get("name", "") is None:
        body.pop("name")
    response = admin.post("/itcare/databases/postgresql", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and field in response.json()["message"]
    assert admin.get("/v1/clusters", params={"size": 1000}).json()["count"] == before


def test_databases_extensions_and_install_extension(admin, instance):
    available = admin.get(f"/itcare/databases/postgresql/{instance}/extensions").json()
    row = {e["name"]: e for e in available}["pg_trgm"]
    assert set(row) == {"name", "version", "comment", "requiresRestarting", "link"}
    assert row["requiresRestarting"] is False and row["link"].startswith("https://")

    seed = {"operation": "install_extension",
            "options": {"dbname": "postgres", "extensions_list": [{"name": "pg_trgm"}, {"name": "hstore"}]}}
    response = admin.patch(f"/itcare/databases/postgresql/{instance}", json=seed)
    assert response.status_code == 202 and set(response.json()) == ASYNC_KEYS
    assert response.json()["status"] == "IN_PROGRESS" and response.json()["process"] == "INSTALL_EXTENSION_POSTGRESQL"
    # The instance shows the running request (the job takes seconds; this GET, milliseconds).
    assert admin.get(f"/itcare/databases/postgresql/{instance}").json()["status"] == "IN_PROGRESS"
    assert wait_request(admin, response.json()["id"])["state"] == "SUCCESS"
    instance_body = admin.get(f"/itcare/databases/postgresql/{instance}").json()
    assert instance_body["lastRequestId"] == response.json()["id"] and instance_body["lastRequestStatus"] == "SUCCESS"

    databases = admin.get(f"/itcare/databases/postgresql/{instance}/databases").json()
    postgres = {d["name"]: d for d in databases}["postgres"]
    assert {"pg_trgm", "hstore"} <= {e["name"] for e in postgres["extensions"]}
    assert all(set(e) == {"name", "schema", "version"} for e in postgres["extensions"])

    bad = admin.patch(f"/itcare/databases/postgresql/{instance}",
                      json={"operation": "install_extension", "options": {"dbname": "postgres"}})
    assert bad.status_code == 400 and bad.json()["field"] == "options.extensions_list"
