"""Backups, archiving, point-in-time restore and verified backups through the API (issue 9).

A server of its own (port range 57300-57349, a pgBackRest repository in a temporary directory), real
pgBackRest, real PostgreSQL 15. One source cluster with rows committed in batches, each batch's
exact commit time read from PostgreSQL (track_commit_timestamp, which setting backups turns on);
restores are checked against those rows. Tests that change a cluster's backups for good (unset,
removal, corruption) get a cluster of their own.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, repository, wait_request

PORTS = "57300-57349"
SCHEDULER_PORTS = "57350-57369"
PASSWORD = "App-Secret-Pw-1"


def backup_server(tmp: Path, repo: Path, port_range: str, **env) -> ApiServer:
    return ApiServer(tmp / "api", port_range=port_range, extra_env={
        "PGDBAAS_BACKUP_REPO_PATH": str(repo), "PGDBAAS_SCHEDULER_INTERVAL": "1", **env})


@pytest.fixture(scope="module")
def bserver(tmp_path_factory):
    with repository() as repo:
        api = backup_server(tmp_path_factory.mktemp("backups"), repo, PORTS)
        api.start()
        yield api
        api.stop()


@pytest.fixture(scope="module")
def admin(bserver):
    with bserver.client() as client:
        yield client


def ok(admin, response) -> dict:
    assert response.status_code == 202, response.text
    body = wait_request(admin, response.json()["request_id"], timeout=300)
    assert body["state"] == "SUCCESS", body
    return body


def cluster_of(admin, cluster_id: str) -> dict:
    return admin.get(f"/v1/clusters/{cluster_id}").raise_for_status().json()


def port_of(admin, cluster_id: str) -> int:
    return cluster_of(admin, cluster_id)["instance_groups"][0]["instances"][0]["port"]


def superuser(port: int, dbname: str = "appdb"):
    return psycopg.connect(host="/var/run/postgresql", port=port, user="postgres", dbname=dbname, autocommit=True,
                           connect_timeout=5)


def batches(port: int) -> list[int]:
    with superuser(port) as conn:
        return [row[0] for row in conn.execute("select distinct batch from items order by 1")]


def commit_batch(conn, batch: int, rows: int = 3) -> datetime:
    """Commit one batch of rows; returns its commit time as PostgreSQL recorded it."""
    with conn.transaction():
        conn.execute("insert into items (batch, n) select %s, g from generate_series(1, %s) g", (batch, rows))
    return conn.execute("select pg_xact_commit_timestamp(xmin) from items where batch = %s limit 1",
                        (batch,)).fetchone()[0]


def new_cluster(admin, names: list, name: str) -> str:
    response = admin.post("/v1/clusters", json=cluster_body(name))
    cluster_id = response.json()["resource"]["id"]
    names.append((cluster_id, name))
    ok(admin, response)
    return cluster_id


def set_backups(admin, cluster_id: str, **settings) -> dict:
    body = {"archive_frequency_minute": "1", "retention_period_day": "7", "starting_time_hour": "2", **settings}
    return ok(admin, admin.post(f"/v1/clusters/{cluster_id}/backups", json=body))


def history(admin, cluster_id: str, **params) -> dict:
    return admin.get(f"/v1/clusters/{cluster_id}/backup-histories", params=params).raise_for_status().json()


def terminate(admin, names: list) -> None:
    for cluster_id, name in names:
        response = admin.delete(f"/v1/clusters/{cluster_id}")
        if response.status_code == 202:
            wait_request(admin, response.json()["request_id"], timeout=300)
        drop_instance(name)


@pytest.fixture
def scratch(admin):
    """Clusters a test makes, terminated afterwards."""
    names: list = []
    yield names
    terminate(admin, names)


@pytest.fixture(scope="module")
def source(admin):
    """The source cluster: backups set (backup 1, full), batches 1-2, backup 2 (diff), batches 3-5;
    `at[b]` is batch b's commit time."""
    names: list = []
    cluster_id = new_cluster(admin, names, "tbk-src")
    set_backups(admin, cluster_id)
    port = port_of(admin, cluster_id)
    at = {}
    with superuser(port) as conn:
        conn.execute("create table items (batch int not null, n int not null)")
        at[1], at[2] = commit_batch(conn, 1), commit_batch(conn, 2)
        ok(admin, admin.post(f"/v1/clusters/{cluster_id}/backup-histories", json={"type": "diff"}))
        for batch in (3, 4, 5):
            at[batch] = commit_batch(conn, batch)
    yield {"id": cluster_id, "port": port, "at": at}
    terminate(admin, names)


