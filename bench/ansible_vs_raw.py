"""Collection playbooks vs the raw commands they wrap: provision, start, stop and restart.

For each operation, the median wall time of 5 runs of
  - ansible-playbook playbooks/<op>.yml (what the API runs, through ansible-runner), and
  - the raw Debian commands: pg_createcluster + pg_ctlcluster start, pg_ctlcluster <op>, and
    pg_ctl <op> run as postgres (what dbaas.postgresql.service runs when systemd is absent);
plus the fixed costs of ansible-playbook itself (an empty play, fact gathering, one trivial
module, the info module, ansible-runner) to show where the extra time goes.

Run as root from the repository root: .venv/bin/python bench/ansible_vs_raw.py
It creates and drops instances bench_prov_* (port 55520), bench_ops (55521), 15 only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VERSION = "15"
OPS_CLUSTER, OPS_PORT = "bench_ops", 55521
PROV_PORT = 55520
RUNS = 5
os.environ["PATH"] = f"{BIN}:{os.environ['PATH']}"  # ansible-runner looks ansible-playbook up on PATH
ENV = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
PG_CTL = f"/usr/lib/postgresql/{VERSION}/bin/pg_ctl"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(*argv: str) -> float:
    start = time.perf_counter()
    sh(*argv)
    return time.perf_counter() - start


def playbook(path: str | Path, **extra: str | int) -> list[str]:
    args = [str(BIN / "ansible-playbook"), str(path)]
    for key, value in extra.items():
        args += ["-e", f"{key}={value}"]
    return args


def pg_ctl(action: str, cluster: str = OPS_CLUSTER) -> list[str]:
    argv = ["runuser", "-u", "postgres", "--", PG_CTL, action, "-D", f"/etc/postgresql/{VERSION}/{cluster}"]
    if action != "reload":
        argv += ["-w"]
    if action in ("stop", "restart"):
        argv += ["-m", "fast"]
    if action in ("start", "restart"):
        argv += ["-l", f"/var/log/postgresql/postgresql-{VERSION}-{cluster}.log"]
    return argv


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def drop(cluster: str) -> None:
    if Path(f"/etc/postgresql/{VERSION}/{cluster}").exists():
        sh("pg_dropcluster", VERSION, cluster, "--stop")
    subprocess.run(["rm", "-rf", f"/etc/postgresql/{VERSION}/{cluster}"], check=True)


def bench_overheads(tmp: Path) -> dict[str, float]:
    plays = {
        "empty play (gather_facts: false)": "[]",
        "empty play + fact gathering": "[ansible.builtin.setup: {gather_subset: [min]}]",
        "one ansible.builtin.ping task": "[ansible.builtin.ping: {}]",
        "one dbaas.postgresql.info task": f"[dbaas.postgresql.info: {{cluster: {OPS_CLUSTER}}}]",
    }
    out = {}
    for label, tasks in plays.items():
        path = tmp / f"p{len(out)}.yml"
        path.write_text(f"- hosts: pgdbaas_hosts\n  gather_facts: false\n  tasks: {tasks}\n")
        out[label] = median([timed(*playbook(path)) for _ in range(RUNS)])
    out["python + import ansible (ansible-playbook --version)"] = median(
        [timed(str(BIN / "ansible-playbook"), "--version") for _ in range(RUNS)])
    return out


def bench_provision() -> tuple[float, float]:
    raw, ans = [], []
    for i in range(RUNS):
        cluster = f"bench_prov_{i}"
        start = time.perf_counter()
        sh("pg_createcluster", VERSION, cluster, f"--port={PROV_PORT}", "--locale=C.UTF-8", "--encoding=UTF8",
           "--", "--data-checksums", "--auth-local=peer", "--auth-host=scram-sha-256")
        sh("pg_ctlcluster", VERSION, cluster, "start")
        raw.append(time.perf_counter() - start)
        drop(cluster)
        ans.append(timed(*playbook(ROOT / "playbooks/provision.yml", pg_cluster=cluster, pg_port=PROV_PORT)))
        drop(cluster)
    return median(raw), median(ans)


def bench_ops() -> dict[str, tuple[float, float, float]]:
    drop(OPS_CLUSTER)
    # provisioned by the playbook: the modules log in through its pg_ident map
    sh(*playbook(ROOT / "playbooks/provision.yml", pg_cluster=OPS_CLUSTER, pg_port=OPS_PORT))
    samples: dict[str, dict[str, list[float]]] = {op: {"ctlcluster": [], "pg_ctl": [], "ansible": []}
                                                  for op in ("stop", "start", "restart")}
    for _ in range(RUNS):
        for op in ("stop", "start"):  # alternate so that each starts from the right state
            samples[op]["ctlcluster"].append(timed("pg_ctlcluster", VERSION, OPS_CLUSTER, op))
            sh("pg_ctlcluster", VERSION, OPS_CLUSTER, "start" if op == "stop" else "stop")
            samples[op]["pg_ctl"].append(timed(*pg_ctl(op)))
            sh("pg_ctlcluster", VERSION, OPS_CLUSTER, "start" if op == "stop" else "stop")
            samples[op]["ansible"].append(timed(*playbook(ROOT / f"playbooks/{op}.yml", pg_cluster=OPS_CLUSTER)))
        samples["restart"]["ctlcluster"].append(timed("pg_ctlcluster", VERSION, OPS_CLUSTER, "restart"))
        samples["restart"]["pg_ctl"].append(timed(*pg_ctl("restart")))
        samples["restart"]["ansible"].append(timed(*playbook(ROOT / "playbooks/restart.yml", pg_cluster=OPS_CLUSTER)))
    return {op: (median(s["ctlcluster"]), median(s["pg_ctl"]), median(s["ansible"])) for op, s in samples.items()}


def bench_runner_restart() -> float:
    import ansible_runner  # the API's path: same playbook through ansible-runner

    def once() -> float:
        with tempfile.TemporaryDirectory() as pdd:
            start = time.perf_counter()
            result = ansible_runner.run(private_data_dir=pdd, project_dir=str(ROOT), quiet=True,
                                        playbook=str(ROOT / "playbooks/restart.yml"),
                                        inventory=str(ROOT / "inventories/local"),
                                        extravars={"pg_cluster": OPS_CLUSTER}, envvars={"ANSIBLE_CONFIG": ENV["ANSIBLE_CONFIG"]})
            elapsed = time.perf_counter() - start
        assert result.status == "successful", result.status
        return elapsed

    return median([once() for _ in range(RUNS)])


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root")
    try:
        raw_prov, ans_prov = bench_provision()
        ops = bench_ops()
        runner = bench_runner_restart()
        with tempfile.TemporaryDirectory() as tmp:
            overheads = bench_overheads(Path(tmp))
    finally:
        drop(OPS_CLUSTER)
        for i in range(RUNS):
            drop(f"bench_prov_{i}")

    print(f"median of {RUNS} runs, seconds; ratios: ansible-playbook / raw command\n")
    print(f"{'operation':<11}{'pg_ctlcluster':>14}{'pg_ctl':>8}{'ansible':>9}"
          f"{'/pg_ctlcluster':>16}{'/pg_ctl':>9}")
    print(f"{'provision':<11}{raw_prov:>14.2f}{'':>8}{ans_prov:>9.2f}{ans_prov / raw_prov:>16.1f}{'':>9}"
          "  (raw: pg_createcluster + pg_ctlcluster start)")
    for op in ("start", "stop", "restart"):
        ctl, pgctl, ans = ops[op]
        print(f"{op:<11}{ctl:>14.2f}{pgctl:>8.2f}{ans:>9.2f}{ans / ctl:>16.1f}{ans / pgctl:>9.1f}")
    print(f"{'restart.yml via ansible-runner (the API path)':<33}{runner:>9.2f}")
    print("\nfixed costs of ansible-playbook on this machine")
    for label, value in overheads.items():
        print(f"  {label:<55}{value:>6.2f}")


if __name__ == "__main__":
    main()
