"""The AnsiballZ bytecode cache (api/site/pgdbaas_ansiballz_cache.py) on vs off, side by side.

For each playbook, RUNS runs with the cache and RUNS without (PGDBAAS_ANSIBALLZ_CACHE=off),
alternating, in one process: the median wall time and the median CPU time (user + system of
ansible-playbook and every module process it waited for) of each, and their ratio.
  - 20 module tasks: ansible.builtin.stat twenty times (one module, the fixed cost of a task);
  - playbooks/status.yml of an absent instance: the contract role and dbaas.postgresql.info, what
    every operation's last step runs.
The cache is filled by a first run of each playbook, not counted.

Run as root from the repository root: .venv/bin/python bench/ansiballz_bench.py (about 2 minutes).
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNS = 5
STATS = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Stat
      ansible.builtin.stat:
        path: /tmp
      loop: "{{ range(20) | list }}"
"""


def run(argv: list[str], cache: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one ansible-playbook run and the processes it waited for."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PGDBAAS_ANSIBALLZ_CACHE="on" if cache else "off")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        stats = Path(work) / "stats.yml"
        stats.write_text(STATS)
        playbooks = {
            "20 module tasks (ansible.builtin.stat)": [str(BIN / "ansible-playbook"), str(stats)],
            "status.yml (contract role + dbaas.postgresql.info)": [
                str(BIN / "ansible-playbook"), "-i", "inventories/local", "playbooks/status.yml",
                "-e", "pg_cluster=bench_absent pg_version=15"],
        }
        print("| playbook | wall, cache | wall, no cache | ÷ | CPU, cache | CPU, no cache | ÷ |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, argv in playbooks.items():
            run(argv, True)  # fills the cache
            results = {True: [], False: []}
            for _ in range(RUNS):
                for cache in (True, False):
                    results[cache].append(run(argv, cache))
            wall = {c: statistics.median(w for w, _ in r) for c, r in results.items()}
            cpu = {c: statistics.median(u for _, u in r) for c, r in results.items()}
            print(f"| {label} | {wall[True]:.2f} | {wall[False]:.2f} | {wall[False] / wall[True]:.2f} | "
                  f"{cpu[True]:.2f} | {cpu[False]:.2f} | {cpu[False] / cpu[True]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
