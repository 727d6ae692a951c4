"""Backup and restore benchmark: the API vs the raw pgBackRest commands, and restore vs pg_dump | pg_restore.

One pgbench database (scale PGBENCH_SCALE, default 50: about 750 MB) in a cluster made through the
API, backups set on it. Side by side in one run, alternating, ROUNDS times each (median):
(a) a full backup: POST /v1/clusters/{id}/backup-histories until SUCCESS vs
    `pgbackrest --stanza=<instance> --type=full backup` as postgres;
(b) a restore into a new instance: POST /v1/clusters/{id}/restore (by backup number) until SUCCESS vs
    pg_createcluster + `pgbackrest restore --type=immediate --set=<label> --target-action=promote` +
    start until read-write;
(c) the same data through `pg_dump -Fc | pg_restore` into an empty database of another instance.

Run as root: .venv/bin/python bench/backup_bench.py   (ports 57400-57419, clusters bench-bk-*, a
repository in /var/tmp; about 10 minutes at scale 50)
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request  # noqa: E402

SCALE = int(os.environ.get("PGBENCH_SCALE", "50"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PORTS = "57400-57419"
RAW_PORT = 57419
BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True,
                          **kwargs)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ok(client, response) -> dict:
    assert response.status_code == 202, response.text
    body = wait_request(client, response.json()["request_id"], timeout=3600)
    assert body["state"] == "SUCCESS", body
    return body


def raw_restore(stanza: str, label: str, name: str) -> None:
    subprocess.run(["pg_createcluster", "15", name, "-p", str(RAW_PORT)], check=True, capture_output=True)
    data = Path("/var/lib/postgresql/15") / name
    for child in data.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    as_postgres("pgbackrest", f"--stanza={stanza}", f"--pg1-path={data}", "--type=immediate", f"--set={label}",
                "--target-action=promote", "restore")
    subprocess.run(["pg_ctlcluster", "15", name, "start"], check=True, capture_output=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # read-write once promoted
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", "/var/run/postgresql", "-p",
                                str(RAW_PORT), "-Atc", "select pg_is_in_recovery()"], capture_output=True, text=True)
        if probe.stdout.strip() == "f":
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not become read-write: {probe.stderr}")


def main() -> None:
    repo = Path(tempfile.mkdtemp(prefix="pgdbaas-bench-repo-", dir="/var/tmp"))
    owner = pwd.getpwnam("postgres")
    os.chown(repo, owner.pw_uid, owner.pw_gid)
    data_dir = Path(tempfile.mkdtemp(prefix="pgdbaas-bench-api-"))
    server = ApiServer(data_dir, port_range=PORTS, extra_env={"PGDBAAS_BACKUP_REPO_PATH": str(repo),
                                                             "PGDBAAS_SCHEDULER_INTERVAL": "0"})
    server.start()
    made: list[tuple[str, str]] = []
    results: dict = {"scale": SCALE, "rounds": ROUNDS}
    try:
        with server.client() as client:
            response = client.post("/v1/clusters", json=cluster_body("bench-bk-src"))
            source_id = response.json()["resource"]["id"]
            made.append((source_id, "bench-bk-src"))
            ok(client, response)
            member = client.get(f"/v1/clusters/{source_id}").json()["instance_groups"][0]["instances"][0]
            stanza, port = member["name"], member["port"]
            as_postgres(str(BIN / "pgbench"), "-i", "-q", "-s", str(SCALE), "-h", "/var/run/postgresql",
                        "-p", str(port), "-U", "postgres", "appdb")
            size = as_postgres("psql", "-h", "/var/run/postgresql", "-p", str(port), "-U", "postgres", "-Atc",
                               "select pg_database_size('appdb')").stdout.strip()
            results["database_bytes"] = int(size)
            results["set_backup_s"] = timed(lambda: ok(client, client.post(
                f"/v1/clusters/{source_id}/backups", json={"archive_frequency_minute": "60"})))

            api_backup, raw_backup = [], []
            for _ in range(ROUNDS):
                api_backup.append(timed(lambda: ok(client, client.post(
                    f"/v1/clusters/{source_id}/backup-histories", json={"type": "full"}))))
                raw_backup.append(timed(lambda: as_postgres("pgbackrest", f"--stanza={stanza}", "--type=full",
                                                            "backup")))
            results["backup_api_s"], results["backup_raw_s"] = statistics.median(api_backup), statistics.median(raw_backup)
            # The API records the raw backups too the next time it reads the stanza: re-read it.
            ok(client, client.post(f"/v1/clusters/{source_id}/archive/sync"))
            newest = client.get(f"/v1/clusters/{source_id}/backup-histories", params={"limit": 1}).json()["contents"][0]

            api_restore, raw_restore_times, dump_restore = [], [], []
            for index in range(ROUNDS):
                name = f"bench-bk-r{index}"

                def through_api():
                    response = client.post(f"/v1/clusters/{source_id}/restore",
                                           json={"name": name, "backup_history_number": newest["backup_history_number"]})
                    made.append((response.json()["resource"]["id"], name))
                    ok(client, response)

                api_restore.append(timed(through_api))
                raw_name = f"bench-bk-raw{index}"
                raw_restore_times.append(timed(lambda: raw_restore(stanza, newest["backup_label"], raw_name)))
                # pg_dump | pg_restore into an empty database of the raw instance.
                as_postgres("psql", "-h", "/var/run/postgresql", "-p", str(RAW_PORT), "-U", "postgres", "-c",
                            "create database dumped")

                def dump_and_restore():
                    dump = subprocess.Popen(["runuser", "-u", "postgres", "--", str(BIN / "pg_dump"), "-Fc", "-h",
                                             "/var/run/postgresql", "-p", str(port), "appdb"], stdout=subprocess.PIPE)
                    subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "pg_restore"), "-h",
                                    "/var/run/postgresql", "-p", str(RAW_PORT), "-d", "dumped"], stdin=dump.stdout,
                                   check=True, capture_output=True)
                    assert dump.wait() == 0

                dump_restore.append(timed(dump_and_restore))
                subprocess.run(["pg_dropcluster", "--stop", "15", raw_name], check=True, capture_output=True)
            results["restore_api_s"] = statistics.median(api_restore)
            results["restore_raw_s"] = statistics.median(raw_restore_times)
            results["dump_restore_s"] = statistics.median(dump_restore)
            results["backup_ratio_api_vs_raw"] = results["backup_api_s"] / results["backup_raw_s"]
            results["restore_ratio_api_vs_raw"] = results["restore_api_s"] / results["restore_raw_s"]
            results["restore_raw_vs_dump"] = results["restore_raw_s"] / results["dump_restore_s"]
            results["samples"] = {"backup_api": api_backup, "backup_raw": raw_backup, "restore_api": api_restore,
                                  "restore_raw": raw_restore_times, "dump_restore": dump_restore}
            print(json.dumps(results, indent=2))
            for cluster_id, _ in reversed(made):
                response = client.delete(f"/v1/clusters/{cluster_id}")
                if response.status_code == 202:
                    wait_request(client, response.json()["request_id"], timeout=600)
    finally:
        server.stop()
        for _, name in made:
            drop_instance(name)
        for index in range(ROUNDS):
            subprocess.run(["pg_dropcluster", "--stop", "15", f"bench-bk-raw{index}"], capture_output=True)
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
