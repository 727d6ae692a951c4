"""Operations engine: progress known from the first run of a playbook, a two-step operation
(DBaaS create) that a synchronous caller waits on for a bounded time, and a failed step that a
repeat of the same request resumes."""
from __future__ import annotations

import sqlite3

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request, wait_state

PORTS = "55730-55739"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """One worker, and synchronous calls that wait 3 s at most: a second operation queues behind
    the first, and its synchronous caller gets 504 with the request to poll."""
    api = ApiServer(tmp_path_factory.mktemp("engine"), port_range=PORTS,
                    extra_env={"PGDBAAS_WORKERS": "1", "PGDBAAS_SYNC_TIMEOUT": "3"})
    api.start()
    yield api
    api.stop()
    for name in ("tapi-engine-blocker", "engine_db"):
        drop_instance(name)


def test_progress_total_is_known_on_the_first_run_of_a_playbook(slow_server):
    with slow_server.client() as admin:
        response = admin.post("/v1/clusters", json=cluster_body("tapi-engine-blocker"))
        request = wait_state(admin, response.json()["request_id"], ("IN_PROGRESS",))
        # This process has never run provision.yml: the total is there all the same, while it runs.
        assert request["progress"]["tasks_total"] is not None
        assert request["progress"]["tasks_total"] > 10
        assert request["progress"]["steps"] == 1 and request["progress"]["step"] == 1
        done = wait_request(admin, request["request_id"])
        assert done["state"] == "SUCCESS", done
        admin.delete(f"/v1/clusters/{response.json()['resource']['id']}")


def test_a_canceled_dbaas_create_is_resumed_by_repeating_it(slow_server):
    body = {"name": "engine db", "plan": "/api/plan/1/", "environment": "/api/environment/1/"}
    with slow_server.client() as admin:
        # Hold the only worker, so the DBaaS create queues behind it.
        blocker = admin.post("/v1/clusters", json=cluster_body("tapi-engine-hold")).json()
        wait_state(admin, blocker["request_id"], ("IN_PROGRESS",))
        first = admin.post("/api/database/", json=body)
        assert first.status_code == 504, first.text
        request_id = first.json()["request_id"]
        assert request_id in first.json()["detail"]
        request = admin.get(f"/v1/requests/{request_id}").json()
        assert request["operation"] == "dbaas_create" and request["progress"]["steps"] == 2
        assert admin.post(f"/v1/requests/{request_id}/cancel").status_code == 202
        assert wait_request(admin, request_id)["state"] == "CANCELED"
        assert not [d for d in admin.get("/api/database/").json()["database"] if d["name"] == "engine_db"]

        # The same request again: it resumes on the same cluster instead of answering "exists".
        again = admin.post("/api/database/", json=body)
        assert again.status_code in (201, 504), again.text
        if again.status_code == 504:
            assert wait_request(admin, again.json()["request_id"])["state"] == "SUCCESS"
        clusters = [c for c in admin.get("/v1/clusters", params={"name": "engine_db"}).json()["contents"]
                    if c["name"] == "engine_db"]
        assert len(clusters) == 1 and clusters[0]["service_state"] == "RUNNING"
        [database] = [d for d in admin.get("/api/database/").json()["database"] if d["name"] == "engine_db"]
        credential = admin.get(database["credentials"][0]).json()
        port = int(database["endpoint"].rsplit(":", 1)[1].split("/")[0])
        with psycopg.connect(host="127.0.0.1", port=port, user=credential["user"], password=credential["password"],
                             dbname="engine_db") as conn:
            assert conn.execute("select current_database()").fetchone() == ("engine_db",)
        wait_request(admin, blocker["request_id"])
        admin.delete(f"/v1/clusters/{blocker['resource']['id']}")
        drop_instance("tapi-engine-hold")
    # Secrets are kept (encrypted) for the worker only while the operation may still run.
    with sqlite3.connect(slow_server.data_dir / "pgdbaas.sqlite3") as store:
        kept = store.execute("select id, state from operations where secrets_encrypted is not null and state in "
                             "('SUCCESS', 'ERROR', 'CANCELED')").fetchall()
    assert kept == []
