"""Control-plane benchmark: prints ratios measured side by side in one run.

(a) POST->202 and GET /v1/requests/{id} latency, p50/p99, at 50 concurrent clients;
(b) start/stop/restart end to end through the API vs the same playbook via ansible-playbook vs raw
    pg_ctlcluster (median of 5 each);
(c) 10 clusters restarted at once vs one.

Run: .venv/bin/python bench/api_bench.py   (uses ports 56000-56999 and clusters named bench-*)
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.api.harness import ApiServer, cluster_body, drop_instance  # noqa: E402

CLIENTS = 50


def wait(client: httpx.Client, request_id: str) -> dict:
    while True:
        body = client.get(f"/v1/requests/{request_id}").json()
        if body["state"] in ("SUCCESS", "ERROR", "CANCELED"):
            return body
        time.sleep(0.02)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(server: ApiServer) -> dict:
    """50 clients each create a cluster (202) and cancel it while queued (one worker), then GET."""
    post_times, get_times, request_ids = [], [], []
    with server.client() as client:  # the first Basic login pays scrypt once; clients reuse it
        client.get("/v1/clusters").raise_for_status()

    def one(index: int):
        with server.client() as client:
            started = time.perf_counter()
            response = client.post("/v1/clusters", json=cluster_body(f"bench-lat-{index}"))
            post_times.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
            request_id = response.json()["request_id"]
            request_ids.append(request_id)
            client.post(f"/v1/requests/{request_id}/cancel")
            for _ in range(10):
                started = time.perf_counter()
                client.get(f"/v1/requests/{request_id}").raise_for_status()
                get_times.append(time.perf_counter() - started)

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(CLIENTS)))
    with server.client() as client:
        for request_id in request_ids:
            wait(client, request_id)
    ms = 1000
    return {"post_p50_ms": percentile(post_times, .5) * ms, "post_p99_ms": percentile(post_times, .99) * ms,
            "get_p50_ms": percentile(get_times, .5) * ms, "get_p99_ms": percentile(get_times, .99) * ms,
            "posts": len(post_times), "gets": len(get_times)}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def lifecycle(server: ApiServer, runs: int = 5) -> dict:
    with server.client() as client:
        response = client.post("/v1/clusters", json=cluster_body("bench-life"))
        cluster_id = response.json()["resource"]["id"]
        assert wait(client, response.json()["request_id"])["state"] == "SUCCESS"
        member = client.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]

        def api(op):
            return lambda: wait(client, client.post(f"/v1/clusters/{cluster_id}/{op}").json()["request_id"])

        def playbook(op):
            extravars = json.dumps({"pg_cluster": member["name"], "pg_version": "15"})
            command = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(REPO / "inventories/local"),
                       str(REPO / f"playbooks/{op}.yml"), "-e", extravars]
            env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
            return lambda: subprocess.run(command, check=True, capture_output=True, env=env, cwd=REPO)

        def raw(op):
            return lambda: subprocess.run(["pg_ctlcluster", "15", member["name"], op], check=True,
                                          capture_output=True)

        results = {}
        for label, make in (("api", api), ("ansible-playbook", playbook), ("pg_ctlcluster", raw)):
            for op in ("stop", "start", "restart"):
                samples = []
                for _ in range(runs):
                    if op == "start":
                        make("stop")()
                        samples.append(timed(make("start")))
                    elif op == "stop":
                        samples.append(timed(make("stop")))
                        make("start")()
                    else:
                        samples.append(timed(make("restart")))
                results[(label, op)] = statistics.median(samples)
            # the API's record follows what ansible observed, so resync it after direct changes
            wait(client, client.post(f"/v1/clusters/{cluster_id}/sync-state").json()["request_id"])
        wait(client, client.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])
    return results


def fan_out(server: ApiServer, count: int = 10) -> dict:
    with server.client() as client:
        ids = []
        for index in range(count):
            response = client.post("/v1/clusters", json=cluster_body(f"bench-fan-{index}"))
            ids.append((response.json()["resource"]["id"], response.json()["request_id"]))
        for _, request_id in ids:
            assert wait(client, request_id)["state"] == "SUCCESS"
        one = statistics.median(
            timed(lambda: wait(client, client.post(f"/v1/clusters/{ids[0][0]}/restart").json()["request_id"]))
            for _ in range(3))

        def all_at_once():
            requests = [client.post(f"/v1/clusters/{cid}/restart").json()["request_id"] for cid, _ in ids]
            for request_id in requests:
                assert wait(client, request_id)["state"] == "SUCCESS"

        many = statistics.median(timed(all_at_once) for _ in range(3))
        for cluster_id, _ in ids:
            wait(client, client.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])
    return {"one_s": one, "ten_s": many, "ratio": many / one}


def main() -> None:
    only = sys.argv[1:]  # latency | lifecycle | fan_out; default: all
    names = [f"bench-lat-{i}" for i in range(CLIENTS)] + ["bench-life"] + [f"bench-fan-{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        queued = ApiServer(Path(tmp) / "latency", port_range="56000-56499", extra_env={"PGDBAAS_WORKERS": "1"})
        queued.start()
        try:
            lat = latency(queued) if not only or "latency" in only else None
        finally:
            queued.stop()
        server = ApiServer(Path(tmp) / "ops", port_range="56500-56999", extra_env={"PGDBAAS_WORKERS": "10"})
        server.start()
        try:
            life = lifecycle(server) if not only or "lifecycle" in only else None
            fan = fan_out(server) if not only or "fan_out" in only else None
        finally:
            server.stop()
            for name in names:
                drop_instance(name)
    report(lat, life, fan)


def report(lat: dict | None, life: dict | None, fan: dict | None) -> None:
    if lat:
        print(f"(a) {CLIENTS} concurrent clients: POST->202 p50 {lat['post_p50_ms']:.1f} ms, p99 {lat['post_p99_ms']:.1f} ms "
              f"({lat['posts']} posts); GET request p50 {lat['get_p50_ms']:.1f} ms, p99 {lat['get_p99_ms']:.1f} ms "
              f"({lat['gets']} gets)")
    if life:
        print("(b) median of 5, seconds:       api   ansible-playbook   pg_ctlcluster   api/playbook   playbook/raw")
        for op in ("start", "stop", "restart"):
            api, pb, raw = life[("api", op)], life[("ansible-playbook", op)], life[("pg_ctlcluster", op)]
            print(f"    {op:8s}                 {api:6.2f}   {pb:10.2f}        {raw:8.2f}        {api / pb:6.2f}x"
                  f"       {pb / raw:6.2f}x")
    if fan:
        print(f"(c) restart: one cluster {fan['one_s']:.2f} s, 10 at once {fan['ten_s']:.2f} s, ratio {fan['ratio']:.2f}x")


if __name__ == "__main__":
    main()
