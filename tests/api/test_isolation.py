"""Tenant isolation through the API: no adoption of an instance that exists on the host, names
unique per account and never leaked, projects owned, terminated clusters and out-of-range ports
refused with 409/400, loose input refused, the agent facade kept by id."""
from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest

from tests.api.conftest import AGENT_NAME, SHARED_PORTS
from tests.api.harness import cluster_body, drop_instance, wait_request

HAND_MADE, HAND_MADE_PORT = "tapi-adopt", 55695  # outside the shared range: made by hand


@pytest.fixture(scope="module")
def users(server):
    """Two user accounts (tenants) besides the admin."""
    made = []
    with server.client() as admin:
        for _ in range(2):
            name, password = f"tenant-{uuid.uuid4().hex[:8]}", "Tenant-Pass-123"
            response = admin.post("/v1/accounts", json={"name": name, "password": password, "role": "user"})
            assert response.status_code == 201, response.text
            made.append((response.json()["id"], (name, password)))
        yield [auth for _, auth in made]


@pytest.fixture
def hand_made_instance():
    """An instance made on the host outside pgdbaas, with data of its own."""
    drop_instance(HAND_MADE)
    subprocess.run(["pg_createcluster", "15", HAND_MADE, "-p", str(HAND_MADE_PORT), "--start"], check=True,
                   capture_output=True)
    subprocess.run(["su", "postgres", "-c", f"psql -p {HAND_MADE_PORT} -qc "
                    "'create table private_rows as select 42 as secret'"], check=True, capture_output=True)
    yield HAND_MADE
    drop_instance(HAND_MADE)


def instance_of(client, cluster_id: str) -> dict:
    return client.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]


