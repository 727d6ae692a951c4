"""Executor modes side by side in one run: (a) the in-process pool (one API process, 4 job threads,
SQLite: the embedded default) and (b) the queue mode (2 API + 2 worker processes of 2 jobs each,
the same 4 job slots, on a PostgreSQL store made here with pg_createcluster).

For each mode:
  (s) one restart at a time, POST to SUCCESS, median of 5 (what the mode adds to one job);
  (r) 20 clusters restarted at once (20 restarts, each its own request), wall time from the first
      POST to the last SUCCESS, and each restart's POST-to-SUCCESS time; two rounds;
  (l) POST /v1/clusters -> 202 at 50 concurrent clients (each cancels its request at once; in (b)
      the clients alternate between the two APIs), p50 / p99.

Run: .venv/bin/python bench/queue_bench.py   (about 6 minutes; ports 56820-56899: the store on
56820, APIs on 56821-56823, instances in 56830-56899; clusters named bench-q*)
"""
from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.api.harness import ApiServer, WorkerProcess, cluster_body, drop_instance  # noqa: E402

CLUSTERS, CLIENTS, ROUNDS = 20, 50, 2
STORE_NAME, STORE_PORT, API_PORTS, PORT_RANGE = "bench-q-store", 56820, (56821, 56822, 56823), "56830-56899"
FINAL = ("SUCCESS", "ERROR", "CANCELED")


def wait(client: httpx.Client, request_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/requests/{request_id}").json()
        if body["state"] in FINAL:
            return body
        time.sleep(0.05)
    raise TimeoutError(request_id)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def provision(apis: list[ApiServer], prefix: str) -> list[str]:
    with apis[0].client() as client:
        started = [client.post("/v1/clusters", json=cluster_body(f"{prefix}-{i}")).json() for i in range(CLUSTERS)]
        for body in started:
            done = wait(client, body["request_id"])
            assert done["state"] == "SUCCESS", done
    return [body["resource"]["id"] for body in started]


def seconds(start: str, end: str) -> float:
    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def restarts(apis: list[ApiServer], cluster_ids: list[str]) -> dict:
    """All clusters restarted at once: the wall time, each restart's time (POST to SUCCESS), and
    from the request records (1 s resolution) how long each waited for a slot and ran."""
    def one(index: int) -> tuple[float, dict]:
        with apis[index % len(apis)].client() as client:
            began = time.perf_counter()
            response = client.post(f"/v1/clusters/{cluster_ids[index]}/restart")
            assert response.status_code == 202, response.text
            done = wait(client, response.json()["request_id"])
            assert done["state"] == "SUCCESS", done
            return time.perf_counter() - began, done

    rounds = []
    for _ in range(ROUNDS):
        load = os.getloadavg()[0]
        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(cluster_ids)) as pool:
            results = list(pool.map(one, range(len(cluster_ids))))
        each = [elapsed for elapsed, _ in results]
        ran = [seconds(r["started_at"], r["finished_at"]) for _, r in results]
        rounds.append({"wall_s": time.perf_counter() - began, "p50_s": percentile(each, .5), "max_s": max(each),
                       "run_p50_s": percentile(ran, .5), "load": (load + os.getloadavg()[0]) / 2})
    return {"rounds": rounds}


def single(apis: list[ApiServer], cluster_id: str, runs: int = 5) -> dict:
    """One restart at a time (median of 5): what a mode adds to one job, without the queueing."""
    samples = []
    with apis[-1].client() as client:
        for _ in range(runs):
            began = time.perf_counter()
            assert wait(client, client.post(f"/v1/clusters/{cluster_id}/restart").json()["request_id"])[
                "state"] == "SUCCESS"
            samples.append(time.perf_counter() - began)
    return {"median_s": statistics.median(samples), "load": os.getloadavg()[0]}


