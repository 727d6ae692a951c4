"""Crash recovery and cancel: an interrupted or canceled request ends, and the cluster works again.

A crash is `kill -9` of the API process alone (not its process group): nothing of the job may
outlive it, no secret may stay on disk, and recovery observes a cluster only once the old job's
processes are gone.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, postgres_store, wait_request, wait_state

CRASH_PORTS, CANCEL_PORTS, STORE_PORTS, STORE_PORT = "56400-56419", "56420-56429", "56430-56438", 56439
ADMIN_PASSWORD = "Crash-Admin-Pw-5x"


# -- processes and files, read from /proc, the store and the host ------------------------------------
def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, parent) of a pid, None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[1])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def argv(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def start_time(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def track(tracked: dict[int, int | None], pids) -> None:
    """Remember processes (with their start time, so a reused pid is never mistaken for one)."""
    for pid in pids:
        tracked.setdefault(pid, start_time(pid))


def end_tracked(tracked: dict[int, int | None]) -> None:
    """Clean-up: SIGKILL whatever is left of the tracked processes, by pid, if still the same."""
    for pid, start in tracked.items():
        if start is not None and alive(pid) and start_time(pid) == start:
            os.kill(pid, signal.SIGKILL)


def live_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and alive(int(entry))]


def job_processes(data_dir: Path, request_id: str) -> dict[int, int]:
    """pid -> process group of every live process whose command line names the job's directory."""
    mark = f"{data_dir}/jobs/{request_id}/"
    found = {}
    for pid in live_pids():
        if any(mark in arg for arg in argv(pid)) and (stat := proc_stat(pid)):
            found[pid] = stat[1]
    return found


def group_members(pgid: int) -> list[int]:
    return [pid for pid in live_pids() if (proc_stat(pid) or ("", 0, 0))[1] == pgid]


def leader_group(found: dict[int, int], parent: int) -> int:
    """The process group of a job's first process, the one the API started."""
    (pgid,) = {pgid for pid, pgid in found.items() if (proc_stat(pid) or ("", 0, 0))[2] == parent}
    return pgid


def is_ansible_playbook(pid: int) -> bool:
    args = argv(pid)
    return len(args) > 1 and args[1].endswith("/ansible-playbook")


class Freezer:
    """A cgroup v2 freezer: its processes stop running, whatever signal comes (SIGCONT
    included), until a fatal one kills them."""

    def __init__(self, name: str):
        self.path = Path("/sys/fs/cgroup/unified") / name
        if not (self.path.parent / "cgroup.procs").exists():
            pytest.skip("needs a cgroup v2 hierarchy at /sys/fs/cgroup/unified")
        self.path.mkdir()

    def freeze(self, pids) -> None:
        for pid in pids:
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:  # ended meanwhile
                pass
        (self.path / "cgroup.freeze").write_text("1")
        poll(lambda: "frozen 1" in (self.path / "cgroup.events").read_text(), 10, "frozen")

    def remove(self) -> None:
        if self.path.exists():
            for pid in (self.path / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)  # what a failed recovery left in it
            (self.path / "cgroup.freeze").write_text("0")
            poll(lambda: not (self.path / "cgroup.procs").read_text().split(), 10, "freezer emptied")
            self.path.rmdir()


def operation_row(data_dir: Path, request_id: str) -> dict:
    with sqlite3.connect(f"file:{data_dir / 'pgdbaas.sqlite3'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("select * from operations where id = ?", (request_id,)).fetchone())


def host_state(name: str) -> str:
    """The instance's state as the host reports it, in the API's words (absent: ERROR)."""
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1] == name:
            return "RUNNING" if fields[3].startswith("online") else "STOPPED"
    return "ERROR"


def files_containing(root: Path, *needles: str) -> list[str]:
    if not root.exists():
        return []
    args = ["grep", "-rlaF"]
    for needle in needles:
        args += ["-e", needle]
    return subprocess.run(args + [str(root)], capture_output=True, text=True).stdout.split()


