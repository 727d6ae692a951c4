"""/v1 databases, users and extensions against a real cluster."""
from __future__ import annotations

import psycopg
import pytest

from tests.api.harness import cluster_body, wait_request


def login(port, user, password, dbname):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname,
                           connect_timeout=5, autocommit=True)


def refused(port, user, password, dbname) -> bool:
    try:
        login(port, user, password, dbname).close()
    except psycopg.OperationalError:
        return True
    return False


def refusal(port, user, password, dbname) -> str:
    """Why the server refuses this login (the test fails if it is accepted)."""
    try:
        login(port, user, password, dbname).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    raise AssertionError(f"{user} logged into {dbname}")


BAD_PASSWORD = 'password authentication failed for user "{}"'


def ok(admin, response) -> dict:
    assert response.status_code == 202, response.text
    request = wait_request(admin, response.json()["request_id"])
    assert request["state"] == "SUCCESS", request
    return response.json()


@pytest.fixture(scope="module")
def cluster(server):
    with server.client() as admin:
        response = admin.post("/v1/clusters", json=cluster_body("tapi-data"))
        cluster_id = response.json()["resource"]["id"]
        assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
        port = admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]["port"]
        yield cluster_id, port
        wait_request(admin, admin.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])


def test_each_credential_logs_into_its_own_database_only(admin, cluster):
    cluster_id, port = cluster
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/databases",
                         json={"name": "db_a", "owner": "u_a", "owner_password": "Pass-a-123456"}))
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/databases",
                         json={"name": "db_b", "owner": "u_b", "owner_password": "Pass-b-123456"}))
    created = ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users", json={"name": "reader_a", "database": "db_a"}))
    generated = created["password"]
    assert len(generated) >= 12

    with login(port, "u_a", "Pass-a-123456", "db_a") as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (1)")
    with login(port, "reader_a", generated, "db_a") as conn:
        assert conn.execute("select x from t").fetchall() == [(1,)]
    assert refused(port, "u_a", "Pass-a-123456", "db_b")
    assert refused(port, "reader_a", generated, "db_b")
    assert refused(port, "u_b", "Pass-b-123456", "db_a")
    for maintenance in ("postgres", "template1"):
        assert refused(port, "reader_a", generated, maintenance)
        assert refused(port, "u_a", "Pass-a-123456", maintenance)
    with login(port, "u_b", "Pass-b-123456", "db_b"):
        pass

    names = {d["name"]: d for d in admin.get(f"/v1/clusters/{cluster_id}/databases").json()}
    assert {"db_a", "db_b", "appdb"} <= set(names) and names["db_a"]["owner"] == "u_a"
    assert names["db_a"]["size_bytes"] > 0 and names["db_a"]["id"] is not None
    users = {u["name"]: u for u in admin.get(f"/v1/clusters/{cluster_id}/users").json()}
    assert users["reader_a"]["database"] == "db_a" and users["reader_a"]["managed"]
    assert "password" not in admin.get(f"/v1/clusters/{cluster_id}/users").text


def test_reset_password_then_drop_user(admin, cluster):
    cluster_id, port = cluster
    first = ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users",
                                 json={"name": "rotating", "database": "appdb", "password": "First-pass-123"}))
    assert first["password"] is None  # a chosen password is never echoed back
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users/rotating/reset-password",
                         json={"password": "Second-pass-123"}))
    assert refused(port, "rotating", "First-pass-123", "appdb")
    login(port, "rotating", "Second-pass-123", "appdb").close()
    generated = ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users/rotating/reset-password"))["password"]
    login(port, "rotating", generated, "appdb").close()
    assert refused(port, "rotating", "Second-pass-123", "appdb")

    ok(admin, admin.delete(f"/v1/clusters/{cluster_id}/users/rotating"))
    assert refused(port, "rotating", generated, "appdb")
    assert "rotating" not in {u["name"] for u in admin.get(f"/v1/clusters/{cluster_id}/users").json()}
    assert admin.delete(f"/v1/clusters/{cluster_id}/users/rotating").status_code == 404