def restore_new(admin, scratch, source_id: str, name: str, **target) -> tuple[str, dict]:
    response = admin.post(f"/v1/clusters/{source_id}/restore", json={"name": name, **target})
    assert response.status_code == 202, response.text
    new_id = response.json()["resource"]["id"]
    assert new_id != source_id
    scratch.append((new_id, name))
    return new_id, wait_request(admin, response.json()["request_id"], timeout=300)


def test_history_lists_the_real_backups(admin, source):
    listed = history(admin, source["id"])
    assert listed["total_count"] == 2
    newest, oldest = listed["contents"]
    assert [oldest["backup_history_number"], newest["backup_history_number"]] == ["1", "2"]
    assert (oldest["backup_type"], newest["backup_type"]) == ("full", "diff")
    for entry in listed["contents"]:
        assert entry["backup_state"] == "COMPLETED"
        assert entry["backup_size_bytes"] > 1_000_000  # a real data directory, not a placeholder
        assert entry["backup_start_at"] <= entry["backup_end_at"]
        assert entry["software_version"].startswith("15")
    # The diff holds only what changed since the full.
    assert newest["backup_repository_size_bytes"] < oldest["backup_repository_size_bytes"]
    page = history(admin, source["id"], limit=1, page=1)
    assert page["total_count"] == 2 and [e["backup_history_number"] for e in page["contents"]] == ["1"]

    shown = cluster_of(admin, source["id"])
    assert shown["init_config_option"]["backup_option"] == {
        "archive_frequency_minute": "1", "retention_period_day": "7", "starting_time_hour": "2"}
    backup = shown["backup"]
    assert backup["backup_enabled"] and backup["archive_enabled"]
    assert backup["last_backup"]["backup_history_number"] == "2"
    assert backup["earliest_restorable_time"] == oldest["backup_end_at"]
    assert backup["latest_restorable_time"] >= newest["backup_end_at"]
    assert admin.get(f"/v1/clusters/{source['id']}/archive").json() == {"archive_enabled": True,
                                                                         "retention_period_day": 7}
    # Archiving is on with the frequency asked: archive_timeout is 1 minute.
    with superuser(source["port"]) as conn:
        assert conn.execute("show archive_mode").fetchone()[0] == "on"
        assert conn.execute("show archive_timeout").fetchone()[0] == "1min"


def test_restore_to_a_time_holds_exactly_the_rows_committed_until_then(admin, scratch, source):
    target = source["at"][4].isoformat()
    new_id, request = restore_new(admin, scratch, source["id"], "tbk-pitr", backup_recovery_time=target)
    assert request["state"] == "SUCCESS", request
    restored = cluster_of(admin, new_id)
    assert restored["service_state"] == "RUNNING"
    assert restored["origin_cluster_id"] == source["id"]
    port = port_of(admin, new_id)
    assert batches(port) == [1, 2, 3, 4]
    with superuser(port) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        conn.execute("insert into items values (99, 1)")  # read-write: an ordinary cluster
    # The source's user and password came with the data; the new cluster keeps its credential.
    with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password=PASSWORD, dbname="appdb",
                         connect_timeout=5) as conn:
        assert conn.execute("select count(*) from items where batch <= 4").fetchone()[0] == 12
    assert batches(source["port"]) == [1, 2, 3, 4, 5]  # the source is untouched


def test_restore_a_backup_by_number_holds_the_rows_of_that_backup(admin, scratch, source):
    new_id, request = restore_new(admin, scratch, source["id"], "tbk-num", backup_history_number="2")
    assert request["state"] == "SUCCESS", request
    assert batches(port_of(admin, new_id)) == [1, 2]


