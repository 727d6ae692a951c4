"""No password the API was given or made is ever written anywhere: not in the data directory (store,
job directories, artifacts, the API log), not in a PostgreSQL server log, not in ansible's temp
files, not in an answer, in the events API or in a request record, even after a kill -9.

One self-contained test on its own API server: every scenario that carries a password, each with
its own distinct, known password, then one search of everything for all of them.
"""
from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request
from tests.api.test_recovery import end_tracked, files_containing, job_processes, running_job, track

PORTS = "56440-56469"
AGENT = "tleakagent"
ADMIN_PASSWORD = "Leak-Admin-Pw-0a"
INIT = "Leak-Init-Pw-1b"  # /v1 create: the initial user's password
ITCARE = "Leak-Itc-Pw-2c!"  # ITCare create: admPassword
USER = "Leak-User-Pw-3d"  # POST /v1/clusters/{id}/users
RESET = "Leak-Reset-Pw-4e"  # POST .../users/{name}/reset-password
AGENT_ADMIN = "Leak-Agent-Pw-5f"  # agent configure create_admin
AGENT_AGAIN = "Leak-Again-Pw-6g"  # the same create_admin again: the job fails (409), carrying it
KILLED = "Leak-Killed-Pw-7h"  # a create_user job killed (kill -9 of the API) mid-run
WEAK = "Wq7#zK"  # too short for /v1: refused before any job
WEAK_ITCARE = "weakpass1"  # breaks ITCare's admPassword rule: refused before any job


def superuser(port: int):
    """The instance's superuser over the Unix socket (peer: root maps to postgres)."""
    return psycopg.connect(host="/var/run/postgresql", port=port, user="postgres", dbname="postgres", autocommit=True)


def log_every_statement(port: int) -> None:
    """So the search would see a clear-text password in any statement sent to the server."""
    with superuser(port) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")


def server_files(port: int) -> list[Path]:
    """Where an instance writes: its data directory (with any logging-collector directory) and
    the log file of its cluster (pg_ctlcluster's, /var/log/postgresql)."""
    with superuser(port) as conn:
        data_directory, log_directory = (conn.execute(f"SELECT current_setting('{name}')").fetchone()[0]
                                         for name in ("data_directory", "log_directory"))
    return [Path(data_directory), Path(data_directory) / log_directory]


def agent_create_admin_twice(api: ApiServer) -> str:
    with api.client() as admin:
        response = admin.post("/service/postgresql/configure",
                              json={"create_admin": {"user": "tleak_admin", "password": AGENT_ADMIN}})
        assert response.status_code == 204, response.text
        again = admin.post("/service/postgresql/configure",
                           json={"create_admin": {"user": "tleak_admin", "password": AGENT_AGAIN}})
        assert again.status_code == 409, again.text
        return again.text


def ok(client, response, status=202) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    if "request_id" in body:
        assert wait_request(client, body["request_id"])["state"] == "SUCCESS", body
    return body


