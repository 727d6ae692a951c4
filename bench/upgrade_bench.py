"""Major upgrade benchmark: downtime and duration of playbooks/upgrade.yml vs the raw pg_upgrade, --link vs copy.

A pgbench database (scale PGBENCH_SCALE, default 50: about 750 MB) in a 15 instance; a writer thread
inserts one row at a time (a new connection after each failure) into a table of its own, on the
instance's port, all along. Side by side in one run, for each method (link, copy):
(a) upgrade.yml 15 -> 16 (tree 16.14) on an instance made by provision.yml: the playbook's total
    time, and the downtime = the longest gap between two successful writes (last write before ->
    first write after, the new instance taking the old port);
(b) the raw sequence on an instance made by pg_createcluster: pg_ctlcluster stop, pg_createcluster
    16, `pg_upgrade --link|--copy` (timed alone too), pg_ctlcluster start; the downtime likewise.
    The new instance is made on the old port, as the playbook does, so the writer sees the same thing.

Run as root, after `make`, under the layouts' lock:
    flock /tmp/pgdbaas-layouts.lock .venv/bin/python bench/upgrade_bench.py
(ports 57740-57749, instances tupgbench-*; about 10 minutes at scale 50)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ansible_collections.dbaas.postgresql.plugins.modules.upgrade import (  # noqa: E402
    CONNECTABLE, KNOWN_ATTRIBUTE_OPTIONS, STRIP_ATTRIBUTE_OPTIONS)
from tests.engines import layout_root, remove_layout, tree  # noqa: E402

SCALE = int(os.environ.get("PGBENCH_SCALE", "50"))
SOCKET = "/var/run/postgresql"
TARGET = "16"
CASES = {  # method -> (playbook instance, port, old port), (raw instance, port)
    "link": (("tupgbench-pl", 57740, 57741), ("tupgbench-rl", 57742)),
    "copy": (("tupgbench-pc", 57744, 57745), ("tupgbench-rc", 57746)),
}


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: rc={done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def as_postgres(*argv, cwd="/") -> subprocess.CompletedProcess:
    return run("runuser", "-u", "postgres", "--", *argv, cwd=cwd)


def forget(name: str) -> None:
    for version in ("15", TARGET):
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True)
        shutil.rmtree(Path("/etc/postgresql") / version / name, ignore_errors=True)
        shutil.rmtree(Path("/var/lib/postgresql") / version / name, ignore_errors=True)


def playbook(name: str, **extra) -> float:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    inventory = Path(tempfile.mkdtemp(prefix="tupgbench-")) / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    started = time.perf_counter()
    run(str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / name),
        "-e", json.dumps(dict(pg_hosts="localhost", **extra)), cwd=REPO, env=env)
    return time.perf_counter() - started


def fill(port: int) -> int:
    as_postgres("/usr/lib/postgresql/15/bin/pgbench", "-i", "-q", "-s", str(SCALE), "-h", SOCKET, "-p", str(port),
                "-U", "postgres", "postgres")
    with psycopg.connect(host=SOCKET, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        return conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]


class Writer(threading.Thread):
    """Inserts one row at a time into bench_writes on port; records when each write succeeded."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.done, self.times = port, threading.Event(), []

    def run(self) -> None:
        conn = None
        while not self.done.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(host=SOCKET, port=self.port, user="postgres", dbname="postgres",
                                           autocommit=True, connect_timeout=1)
                conn.execute("INSERT INTO bench_writes DEFAULT VALUES")
                self.times.append(time.monotonic())
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)  # pacing of the retries only

    def downtime(self) -> float:
        self.done.set()
        self.join()
        return max(b - a for a, b in zip(self.times, self.times[1:]))


