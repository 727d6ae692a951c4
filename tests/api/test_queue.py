"""Queue mode (PGDBAAS_EXECUTOR=queue): two API processes and two worker processes on one
PostgreSQL store, all started at the same moment on an empty store, shared by every test here.

Each worker runs one operation at a time (PGDBAAS_WORKERS=1), so two long operations fill the
queue's slots and a third waits in the queue.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet

from api.store import MIGRATIONS
from tests.api.harness import (REPO, ApiServer, WorkerProcess, cluster_body, drop_instance, postgres_store, wait_request,
                               wait_state)

STORE_PORT, API_PORTS, EXTRA_API_PORT, PORTS = 56800, (56801, 56802), 56803, "56804-56819"
STORE_INSTANCE = "tq-store"
ADMIN_PASSWORD = "Queue-Admin-Pw-7z"
NAMES = ("tq-one", "tq-two", "tq-hold1", "tq-hold2", "tq-queued", "tq-kill")


def poll(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def marked_processes(request_id: str) -> list[int]:
    """Live processes carrying the job's mark (PostgreSQL servers a job started aside)."""
    mark = f"PGDBAAS_JOB_ID={request_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            comm = Path(f"/proc/{entry}/comm").read_bytes().strip()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if mark in environ and comm not in (b"postgres", b"postmaster") and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


class Deployment:
    def __init__(self, dsn: str, apis: list[ApiServer], workers: list[WorkerProcess], env: dict, root: Path):
        self.dsn, self.apis, self.workers, self.env, self.root = dsn, apis, workers, env, root

    def query(self, sql: str, *args):
        with psycopg.connect(self.dsn.replace("+psycopg", ""), autocommit=True) as conn:
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def operation(self, request_id: str) -> dict:
        with psycopg.connect(self.dsn.replace("+psycopg", ""), autocommit=True) as conn:
            cursor = conn.execute("select * from operations where id = %s", (request_id,))
            return dict(zip([c.name for c in cursor.description], cursor.fetchone()))

    def job(self, request_id: str) -> dict:
        job_id = self.operation(request_id)["queue_job_id"]
        assert job_id is not None, f"request {request_id} has no job"
        with psycopg.connect(self.dsn.replace("+psycopg", ""), autocommit=True) as conn:
            cursor = conn.execute("select * from procrastinate.procrastinate_jobs where id = %s", (job_id,))
            job = dict(zip([c.name for c in cursor.description], cursor.fetchone()))
            job["started"] = conn.execute("select count(*) from procrastinate.procrastinate_events "
                                          "where job_id = %s and type = 'started'", (job_id,)).fetchone()[0]
        return job

    def worker_of(self, request_id: str) -> WorkerProcess:
        pid = self.operation(request_id)["worker_pid"]
        [worker] = [w for w in self.workers if w.process.pid == pid]
        return worker


@pytest.fixture(scope="module")
def store_dsn():
    with postgres_store(STORE_INSTANCE, STORE_PORT, "queue-store-pass") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def deployment(store_dsn, tmp_path_factory):
    root = tmp_path_factory.mktemp("queue")
    env = {"PGDBAAS_EXECUTOR": "queue", "PGDBAAS_DATABASE_URL": store_dsn,
           "PGDBAAS_SECRET_KEY": Fernet.generate_key().decode(), "PGDBAAS_PORT_RANGE": PORTS}
    apis = [ApiServer(root / f"api{i}", port_range=PORTS, admin_password=ADMIN_PASSWORD, extra_env=env,
                      listen_port=port) for i, port in enumerate(API_PORTS, 1)]
    workers = [WorkerProcess(root / f"worker{i}", extra_env=env, workers=1) for i in (1, 2)]
    try:
        for process in [*apis, *workers]:  # the same moment, on an empty store
            process.launch()
        for api in apis:
            api.wait_healthy(120)
        for worker in workers:
            worker.wait_ready(120)
        yield Deployment(store_dsn, apis, workers, env, root)
    finally:
        for process in [*apis, *workers]:
            process.stop()
        for name in NAMES:
            drop_instance(name)


def clients(deployment: Deployment) -> list[httpx.Client]:
    return [api.client() for api in deployment.apis]


def create(client: httpx.Client, name: str) -> tuple[str, str]:
    response = client.post("/v1/clusters", json=cluster_body(name))
    assert response.status_code == 202, response.text
    return response.json()["request_id"], response.json()["resource"]["id"]


