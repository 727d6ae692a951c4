"""Patroni clusters and etcd members a test (or a bench) made: a write loop to measure switchovers
and failovers with, and their clean-up: processes ended by PID (pid files, postmaster.pid), never by
name, then every file of theirs removed.

Paths are the roles' (docs/playbooks.md, "High availability"): members under
/var/lib/postgresql/<v>/<member>, /etc/postgresql/<v>/<member>, /etc/patroni/<v>-<member>.yml, ...;
an etcd member under /var/lib/etcd/<name>, /etc/etcd/<name>.yml, /run/etcd/<name>.pid."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg


def pid_of(path) -> int | None:
    """The live process a pid file names, else None."""
    try:
        pid = int(Path(path).read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def poll(predicate, timeout: float, interval: float = 0.1):
    """predicate()'s first true value within timeout seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def end_pid(pid: int | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL a process of ours, by PID."""
    if not pid:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if poll(lambda: not alive(pid), timeout):
            return


def rest_get(port: int, path: str):
    """(status, body) of GET path on the Patroni REST API at 127.0.0.1:port; (None, None) when it does not answer."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b'{}')
    except (urllib.error.URLError, OSError, ValueError):
        return None, None


def member_paths(name: str, version: str = "15") -> list[Path]:
    return [Path(f"/var/lib/postgresql/{version}") / name, Path(f"/etc/postgresql/{version}") / name,
            Path(f"/etc/patroni/{version}-{name}.yml"), Path(f"/var/lib/postgresql/.pgpass-patroni-{version}-{name}"),
            Path(f"/var/log/postgresql/patroni-{version}-{name}.log"), Path(f"/run/patroni/{version}-{name}.pid")]


def wipe_members(names, version: str = "15") -> None:
    """End the members' Patroni and PostgreSQL by PID, drop a Debian instance left of them, remove their files."""
    for name in names:
        end_pid(pid_of(f"/run/patroni/{version}-{name}.pid"))
        end_pid(pid_of(f"/var/lib/postgresql/{version}/{name}/postmaster.pid"))
    for name in names:
        if Path(f"/etc/postgresql/{version}/{name}/postgresql.conf").exists():
            subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False)
        for path in [*member_paths(name, version), Path(f"/etc/patroni/{version}-{name}.leader"),
                     Path(f"/var/log/postgresql/postgresql-{version}-{name}.log")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def wipe_etcd(name: str) -> None:
    """End the etcd member by PID and remove its data, configuration, log and pid file."""
    end_pid(pid_of(f"/run/etcd/{name}.pid"))
    shutil.rmtree(f"/var/lib/etcd/{name}", ignore_errors=True)
    for path in (f"/etc/etcd/{name}.yml", f"/var/log/etcd/{name}.log", f"/run/etcd/{name}.pid"):
        Path(path).unlink(missing_ok=True)


class Writer(threading.Thread):
    """Inserts ids one by one into table over dsn, a libpq multi-host connection string
    (target_session_attrs=read-write): the write loop of the switchover and failover measurements.

    acked: ids whose COMMIT the server acknowledged; times: when. Reconnects after any error.
    """

    def __init__(self, dsn, table):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.table = table
        self.acked = []
        self.times = []
        self.errors = 0
        self.stopping = threading.Event()

    def run(self):
        next_id = 1
        conn = None
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                conn.execute('INSERT INTO %s (id) VALUES (%%s)' % self.table, (next_id,))
                self.acked.append(next_id)
                self.times.append(time.monotonic())
                next_id += 1
                time.sleep(0.01)
            except psycopg.Error:
                self.errors += 1
                next_id += 1  # an id whose INSERT may or may not have committed is never reused
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.join(30)

    def gap(self, since):
        """Longest time without an acknowledged write after since (s)."""
        times = [t for t in self.times if t >= since]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)
