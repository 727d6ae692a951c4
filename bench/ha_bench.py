"""High availability with the shipped Patroni settings (ttl 10 s, loop_wait 2 s, retry_timeout 4 s,
synchronous mode on): enable_ha's time against the data size, and over RUNS runs each the switchover
write gap and the failover RTO (kill -9 of the leader's Patroni and postgres -> first acknowledged
write), with the acknowledged writes lost (0 expected in synchronous mode).

A write loop inserts one row every 10 ms over libpq's multi-host connection
(target_session_attrs=read-write, tests/patroni_processes.Writer). The gap of a switchover is the
longest time between two acknowledged writes after switchover.yml starts; the RTO of a failover is
from the kill to the first acknowledged write after it. After each failover the old leader comes
back with start.yml and follows (pg_rewind) before the next run.

Run as root from the repository root: .venv/bin/python bench/ha_bench.py [--scale 70] (pgbench scale
70 is about 1 GB; about 10 minutes). Instances bha, bha-m1 (ports 58250-58251, REST 58252-58253),
etcd member bha-etcd (58254-58255), removed at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.collection.conftest import AnsibleRunner, PgInstance, PlaybookRunner  # noqa: E402
from tests.patroni_processes import Writer, pid_of, wipe_etcd, wipe_members  # noqa: E402
from tests.patroni_processes import poll as wait_until  # noqa: E402

RUNS = 5
CLUSTER, STANDBY = "bha", "bha-m1"
PORTS = {CLUSTER: 58250, STANDBY: 58251}
REST = {CLUSTER: 58252, STANDBY: 58253}
ETCD = dict(name="bha-etcd", client=58254, peer=58255)
SECRETS = dict(pg_superuser_password="bha-su-secret", pg_replication_password="bha-repl-secret",
               pg_rewind_password="bha-rewind-secret", pg_ha_rest_password="bha-rest-secret")
HA_VARS = dict(pg_port=PORTS[CLUSTER], pg_ha_standby_ports=[PORTS[STANDBY]],
               pg_ha_rest_ports=[REST[CLUSTER], REST[STANDBY]], pg_ha_etcd_name=ETCD["name"],
               pg_ha_etcd_client_port=ETCD["client"], pg_ha_etcd_peer_port=ETCD["peer"], pg_ha_synchronous_mode=True)
DSN = ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres password=%s dbname=postgres "
       "target_session_attrs=read-write connect_timeout=2" % (PORTS[CLUSTER], PORTS[STANDBY],
                                                              SECRETS["pg_superuser_password"]))


def poll(predicate, timeout: float, what: str = ""):
    """predicate()'s first true value within timeout seconds; the bench ends if there is none."""
    value = wait_until(predicate, timeout)
    if not value:
        raise SystemExit(f"gave up after {timeout} s waiting for {what or predicate.__name__}")
    return value


def wipe() -> None:
    wipe_members([CLUSTER, STANDBY])
    wipe_etcd(ETCD["name"])


def leader(run) -> str | None:
    return run("ha_status", pg_controller="patroni").report["ha"].get("leader")


def both_running(run) -> bool:
    members = run("ha_status", pg_controller="patroni").report["ha"].get("members") or []
    return len(members) == 2 and all(m["state"] in ("running", "streaming") for m in members) and \
        any(m["role"] == "sync_standby" for m in members)


def lost(writer: Writer) -> int:
    """Acknowledged ids missing from the table, read on the leader once one accepts connections again
    (right after a failover the new leader may still be settling: retried, bounded)."""
    def present() -> tuple | None:  # a 1-tuple: true also when no id is there
        try:
            with psycopg.connect(DSN, autocommit=True) as conn:
                return ({row[0] for row in conn.execute(f"SELECT id FROM {writer.table}")},)
        except psycopg.OperationalError:
            return None
    [ids] = poll(present, 60, what="a read-write member to count the writes")
    return len(set(writer.acked) - ids)


