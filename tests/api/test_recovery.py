"""Crash recovery and cancel: an interrupted or canceled request ends, and the cluster works again."""
from __future__ import annotations

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request, wait_state


def test_crash_mid_job_ends_request_as_interrupted_and_frees_the_cluster(tmp_path):
    api = ApiServer(tmp_path / "crash", port_range="55700-55709")
    api.start()
    try:
        with api.client() as admin:
            response = admin.post("/v1/clusters", json=cluster_body("tapi-crash"))
            request_id, cluster_id = response.json()["request_id"], response.json()["resource"]["id"]
            wait_state(admin, request_id, ("IN_PROGRESS",))
        api.kill()
        api.start()
        with api.client() as admin:
            request = admin.get(f"/v1/requests/{request_id}").json()
            assert request["state"] == "ERROR" and request["message"] == "interrupted"
            # The cluster is observed again rather than guessed: wait for that request.
            observe = [r for r in admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()["contents"]
                       if r["operation"] == "observe"]
            assert len(observe) == 1
            wait_request(admin, observe[0]["request_id"])
            assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] in ("RUNNING", "STOPPED", "ERROR")
            # And it accepts new operations.
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert response.status_code == 202, response.text
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    finally:
        api.stop()
        drop_instance("tapi-crash")


def test_cancel_a_running_request(admin, created):
    response = admin.post("/v1/clusters", json=cluster_body("tapi-cancel"))
    request_id, cluster_id = response.json()["request_id"], response.json()["resource"]["id"]
    created.append((cluster_id, "tapi-cancel"))
    wait_state(admin, request_id, ("IN_PROGRESS",))
    response = admin.post(f"/v1/requests/{request_id}/cancel")
    assert response.status_code == 202
    request = wait_request(admin, request_id)
    assert request["state"] == "CANCELED"
    assert admin.post(f"/v1/requests/{request_id}/cancel").status_code == 409
    cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
    assert cluster["service_state"] == "ERROR" and cluster["active_request_id"] is None
    # A canceled cluster is not stuck: it can be terminated.
    response = admin.delete(f"/v1/clusters/{cluster_id}")
    assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"


@pytest.fixture
def store_dsn(tmp_path):
    """A PostgreSQL instance holding the API's own store (the production setting)."""
    import subprocess

    name, port = "tapi-store", 55719
    drop_instance(name)
    subprocess.run(["pg_createcluster", "15", name, "--port", str(port), "--start", "--",
                    "--auth-local=trust", "--auth-host=trust"], check=True, capture_output=True)
    try:
        with psycopg.connect(host="/var/run/postgresql", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("create role pgdbaas login password 'store-pass'")
            conn.execute("create database pgdbaas owner pgdbaas")
        yield f"postgresql+psycopg://pgdbaas:store-pass@127.0.0.1:{port}/pgdbaas"
    finally:
        drop_instance(name)


def test_postgresql_store(tmp_path, store_dsn):
    api = ApiServer(tmp_path / "pgstore", port_range="55710-55718", extra_env={"PGDBAAS_DATABASE_URL": store_dsn})
    api.start()
    try:
        with api.client() as admin:
            response = admin.post("/v1/clusters", json=cluster_body("tapi-pgstore"))
            cluster_id = response.json()["resource"]["id"]
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
            port = admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]["port"]
            psycopg.connect(host="127.0.0.1", port=port, user="appuser", password="App-Secret-Pw-1",
                            dbname="appdb").close()
            first = admin.post(f"/v1/clusters/{cluster_id}/stop")
            assert admin.post(f"/v1/clusters/{cluster_id}/stop").status_code == 409
            assert wait_request(admin, first.json()["request_id"])["state"] == "SUCCESS"
            assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] == "STOPPED"
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
        with psycopg.connect(store_dsn.replace("+psycopg", "")) as conn:
            assert conn.execute("select service_state from clusters where id = %s", (cluster_id,)).fetchone() == (
                "TERMINATED",)
    finally:
        api.stop()
        drop_instance("tapi-pgstore")
