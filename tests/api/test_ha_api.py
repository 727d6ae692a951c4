"""High availability through the API (issue 11, item 4): native create with `ha_enabled`,
switchover, sync-state, member roles and states in GET; ITCare create STANDALONE then PATCH
`enable_ha`, GET .../nodes; service operations and terminate of an HA cluster; the refusals.

One API process of its own: instance and Patroni REST ports 58150-58179, etcd member `tapha-etcd`
on 58190-58191, clusters `tapha*`. Real Patroni, etcd and PostgreSQL 15 on loopback; what the test
started is ended by PID (tests/patroni_processes.py)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, finished, repository
from tests.patroni_processes import pid_of, wipe_etcd, wipe_members

PORTS = "58150-58179"
ETCD = {"PGDBAAS_ETCD_NAME": "tapha-etcd", "PGDBAAS_ETCD_CLIENT_PORT": "58190", "PGDBAAS_ETCD_PEER_PORT": "58191"}
PASSWORD = "App-Secret-Pw-1"
ITCARE_PASSWORD = "Adm-Secret-Pw-1!"
ROWS = 500


def our_members() -> list[str]:
    return sorted(p.name for p in Path("/etc/postgresql/15").glob("tapha*")) + \
        sorted(p.name[3:-4] for p in Path("/etc/patroni").glob("15-tapha*.yml"))


def wipe() -> None:
    wipe_members(sorted(set(our_members())))
    wipe_etcd(ETCD["PGDBAAS_ETCD_NAME"])
    for stanza in Path("/etc/pgbackrest/conf.d").glob("tapha*.conf"):
        stanza.unlink()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    wipe()
    with repository() as repo:
        server = ApiServer(tmp_path_factory.mktemp("ha"), port_range=PORTS,
                           extra_env={**ETCD, "PGDBAAS_BACKUP_REPO_PATH": str(repo)})
        server.start()
        try:
            yield server
        finally:
            server.stop()
            wipe()


@pytest.fixture
def admin(api):
    with api.client() as client:
        yield client


def members(admin, cluster_id: str) -> dict:
    body = admin.get(f"/v1/clusters/{cluster_id}").raise_for_status().json()
    return {m["name"]: m for m in body["instance_groups"][0]["instances"]}


def the(role: str, view: dict) -> dict:
    [member] = [m for m in view.values() if m["role"] == role]
    return member


def connect(port: int, user: str = "appuser", password: str = PASSWORD, dbname: str = "appdb"):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=5)


def replayed(standby_port: int, primary_port: int, **login) -> bool:
    """Whether the standby replayed everything the primary wrote so far (polled with a deadline)."""
    with connect(primary_port, **login) as primary:
        target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connect(standby_port, **login) as standby:
            if standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return True
        time.sleep(0.2)
    return False


def test_native_ha_cluster_switches_over_and_serves_every_operation(admin):
    response = admin.post("/v1/clusters", json={**cluster_body("tapha-native"), "ha_enabled": True})
    cluster_id = response.json()["resource"]["id"]
    finished(admin, response)
    body = admin.get(f"/v1/clusters/{cluster_id}").json()
    assert body["ha_enabled"] is True and body["service_state"] == "RUNNING" and body["instance_count"] == 2
    view = members(admin, cluster_id)
    primary, standby = the("primary", view), the("standby", view)
    assert {primary["service_state"], standby["service_state"]} == {"RUNNING"}
    assert standby["name"] == primary["name"] + "-m1" and standby["in_recovery"] in (None, True)
    ports = [primary["port"], standby["port"], primary["rest_port"], standby["rest_port"]]
    assert len(set(ports)) == 4 and all(58150 <= p <= 58179 for p in ports), ports

    with connect(primary["port"]) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO items SELECT generate_series(1, {ROWS})")
    assert replayed(standby["port"], primary["port"])
    with connect(standby["port"]) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == ROWS
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True

    # Switchover: the standby leads, the old leader follows; GET says so.
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/switchover", json={}))
    view = members(admin, cluster_id)
    assert the("primary", view)["name"] == standby["name"] and the("standby", view)["name"] == primary["name"]
    with connect(standby["port"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        conn.execute(f"INSERT INTO items VALUES ({ROWS + 1})")
    # sync-state reads Patroni again: the same leader, both members running, no lag left.
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/sync-state"))
    view = members(admin, cluster_id)
    assert the("primary", view)["name"] == standby["name"]
    assert {m["service_state"] for m in view.values()} == {"RUNNING"}
    assert replayed(primary["port"], standby["port"])

    # A member-level operation goes to the leader of the last observation (now the former standby).
    response = admin.post(f"/v1/clusters/{cluster_id}/databases",
                          json={"name": "second", "owner": "appuser"})
    finished(admin, response)
    with connect(standby["port"], dbname="second") as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "second"

    # A named candidate: the first member leads again.
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/switchover", json={"candidate": primary["name"]}))
    assert the("primary", members(admin, cluster_id))["name"] == primary["name"]

    # kill -9 of the leader's Patroni and postgres: Patroni fails over, sync-state shows the new
    # leader and the dead member; start brings it back as a standby.
    for path in (f"/run/patroni/15-{primary['name']}.pid", f"/var/lib/postgresql/15/{primary['name']}/postmaster.pid"):
        os.kill(pid_of(path), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        finished(admin, admin.post(f"/v1/clusters/{cluster_id}/sync-state"))
        view = members(admin, cluster_id)
        if view[standby["name"]]["role"] == "primary" or time.monotonic() > deadline:
            break
    assert view[standby["name"]]["role"] == "primary" and view[standby["name"]]["service_state"] == "RUNNING", view
    assert view[primary["name"]]["service_state"] in ("STOPPED", "ERROR"), view
    assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] == "RUNNING"
    with connect(standby["port"]) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == ROWS + 1
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/start"))
    view = members(admin, cluster_id)
    assert view[primary["name"]]["role"] == "standby" and {m["service_state"] for m in view.values()} == {"RUNNING"}
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/switchover", json={"candidate": primary["name"]}))

    # Stop and start through Patroni: every member, the leader kept.
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/stop"))
    body = admin.get(f"/v1/clusters/{cluster_id}").json()
    assert body["service_state"] == "STOPPED"
    assert {m["service_state"] for m in members(admin, cluster_id).values()} == {"STOPPED"}
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/start"))
    view = members(admin, cluster_id)
    assert {m["service_state"] for m in view.values()} == {"RUNNING"}
    assert the("primary", view)["name"] == primary["name"]
    with connect(primary["port"]) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == ROWS + 1

    # Backups: one stanza for the cluster, taken from whichever member leads; a point-in-time restore
    # into a new cluster holds exactly the rows committed by the target, across a switchover.
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/backups", json={
        "archive_frequency_minute": "1", "retention_period_day": "7", "starting_time_hour": "2"}))
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/switchover", json={"candidate": standby["name"]}))
    with connect(standby["port"]) as conn:
        conn.execute(f"INSERT INTO items VALUES ({ROWS + 2})")
        target = conn.execute(f"SELECT pg_xact_commit_timestamp(xmin) FROM items WHERE id = {ROWS + 2}").fetchone()[0]
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/backup-histories", json={"type": "incr"}))
    with connect(standby["port"]) as conn:
        conn.execute(f"INSERT INTO items VALUES ({ROWS + 3})")  # after the target: not restored
    history = admin.get(f"/v1/clusters/{cluster_id}/backup-histories").json()
    assert [e["backup_type"] for e in history["contents"]] == ["incr", "full"], history
    assert {e["backup_state"] for e in history["contents"]} == {"COMPLETED"}
    response = admin.post(f"/v1/clusters/{cluster_id}/restore",
                          json={"name": "tapha-pitr", "backup_recovery_time": target.isoformat()})
    assert response.status_code == 202, response.text
    restored_id = response.json()["resource"]["id"]
    finished(admin, response)
    [restored] = members(admin, restored_id).values()
    with connect(restored["port"]) as conn:
        assert conn.execute("SELECT max(id), count(*) FROM items").fetchone() == (ROWS + 2, ROWS + 2)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    finished(admin, admin.delete(f"/v1/clusters/{restored_id}"))
    finished(admin, admin.post(f"/v1/clusters/{cluster_id}/switchover", json={"candidate": primary["name"]}))

    response = admin.post(f"/v1/clusters/{cluster_id}/switchover", json={"candidate": "nobody"})
    assert response.status_code == 400 and response.json()["field"] == "candidate", response.text

    # Terminate: every member and its files go.
    finished(admin, admin.delete(f"/v1/clusters/{cluster_id}"))
    assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] == "TERMINATED"
    for name in (primary["name"], standby["name"]):
        assert not Path(f"/etc/patroni/15-{name}.yml").exists()
        assert not Path(f"/var/lib/postgresql/15/{name}").exists()


def test_itcare_enable_ha_keeps_the_data_and_shows_the_nodes(admin):
    response = admin.post("/itcare/databases/postgresql", json={
        "name": "taphaitc", "admPassword": ITCARE_PASSWORD, "nodeSizing": "1cpu1gb", "diskSize": 40,
        "postgreVersion": "15", "topology": "STANDALONE", "serviceId": 7})
    instance_id = response.json()["internalId"]
    finished(admin, response)
    [node] = admin.get(f"/itcare/databases/postgresql/{instance_id}/nodes").json()
    with connect(node["port"], user="admin", password=ITCARE_PASSWORD, dbname="postgres") as conn:
        conn.execute("CREATE DATABASE keptdb")
    login = {"user": "admin", "password": ITCARE_PASSWORD, "dbname": "keptdb"}
    with connect(node["port"], **login) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO kept SELECT generate_series(1, {ROWS})")

    for lag in (0, 501):
        response = admin.patch(f"/itcare/databases/postgresql/{instance_id}",
                               json={"operation": "enable_ha", "options": {"replicationLag": lag}})
        assert response.status_code == 400 and response.json()["field"] == "options.replicationLag", response.text
    response = admin.post(f"/v1/clusters/{instance_id}/switchover", json={})
    assert response.status_code == 409, response.text

    finished(admin, admin.patch(f"/itcare/databases/postgresql/{instance_id}", json={
        "operation": "enable_ha", "options": {"replicationLag": 50, "changeReference": "CHG-1"}}))
    body = admin.get(f"/itcare/databases/postgresql/{instance_id}").json()
    assert body["topology"] == "HA" and body["allowedReplicationLag"] == 50 and body["nodeCount"] == 2
    assert body["status"] == "ACTIVE"
    nodes = {n["role"]: n for n in admin.get(f"/itcare/databases/postgresql/{instance_id}/nodes").json()}
    assert set(nodes) == {"primary", "standby"} and nodes["primary"]["name"] == node["name"]
    assert {n["status"] for n in nodes.values()} == {"ACTIVE"}
    assert replayed(nodes["standby"]["port"], nodes["primary"]["port"], **login)
    with connect(nodes["standby"]["port"], **login) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == ROWS

    response = admin.patch(f"/itcare/databases/postgresql/{instance_id}",
                           json={"operation": "enable_ha", "options": {"replicationLag": 50}})
    assert response.status_code == 409 and "HA already" in response.json()["message"], response.text

    # ITCare restore into the HA instance: another instance's data at a time replaces it on every
    # node (the standby cloned again from the restored leader).
    response = admin.post("/v1/clusters", json=cluster_body("taphasrc"))
    source_id = response.json()["resource"]["id"]
    finished(admin, response)
    finished(admin, admin.post(f"/v1/clusters/{source_id}/backups", json={
        "archive_frequency_minute": "1", "retention_period_day": "7", "starting_time_hour": "2"}))
    [source] = members(admin, source_id).values()
    with connect(source["port"]) as conn:
        conn.execute("CREATE TABLE src (id int PRIMARY KEY)")
        conn.execute("INSERT INTO src SELECT generate_series(1, 10)")
        stamp = conn.execute("SELECT pg_xact_commit_timestamp(xmin) FROM src LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO src VALUES (11)")  # after the timestamp: not restored
    finished(admin, admin.patch(f"/itcare/databases/postgresql/{instance_id}", json={
        "operation": "restore", "options": {"sourceId": source_id, "stop": "AFTER",
                                            "timestamp": stamp.isoformat(timespec="microseconds")}}))
    nodes = {n["role"]: n for n in admin.get(f"/itcare/databases/postgresql/{instance_id}/nodes").json()}
    assert set(nodes) == {"primary", "standby"} and {n["status"] for n in nodes.values()} == {"ACTIVE"}, nodes
    assert nodes["primary"]["name"] == node["name"]
    assert replayed(nodes["standby"]["port"], nodes["primary"]["port"])
    for role in ("primary", "standby"):
        with connect(nodes[role]["port"]) as conn:
            assert conn.execute("SELECT count(*), max(id) FROM src").fetchone() == (10, 10), role
    finished(admin, admin.delete(f"/v1/clusters/{source_id}"))
    finished(admin, admin.delete(f"/itcare/databases/postgresql/{instance_id}"))
    assert admin.get(f"/itcare/databases/postgresql/{instance_id}").json()["status"] == "DELETED"
