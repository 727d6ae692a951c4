"""Runs the playbooks the way the API does (ansible-runner, local inventory, -e vars) against the
instance that converge provisioned, and checks each run's status, changed count and the
set_stats result pgdbaas.hosts.<host> that ansible-runner hands over in the playbook_on_stats
event's artifact_data. Usage: contract.py vars.yml (the scenario's extra-vars)."""

import sys
import tempfile
from pathlib import Path

import ansible_runner
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load(Path(sys.argv[1]).read_text())
BASE.pop("pg_terminate_confirm")
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
CHECKS = 0
WORKDIR = tempfile.TemporaryDirectory(prefix="tmol-runner-")  # noqa: SIM115 - removed at exit


def run(op, inventory=None, without=(), **extra):
    """Run playbooks/<op>.yml with BASE (but the keys of without) and extra as extra-vars; return
    (status, changed tasks, pgdbaas, failure messages)."""
    extravars = {key: value for key, value in {**BASE, **extra}.items() if key not in without}
    result = ansible_runner.run(
        private_data_dir=tempfile.mkdtemp(dir=WORKDIR.name),
        project_dir=str(ROOT),
        playbook=str(ROOT / "playbooks" / f"{op}.yml"),
        inventory=inventory or str(ROOT / "inventories" / "local"),
        extravars=extravars,
        envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        quiet=True,
    )
    stats = next(e["event_data"] for e in result.events if e["event"] == "playbook_on_stats")
    failures = [e["event_data"]["res"].get("msg", "") for e in result.events if e["event"] == "runner_on_failed"]
    changed = sum(stats.get("changed", {}).values())
    return result.status, changed, stats.get("artifact_data", {}).get("pgdbaas", {}), failures


def check(what, condition, detail=""):
    global CHECKS
    CHECKS += 1
    print(("ok   " if condition else "FAIL ") + what + ("" if condition else f": {detail}"))
    if not condition:
        WORKDIR.cleanup()
        sys.exit(1)


def instance(pgdbaas, host="localhost"):
    return pgdbaas.get("hosts", {}).get(host, {}).get("instance", {})


cluster, admin, db = BASE["pg_cluster"], BASE["pg_admin_user"], BASE["pg_database"]

status, changed, out, failures = run("status")
inst = instance(out)
check("status succeeds and changes nothing", (status, changed) == ("successful", 0), (status, changed))
check("status reports the running instance",
      inst.get("state") == "started" and inst.get("cluster") == cluster and inst.get("port") == BASE["pg_port"]
      and inst.get("version") == "15" and inst.get("exists") is True, inst)
check("status lists the database owned by the admin",
      [d["owner"] for d in inst.get("databases", []) if d["name"] == db] == [admin], inst.get("databases"))
check("status reports no setting pending a restart",
      inst.get("pending_restart") is False and inst.get("pending_restart_settings") == [], inst)
check("the result holds no ansible internals",
      not {"changed", "failed", "invocation", "failed_when_result"} & set(inst), sorted(inst))

for op, state, first in (("stop", "stopped", 1), ("stop", "stopped", 0), ("start", "started", 1),
                         ("start", "started", 0), ("restart", "started", 1)):
    status, changed, out, failures = run(op)
    check(f"{op} -> {state}, changed={first}",
          (status, changed, instance(out).get("state")) == ("successful", first, state),
          (status, changed, instance(out).get("state")))

extra = dict(pg_admin_user="tmol_pbadmin2", pg_admin_password="tmol-Secret-4")
status, changed, out, failures = run("create_admin", **extra)
adm = out.get("hosts", {}).get("localhost", {}).get("admin", {})
check("create_admin creates a new admin",
      (status, changed, adm.get("user"), adm.get("created")) == ("successful", 1, "tmol_pbadmin2", True), (status, adm))
check("create_admin also reports the instance",
      "tmol_pbadmin2" in [r["name"] for r in instance(out).get("roles", [])], instance(out).get("roles"))
status, changed, out, failures = run("create_admin", **extra)
check("create_admin fails on an existing admin (if_exists=fail)",
      status == "failed" and any("The user already exists" in m for m in failures), (status, failures))
status, changed, out, failures = run("create_admin", pg_admin_if_exists="update", **extra)
adm = out.get("hosts", {}).get("localhost", {}).get("admin", {})
check("create_admin if_exists=update with the same password changes nothing",
      (status, changed, adm.get("created")) == ("successful", 0, False), (status, changed, adm))

status, changed, out, failures = run("terminate", pg_terminate_confirm="nope")
check("terminate refuses without the confirmation",
      status == "failed" and any("Refusing to terminate" in m for m in failures), (status, failures))
status, changed, out, failures = run("status")
check("... and the instance is still there", instance(out).get("state") == "started", instance(out))

status, changed, out, failures = run("status", pg_cluster="tmol_absent")
check("status of an absent instance reports exists=false",
      status == "successful" and instance(out).get("exists") is False, (status, instance(out)))

member = {"all": {"children": {"pgdbaas_hosts": {"hosts": {
    "localhost": {**LOCAL, "pg_cluster": cluster, "pg_port": BASE["pg_port"]}}}}}}
status, changed, out, failures = run("restart", inventory=member, without=("pg_cluster", "pg_port"))
seen = (status, changed, instance(out).get("cluster"), instance(out).get("state"))
check("restart of the instance the inventory's host variables name (no pg_cluster extra-var)",
      seen == ("successful", 1, cluster, "started"), (seen, failures))

two_hosts = {"all": {"children": {"pgdbaas_hosts": {"hosts": {"localhost": LOCAL, "otherhost": LOCAL}}}}}
status, changed, out, failures = run("status", inventory=two_hosts)
check("with two hosts the result is keyed by host",
      status == "successful" and sorted(out.get("hosts", {})) == ["localhost", "otherhost"]
      and instance(out, "otherhost").get("cluster") == cluster, (status, sorted(out.get("hosts", {}))))

status, changed, out, failures = run("status", pg_cluster="-bad")
check("an invalid pg_cluster is refused", status == "failed" and any("pg_cluster" in m for m in failures),
      (status, failures))

WORKDIR.cleanup()
print(f"{CHECKS} passed, 0 failed")