def test_destroy_database(admin, cluster):
    cluster_id, port = cluster
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/databases",
                         json={"name": "doomed", "owner": "u_doomed", "owner_password": "Doomed-pass-1"}))
    # Before the drop the credential is good: appdb (which outlives the drop) turns it away for
    # CONNECT only, not for its password.
    assert BAD_PASSWORD.format("u_doomed") not in refusal(port, "u_doomed", "Doomed-pass-1", "appdb")
    session = login(port, "u_doomed", "Doomed-pass-1", "doomed")
    assert session.execute("select current_database()").fetchone() == ("doomed",)
    ok(admin, admin.delete(f"/v1/clusters/{cluster_id}/databases/doomed"))
    # Its open session was ended by the drop: the next statement on it fails.
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    assert session.closed
    # Its credential is refused for itself (its role is gone), not only because its database is.
    assert BAD_PASSWORD.format("u_doomed") in refusal(port, "u_doomed", "Doomed-pass-1", "appdb")
    assert BAD_PASSWORD.format("u_doomed") in refusal(port, "u_doomed", "Doomed-pass-1", "doomed")
    assert "doomed" not in {d["name"] for d in admin.get(f"/v1/clusters/{cluster_id}/databases").json()}
    assert admin.delete(f"/v1/clusters/{cluster_id}/databases/doomed").status_code == 404


def test_bad_input_is_refused_and_changes_nothing(admin, cluster):
    cluster_id, _ = cluster
    before = admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()["count"]
    assert admin.post(f"/v1/clusters/{cluster_id}/databases", json={"name": 'x"; drop table t; --'}).status_code == 400
    assert admin.post(f"/v1/clusters/{cluster_id}/users",
                      json={"name": "pg_evil", "database": "appdb"}).status_code == 400
    assert admin.post(f"/v1/clusters/{cluster_id}/users",
                      json={"name": "nobody", "database": "nosuchdb"}).status_code == 404
    assert admin.post(f"/v1/clusters/{cluster_id}/users",
                      json={"name": "appuser", "database": "appdb"}).status_code == 409
    assert admin.post(f"/v1/clusters/{cluster_id}/extensions", json={"database": "appdb"}).status_code == 400
    assert admin.post("/v1/clusters/nope/databases", json={"name": "x"}).status_code == 404
    assert admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()["count"] == before


def test_extensions_listed_with_restart_needs(admin, cluster):
    cluster_id, _ = cluster
    available = {e["name"]: e for e in admin.get(f"/v1/clusters/{cluster_id}/extensions").json()}
    assert available["pg_trgm"]["requires_restart"] is False
    assert available["pg_cron"]["requires_restart"] is True and available["pg_cron"]["package"] == "postgresql-15-cron"


def start_time(port) -> object:
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        return conn.execute("select pg_postmaster_start_time()").fetchone()[0]


def test_contrib_extension_installs_without_restart(admin, cluster):
    cluster_id, port = cluster
    before = start_time(port)
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/extensions",
                         json={"database": "appdb", "extensions": [{"name": "pg_trgm"}, {"name": "hstore"}]}))
    assert start_time(port) == before
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        assert conn.execute("select similarity('postgres', 'postgis') > 0").fetchone() == (True,)
    extensions = {d["name"]: d for d in admin.get(f"/v1/clusters/{cluster_id}/databases").json()}["appdb"]["extensions"]
    assert {"pg_trgm", "hstore"} <= {e["name"] for e in extensions}


def test_preload_extension_is_usable_after_the_restart_it_made(admin, cluster):
    cluster_id, port = cluster
    before = start_time(port)
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/extensions",
                         json={"database": "appdb", "extensions": [{"name": "pgaudit"}]}))
    assert start_time(port) > before
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        assert "pgaudit" in conn.execute("show shared_preload_libraries").fetchone()[0]
        assert conn.execute("select extname from pg_extension where extname = 'pgaudit'").fetchone() == ("pgaudit",)


def test_unknown_extension_fails_clearly_and_changes_nothing(admin, cluster):
    cluster_id, port = cluster
    before = start_time(port)
    response = admin.post(f"/v1/clusters/{cluster_id}/extensions",
                          json={"database": "appdb", "extensions": [{"name": "nosuchext"}]})
    request = wait_request(admin, response.json()["request_id"])
    assert request["state"] == "ERROR" and "nosuchext" in request["message"]
    assert start_time(port) == before
    assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] == "RUNNING"