def itcare_restore(admin, target_id: str, source_id: str, stop: str, timestamp: str):
    return admin.patch(f"/itcare/databases/postgresql/{target_id}", json={
        "operation": "restore", "options": {"sourceId": source_id, "stop": stop, "timestamp": timestamp}})


def test_itcare_restore_into_an_instance_before_and_after_a_commit(admin, scratch, source):
    target_id = new_cluster(admin, scratch, "tbk-dst")
    port = port_of(admin, target_id)
    exact = source["at"][3].isoformat(timespec="microseconds")
    response = itcare_restore(admin, target_id, source["id"], "BEFORE", exact)
    assert response.status_code == 202, response.text
    assert response.json()["internalId"] == target_id
    assert wait_request(admin, response.json()["id"], timeout=300)["state"] == "SUCCESS"
    assert batches(port) == [1, 2]  # the batch committed exactly at the timestamp is excluded
    response = itcare_restore(admin, target_id, source["id"], "AFTER", exact)
    assert wait_request(admin, response.json()["id"], timeout=300)["state"] == "SUCCESS"
    assert batches(port) == [1, 2, 3]  # ... and included
    shown = admin.get(f"/itcare/databases/postgresql/{target_id}").json()
    assert shown["status"] == "ACTIVE" and shown["backupStatus"] is False  # no backups of its own yet

    # The seed's rules: each refused with the reason, nothing touched.
    def refused(stop, timestamp, source_id=source["id"], target=target_id) -> str:
        response = itcare_restore(admin, target, source_id, stop, timestamp)
        assert response.status_code == 400, response.text
        return response.json()["message"]

    assert "UTC offset" in refused("BEFORE", "2022-11-02 09:32:02")
    old = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat(timespec="milliseconds")
    assert "7 days" in refused("BEFORE", old)
    assert "no backup" in refused("AFTER", exact, source_id=target_id, target=source["id"])
    assert admin.patch(f"/itcare/databases/postgresql/{target_id}", json={
        "operation": "restore", "options": {"sourceId": source["id"], "stop": "LATER", "timestamp": exact}
    }).status_code == 400
    assert batches(port) == [1, 2, 3]
    assert batches(source["port"]) == [1, 2, 3, 4, 5]


def test_itcare_shows_backup_status_from_real_backups(admin, source):
    shown = admin.get(f"/itcare/databases/postgresql/{source['id']}").json()
    assert shown["backupStatus"] is True
    numbers = sorted(b["id"] for b in shown["backupPolicyDetails"]["backups"])
    assert numbers == [1, 2]
    assert all(b["backupSize"] > 0 for b in shown["backupPolicyDetails"]["backups"])
    policy, = shown["backupPolicyDetails"]["policies"]
    assert policy["startTime"] == "02:00" and policy["timezone"] == "UTC"


def test_archive_off_refuses_a_point_in_time_after_the_last_backup(admin, scratch, source):
    cluster_id = source["id"]
    ok(admin, admin.put(f"/v1/clusters/{cluster_id}/archive", json={"archive_enabled": False}))
    try:
        assert admin.get(f"/v1/clusters/{cluster_id}/archive").json()["archive_enabled"] is False
        response = admin.post(f"/v1/clusters/{cluster_id}/restore",
                              json={"name": "tbk-never", "backup_recovery_time": source["at"][5].isoformat()})
        assert response.status_code == 400, response.text
        assert "archiving is off" in response.json()["detail"]
        assert response.json()["field"] == "backup_recovery_time"
        names = [c["name"] for c in admin.get("/v1/clusters", params={"size": 100}).json()["contents"]]
        assert "tbk-never" not in names
        with superuser(source["port"]) as conn:
            assert conn.execute("show archive_timeout").fetchone()[0] == "0"
    finally:
        ok(admin, admin.put(f"/v1/clusters/{cluster_id}/archive", json={"archive_enabled": True}))
    assert admin.get(f"/v1/clusters/{cluster_id}/archive").json()["archive_enabled"] is True


