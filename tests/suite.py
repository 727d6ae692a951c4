"""`make test` and `make pytest`: the checks and test files as independent units, a few at a time.

Most of the suite's time is spent waiting (PostgreSQL starting and replaying WAL, pgBackRest,
ansible-runner jobs polled to their end): one unit at a time keeps the 2-core machine two-thirds
idle. The units share nothing, so they run side by side:

- every test module owns its instance names and port ranges (docs/playbooks.md, tests/api/conftest.py),
  and each unit gets its own --basetemp;
- the tests/api modules of SHARED_SERVER_MODULES use the one API server of tests/api/conftest.py
  (fixture `server`, fixed ports): they are one unit, and that fixture refuses a module not listed;
- lint, sanity (on a copy of the collection) and each molecule scenario (instances tmol_*) are units too;
- LOCKS names what some units share of the host: the units of its `exclusive` set run alone among
  those of both sets, the `shared` ones side by side (the suite lays out 16 and 18 for them first).

Units start longest first (EXPECTED_SECONDS, measured on the 2-core CI machine; a unit not listed
counts as 100 s). Each unit's output is printed whole when it ends, then a table of the units'
times and the closing line over every pytest unit. The exit code is non-zero if any unit failed.
Every unit runs in its own process group and is ended with it on SIGINT/SIGTERM.

Usage: .venv/bin/python tests/suite.py [--jobs N] [--pytest-only] [pytest args...]
       (PGDBAAS_TEST_JOBS sets the default of --jobs)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import engines  # noqa: E402
from tests.api.conftest import SHARED_SERVER_MODULES  # noqa: E402

# Seconds each unit took on the 2-core CI machine: only the order they start in, longest first.
EXPECTED_SECONDS = {
    "pytest tests/api/test_backups.py": 1040,
    "pytest shared API server": 1010,
    "pytest tests/api/test_ha_api.py": 950,
    "pytest tests/api/test_replicas_api.py": 350,
    "pytest tests/collection/test_binaries.py": 650,
    "pytest tests/collection/test_upgrade.py": 510,
    "pytest tests/collection/test_replicas.py": 420,
    "pytest tests/collection/test_restore.py": 335,
    "pytest tests/collection/test_ha.py": 330,
    "pytest tests/collection/test_ha_backups.py": 300,
    "pytest tests/collection/test_pgbackrest.py": 290,
    "pytest tests/api/test_schemathesis.py": 270,
    "pytest tests/collection/test_playbooks_lifecycle.py": 240,
    "molecule install": 235,
    "pytest tests/api/test_queue.py": 230,
    "pytest tests/api/test_recovery.py": 220,
    "pytest tests/collection/test_playbooks_data.py": 220,
    "molecule default": 220,
    "pytest tests/collection/test_extension.py": 215,
    "pytest tests/api/test_patch.py": 215,
    "pytest tests/api/test_upgrade_api.py": 205,
    "pytest tests/collection/test_playbooks_contract.py": 195,
    "pytest tests/api/test_secrets.py": 165,
    "pytest tests/api/test_engine.py": 160,
    "molecule binaries": 150,
    "molecule terminate": 115,
    "pytest tests/collection/test_s3_repository.py": 110,
    "sanity": 70,
    "pytest tests/api/test_engine_binaries.py": 80,
    "lint": 75,
}
DEFAULT_EXPECTED = 100

# Units that use one thing of the host: the units of `exclusive` run alone among those of both sets,
# those of `shared` run side by side (and beside units of neither).
@dataclass(frozen=True)
class HostLock:
    exclusive: frozenset
    shared: frozenset


LOCKS = {
    # The binaries install method lays out /usr/lib/postgresql/<major> from one tree at a time. Before
    # the units start, the suite lays out 16 and 18 from the default trees (SHARED_LAYOUTS tells the
    # units so): the shared units only use them; the exclusive ones remove, switch and remake them.
    "/usr/lib/postgresql/16 and 18": HostLock(
        exclusive=frozenset({"pytest tests/collection/test_binaries.py", "pytest tests/api/test_patch.py"}),
        shared=frozenset({"molecule binaries", "pytest tests/api/test_engine_binaries.py",
                          "pytest tests/collection/test_upgrade.py", "pytest tests/api/test_upgrade_api.py"})),
}
SHARED_MAJORS = ("16", "18")


@dataclass
class Unit:
    name: str
    argv: list[str]
    pytest: bool = False
    log: Path | None = None
    process: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # user + system of the unit's processes that were waited for (not daemons)
    code: int | None = None
    counts: dict = field(default_factory=dict)


def pytest_units(python: str, extra: list[str], basetemp: Path) -> list[Unit]:
    shared = [f"tests/api/{name}.py" for name in sorted(SHARED_SERVER_MODULES)]
    groups: dict[str, list[str]] = {"pytest shared API server": shared}
    for folder in ("tests/collection", "tests/api"):
        for path in sorted((ROOT / folder).glob("test_*.py")):
            relative = str(path.relative_to(ROOT))
            if relative not in shared:
                groups[f"pytest {relative}"] = [relative]
    missing = [name for name in shared if not (ROOT / name).exists()]
    if missing:
        raise SystemExit(f"SHARED_SERVER_MODULES names modules that do not exist: {missing}")
    units = []
    for index, (name, files) in enumerate(groups.items()):
        argv = [python, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={basetemp / str(index)}",
                *files, *extra]
        units.append(Unit(name, argv, pytest=True))
    return units


def check_units() -> list[Unit]:
    scenarios = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return [Unit("lint", [str(ROOT / ".venv/bin/ansible-lint"), "--profile", "production"]),
            Unit("sanity", [str(ROOT / "tests/sanity.sh")]),
            *(Unit(f"molecule {s}", [str(ROOT / "tests/molecule.sh"), s]) for s in scenarios)]


NO_TESTS_SELECTED = 5  # pytest's exit code
COUNT_RE = re.compile(r"(\d+) (passed|failed|skipped|errors?)")


def pytest_counts(log: Path) -> dict:
    """The counts of pytest's last summary line ('3 passed, 1 failed in 12.0s')."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if re.search(r"\bin [0-9.]+s\b", line)]
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for count, word in COUNT_RE.findall(lines[-1] if lines else ""):
        key = "failed" if word.startswith("error") else word
        counts[key] += int(count)
    return counts