def make_cluster(run, scale: int) -> tuple[float, int]:
    """A standalone instance with pgbench data of `scale`, made HA: (enable_ha seconds, data bytes)."""
    provision = run("provision", pg_port=PORTS[CLUSTER])
    assert not provision.failed, provision.raw
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pgbench", "-q", "-i",
                    "-s", str(scale), "-p", str(PORTS[CLUSTER]), "-h", "/var/run/postgresql", "postgres"],
                   check=True, capture_output=True)
    with PgInstance(CLUSTER, PORTS[CLUSTER]).connect() as conn:
        size = conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]
    started = time.monotonic()
    enable = run("enable_ha", secrets=SECRETS, **HA_VARS)
    seconds = time.monotonic() - started
    assert not enable.failed, enable.raw
    return seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale of the large cluster (70: ~1 GB)")
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    with tempfile.TemporaryDirectory() as work:
        run = PlaybookRunner(AnsibleRunner(Path(work)), PgInstance(CLUSTER, PORTS[CLUSTER]))
        wipe()
        try:
            enable_times = {}
            for scale in sorted({1, args.scale}):  # --scale 1: only the small cluster (RTO and gap runs)
                seconds, size = make_cluster(run, scale)
                enable_times[scale] = (seconds, size)
                print(f"enable_ha, pgbench scale {scale} ({size / 2**20:.0f} MiB): {seconds:.1f} s", flush=True)
                if scale != args.scale:
                    ended = run("terminate", pg_controller="patroni", pg_terminate_confirm=CLUSTER)
                    assert not ended.failed, ended.raw
                    wipe_members([CLUSTER, STANDBY])
            with psycopg.connect(DSN, autocommit=True) as conn:  # a table per run: the writer's ids start at 1
                for k in range(RUNS):
                    conn.execute(f"CREATE TABLE bench_switch_{k} (id int PRIMARY KEY)")
                    conn.execute(f"CREATE TABLE bench_fail_{k} (id int PRIMARY KEY)")

            gaps, rtos, lost_writes = [], [], 0
            for k in range(RUNS):
                poll(lambda: both_running(run), 120)
                writer = Writer(DSN, f"bench_switch_{k}")
                writer.start()
                poll(lambda: len(writer.acked) > 20, 60, what="the first writes")
                started = time.monotonic()
                switched = run("switchover", pg_controller="patroni")
                assert not switched.failed, switched.raw
                acked = len(writer.acked)
                poll(lambda: len(writer.acked) > acked + 20, 60,
                     what=f"writes after the switchover ({writer.errors} errors)")
                writer.stop()
                gaps.append(writer.gap(started))
                lost_writes += lost(writer)
                report = switched.report["switchover"]
                print(f"switchover {report['previous_leader']} -> {report['leader']} (changed {report['changed']}): "
                      f"write gap {gaps[-1]:.2f} s, {writer.errors} write errors", flush=True)
            for k in range(RUNS):
                poll(lambda: both_running(run), 180)
                old = leader(run)
                patroni_pid = pid_of(f"/run/patroni/15-{old}.pid")
                postmaster_pid = pid_of(f"/var/lib/postgresql/15/{old}/postmaster.pid")
                writer = Writer(DSN, f"bench_fail_{k}")
                writer.start()
                poll(lambda: len(writer.acked) > 20, 60, what="the first writes")
                killed = time.monotonic()
                os.kill(patroni_pid, signal.SIGKILL)
                os.kill(postmaster_pid, signal.SIGKILL)
                poll(lambda: any(t > killed for t in writer.times), 60)
                rtos.append(next(t for t in writer.times if t > killed) - killed)
                writer.stop()
                lost_writes += lost(writer)
                print(f"failover: first write {rtos[-1]:.2f} s after kill -9", flush=True)
                started = run("start", pg_controller="patroni")  # the old leader rejoins as a standby
                assert not started.failed, started.raw
        finally:
            wipe()

    print("\n| measure | runs | median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for label, values in (("switchover write gap (s)", gaps), ("failover RTO, kill -9 -> first write (s)", rtos)):
        print(f"| {label} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(f"\nacknowledged writes lost: {lost_writes}")
    small, large = enable_times[1], enable_times[args.scale]
    print(f"enable_ha: {small[0]:.1f} s at {small[1] / 2**20:.0f} MiB, {large[0]:.1f} s at {large[1] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
