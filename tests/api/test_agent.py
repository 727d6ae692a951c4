"""The agent facade: the seed's examples replayed verbatim against the configured default instance."""
from __future__ import annotations

import psycopg
import pytest

from tests.api.conftest import AGENT_NAME, AGENT_PORT
from tests.api.harness import wait_request


@pytest.fixture(scope="module")
def booted(server):
    """On boot the agent instance is provisioned and started: wait for that request."""
    with server.client() as admin:
        admin_id = next(a["id"] for a in admin.get("/v1/accounts").json()["contents"] if a["name"] == "admin")
        # Other accounts may name clusters like it (names are unique per account only).
        clusters = [c for c in admin.get("/v1/clusters", params={"name": AGENT_NAME, "size": 1000}).json()["contents"]
                    if c["name"] == AGENT_NAME and c["account_id"] == admin_id]
        assert len(clusters) == 1, "the default instance is an ordinary cluster in /v1/clusters"
        for request in admin.get("/v1/requests", params={"cluster_id": clusters[0]["id"]}).json()["contents"]:
            wait_request(admin, request["request_id"])
        yield clusters[0]["id"]


def test_status_after_boot_is_started_with_databases(admin, booted):
    response = admin.get("/service/postgresql/status")
    assert response.status_code == 200
    assert response.json()["state"] == "started"
    assert "postgres" in response.json()["databases"]
    cluster = admin.get(f"/v1/clusters/{booted}").json()
    assert cluster["instance_groups"][0]["instances"][0]["port"] == AGENT_PORT


def test_seed_lifecycle_examples(admin, booted):
    # Start: only from stopped or error.
    response = admin.post("/service/postgresql/start")
    assert response.status_code == 409 and set(response.json()) == {"error"}

    response = admin.post("/service/postgresql/stop")
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert admin.get("/service/postgresql/status").json()["state"] == "stopped"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=AGENT_PORT, user="nobody", dbname="postgres", connect_timeout=3)

    # Stop and restart: only from started.
    for action in ("stop", "restart"):
        response = admin.post(f"/service/postgresql/{action}")
        assert response.status_code == 409 and set(response.json()) == {"error"}

    response = admin.post("/service/postgresql/start")
    assert response.status_code == 200 and response.json()["state"] == "started"

    response = admin.post("/service/postgresql/restart")
    assert response.status_code == 200 and response.json()["state"] == "started"


def test_seed_configure_create_admin(admin, booted):
    seed = {"create_admin": {"user": "admin_user", "password": "sekret"}}
    response = admin.post("/service/postgresql/configure", json=seed)
    assert response.status_code == 204 and response.content == b""
    with psycopg.connect(host="127.0.0.1", port=AGENT_PORT, user="admin_user", password="sekret",
                         dbname="postgres", autocommit=True) as conn:
        rights = conn.execute("select rolcreatedb, rolcreaterole from pg_roles where rolname = current_user")
        # The seed's "full rights to manage databases and roles": databases directly; roles through the
        # pgdbaas functions, since CREATEROLE before PostgreSQL 16 could grant server file and program access.
        assert rights.fetchone() == (True, False)
        conn.execute("create database agent_made_db")
        conn.execute("drop database agent_made_db")
        conn.execute("select pgdbaas.create_role('agent_made_role', 'Agent-Made-Pw-1')")
        conn.execute("select pgdbaas.drop_role('agent_made_role')")

    again = admin.post("/service/postgresql/configure",
                       json={"create_admin": {"user": "admin_user", "password": "other-pass"}})
    assert again.json() == {"error": "The user already exists"}
    # Nothing changed: the first password still works.
    psycopg.connect(host="127.0.0.1", port=AGENT_PORT, user="admin_user", password="sekret",
                    dbname="postgres").close()


def test_configure_without_a_command_is_refused(admin, booted):
    assert admin.post("/service/postgresql/configure", json={}).status_code == 400
    unknown = admin.post("/service/postgresql/configure", json={"drop_everything": {}})
    assert unknown.status_code == 400 and set(unknown.json()) == {"error"}


def test_seed_configure_create_and_destroy_database(admin, booted):
    seed = {"create_database": {"name": "db_name1", "user": "db_name1_user", "password": "the_pw"}}
    response = admin.post("/service/postgresql/configure", json=seed)
    assert response.status_code == 204 and response.content == b""
    with psycopg.connect(host="127.0.0.1", port=AGENT_PORT, user="db_name1_user", password="the_pw",
                         dbname="db_name1") as conn:
        assert conn.execute("select current_database()").fetchone() == ("db_name1",)
    assert "db_name1" in admin.get("/service/postgresql/status").json()["databases"]
    assert admin.post("/service/postgresql/configure", json=seed).json() == {"error": "The database already exists"}

    destroy = {"destroy_database": {"name": "db_name1", "user": "db_name1_user"}}
    response = admin.post("/service/postgresql/configure", json=destroy)
    assert response.status_code == 204 and response.content == b""
    assert "db_name1" not in admin.get("/service/postgresql/status").json()["databases"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=AGENT_PORT, user="db_name1_user", password="the_pw",
                        dbname="postgres", connect_timeout=3)
    assert admin.post("/service/postgresql/configure", json=destroy).json() == {"error": "The database does not exist"}