def test_a_failed_restore_leaves_no_running_cluster(admin, scratch, source):
    cluster_id = source["id"]
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/stop"))
    try:
        # Stopped, the source archives no more WAL: a target after its last archived WAL is unreachable.
        target = datetime.now(timezone.utc).isoformat()
        new_id, request = restore_new(admin, scratch, cluster_id, "tbk-fail", backup_recovery_time=target)
        assert request["state"] == "ERROR"
        assert "recovery target" in request["message"], request["message"]
        assert cluster_of(admin, new_id)["service_state"] == "ERROR"
        running = admin.get("/v1/clusters", params={"service_state": "RUNNING", "size": 100}).json()["contents"]
        assert new_id not in [c["id"] for c in running]
    finally:
        ok(admin, admin.post(f"/v1/clusters/{cluster_id}/start"))


def test_verification_records_its_result_on_the_backup(admin, source):
    body = ok(admin, admin.post(f"/v1/clusters/{source['id']}/backup-histories/2/verify"))
    assert body["operation"] == "verify_backup"
    entry = next(e for e in history(admin, source["id"])["contents"] if e["backup_history_number"] == "2")
    assert entry["verify_state"] == "VERIFIED" and entry["verified_at"]
    assert entry["verify_detail"]["rows"] >= 6  # batches 1-2 of items at least
    assert not entry["verify_detail"].get("problems")