def poll(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def running_job(api: ApiServer, admin, request_id: str, first_task: bool = True) -> dict[int, int]:
    """Wait until the job of request_id is under way: IN_PROGRESS, its secrets file written,
    ansible-playbook running (and a task started). Returns its processes (pid -> group)."""
    def still_running(found):
        state = admin.get(f"/v1/requests/{request_id}").json()
        assert state["state"] == "IN_PROGRESS", f"the job ended before the crash: {state}"
        return found

    wait_state(admin, request_id, ("IN_PROGRESS",))
    poll(lambda: (api.data_dir / "jobs" / ".secrets" / f"{request_id}.json").exists(), 30, "secrets file")
    if first_task:
        poll(lambda: still_running(any(e["event"] == "playbook_on_task_start"
                                       for e in admin.get(f"/v1/requests/{request_id}/events").json())),
             60, "first task")
    found = poll(lambda: (found := job_processes(api.data_dir, request_id))
                 and any(is_ansible_playbook(pid) for pid in found) and found, 30, "ansible-playbook")
    return still_running(found)


def test_kill_9_of_the_api_mid_provision_leaves_no_secret_and_no_process(tmp_path):
    api = ApiServer(tmp_path / "crash", port_range=CRASH_PORTS, admin_password=ADMIN_PASSWORD)
    passwords = {"tcrash1": "Crash-One-Pw-4q", "tcrash2": "Crash-Two-Pw-8w"}
    names: list[str] = []
    tracked: dict[int, int | None] = {}
    freezer = Freezer(f"tcrash-{os.getpid()}")
    api.start()
    try:
        with api.client() as admin:
            requests = {}
            for name, password in passwords.items():
                response = admin.post("/v1/clusters", json=cluster_body(name, password=password))
                assert response.status_code == 202, response.text
                cluster_id = response.json()["resource"]["id"]
                names.append(admin.get(f"/v1/clusters/{cluster_id}").json()
                             ["instance_groups"][0]["instances"][0]["name"])
                requests[name] = (response.json()["request_id"], cluster_id)
            jobs = {name: running_job(api, admin, request_id) for name, (request_id, _) in requests.items()}
            for found in jobs.values():
                track(tracked, found)
            # The second job is frozen at its first task, its leader included: it never creates its
            # instance, and it cannot act when the API dies, so it survives the crash and the next
            # start-up must end it.
            leaders = {name: leader_group(found, api.process.pid) for name, found in jobs.items()}
            frozen_pgid = leaders["tcrash2"]
            freezer.freeze([frozen_pgid, *jobs["tcrash2"]])
            frozen = [pid for pid in jobs["tcrash2"] if alive(pid)]
            assert frozen_pgid in frozen and any(is_ansible_playbook(pid) for pid in frozen)
            # The first job is let run until its instance is up: the crash then leaves one instance
            # running and one never made, two states that recovery must each observe, not guess.
            first_request = requests["tcrash1"][0]
            poll(lambda: ("runner_on_ok", "Start the instance") in
                 {(e["event"], e["task"]) for e in admin.get(f"/v1/requests/{first_request}/events").json()},
                 120, "the first job starts its instance")
            assert admin.get(f"/v1/requests/{first_request}").json()["state"] == "IN_PROGRESS", "ended too soon"
            jobs["tcrash1"] = {**jobs["tcrash1"], **job_processes(api.data_dir, first_request)}
            track(tracked, jobs["tcrash1"])
        secrets = [ADMIN_PASSWORD, *passwords.values()]
        api_environment = [key for key in api.env if key.startswith("PGDBAAS_")]

        # Mid-run: neither runner's command artifact, nor env/envvars, nor the job's processes
        # hold the API's environment (its admin password) or a job's password.
        jobs_dir = api.data_dir / "jobs"
        assert list(jobs_dir.glob("*/artifacts/*/command"))
        for request_id, _ in requests.values():
            for path in [*jobs_dir.glob(f"{request_id}/artifacts/*/command"), jobs_dir / request_id / "env" / "envvars"]:
                if path.exists():
                    text = path.read_text()
                    assert not [key for key in api_environment if key in text], path
                    assert not any(s in text for s in secrets), path
        for pid in tracked:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:  # a worker that has ended
                continue
            assert not [key for key in api_environment if key.encode() in environ], pid
            assert ADMIN_PASSWORD.encode() not in environ

        api_pid = api.process.pid
        os.kill(api_pid, signal.SIGKILL)  # the API alone, not its process group
        api.process.wait()

        # No job outlives the API: every process of the first job ends at once.
        poll(lambda: not any(group_members(pgid) for pgid in set(jobs["tcrash1"].values()))
             and not job_processes(api.data_dir, requests["tcrash1"][0]), 20,
             "the first job's processes outlive the API")
        assert all(alive(pid) for pid in frozen), "the frozen job should still be there before the restart"
        # What the crash left on the host: nothing acts on it any more (one job dead, one frozen).
        on_host = {name: host_state(name) for name in names}
        assert on_host == {names[0]: "RUNNING", names[1]: "ERROR"}, on_host

        api.start()
        # Recovery ended the frozen job before it served anything, observing included.
        assert not any(group_members(pgid) for found in jobs.values() for pgid in set(found.values()))
        assert not any(alive(pid) and start_time(pid) == start for pid, start in tracked.items())
        for name, (request_id, cluster_id) in requests.items():
            row = operation_row(api.data_dir, request_id)
            assert row["job_pgid"] == leaders[name] and row["worker_pid"] == api_pid
        log = api.log_path.read_text()
        frozen_request, frozen_cluster = requests["tcrash2"]
        ended_at = log.index(f"request {frozen_request} was interrupted: ending its orphaned job, process group "
                             f"{frozen_pgid}")
        assert ended_at < log.index(f"request(s) of cluster {frozen_cluster} were interrupted")

        # No secret is left: no secrets file, nothing under the data dir or ansible's temp dirs.
        assert list((jobs_dir / ".secrets").glob("*")) == []
        assert files_containing(api.data_dir, *secrets) == []
        assert files_containing(Path.home() / ".ansible", *passwords.values()) == []

        with api.client() as admin:
            for (request_id, cluster_id), name in zip(requests.values(), names):
                request = admin.get(f"/v1/requests/{request_id}").json()
                assert request["state"] == "ERROR" and request["message"] == "interrupted"
                # The cluster is observed again rather than guessed, once: its state is the host's,
                # RUNNING for the first (an interrupted create alone would say ERROR), ERROR (no
                # instance) for the second.
                observe = [r for r in admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()["contents"]
                           if r["operation"] == "observe"]
                assert len(observe) == 1
                assert wait_request(admin, observe[0]["request_id"])["state"] == "SUCCESS"
                assert admin.get(f"/v1/clusters/{cluster_id}").json()["service_state"] == on_host[name] \
                    == host_state(name)
                # And it accepts new operations.
                response = admin.delete(f"/v1/clusters/{cluster_id}")
                assert response.status_code == 202, response.text
                assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
                assert host_state(name) == "ERROR"  # gone from the host
        assert files_containing(api.data_dir, *secrets) == []
    finally:
        freezer.remove()
        end_tracked(tracked)  # whatever a failed recovery left of the jobs
        api.stop()
        for name in names:
            drop_instance(name)


@pytest.fixture(scope="module")
def cancel_api(tmp_path_factory):
    api = ApiServer(tmp_path_factory.mktemp("cancel"), port_range=CANCEL_PORTS)
    api.start()
    yield api
    api.stop()


def test_cancel_a_running_request(cancel_api):
    with cancel_api.client() as admin:
        response = admin.post("/v1/clusters", json=cluster_body("tcrash-cancel"))
        request_id, cluster_id = response.json()["request_id"], response.json()["resource"]["id"]
        name = admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]["name"]
        try:
            wait_state(admin, request_id, ("IN_PROGRESS",))
            response = admin.post(f"/v1/requests/{request_id}/cancel")
            assert response.status_code == 202
            request = wait_request(admin, request_id)
            assert request["state"] == "CANCELED"
            assert admin.post(f"/v1/requests/{request_id}/cancel").status_code == 409
            cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
            assert cluster["service_state"] == "ERROR" and cluster["active_request_id"] is None
            poll(lambda: not job_processes(cancel_api.data_dir, request_id), 10, "the canceled job's processes end")
            # A canceled cluster is not stuck: it can be terminated.
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
        finally:
            drop_instance(name)


@pytest.fixture
def store_dsn():
    """A PostgreSQL instance holding the API's own store (the production setting)."""
    with postgres_store("tcrash-store", STORE_PORT, "store-pass") as dsn:
        yield dsn


def test_postgresql_store(tmp_path, store_dsn):
    api = ApiServer(tmp_path / "pgstore", port_range=STORE_PORTS, extra_env={"PGDBAAS_DATABASE_URL": store_dsn})
    api.start()
    name = None
    try:
        with api.client() as admin:
            response = admin.post("/v1/clusters", json=cluster_body("tcrash-pgstore"))
            cluster_id = response.json()["resource"]["id"]
            instance = admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]
            name = instance["name"]
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
            psycopg.connect(host="127.0.0.1", port=instance["port"], user="appuser", password="App-Secret-Pw-1",
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
            # The job's owner and process group are recorded in PostgreSQL too (migration 0004).
            owner = conn.execute("select worker_host, worker_pid, job_pgid from operations where cluster_id = %s",
                                 (cluster_id,)).fetchall()
            assert owner and all(host and pid and pgid for host, pid, pgid in owner)
    finally:
        api.stop()
        if name:
            drop_instance(name)