def latency(apis: list[ApiServer], prefix: str) -> dict:
    for api in apis:  # the first Basic login of each process pays scrypt once
        with api.client() as client:
            client.get("/v1/clusters").raise_for_status()
    times, request_ids = [], []

    def one(index: int) -> None:
        with apis[index % len(apis)].client() as client:
            began = time.perf_counter()
            response = client.post("/v1/clusters", json=cluster_body(f"{prefix}-lat-{index}"))
            times.append(time.perf_counter() - began)
            assert response.status_code == 202, response.text
            request_ids.append(response.json()["request_id"])
            client.post(f"/v1/requests/{response.json()['request_id']}/cancel")

    load = os.getloadavg()[0]
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(CLIENTS)))
    load = (load + os.getloadavg()[0]) / 2
    with apis[0].client() as client:
        for request_id in request_ids:
            wait(client, request_id)
    return {"p50_ms": percentile(times, .5) * 1000, "p99_ms": percentile(times, .99) * 1000, "posts": len(times),
            "load": load}


def measure(apis: list[ApiServer], prefix: str) -> dict:
    cluster_ids = provision(apis, prefix)
    return {"single": single(apis, cluster_ids[0]), **restarts(apis, cluster_ids), "latency": latency(apis, prefix)}


def drop(prefix: str) -> None:
    for i in range(CLUSTERS):
        drop_instance(f"{prefix}-{i}")
    for i in range(CLIENTS):
        drop_instance(f"{prefix}-lat-{i}")


def in_process(root: Path) -> dict:
    api = ApiServer(root / "inprocess", port_range=PORT_RANGE, listen_port=API_PORTS[0],
                    extra_env={"PGDBAAS_WORKERS": "4"})
    api.start()
    try:
        return measure([api], "bench-qa")
    finally:
        api.stop()
        drop("bench-qa")


def queue(root: Path) -> dict:
    drop_instance(STORE_NAME)
    subprocess.run(["pg_createcluster", "15", STORE_NAME, "--port", str(STORE_PORT), "--start", "--",
                    "--auth-local=trust", "--auth-host=trust"], check=True, capture_output=True)
    processes: list = []
    try:
        with psycopg.connect(host="/var/run/postgresql", port=STORE_PORT, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("create role pgdbaas login password 'bench-store-pw'")
            conn.execute("create database pgdbaas owner pgdbaas")
        env = {"PGDBAAS_EXECUTOR": "queue", "PGDBAAS_SECRET_KEY": Fernet.generate_key().decode(),
               "PGDBAAS_DATABASE_URL": f"postgresql+psycopg://pgdbaas:bench-store-pw@127.0.0.1:{STORE_PORT}/pgdbaas",
               "PGDBAAS_PORT_RANGE": PORT_RANGE}
        apis = [ApiServer(root / f"api{i}", port_range=PORT_RANGE, extra_env=env, listen_port=port)
                for i, port in enumerate(API_PORTS[1:], 1)]
        workers = [WorkerProcess(root / f"worker{i}", extra_env=env, workers=2) for i in (1, 2)]
        processes = [*apis, *workers]
        for process in processes:
            process.launch()
        for api in apis:
            api.wait_healthy(120)
        for worker in workers:
            worker.wait_ready(120)
        return measure(apis, "bench-qb")
    finally:
        for process in processes:
            process.stop()
        drop("bench-qb")
        drop_instance(STORE_NAME)


def main() -> None:
    print(f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"(a) in-process, 4 threads, SQLite": in_process(Path(tmp)),
                   "(b) queue, 2 API + 2 workers x 2, PostgreSQL": queue(Path(tmp))}
    for mode, result in results.items():
        print(mode)
        print(f"  (s) one restart at a time, POST to SUCCESS: median of 5 {result['single']['median_s']:.2f} s "
              f"(load average {result['single']['load']:.1f})")
        for index, r in enumerate(result["rounds"], 1):
            print(f"  (r) round {index}: {CLUSTERS} restarts at once in {r['wall_s']:.1f} s "
                  f"(each, POST to SUCCESS: p50 {r['p50_s']:.1f} s, max {r['max_s']:.1f} s; running: p50 "
                  f"{r['run_p50_s']:.0f} s; load average {r['load']:.1f})")
        lat = result["latency"]
        print(f"  (l) POST /v1/clusters -> 202, {CLIENTS} clients: p50 {lat['p50_ms']:.0f} ms, "
              f"p99 {lat['p99_ms']:.0f} ms ({lat['posts']} posts; load average {lat['load']:.1f})")


if __name__ == "__main__":
    main()