def running(client: httpx.Client, request_id: str) -> dict:
    """Wait until the request's playbook is under way (a task started)."""
    wait_state(client, request_id, ("IN_PROGRESS",))
    return poll(lambda: (body := client.get(f"/v1/requests/{request_id}").json())["progress"]["tasks_done"] >= 1
                and body, 60, "the first task")


def test_queue_mode_refuses_to_start_without_a_postgresql_store_or_a_shared_key(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGDBAAS_")}
    cases = [
        ({"PGDBAAS_EXECUTOR": "queue"}, "needs the PostgreSQL store"),
        ({"PGDBAAS_EXECUTOR": "queue", "PGDBAAS_DATABASE_URL": f"sqlite:///{tmp_path}/store.sqlite3"},
         "needs the PostgreSQL store"),
        ({"PGDBAAS_EXECUTOR": "queue", "PGDBAAS_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/db"},
         "PGDBAAS_SECRET_KEY"),
    ]
    for extra, message in cases:
        for command in ([], ["worker"]):
            env = {**base, "PGDBAAS_DATA_DIR": str(tmp_path / "data"), **extra}
            done = subprocess.run([sys.executable, "-m", "api", *command], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 2 and message in done.stderr, (command, extra, done.stderr)
    assert not (tmp_path / "data").exists()  # refused before anything was touched
    done = subprocess.run([sys.executable, "-m", "api", "worker"], cwd=REPO, capture_output=True, text=True,
                          env={**base, "PGDBAAS_DATA_DIR": str(tmp_path / "data")}, timeout=60)
    assert done.returncode == 2 and "PGDBAAS_EXECUTOR=queue" in done.stderr


def test_processes_started_together_on_an_empty_store_all_come_up(deployment):
    assert all(p.process.poll() is None for p in [*deployment.apis, *deployment.workers])
    newest = ScriptDirectory(str(MIGRATIONS)).get_current_head()  # the newest file of api/store/migrations
    assert newest and deployment.query("select version_num from alembic_version") == [(newest,)]
    assert deployment.query("select to_regclass('procrastinate.procrastinate_jobs')::text") == [
        ("procrastinate.procrastinate_jobs",)]
    # Alembic's schema holds none of procrastinate's objects.
    assert deployment.query("select count(*) from pg_tables where schemaname = 'public' "
                            "and tablename like 'procrastinate%%'") == [(0,)]
    assert deployment.query("select count(*) from accounts where name = 'admin'") == [(1,)]
    # Each worker process: one procrastinate worker for operations, one for the reaper.
    assert deployment.query("select count(*) from procrastinate.procrastinate_workers") == [(4,)]
    for process in [*deployment.apis, *deployment.workers]:
        log = process.log_path.read_text()
        assert "Traceback" not in log and "UniqueViolation" not in log, log[-3000:]


def test_operations_run_on_the_workers_one_per_cluster_with_events_from_any_api(deployment):
    first, second = clients(deployment)
    with first, second:
        one, one_id = create(first, "tq-one")
        two, two_id = create(second, "tq-two")
        # The API's immediate answer: the cluster is busy.
        busy = second.post(f"/v1/clusters/{one_id}/restart")
        assert busy.status_code == 409 and one in busy.text
        # The events of a job that another API accepted and a worker runs, streamed by this API.
        events = []
        with second.stream("GET", f"/v1/requests/{one}/events", headers={"accept": "text/event-stream"},
                           timeout=240) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                if line.startswith("data: ") and events[-1] == "end":
                    assert json.loads(line.removeprefix("data: ")) == {"state": "SUCCESS"}
        assert events[-1] == "end" and events.count("task") > 10
        assert wait_request(first, two)["state"] == "SUCCESS"
        worker_pids = {w.process.pid for w in deployment.workers}
        # The two clusters' jobs ran on the two workers (one slot each), never in an API process.
        assert {deployment.operation(r)["worker_pid"] for r in (one, two)} == worker_pids
        for request_id, cluster_id in ((one, one_id), (two, two_id)):
            job = deployment.job(request_id)
            assert job["lock"] == f"cluster-{cluster_id}" and job["queueing_lock"] == request_id
            assert job["status"] == "succeeded" and job["started"] == 1
        for request_id in (first.post(f"/v1/clusters/{one_id}/restart").json()["request_id"],
                           second.post(f"/v1/clusters/{two_id}/restart").json()["request_id"]):
            assert wait_request(second, request_id)["state"] == "SUCCESS"


def test_a_repeated_job_does_not_run_its_operation_again(deployment):
    with deployment.apis[0].client() as admin:
        [cluster] = [c for c in admin.get("/v1/clusters", params={"name": "tq-one"}).json()["contents"]]
        request_id = admin.post(f"/v1/clusters/{cluster['id']}/sync-state").json()["request_id"]
        assert wait_request(admin, request_id)["state"] == "SUCCESS"
        before = deployment.operation(request_id)
        events = len(admin.get(f"/v1/requests/{request_id}/events").json())
    # The same job again (a retry, a duplicate defer): the worker finds the operation ended.
    from api.engine import queue

    queue.configure(deployment.dsn)
    queue.app.open()
    try:
        job_id = queue.run_operation.configure(lock=f"cluster-{cluster['id']}").defer(operation_id=request_id)
    finally:
        queue.app.close()
    poll(lambda: deployment.query("select status::text from procrastinate.procrastinate_jobs where id = %s",
                                  job_id) == [("succeeded",)], 30, "the repeated job ends")
    after = deployment.operation(request_id)
    assert {k: after[k] for k in ("state", "started_at", "finished_at", "worker_pid")} == {
        k: before[k] for k in ("state", "started_at", "finished_at", "worker_pid")}
    with deployment.apis[1].client() as admin:
        assert len(admin.get(f"/v1/requests/{request_id}/events").json()) == events


def test_a_synchronous_call_waits_for_its_job_through_the_store(deployment):
    with deployment.apis[1].client() as admin:
        [cluster] = admin.get("/v1/clusters", params={"name": "tq-one"}).json()["contents"]
        # list_extensions runs as a job on a worker; the API answers once it has ended.
        response = admin.get(f"/v1/clusters/{cluster['id']}/extensions")
        assert response.status_code == 200, response.text
        assert any(e["name"] == "plpgsql" for e in response.json())
        [request] = [r for r in admin.get("/v1/requests", params={"cluster_id": cluster["id"]}).json()["contents"]
                     if r["operation"] == "list_extensions"]
        assert request["state"] == "SUCCESS"
        assert deployment.job(request["request_id"])["lock"] is None  # read-only: no queue lock either


def test_cancel_from_any_api_and_an_api_start_leaves_the_jobs_of_live_workers_alone(deployment):
    first, second = clients(deployment)
    with first, second:
        hold1, _ = create(first, "tq-hold1")
        hold2, _ = create(second, "tq-hold2")
        running(first, hold1)
        running(second, hold2)
        # Both workers are busy: this one waits in the queue.
        queued, queued_cluster = create(first, "tq-queued")
        assert deployment.job(queued)["status"] == "todo"
        response = second.post(f"/v1/requests/{queued}/cancel")
        assert response.status_code == 202 and response.json()["state"] == "CANCELED"
        assert deployment.job(queued)["status"] == "cancelled"
        assert first.get(f"/v1/clusters/{queued_cluster}").json()["active_request_id"] is None

        # A running job, canceled through the API that did not accept it, on whichever worker runs it.
        worker = deployment.worker_of(hold2)
        poll(lambda: marked_processes(hold2), 30, "the job's processes")
        response = first.post(f"/v1/requests/{hold2}/cancel")
        assert response.status_code == 202
        canceled = wait_request(second, hold2, timeout=60)
        assert canceled["state"] == "CANCELED", canceled
        assert deployment.operation(hold2)["worker_pid"] == worker.process.pid
        poll(lambda: not marked_processes(hold2), 20, "the canceled job's processes end")
        assert deployment.operation(queued)["started_at"] is None

        # A third API starts while a worker runs hold1: its recovery leaves that job to the worker.
        api = ApiServer(deployment.root / "api3", port_range=PORTS, admin_password=ADMIN_PASSWORD,
                        extra_env=deployment.env, listen_port=EXTRA_API_PORT)
        try:
            api.start()
            assert first.get(f"/v1/requests/{hold1}").json()["state"] == "IN_PROGRESS"
            with api.client() as third:
                done = wait_request(third, hold1)
        finally:
            api.stop()
        assert done["state"] == "SUCCESS" and done["message"] is None
        assert "interrupted" not in api.log_path.read_text()


def test_the_reaper_goes_by_heartbeats_never_by_age_and_queues_orphans_again(deployment):
    """Rows as a dead worker (stale heartbeat), a long job of a live one (fresh heartbeat, started
    long ago) and an API that died between its commit and its deferral (QUEUED, no job) leave them."""
    with deployment.apis[0].client() as admin:
        [cluster] = admin.get("/v1/clusters", params={"name": "tq-one"}).json()["contents"]
        template = admin.post(f"/v1/clusters/{cluster['id']}/sync-state").json()["request_id"]
        assert wait_request(admin, template)["state"] == "SUCCESS"
    suffix = os.urandom(4).hex()
    long, dead, orphan = (f"req-tq-{what}-{suffix}" for what in ("long", "dead", "orphan"))
    insert = ("insert into operations (id, kind, cluster_id, actor_id, state, params, steps, step, playbook, "
              "extravars, tasks_done, cancel_requested, result, created_at, started_at, heartbeat_at, worker_host) "
              "select %s, kind, {cluster}, actor_id, %s, params, steps, 0, playbook, extravars, 0, false, '{{}}', "
              "timezone('UTC', now()) - %s::interval, {started}, {beat}, {host} from operations where id = %s")
    ago = "timezone('UTC', now()) - interval '2 hours'"
    deployment.query(insert.format(cluster="null", started=ago, beat="timezone('UTC', now())", host="'elsewhere'"),
                     long, "IN_PROGRESS", "2 hours", template)
    deployment.query(insert.format(cluster="null", started=ago, beat=ago, host="'elsewhere'"),
                     dead, "IN_PROGRESS", "2 hours", template)
    deployment.query(insert.format(cluster="cluster_id", started="null", beat="null", host="null"),
                     orphan, "QUEUED", "1 hour", template)
    try:
        poll(lambda: deployment.operation(dead)["state"] == "ERROR", 30, "the dead worker's request reaped")
        assert deployment.operation(dead)["error"] == "interrupted"
        assert deployment.operation(long)["state"] == "IN_PROGRESS"  # started 2 h ago, but it beats
        with deployment.apis[1].client() as admin:
            assert wait_request(admin, orphan, timeout=120)["state"] == "SUCCESS"
        job = deployment.job(orphan)
        assert job["lock"] == f"cluster-{cluster['id']}" and job["started"] == 1
    finally:
        deployment.query("update operations set state = 'ERROR', error = 'test row' where id = %s and "
                         "state = 'IN_PROGRESS'", long)


def test_a_killed_worker_leaves_its_request_interrupted_within_60_s(deployment):
    with deployment.apis[1].client() as admin:
        request_id, cluster_id = create(admin, "tq-kill")
        running(admin, request_id)
        worker = deployment.worker_of(request_id)
        secrets_file = worker.data_dir / "jobs" / ".secrets" / f"{request_id}.json"
        poll(lambda: marked_processes(request_id) and secrets_file.exists(), 30, "the job's processes")
        worker.kill()  # SIGKILL of the worker process alone
        killed = time.monotonic()
        # Its playbook's processes die with it (the job guard's parent-death signal).
        poll(lambda: not marked_processes(request_id), 10, "the killed worker's job processes end")
        request = poll(lambda: (body := admin.get(f"/v1/requests/{request_id}").json())["state"] != "IN_PROGRESS"
                       and body, 60, "the request ends")
        assert time.monotonic() - killed < 60
        assert request["state"] == "ERROR" and request["message"] == "interrupted", request
        # Its job is marked failed (so the cluster's queue lock is free again).
        poll(lambda: deployment.job(request_id)["status"] == "failed", 30, "the dead worker's job marked failed")
        # The cluster is free again and observed, so its state is read rather than guessed.
        observe = poll(lambda: [r for r in admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()
                                ["contents"] if r["operation"] == "observe"], 30, "an observe request")
        assert len(observe) == 1
        assert wait_request(admin, observe[0]["request_id"])["state"] in ("SUCCESS", "ERROR")
        # The killed worker's secrets file stays until a worker starts on its data directory.
        assert secrets_file.exists()
        again = WorkerProcess(worker.data_dir, extra_env=deployment.env, workers=1)
        deployment.workers[deployment.workers.index(worker)] = again
        again.start()
        assert not secrets_file.exists()
        # No password is anywhere in the processes' data directories and logs, nor the store's log.
        leaks = subprocess.run(["grep", "-rlaF", "-e", "App-Secret-Pw-1", "-e", ADMIN_PASSWORD, str(deployment.root),
                                f"/var/log/postgresql/postgresql-15-{STORE_INSTANCE}.log"],
                               capture_output=True, text=True).stdout.split()
        assert leaks == []
        response = admin.delete(f"/v1/clusters/{cluster_id}")
        assert response.status_code == 202, response.text
        assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