def run(units: list[Unit], jobs: int, logs: Path) -> None:
    pending = sorted(units, key=lambda u: -EXPECTED_SECONDS.get(u.name, DEFAULT_EXPECTED))
    running: list[Unit] = []

    def stop_all(signum, _frame):
        for unit in running:
            os.killpg(unit.process.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    def may_start(unit: Unit) -> bool:
        names = {u.name for u in running}
        for lock in LOCKS.values():
            if unit.name in lock.exclusive and names & (lock.exclusive | lock.shared):
                return False
            if unit.name in lock.shared and names & lock.exclusive:
                return False
        return True

    def startable() -> Unit | None:
        return next((u for u in pending if may_start(u)), None)

    while pending or running:
        while len(running) < jobs and (unit := startable()) is not None:
            pending.remove(unit)
            unit.log = logs / (re.sub(r"[^A-Za-z0-9_.-]+", "_", unit.name) + ".log")
            with unit.log.open("w") as out:
                unit.process = subprocess.Popen(unit.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            unit.started = time.monotonic()
            running.append(unit)
            print(f"--- started {unit.name} (pid {unit.process.pid})", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        unit = next((u for u in running if u.process.pid == pid), None)
        if unit is None:
            continue
        running.remove(unit)
        unit.cpu_seconds = usage.ru_utime + usage.ru_stime
        unit.process.returncode = unit.code = os.waitstatus_to_exitcode(status)
        if unit.pytest and unit.code == NO_TESTS_SELECTED:  # e.g. -k matched nothing in that file
            unit.code = 0
        unit.seconds = time.monotonic() - unit.started
        if unit.pytest:
            unit.counts = pytest_counts(unit.log)
        verdict = "passed" if unit.code == 0 else f"FAILED (exit {unit.code})"
        print(f"=== {unit.name}: {verdict} in {unit.seconds:.0f} s", flush=True)
        sys.stdout.write(unit.log.read_text(errors="replace"))
        print(flush=True)


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat): how loaded the host was, daemons included."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@contextmanager
def shared_layouts():
    """The layouts of SHARED_MAJORS made from the default trees for the units' time (those it made
    removed at the end); the units see SHARED_LAYOUTS=suite."""
    made = []
    for major in SHARED_MAJORS:
        if not engines.layout_root(major).exists():
            engines.make_layout(major, engines.tree("0.6.0", major))
            made.append(major)
    os.environ[engines.SHARED_LAYOUTS] = "suite"
    try:
        yield
    finally:
        del os.environ[engines.SHARED_LAYOUTS]
        for major in made:
            engines.forget_version_dir(major)
            engines.remove_layout(major)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("PGDBAAS_TEST_JOBS", "3")))
    parser.add_argument("--pytest-only", action="store_true", help="the pytest units only (make pytest)")
    args, extra = parser.parse_known_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="pgdbaas-suite-") as work:
        work = Path(work)
        (work / "logs").mkdir()
        (work / "tmp").mkdir()
        units = pytest_units(sys.executable, extra, work / "tmp")
        if not args.pytest_only:
            units = check_units() + units
        began, cpu_began = time.monotonic(), host_cpu()
        with shared_layouts():
            run(units, args.jobs, work / "logs")
        wall = time.monotonic() - began
        busy, total = (end - start for start, end in zip(cpu_began, host_cpu()))
    print(f"=== {len(units)} units, {args.jobs} at a time, in {wall / 60:.1f} min, the host's CPUs "
          f"{100 * busy / max(total, 1):.0f}% busy (wall s, CPU s of the unit's own processes):")
    for unit in sorted(units, key=lambda u: -u.seconds):
        counts = ", ".join(f"{n} {k}" for k, n in unit.counts.items() if n) if unit.pytest else ""
        print(f"  {unit.seconds:7.0f} s {unit.cpu_seconds:6.0f} s  {'ok  ' if unit.code == 0 else 'FAIL'}  "
              f"{unit.name}  {counts}")
    totals = {k: sum(u.counts.get(k, 0) for u in units) for k in ("passed", "failed", "skipped")}
    failed_units = [u.name for u in units if u.code != 0]
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
          + (f"; units failed: {', '.join(failed_units)}" if failed_units else ""))
    return 0 if all(u.code == 0 for u in units) else 1


if __name__ == "__main__":
    sys.exit(main())