def test_a_cluster_named_like_an_existing_instance_gets_an_instance_of_its_own(admin, created, hand_made_instance):
    response = admin.post("/v1/clusters", json=cluster_body(HAND_MADE))
    assert response.status_code == 202, response.text
    cluster_id = response.json()["resource"]["id"]
    created.append((cluster_id, HAND_MADE))
    assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    instance = instance_of(admin, cluster_id)
    assert instance["name"] != HAND_MADE and instance["name"].startswith(f"{HAND_MADE}-")
    assert instance["port"] != HAND_MADE_PORT
    low, high = map(int, SHARED_PORTS.split("-"))
    assert low <= instance["port"] <= high
    # The record's port is where the new tenant's instance really runs, and it has none of the old data.
    with psycopg.connect(host="127.0.0.1", port=instance["port"], user="appuser", password="App-Secret-Pw-1",
                         dbname="appdb") as conn:
        assert conn.execute("select to_regclass('private_rows')").fetchone() == (None,)
    # The hand-made instance was not touched: its own role list has no tenant user, its data is there.
    out = subprocess.run(["su", "postgres", "-c", f"psql -p {HAND_MADE_PORT} -Atc "
                          "\"select (select count(*) from pg_roles where rolname = 'appuser'), secret "
                          "from private_rows\""], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "0|42"


def test_names_are_unique_per_account_and_errors_name_no_other_tenant(server, admin, users):
    alice, bob = users
    with server.client(auth=alice) as a, server.client(auth=bob) as b:
        # alice takes a name that the admin's agent cluster also has: allowed, it is hers.
        response = a.post("/v1/clusters", json=cluster_body(AGENT_NAME, database="otherdb"))
        assert response.status_code == 202, response.text
        cluster_id = response.json()["resource"]["id"]
        instance = instance_of(a, cluster_id)["name"]
        try:
            assert wait_request(a, response.json()["request_id"])["state"] == "SUCCESS"
            # Her second cluster of that name is refused, naming only her own.
            again = a.post("/v1/clusters", json=cluster_body(AGENT_NAME))
            assert again.status_code == 409 and again.json()["field"] == "name"
            # bob sees none of it: not in lists, 404 for the id, and nothing in his errors.
            assert b.get(f"/v1/clusters/{cluster_id}").status_code == 404
            assert all(c["id"] != cluster_id for c in b.get("/v1/clusters").json()["contents"])
            # The agent facade still serves the admin's instance, kept by id: alice's cluster of the
            # same name did not take its place.
            status = admin.get("/service/postgresql/status").json()
            assert "otherdb" not in status["databases"]
            # To a user the facade's 404 names no cluster of the admin's.
            agent_id = [c["id"] for c in admin.get("/v1/clusters", params={"size": 1000}).json()["contents"]
                        if c["name"] == AGENT_NAME and c["id"] != cluster_id][0]
            for client in (a, b):
                answer = client.get("/service/postgresql/status")
                assert answer.status_code == 404 and agent_id not in answer.text
            # Untrusted languages and file/program access are refused to a tenant, in every dialect.
            for extension in ("plpython3u", "file_fdw", "adminpack"):
                answer = a.post(f"/v1/clusters/{cluster_id}/extensions",
                                json={"database": "otherdb", "extensions": [{"name": extension}]})
                assert answer.status_code == 400 and extension in answer.json()["detail"], answer.text
            answer = a.patch(f"/itcare/databases/postgresql/{cluster_id}", json={
                "operation": "install_extension",
                "options": {"dbname": "otherdb", "extensions_list": [{"name": "plperlu"}]}})
            assert answer.status_code == 400 and "plperlu" in answer.text, answer.text
            assert not [r for r in a.get("/v1/requests", params={"cluster_id": cluster_id}).json()["contents"]
                        if r["operation"] == "install_extension"]
            # A terminated cluster takes no more operations: 409 with its state, never a 500.
            done = a.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(a, done.json()["request_id"])["state"] == "SUCCESS"
            for method, path, body in (("post", "databases", {"name": "late"}),
                                       ("post", "users", {"name": "late", "database": "otherdb"}),
                                       ("post", "start", None), ("post", "sync-state", None),
                                       ("post", "extensions", {"database": "otherdb", "extensions": [{"name": "hstore"}]})):
                answer = getattr(a, method)(f"/v1/clusters/{cluster_id}/{path}", json=body)
                assert answer.status_code == 409 and "TERMINATED" in answer.json()["detail"], (path, answer.text)
            assert a.delete(f"/v1/clusters/{cluster_id}").status_code == 409
        finally:
            drop_instance(instance)  # alice's instance only: the agent's has another id in its name


def test_database_port_outside_the_configured_range_is_refused(admin):
    body = cluster_body("tapi-port-range", port=56500)
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "database_port" and SHARED_PORTS in response.json()["detail"]
    assert not [c for c in admin.get("/v1/clusters", params={"name": "tapi-port-range"}).json()["contents"]]


def test_projects_belong_to_their_account(server, users):
    alice, bob = users
    with server.client(auth=alice) as a, server.client(auth=bob) as b:
        response = a.post("/api/project/", json={"name": "alice-project"})
        assert response.status_code == 201, response.text
        project_id = response.json()["id"]
        assert b.get(f"/api/project/{project_id}/").status_code == 404
        assert b.delete(f"/api/project/{project_id}/").status_code == 404
        assert all(p["id"] != project_id for p in b.get("/api/project/").json()["project"])
        # bob may use the same name: names are per account, and nothing tells him alice has one.
        mine = b.post("/api/project/", json={"name": "alice-project"})
        assert mine.status_code == 201, mine.text
        assert a.get(f"/api/project/{project_id}/").status_code == 200
        assert a.delete(f"/api/project/{project_id}/").status_code == 204
        assert b.delete(f"/api/project/{mine.json()['id']}/").status_code == 204


@pytest.mark.parametrize("name", ["bad\x00name", "bell\x07", "line\nbreak", "tab\tname", "\u202eevil"])
def test_project_names_refuse_control_characters(admin, name):
    response = admin.post("/api/project/", json={"name": name})
    assert response.status_code == 400, response.text
    assert all(p["name"] != name for p in admin.get("/api/project/").json()["project"])


def test_itcare_disk_size_must_be_an_integer(admin):
    body = {"name": "tapiitcstr", "admPassword": "Itc-Passw0rd-12!", "nodeSizing": "1cpu1gb", "diskSize": "40",
            "postgreVersion": "15"}
    response = admin.post("/itcare/databases/postgresql", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "diskSize"