def corrupt_table_file(repo: Path, instance: str, label: str, relation: str) -> None:
    """Flip 16 bytes in the middle of a table's file in the repository (compressed or not)."""
    folder = repo / "backup" / instance / label / "pg_data" / Path(relation).parent
    stored, = [p for p in folder.iterdir() if p.name.split(".")[0] == Path(relation).name]
    data = bytearray(stored.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    stored.write_bytes(bytes(data))


def test_corrupted_backup_fails_verification_then_removal_and_unset(admin, scratch, bserver):
    """One cluster through the rest of its backups' life: verification catches a backup corrupted
    in the repository; removal keeps what a restore point needs; unsetting keeps the histories left."""
    cluster_id = new_cluster(admin, scratch, "tbk-remove")
    with superuser(port_of(admin, cluster_id)) as conn:
        conn.execute("create table items (batch int not null, n int not null)")
        conn.execute("insert into items select 1, g from generate_series(1, 50000) g")
        relation = conn.execute("select pg_relation_filepath('items')").fetchone()[0]
    set_backups(admin, cluster_id)
    first, = history(admin, cluster_id)["contents"]
    instance = cluster_of(admin, cluster_id)["instance_groups"][0]["instances"][0]["name"]
    corrupt_table_file(Path(bserver.env["PGDBAAS_BACKUP_REPO_PATH"]), instance, first["backup_label"], relation)
    response = admin.post(f"/v1/clusters/{cluster_id}/backup-histories/1/verify")
    assert response.status_code == 202
    assert wait_request(admin, response.json()["request_id"], timeout=300)["state"] == "ERROR"
    first, = history(admin, cluster_id)["contents"]
    assert first["verify_state"] == "FAILED" and first["verified_at"]
    assert first["verify_detail"]["problems"]
    assert cluster_of(admin, cluster_id)["service_state"] == "RUNNING"  # the cluster itself is untouched

    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/backup-histories", json={"type": "diff"}))
    ok(admin, admin.post(f"/v1/clusters/{cluster_id}/backup-histories", json={"type": "full"}))
    assert history(admin, cluster_id)["total_count"] == 3

    def put(numbers):
        return admin.put(f"/v1/clusters/{cluster_id}/backup-histories", json={"backup_history_number": numbers})

    base = put(["1"])
    assert base.status_code == 409 and "base of backup(s) 2" in base.json()["detail"]
    assert put(["1", "2", "3"]).status_code == 409
    missing = put(["9"])
    assert missing.status_code == 404 and missing.json()["field"] == "backup_history_number"
    assert history(admin, cluster_id)["total_count"] == 3  # nothing changed
    ok(admin, put(["1", "2"]))
    listed = history(admin, cluster_id)
    assert [e["backup_history_number"] for e in listed["contents"]] == ["3"]

    ok(admin, admin.delete(f"/v1/clusters/{cluster_id}/backups"))
    assert [e["backup_history_number"] for e in history(admin, cluster_id)["contents"]] == ["3"]
    shown = cluster_of(admin, cluster_id)
    assert shown["backup"]["backup_enabled"] is False and shown["backup"]["next_backup_at"] is None
    assert shown["backup"]["last_backup"]["backup_history_number"] == "3"  # still restorable
    assert shown["init_config_option"]["backup_option"] is None
    assert admin.get(f"/v1/clusters/{cluster_id}/archive").json()["archive_enabled"] is False
    with superuser(port_of(admin, cluster_id)) as conn:
        assert conn.execute("show archive_mode").fetchone()[0] == "off"
    refused = admin.post(f"/v1/clusters/{cluster_id}/backup-histories", json={"type": "full"})
    assert refused.status_code == 409 and "not set" in refused.json()["detail"]


def test_bad_backup_input_is_refused(admin, source):
    cluster_id = source["id"]
    for body, field in (({"archive_frequency_minute": "often"}, "archive_frequency_minute"),
                        ({"starting_time_hour": "24"}, "starting_time_hour"),
                        ({"retention_period_day": 0}, "retention_period_day")):
        response = admin.post(f"/v1/clusters/{cluster_id}/backups", json=body)
        assert response.status_code == 400 and response.json()["field"] == field, response.text
    assert admin.delete(f"/v1/clusters/{cluster_id}/archive", params={"type": "SOME"}).status_code == 400
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    early = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    for body in ({"name": "tbk-bad", "backup_recovery_time": future},
                 {"name": "tbk-bad", "backup_recovery_time": early},
                 {"name": "tbk-bad", "backup_recovery_time": "yesterday"},
                 {"name": "tbk-bad", "backup_history_number": "1", "backup_recovery_time": early},
                 {"name": "tbk-bad", "backup_history_number": "77"}):
        response = admin.post(f"/v1/clusters/{cluster_id}/restore", json=body)
        assert response.status_code == 400, (body, response.text)
    assert admin.get("/v1/clusters/nope/backup-histories").status_code == 404
    assert "tbk-bad" not in [c["name"] for c in admin.get("/v1/clusters", params={"size": 100}).json()["contents"]]


def test_another_user_sees_none_of_it(admin, bserver, source):
    admin.post("/v1/accounts", json={"name": "tbk-other", "password": "Other-Pass-123", "role": "user"})
    with bserver.client(auth=("tbk-other", "Other-Pass-123")) as other:
        assert other.get(f"/v1/clusters/{source['id']}/backup-histories").status_code == 404
        assert other.get(f"/v1/clusters/{source['id']}/archive").status_code == 404
        assert other.post(f"/v1/clusters/{source['id']}/restore", json={"name": "tbk-steal"}).status_code == 404
        assert other.post(f"/v1/clusters/{source['id']}/backup-histories/1/verify").status_code == 404


def test_a_scheduled_backup_and_verification_fire_as_ordinary_operations(tmp_path):
    """The schedule lives in the store: a restart with the scheduler's clock moved past the next
    occurrences (PGDBAAS_SCHEDULER_CLOCK_OFFSET) fires them, as actor "scheduler": the daily backup,
    then (once the cluster is free) the verification an hour after it."""
    with repository() as repo:
        scheduled_backup_fires(backup_server(tmp_path, repo, SCHEDULER_PORTS))


def scheduled_backup_fires(api: ApiServer) -> None:
    api.start()
    names: list = []
    try:
        with api.client() as client:
            cluster_id = new_cluster(client, names, "tbk-sched")
            hour = (datetime.now(timezone.utc) + timedelta(hours=3)).hour
            set_backups(client, cluster_id, starting_time_hour=str(hour), verify_period_day="7")
            planned = cluster_of(client, cluster_id)["backup"]
            due = datetime.fromisoformat(planned["next_backup_at"].replace("Z", "+00:00"))
            assert due.hour == hour and due > datetime.now(timezone.utc)
            verify_due = datetime.fromisoformat(planned["next_verify_at"].replace("Z", "+00:00"))
            assert verify_due - due == timedelta(hours=1)
        api.stop()
        offset = (due - datetime.now(timezone.utc)).total_seconds() + 3600 + 5
        api.env["PGDBAAS_SCHEDULER_CLOCK_OFFSET"] = str(offset)
        api.start()
        with api.client() as client:
            deadline = time.monotonic() + 240
            fired: dict = {}
            while len(fired) < 2 and time.monotonic() < deadline:
                listed = client.get("/v1/requests", params={"cluster_id": cluster_id, "size": 50}).json()["contents"]
                fired = {r["operation"]: r for r in listed if r["operation"] in ("backup", "verify_backup")}
                time.sleep(0.5)  # polling the API as a user would, bounded by the deadline
            assert set(fired) == {"backup", "verify_backup"}, fired
            for request in fired.values():
                request = wait_request(client, request["request_id"], timeout=300)
                assert request["state"] == "SUCCESS" and request["created_by"] == "scheduler", request
            listed = history(client, cluster_id)
            assert listed["total_count"] == 2
            newest = listed["contents"][0]
            assert newest["backup_type"] == "diff"  # the newest full is less than a week old
            assert newest["verify_state"] == "VERIFIED"  # the verification took the newest backup
            shown = cluster_of(client, cluster_id)["backup"]
            assert datetime.fromisoformat(shown["next_backup_at"].replace("Z", "+00:00")) - due == timedelta(days=1)
            assert shown["next_verify_at"] > shown["next_backup_at"]  # a week on
            terminate(client, names)
            names.clear()
    finally:
        if names:
            with api.client() as client:
                terminate(client, names)
        api.stop()


def test_queue_mode_workers_fire_the_schedule(tmp_path):
    """Multi-worker mode: the same schedule is fired by the workers (procrastinate periodic task
    `scheduler`, every minute), with the clock moved the same way, on the PostgreSQL store."""
    from cryptography.fernet import Fernet

    from tests.api.harness import WorkerProcess, postgres_store

    with repository() as repo, postgres_store("tbk-store", 57370, "sched-store-pass") as dsn:
        env = {"PGDBAAS_EXECUTOR": "queue", "PGDBAAS_DATABASE_URL": dsn, "PGDBAAS_BACKUP_REPO_PATH": str(repo),
               "PGDBAAS_SECRET_KEY": Fernet.generate_key().decode(), "PGDBAAS_PORT_RANGE": "57371-57379"}
        api = ApiServer(tmp_path / "api", port_range=env["PGDBAAS_PORT_RANGE"], extra_env=env)
        worker = WorkerProcess(tmp_path / "worker", extra_env=env, workers=1)
        names: list = []
        try:
            api.start(120)
            worker.start(120)
            with api.client() as client:
                cluster_id = new_cluster(client, names, "tbk-qsched")
                hour = (datetime.now(timezone.utc) + timedelta(hours=3)).hour
                set_backups(client, cluster_id, starting_time_hour=str(hour))
                due = datetime.fromisoformat(cluster_of(client, cluster_id)["backup"]["next_backup_at"]
                                             .replace("Z", "+00:00"))
                worker.stop()
                offset = (due - datetime.now(timezone.utc)).total_seconds() + 5
                worker.env["PGDBAAS_SCHEDULER_CLOCK_OFFSET"] = str(offset)
                worker.start(120)
                deadline = time.monotonic() + 180  # the periodic task runs once a minute
                fired = []
                while not fired and time.monotonic() < deadline:
                    listed = client.get("/v1/requests", params={"cluster_id": cluster_id}).json()["contents"]
                    fired = [r for r in listed if r["operation"] == "backup"]
                    time.sleep(0.5)  # polling the API as a user would, bounded by the deadline
                assert fired, "the workers opened no scheduled backup"
                request = wait_request(client, fired[0]["request_id"], timeout=300)
                assert request["state"] == "SUCCESS" and request["created_by"] == "scheduler", request
                assert history(client, cluster_id)["total_count"] == 2
                terminate(client, names)
                names.clear()
        finally:
            if names:
                with api.client() as client:
                    terminate(client, names)
            worker.stop()
            api.stop()