def map_root(version: str, name: str) -> None:
    """Let root log in as postgres over the socket (peer, like the install role's map pgdbaas) on an
    instance pg_createcluster made: the bench's connections are root's."""
    conf = Path("/etc/postgresql") / version / name
    with (conf / "pg_ident.conf").open("a") as ident:
        ident.write("bench root postgres\nbench postgres postgres\n")
    hba = conf / "pg_hba.conf"
    hba.write_text("local all postgres peer map=bench\n" + hba.read_text())


def raw_upgrade(name: str, port: int, method: str) -> dict:
    """stop, pg_createcluster 16 on the same port, pg_upgrade, start: {total_s, pg_upgrade_s}."""
    bindir = f"/usr/lib/postgresql/{TARGET}/bin"
    work = Path(tempfile.mkdtemp(prefix="tupgbench-raw-", dir="/var/tmp"))
    shutil.chown(work, "postgres", "postgres")
    # What the upgrade module does first too: this host's 15.20 stamps attribute options the new
    # major's pg_restore refuses.
    with psycopg.connect(host=SOCKET, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        databases = [row[0] for row in conn.execute(CONNECTABLE)]
    for database in databases:
        with psycopg.connect(host=SOCKET, port=port, user="postgres", dbname=database, autocommit=True) as conn:
            conn.execute(STRIP_ATTRIBUTE_OPTIONS, {"known": list(KNOWN_ATTRIBUTE_OPTIONS)})
    started = time.perf_counter()
    run("pg_ctlcluster", "15", name, "stop")
    run("pg_createcluster", f"--port={port}", TARGET, name, "--", "--data-checksums")
    map_root(TARGET, name)
    upgrade_started = time.perf_counter()
    as_postgres(f"{bindir}/pg_upgrade", "-b", "/usr/lib/postgresql/15/bin", "-B", bindir,
                "-d", f"/etc/postgresql/15/{name}", "-D", f"/etc/postgresql/{TARGET}/{name}",
                "-p", str(port), "-P", "50432", f"--{method}", cwd=str(work))
    pg_upgrade_s = time.perf_counter() - upgrade_started
    run("pg_ctlcluster", TARGET, name, "start")
    total = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    return {"total_s": total, "pg_upgrade_s": pg_upgrade_s}


def main() -> None:
    before = layout_root(TARGET).exists()
    results: dict = {"scale": SCALE, "target": TARGET}
    names = [case[0][0] for case in CASES.values()] + [case[1][0] for case in CASES.values()]
    try:
        for method, ((name, port, old_port), (raw_name, raw_port)) in CASES.items():
            forget(name)
            forget(raw_name)
            playbook("provision.yml", pg_cluster=name, pg_port=port, pg_install_method="apt")
            results["database_bytes"] = fill(port)
            run("pg_createcluster", "15", raw_name, f"--port={raw_port}", "--", "--data-checksums")
            map_root("15", raw_name)
            run("pg_ctlcluster", "15", raw_name, "start")
            fill(raw_port)

            writer = Writer(port)
            writer.start()
            total = playbook("upgrade.yml", pg_cluster=name, pg_version="15", pg_upgrade_version=TARGET,
                             pg_upgrade_install_method="binaries", pg_upgrade_binaries_source=str(tree("0.6.0", TARGET)),
                             pg_upgrade_method=method, pg_upgrade_old_port=old_port)
            time.sleep(1)  # writes after the upgrade, so that the gap is closed by one
            results[f"playbook_{method}_s"] = total
            results[f"playbook_{method}_downtime_s"] = writer.downtime()

            writer = Writer(raw_port)
            writer.start()
            raw = raw_upgrade(raw_name, raw_port, method)
            time.sleep(1)
            results[f"raw_{method}_s"] = raw["total_s"]
            results[f"raw_{method}_pg_upgrade_s"] = raw["pg_upgrade_s"]
            results[f"raw_{method}_downtime_s"] = writer.downtime()
            forget(name)
            forget(raw_name)
        print(json.dumps(results, indent=2))
    finally:
        for name in names:
            forget(name)
        if not before:
            remove_layout(TARGET)


if __name__ == "__main__":
    main()
