"""A real pgdbaas API process for tests: uvicorn, SQLite or PostgreSQL store, real playbooks."""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
FINAL = ("SUCCESS", "ERROR", "CANCELED")


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ApiServer:
    def __init__(self, data_dir: Path, *, port_range: str, admin_password: str = "Admin-Pass-123",
                 extra_env: dict | None = None, listen_port: int | None = None):
        self.data_dir = data_dir
        self.listen_port = listen_port or free_tcp_port()
        self.admin = ("admin", admin_password)
        self.log_path = data_dir / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PGDBAAS_")},
            "PGDBAAS_DATA_DIR": str(data_dir), "PGDBAAS_PORT_RANGE": port_range,
            "PGDBAAS_ADMIN_USER": "admin", "PGDBAAS_ADMIN_PASSWORD": admin_password,
            "PGDBAAS_LISTEN_PORT": str(self.listen_port), "PGDBAAS_WORKERS": "4",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.listen_port}"

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "api"], cwd=REPO, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"API exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # readiness poll of a starting process, not synchronisation of a result
        raise RuntimeError("API did not become healthy")

    def kill(self) -> None:
        """Crash: SIGKILL the whole process group (API and its ansible jobs)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, auth=None, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth if auth is not None else self.admin, timeout=120, **kwargs)


class WorkerProcess:
    """A queue worker (`python -m api worker`, PGDBAAS_EXECUTOR=queue) of a PostgreSQL store."""

    READY = "pgdbaas worker ready"

    def __init__(self, data_dir: Path, *, extra_env: dict, workers: int = 2):
        self.data_dir = data_dir
        self.log_path = data_dir / "worker.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PGDBAAS_")},
            "PGDBAAS_DATA_DIR": str(data_dir), "PGDBAAS_EXECUTOR": "queue", "PGDBAAS_WORKERS": str(workers),
            **extra_env,
        }
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    def launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._log_start = log.tell()  # a restart appends: only what this process wrote counts
        self.process = subprocess.Popen([sys.executable, "-m", "api", "worker"], cwd=REPO, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                if self.READY.encode() in log.read():
                    return
            time.sleep(0.1)  # readiness poll of a starting process
        raise RuntimeError("worker did not become ready")

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_ready(timeout)

    def kill(self) -> None:
        """Crash: SIGKILL the worker process alone (its jobs must die with it)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM: the worker lets its running jobs finish, then exits; SIGKILL of its group after 120 s."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_request(client: httpx.Client, request_id: str, timeout: float = 240) -> dict:
    """Poll a request until it ends, as an API user does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/requests/{request_id}").raise_for_status().json()
        if body["state"] in FINAL:
            return body
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} did not finish in {timeout} s")


def finished(client: httpx.Client, response: httpx.Response, state: str = "SUCCESS", timeout: float = 600) -> dict:
    """The request a 202 answered (/v1's request_id, ITCare's id), polled to its end: it must end in
    `state` (its message shown when it does not)."""
    assert response.status_code == 202, response.text
    request = wait_request(client, response.json().get("request_id") or response.json()["id"], timeout=timeout)
    assert request["state"] == state, (request.get("message"), request)
    return request


def wait_state(client: httpx.Client, request_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/requests/{request_id}").raise_for_status().json()
        if body["state"] in states:
            return body
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} never reached {states}")


def cluster_body(name: str, *, user: str = "appuser", password: str = "App-Secret-Pw-1", database: str = "appdb",
                 port: int | None = None) -> dict:
    init = {"database_name": database, "database_user_name": user, "database_user_password": password,
            "database_encoding": "UTF-8", "database_locale": "C.UTF-8"}
    if port:
        init["database_port"] = port
    return {"name": name, "dbaas_engine_version_id": "", "init_config_option": init,
            "instance_groups": [{"server_type_name": "1cpu1gb", "instances": [{"role_type": "ACTIVE"}]}],
            "allowable_ip_addresses": [], "tags": [{"key": "team", "value": "qa"}], "timezone": "UTC"}


def drop_instance(name: str, version: str = "15") -> None:
    """Test clean-up of the instances of a cluster named `name` (ignores ones already gone).

    The API names a cluster's instance `<name>-<first 8 characters of the cluster id>`; an exact
    name is dropped too. pg_dropcluster leaves the role's conf.d file behind: remove the config dir."""
    conf_root = Path("/etc/postgresql") / version
    candidates = {name} | {p.name for p in conf_root.glob(f"{glob.escape(name)}-*")
                           if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{8}}", p.name)}
    for instance in sorted(candidates):
        subprocess.run(["pg_dropcluster", "--stop", version, instance], capture_output=True)
        shutil.rmtree(conf_root / instance, ignore_errors=True)


# What a tenant admin must never hold: server file and program access.
FILE_AND_PROGRAM_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")


def refused(conn, statement) -> str:
    """The error a statement fails with (it must fail)."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    return str(info.value)


def assert_no_server_files_or_programs(conn) -> None:
    """As the connected tenant admin: no program, no server file, no membership that would give them."""
    assert "pg_execute_server_program" in refused(conn, "COPY (SELECT 1) TO PROGRAM 'id'")
    assert "pg_read_server_files" in refused(conn, "COPY pg_catalog.pg_am FROM '/etc/hostname'")
    assert "permission denied for function" in refused(conn, "SELECT pg_read_file('/etc/hostname')")
    assert conn.execute("SELECT count(*) FROM pg_roles g WHERE pg_has_role(current_user, g.oid, 'MEMBER') "
                        "AND (g.rolname = ANY(%s) OR g.rolsuper OR g.rolname = 'pgdbaas_role_manager')",
                        (list(FILE_AND_PROGRAM_ROLES),)).fetchone() == (0,)


@contextmanager
def postgres_store(instance: str, port: int, password: str) -> Iterator[str]:
    """A PostgreSQL instance holding the API's own store (the production setting): its DSN,
    dropped afterwards."""
    drop_instance(instance)
    subprocess.run(["pg_createcluster", "15", instance, "--port", str(port), "--start", "--",
                    "--auth-local=trust", "--auth-host=trust"], check=True, capture_output=True)
    try:
        with psycopg.connect(host="/var/run/postgresql", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"create role pgdbaas login password '{password}'")
            conn.execute("create database pgdbaas owner pgdbaas")
        yield f"postgresql+psycopg://pgdbaas:{password}@127.0.0.1:{port}/pgdbaas"
    finally:
        drop_instance(instance)


@contextmanager
def repository():
    """A pgBackRest repository directory the instances' owner reaches (pytest's tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="pgdbaas-test-repo-", dir="/var/tmp"))
    owner = pwd.getpwnam("postgres")
    os.chown(path, owner.pw_uid, owner.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