def test_no_password_anywhere_across_every_path_and_a_kill_9(tmp_path):
    api = ApiServer(tmp_path / "leak", port_range=PORTS, admin_password=ADMIN_PASSWORD,
                    extra_env={"PGDBAAS_AGENT_INSTANCE": AGENT})
    names: list[str] = []
    tracked: dict[int, int | None] = {}
    generated: list[str] = []  # passwords the API made and showed once
    answers: list[str] = []  # every answer that must not echo a password
    api.start()
    try:
        with api.client() as admin:
            # Three provisions at once: /v1 with an initial user, ITCare with admPassword, and the
            # agent's default instance (booted at start-up).
            v1 = admin.post("/v1/clusters", json=cluster_body("tleak1", password=INIT))
            assert v1.status_code == 202, v1.text
            cluster_id = v1.json()["resource"]["id"]
            itcare = admin.post("/itcare/databases/postgresql", json={
                "name": "tleakitc1", "admPassword": ITCARE, "nodeSizing": "1cpu1gb", "diskSize": 40,
                "postgreVersion": "15"})
            assert itcare.status_code == 202, itcare.text
            itcare_id = itcare.json()["internalId"]
            agent_id = next(c["id"] for c in admin.get("/v1/clusters", params={"size": 1000}).json()["contents"]
                            if c["name"] == AGENT)
            instances = {}
            for cid in (cluster_id, itcare_id, agent_id):
                instance = admin.get(f"/v1/clusters/{cid}").json()["instance_groups"][0]["instances"][0]
                names.append(instance["name"])
                instances[cid] = instance
            for cid in (cluster_id, itcare_id, agent_id):
                for request in admin.get("/v1/requests", params={"cluster_id": cid}).json()["contents"]:
                    assert wait_request(admin, request["request_id"])["state"] == "SUCCESS", request
            answers += [v1.text, itcare.text]
            port, agent_port = instances[cluster_id]["port"], instances[agent_id]["port"]
            for each in (port, agent_port):
                log_every_statement(each)

            # Meanwhile, on the agent's instance, the agent facade: create_admin, then the same
            # again, which fails in its job (409).
            agent = ThreadPoolExecutor(max_workers=1).submit(agent_create_admin_twice, api)

            # A user with a password, and its reset (their 202 shows the password once, by design).
            ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users",
                                 json={"name": "tleak_user", "database": "appdb", "password": USER}))
            ok(admin, admin.post(f"/v1/clusters/{cluster_id}/users/tleak_user/reset-password",
                                 json={"password": RESET}))
            psycopg.connect(host="127.0.0.1", port=port, user="tleak_user", password=RESET, dbname="appdb").close()

            # A DBaaS credential on that cluster's database, and its reset (passwords made by the API).
            database = next(d for d in admin.get("/api/database/", params={"page_size": 1000}).json()["database"]
                            if d["endpoint"].endswith(f":{port}/appdb"))
            credential = admin.post("/api/credential/", json={"user": "u_tleak1",
                                                              "database": f"/api/database/{database['id']}/"})
            assert credential.status_code == 201, credential.text
            generated.append(credential.json()["password"])
            reset = admin.post(f"/api/credential/{credential.json()['id']}/reset_password/", content=b"")
            assert reset.status_code == 200, reset.text
            generated.append(reset.json()["password"])

            answers.append(agent.result())
            failed = [r for r in admin.get("/v1/requests", params={"cluster_id": agent_id, "state": "ERROR"})
                      .json()["contents"] if r["operation"] == "create_admin"]
            assert len(failed) == 1, "the second create_admin ran its job and failed"
            # It failed in the admin module, the task handed AGENT_AGAIN (the input check before it,
            # which requires the password, passed): the job ran carrying the secret.
            assert failed[0]["message"] == "The user already exists", failed[0]
            outcomes = [(e["event"], e["task"]) for e in
                        admin.get(f"/v1/requests/{failed[0]['request_id']}/events").json()
                        if e["event"] in ("runner_on_ok", "runner_on_failed")]
            assert ("runner_on_ok", "Check the admin inputs") in outcomes, outcomes
            assert [task for event, task in outcomes if event == "runner_on_failed"] == ["Create the admin user"]

            # Weak passwords are refused before any job, and never echoed.
            weak = admin.post(f"/v1/clusters/{cluster_id}/users", json={"name": "tleak_weak", "database": "appdb",
                                                                        "password": WEAK})
            assert weak.status_code in (400, 422), weak.text
            weak_itcare = admin.post("/itcare/databases/postgresql", json={
                "name": "tleakitc2", "admPassword": WEAK_ITCARE, "nodeSizing": "1cpu1gb", "diskSize": 40,
                "postgreVersion": "15"})
            assert weak_itcare.status_code == 400, weak_itcare.text
            answers += [weak.text, weak_itcare.text]

            # kill -9 of the API (its pid only) while a job carrying a password runs, and a restart.
            killed = admin.post(f"/v1/clusters/{cluster_id}/users",
                                json={"name": "tleak_killed", "database": "appdb", "password": KILLED})
            assert killed.status_code == 202, killed.text
            track(tracked, running_job(api, admin, killed.json()["request_id"], first_task=False))
        os.kill(api.process.pid, signal.SIGKILL)
        api.process.wait()
        api.start()
        with api.client() as admin:
            assert admin.get(f"/v1/requests/{killed.json()['request_id']}").json()["message"] == "interrupted"
            for cid in (cluster_id, itcare_id, agent_id):  # recovery's observe, the agent's boot
                for request in admin.get("/v1/requests", params={"cluster_id": cid}).json()["contents"]:
                    wait_request(admin, request["request_id"])
            assert not job_processes(api.data_dir, killed.json()["request_id"])
            # The cluster works again, with the password set before the crash.
            psycopg.connect(host="127.0.0.1", port=port, user="tleak_user", password=RESET, dbname="appdb").close()

            # No answer, request record or event shows a password.
            listing = admin.get("/v1/requests", params={"size": 1000}).json()["contents"]
            assert len(listing) >= 10
            for request in listing:
                answers.append(admin.get(f"/v1/requests/{request['request_id']}").text)
                answers.append(admin.get(f"/v1/requests/{request['request_id']}/events").text)
            for cid in (cluster_id, itcare_id, agent_id):
                answers.append(admin.get(f"/v1/clusters/{cid}").text)
                answers.append(admin.get(f"/v1/clusters/{cid}/users").text)
            answers.append(admin.get("/api/credential/").text)

            passwords = [ADMIN_PASSWORD, INIT, ITCARE, USER, RESET, AGENT_ADMIN, AGENT_AGAIN, KILLED, WEAK,
                         WEAK_ITCARE, *generated]
            assert len(set(passwords)) == len(passwords) and all(generated)
            for answer in answers:
                assert not [p for p in passwords if p in answer], answer

            # Every file: the data dir (SQLite store and WAL, job directories, artifacts, the API
            # log), ansible's temp dirs, every PostgreSQL server log and each instance's own files.
            assert list((api.data_dir / "jobs").glob("*/artifacts/*/job_events/*.json"))
            assert api.log_path.stat().st_size > 0
            assert list((api.data_dir / "jobs" / ".secrets").glob("*")) == []
            places = [api.data_dir, Path.home() / ".ansible", Path("/var/log/postgresql")]
            for cid in (cluster_id, itcare_id, agent_id):
                places += server_files(instances[cid]["port"])
                places.append(Path("/etc/postgresql/15") / instances[cid]["name"])
            log = Path(f"/var/log/postgresql/postgresql-15-{instances[cluster_id]['name']}.log").read_text()
            assert "tleak_user" in log and "PASSWORD 'SCRAM-SHA-256$" in log, "statements were logged"
            for place in places:
                found = files_containing(place, *passwords)
                assert found == [], f"a password is in {found}"
    finally:
        end_tracked(tracked)
        api.stop()
        for name in names:
            drop_instance(name)
