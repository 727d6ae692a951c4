"""Read replicas through the API (issue 11, item 4): POST .../replicas and .../replicas/other-region
(each replica a cluster of its own), GET .../replicas, sync-replica-state, promote, reset-replica,
terminate (the origin's slot goes), and the refusals.

One API process of its own (instance ports 58200-58229, clusters `taprr-*`), PostgreSQL 15."""
from __future__ import annotations

import time

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, finished

PORTS = "58200-58229"
PASSWORD = "App-Secret-Pw-1"
ORIGIN, R1, R2 = "taprr-origin", "taprr-r1", "taprr-r2"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = ApiServer(tmp_path_factory.mktemp("replicas"), port_range=PORTS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for name in (R1, R2, ORIGIN):
            drop_instance(name)


@pytest.fixture
def admin(api):
    with api.client() as client:
        yield client


def port_of(admin, cluster_id: str) -> int:
    return admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]["port"]


def connect(port: int):
    return psycopg.connect(host="127.0.0.1", port=port, user="appuser", password=PASSWORD, dbname="appdb",
                           autocommit=True, connect_timeout=5)


def caught_up(replica_port: int, origin_port: int) -> bool:
    with connect(origin_port) as origin:
        target = origin.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connect(replica_port) as replica:
            if replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return True
        time.sleep(0.2)
    return False


def count(port: int) -> int:
    with connect(port) as conn:
        return conn.execute("SELECT count(*) FROM items").fetchone()[0]


def slots(port: int) -> list[str]:
    with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password=PASSWORD, dbname="appdb") as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def test_replicas_follow_promote_reset_and_go(admin):
    response = admin.post("/v1/clusters", json=cluster_body(ORIGIN))
    origin_id = response.json()["resource"]["id"]
    finished(admin, response)
    origin_port = port_of(admin, origin_id)
    with connect(origin_port) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 100)")

    # Refusals before anything is made.
    for body, field in (({"replica_count": 0}, "replica_count"), ({"replicas": [{"name": "Bad Name"}]},
                                                                    "replicas.0.name")):
        response = admin.post(f"/v1/clusters/{origin_id}/replicas", json=body)
        assert response.status_code == 400 and response.json()["field"] == field, response.text
    response = admin.post(f"/v1/clusters/{origin_id}/replicas/other-region",
                          json={"region": "nowhere", "replicas": [{"name": R2}]})
    assert response.status_code == 400 and response.json()["field"] == "region", response.text
    assert admin.get(f"/v1/clusters/{origin_id}/replicas").json() == {"contents": [], "count": 0}
    response = admin.post(f"/v1/clusters/{origin_id}/promote")
    assert response.status_code == 409, response.text

    finished(admin, admin.post(f"/v1/clusters/{origin_id}/replicas",
                               json={"replica_count": 1, "replicas": [{"name": R1}]}))
    finished(admin, admin.post(f"/v1/clusters/{origin_id}/replicas/other-region",
                           json={"region": "pgdbaas_hosts", "replicas": [{"name": R2}]}))
    listed = {r["name"]: r for r in admin.get(f"/v1/clusters/{origin_id}/replicas").json()["contents"]}
    assert set(listed) == {R1, R2} and {r["replica_state"] for r in listed.values()} <= {"streaming", "catchup"}
    assert listed[R2]["region"] == "pgdbaas_hosts" and listed[R1]["region"] == ""
    r1, r2 = listed[R1]["id"], listed[R2]["id"]
    body = admin.get(f"/v1/clusters/{r1}").json()
    assert body["role_type"] == "REPLICA" and body["origin_cluster_id"] == origin_id
    assert body["instance_groups"][0]["instances"][0]["role"] == "replica"
    r1_port, r2_port = port_of(admin, r1), port_of(admin, r2)
    assert len(slots(origin_port)) == 2

    # They follow the origin's writes and refuse their own.
    with connect(origin_port) as conn:
        conn.execute("INSERT INTO items SELECT generate_series(101, 200)")
    for port in (r1_port, r2_port):
        assert caught_up(port, origin_port) and count(port) == 200
    with connect(r1_port) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO items VALUES (0)")
    response = admin.post(f"/v1/clusters/{r1}/replicas", json={"replicas": [{"name": "taprr-cascade"}]})
    assert response.status_code == 409, response.text
    response = admin.delete(f"/v1/clusters/{origin_id}")
    assert response.status_code == 409 and "read replicas" in response.json()["detail"], response.text

    finished(admin, admin.post(f"/v1/clusters/{origin_id}/sync-replica-state"))
    listed = {r["name"]: r for r in admin.get(f"/v1/clusters/{origin_id}/replicas").json()["contents"]}
    assert listed[R1]["replica_state"] == "streaming" and listed[R1]["synced_at"], listed
    assert listed[R1]["lag_bytes"] == 0, listed

    # Promote: r1 takes writes, no longer follows, and is no replica of the origin any more.
    finished(admin, admin.post(f"/v1/clusters/{r1}/promote"))
    with connect(r1_port) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        conn.execute("INSERT INTO items VALUES (-1)")
        assert conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()[0] == 0
    with connect(origin_port) as conn:
        conn.execute("INSERT INTO items VALUES (201)")
    with connect(r1_port) as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE id = 201").fetchone()[0] == 0
    assert [r["name"] for r in admin.get(f"/v1/clusters/{origin_id}/replicas").json()["contents"]] == [R2]
    assert admin.get(f"/v1/clusters/{r1}").json()["role_type"] == "ORIGIN"
    assert len(slots(origin_port)) == 1

    # Reset: the diverged write is gone, it follows again.
    finished(admin, admin.post(f"/v1/clusters/{r1}/reset-replica"))
    assert caught_up(r1_port, origin_port)
    with connect(r1_port) as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE id = -1").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 201
    assert {r["name"] for r in admin.get(f"/v1/clusters/{origin_id}/replicas").json()["contents"]} == {R1, R2}
    assert len(slots(origin_port)) == 2

    # Terminate the replicas (their slots go), then the origin.
    for replica_id in (r1, r2):
        finished(admin, admin.delete(f"/v1/clusters/{replica_id}"))
    assert slots(origin_port) == []
    finished(admin, admin.delete(f"/v1/clusters/{origin_id}"))
