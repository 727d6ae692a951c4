"""The initial user of a /v1 cluster (a tenant admin) on PostgreSQL 15: it cannot reach the operating
system (no pg_execute_server_program, pg_read_server_files, pg_write_server_files, superuser, nor a
service role; no CREATEROLE) and manages its roles through the documented functions of schema pgdbaas,
called in database postgres (appdb, made from template0, has no schema pgdbaas)."""
from __future__ import annotations

import re

import psycopg
import pytest
from psycopg import sql

from tests.api.harness import (FILE_AND_PROGRAM_ROLES, ApiServer, cluster_body, drop_instance, wait_request,
                               assert_no_server_files_or_programs, refused)

PORTS = "56300-56319"
SERVICE_ROLES = ("postgres", "pgdbaas_role_manager")
DENIED = re.compile("permission denied|must be superuser|admin option|must have")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A cluster created through /v1 by its own API server: (instance name, port)."""
    api = ApiServer(tmp_path_factory.mktemp("tenant-roles"), port_range=PORTS)
    api.start()
    name = None
    try:
        with api.client() as admin:
            response = admin.post("/v1/clusters", json=cluster_body("tsec-roles"))
            assert response.status_code == 202, response.text
            cluster_id = response.json()["resource"]["id"]
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
            instance = admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]
            name = instance["name"]
            yield name, instance["port"]
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    finally:
        api.stop()
        drop_instance(name or "tsec-roles")


def login(port, user="appuser", password="App-Secret-Pw-1", dbname="appdb"):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=5)


def test_initial_user_cannot_escalate(cluster):
    _, port = cluster
    with login(port, dbname="postgres") as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == (False, False, True)
        for role in FILE_AND_PROGRAM_ROLES + SERVICE_ROLES:
            assert DENIED.search(refused(conn, sql.SQL("GRANT {} TO appuser").format(sql.Identifier(role))))
            assert "pgdbaas:" in refused(conn, sql.SQL("SELECT pgdbaas.grant_role({}, 'appuser')").format(
                sql.Literal(role)))
        assert "permission denied to create role" in refused(conn, "CREATE ROLE sneaky")
        assert DENIED.search(refused(conn, "ALTER ROLE appuser SUPERUSER"))
        assert DENIED.search(refused(conn, "ALTER ROLE pgdbaas_role_manager LOGIN PASSWORD 'x'"))
        assert_no_server_files_or_programs(conn)
    with login(port) as conn:  # appdb, which it owns: it may create functions there, not in language c
        assert "permission denied for language c" in refused(
            conn, "CREATE FUNCTION escape() RETURNS int LANGUAGE c AS '/lib/x86_64-linux-gnu/libc.so.6', 'getpid'")
        assert "permission denied to create extension" in refused(conn, "CREATE EXTENSION file_fdw")


def test_initial_user_creates_a_login_role_through_the_functions(cluster):
    _, port = cluster
    with login(port, dbname="postgres") as conn:
        conn.execute("SELECT pgdbaas.create_role('app_ro', 'Ro-Secret-Pw-1')")
        assert "pgdbaas:" in refused(conn, "SELECT pgdbaas.create_role('pg_sneaky', 'x')")
        assert "pgdbaas:" in refused(conn, "SELECT pgdbaas.create_role('pgdbaas_sneaky', 'x')")
        assert "pgdbaas:" in refused(conn, "SELECT pgdbaas.set_role_password('postgres', 'x')")
        assert "pgdbaas:" in refused(conn, "SELECT pgdbaas.grant_role('pg_execute_server_program', 'app_ro')")
    with login(port) as conn:
        conn.execute("GRANT CONNECT ON DATABASE appdb TO app_ro")
        conn.execute("CREATE TABLE notes (id int)")
        conn.execute("INSERT INTO notes VALUES (1)")
        conn.execute("GRANT SELECT ON notes TO app_ro")
    with login(port, "app_ro", "Ro-Secret-Pw-1") as conn:
        assert conn.execute("SELECT id FROM notes").fetchall() == [(1,)]
        assert "permission denied" in refused(conn, "INSERT INTO notes VALUES (2)")
    with login(port, dbname="postgres") as conn:
        conn.execute("SELECT pgdbaas.set_role_password('app_ro', 'Ro-Secret-Pw-2')")
    with login(port, "app_ro", "Ro-Secret-Pw-2") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_ro",)
    with login(port) as conn:
        conn.execute("REVOKE ALL ON notes FROM app_ro")
        conn.execute("REVOKE CONNECT ON DATABASE appdb FROM app_ro")
    with login(port, dbname="postgres") as conn:
        conn.execute("SELECT pgdbaas.drop_role('app_ro')")
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'app_ro'").fetchone() == (0,)
