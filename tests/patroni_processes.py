"""Test clean-up of Patroni clusters and etcd members a test made: their processes ended by PID
(pid files, postmaster.pid), never by name, then every file of theirs removed.

Paths are the roles' (docs/playbooks.md, "High availability"): members under
/var/lib/postgresql/<v>/<member>, /etc/postgresql/<v>/<member>, /etc/patroni/<v>-<member>.yml, ...;
an etcd member under /var/lib/etcd/<name>, /etc/etcd/<name>.yml, /run/etcd/<name>.pid."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


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


def end_pid(pid: int | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL a process of ours, by PID."""
    if not pid:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if not alive(pid):
            return


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
