"""The in-process executor: operations run in worker threads of the API process, each by
`api.engine.run.run_operation` from its id alone; and the playbook runner every executor uses.

`run_playbook` runs "playbook P with inventory I and vars V (secrets S)" for one step of an
operation. It knows nothing about PostgreSQL. Each operation gets its own private_data_dir (one
artifacts ident per step), runs ansible-runner in the calling thread (never on the event loop)
with a cancel_callback (so runner does not install its own signal handlers over uvicorn's),
streams masked task events into the store and reads the playbook's `set_stats` result.

Crash safety (a `kill -9` of the API must leave no secret and no process behind):
- the job's environment is only what it needs (`_JobConfig`): ansible-runner writes it into
  `artifacts/*/command` at the start of the run, so the API's own environment (its admin
  password, its store DSN) must never be in it; `env/envvars` is not written at all;
- module arguments travel through a pipe (ANSIBLE_PIPELINING), never an AnsiballZ file left in
  ~/.ansible/tmp by a killed job; events are masked before runner writes them;
- every process of a job carries JOB_MARK=<operation id> in its environment (ansible 2.19
  workers call setsid, so a job is several process groups: the mark, not a group, says what
  is the job's); every job runs under `GUARD`, which leads the job's first process group (the
  pty session runner opens) and gets PR_SET_PDEATHSIG: when the API dies, it kills every
  process of the job; a canceled or ended job is swept the same way (`_sweep`);
- the operation row records its owner (host, boot id, pid and its start time) and the job's
  process group, so the next start-up can prove which leftover processes are its own orphans,
  end them (`end_orphaned_jobs`) before anything else touches the cluster, and scrub the job
  directories with the secrets file it finds left (`clean_leftovers`).
The servers a job starts on purpose (PostgreSQL, and an HA cluster's Patroni and etcd daemons,
`SERVICE_COMMS`) carry the mark too but live in their own sessions: they are never signalled.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ansible_runner.config.runner import RunnerConfig
from ansible_runner.runner import Runner
from ansible_runner.utils import dump_artifacts
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.engine.kinds import Outcome
from api.settings import REPO_ROOT
from api.store.models import Operation, OperationEvent

log = logging.getLogger("pgdbaas.executor")

MASK = "********"
# The ansible-playbook of the interpreter running the API (its venv), whatever PATH says.
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# Events worth keeping: task boundaries and per-host results.
RECORDED_EVENTS = {
    "playbook_on_start", "playbook_on_play_start", "playbook_on_task_start", "runner_on_ok",
    "runner_on_changed", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable",
    "playbook_on_stats",
}
# Variables of the API's environment a job inherits; everything else it gets is explicit.
INHERITED_ENV = {"HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSH_AUTH_SOCK"}

# In the environment of every process of a job: its operation id.
JOB_MARK = "PGDBAAS_JOB_ID"
# The long-running servers a job starts (by their /proc comm): never a job's leftover to end.
SERVICE_COMMS = (b"postgres", b"postmaster", b"patroni", b"etcd")
# The leader of every job: it runs ansible-playbook (argv[2:]) as its child and, through
# PR_SET_PDEATHSIG, gets SIGTERM when the API thread that started it dies (kill -9 included),
# upon which it SIGKILLs every process carrying the job's mark (the servers of SERVICE_COMMS aside), then
# its own group: no job outlives the API. It first prints its pid (its group) to be recorded.
GUARD_MARKER = "pgdbaas-job-group"
GUARD = f"""
import ctypes, os, signal, sys, time
MARK = ("{JOB_MARK}=" + os.environ["{JOB_MARK}"]).encode()
def marked():
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open("/proc/" + entry + "/environ", "rb") as f:
                    environ = f.read().split(bytes(1))
                with open("/proc/" + entry + "/comm", "rb") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if MARK in environ and comm not in {SERVICE_COMMS!r}:
                yield int(entry)
def end(*_):
    for _ in range(500):
        pids = list(marked())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, end)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    end()
print("{GUARD_MARKER}", os.getpid(), flush=True)
child = os.fork()
if child == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
status = os.waitpid(child, 0)[1]
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


@dataclass
class Job:
    """One playbook run of one step of an operation."""

    operation_id: str
    ident: str  # the step's artifacts directory name
    playbook: str
    inventory: dict
    extravars: dict
    secrets: dict = field(default_factory=dict)


def mask(text: str | None, secrets: list[str]) -> str | None:
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def secret_values(secrets) -> list[str]:
    """Every password in a job's secrets (values may be nested: {"pg_user_passwords": {user: pw}}),
    with the forms JSON files spell them in, longest first so no secret is masked only in part."""
    found: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif value is not None and value != "":
            text = str(value)
            found.update({text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]})

    walk(secrets)
    return sorted((s for s in found if s), key=len, reverse=True)


def _mask_deep(value, secrets: list[str]):
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, dict):
        return {key: _mask_deep(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_deep(item, secrets) for item in value]
    return value


# -- processes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcStat:
    state: str
    ppid: int
    pgrp: int
    start: int  # clock ticks after boot: with the boot id, it tells a pid's process from a reuse

    @property
    def dead(self) -> bool:
        return self.state in ("Z", "X", "x")


def proc_stat(pid: int) -> ProcStat | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (OSError, ValueError):
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return ProcStat(state=fields[0].decode(), ppid=int(fields[1]), pgrp=int(fields[2]), start=int(fields[19]))


def _proc_bytes(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _processes() -> dict[int, ProcStat]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Worker:
    """An API process that owns jobs: which host, which boot of it, which process."""

    host: str
    boot_id: str
    pid: int
    start: int | None

    @classmethod
    def current(cls) -> Worker:
        stat = proc_stat(os.getpid())
        return cls(host=socket.gethostname(), boot_id=_boot_id(), pid=os.getpid(),
                   start=stat.start if stat else None)

    def columns(self) -> dict:
        return {"worker_host": self.host, "worker_boot_id": self.boot_id, "worker_pid": self.pid,
                "worker_start": self.start}

    def same_boot(self, operation: Operation) -> bool:
        """The operation's owner ran on this host since its last boot (its pids mean something here)."""
        return operation.worker_host == self.host and operation.worker_boot_id == self.boot_id


class PlaybookRunner:
    """What every executor shares: running one step's playbook for an operation (`run_playbook`,
    `count_tasks`), the guarded run of an operation (`run_guarded`), the crash helpers used at
    start-up (`owner_alive`, `end_orphaned_jobs`, `clean_leftovers`). `Executor` below adds the
    in-process pool; the queue executor (api.engine.queue) adds procrastinate workers."""

    def __init__(self, sessions: sessionmaker[Session], *, jobs_dir: Path, playbook_dir: Path,
                 job_timeout: int = 3600):
        self._sessions = sessions
        self._jobs_dir = jobs_dir
        self._playbook_dir = playbook_dir
        self._job_timeout = job_timeout
        self._task_counts: dict[tuple[str, float], int] = {}
        self._ctx = None
        self.event_signal = threading.Condition()
        self.worker = Worker.current()
        jobs_dir.mkdir(parents=True, exist_ok=True)

    def attach(self, ctx) -> None:
        """The service context the operations run with (built after the executor)."""
        self._ctx = ctx

    def withdraw(self, operation_id: str) -> None:
        """A QUEUED operation was canceled in the store (it will never start: only a QUEUED
        operation starts). Nothing more to do in-process; a queue drops its job."""

    def run_guarded(self, operation_id: str, should_cancel) -> None:
        """`run_operation`, and the operation ends even if something here is wrong."""
        from api.engine import kinds, run  # the engine imports the services, which import this module

        try:
            run.run_operation(self._ctx, operation_id, should_cancel=should_cancel)
        except Exception:
            log.exception("operation %s crashed", operation_id)
            with self._sessions() as session:
                operation = session.get(Operation, operation_id)
                kind_name = operation.kind if operation is not None else None
            if kind_name is not None:
                run.finish(self._ctx, operation_id, kinds.get(kind_name),
                           Outcome(status="failed", error="internal error while running the job"))

    def count_tasks(self, playbook: str, inventory: dict) -> int:
        """The tasks `ansible-playbook --list-tasks` lists for a playbook (imports and roles
        expanded; a dynamic include counts as one): listed once per playbook version and process."""
        path = self._playbook_dir / playbook
        key = (playbook, path.stat().st_mtime)
        if key not in self._task_counts:
            with tempfile.TemporaryDirectory(prefix="pgdbaas-list-") as scratch:
                inventory_file = Path(scratch) / "hosts.yml"
                inventory_file.write_text(yaml.safe_dump(inventory))
                out = subprocess.run(
                    [str(ANSIBLE_PLAYBOOK), "--list-tasks", "-i", str(inventory_file), str(path)],
                    capture_output=True, text=True, timeout=120, cwd=scratch,
                    env={**{k: v for k, v in os.environ.items() if k in INHERITED_ENV or k == "PATH"},
                         **self._ansible_env()}).stdout
            self._task_counts[key] = sum(1 for line in out.splitlines() if line.startswith("      ")
                                         and "TAGS:" in line)
        return self._task_counts[key]

    def run_playbook(self, operation_id: str, *, ident: str, playbook: str, inventory: dict, extravars: dict,
                     secrets: dict, should_cancel, tasks_before: int = 0) -> tuple[Outcome, int]:
        """Run one step's playbook; returns its outcome and the operation's tasks started so far."""
        job = Job(operation_id=operation_id, ident=ident, playbook=playbook, inventory=inventory,
                  extravars=extravars, secrets=secrets)
        secret_list = secret_values(job.secrets)
        job_dir = self._jobs_dir / job.operation_id
        secrets_file = self._write_private_files(job, job_dir)
        recorder = _EventRecorder(self, job.operation_id, secret_list, tasks_before)
        try:
            runner = self._runner(job, job_dir, secrets_file, recorder, should_cancel)
            runner.run()
            status = runner.status
        finally:
            # Whatever of the job outlived its leader (canceled, timed out: runner kills one
            # process group, and ansible's workers each have their own) ends now.
            self._sweep(job.operation_id)
            # Scrub before the secrets file goes: a crash in between leaves the file, and with it
            # what the next start-up needs to scrub this directory again.
            _scrub(job_dir, secret_list)
            if secrets_file:
                secrets_file.unlink(missing_ok=True)

        outcome = Outcome(status=status, stats=recorder.stats, error=recorder.error)
        if status == "canceled":
            outcome.error = "canceled"
        elif status == "timeout":
            outcome.error = f"the job exceeded {self._job_timeout} s"
        elif not outcome.ok and not outcome.error:
            # Failed before any task (syntax, inventory, vars): the last line ansible printed.
            outcome.error = _last_output_line(job_dir, job.ident) or f"the playbook ended with status {status}"
        return outcome, recorder.tasks_started

    def _ansible_env(self) -> dict[str, str]:
        return {
            "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT),
            "ANSIBLE_NOCOLOR": "1",
            # Module arguments (passwords) through a pipe: no AnsiballZ file holding them in
            # ~/.ansible/tmp, where a killed job would leave it.
            "ANSIBLE_PIPELINING": "True",
        }

    def _runner(self, job: Job, job_dir: Path, secrets_file: Path | None, recorder: _EventRecorder,
                should_cancel) -> Runner:
        """ansible_runner.run's set-up, with the job's environment and command made here."""
        kwargs = dict(
            private_data_dir=str(job_dir),
            ident=job.ident,
            playbook=str(self._playbook_dir / job.playbook),
            inventory=str(job_dir / "inventory" / f"{job.ident}.yml"),
            extravars=job.extravars,  # non-secret; written to env/extravars
            cmdline=f"-e @{secrets_file}" if secrets_file else None,
            quiet=True,
            timeout=self._job_timeout,
            # pexpect_timeout: how long runner may read output before it asks cancel_callback
            # again (runner's default, 5 s, is the latency of a cancel).
            settings={"suppress_ansible_output": True, "pexpect_timeout": 1},
        )
        dump_artifacts(kwargs)
        config = _JobConfig(job_env={**self._ansible_env(), JOB_MARK: job.operation_id}, **kwargs)
        config.prepare()
        config.command = [sys.executable, "-c", GUARD, str(os.getpid()), *config.command]

        def canceled() -> bool:
            if not should_cancel():
                return False
            self._sweep(job.operation_id, timeout=0)  # the whole job, not only runner's group
            return True

        return Runner(config, event_handler=recorder, cancel_callback=canceled)

    def _sweep(self, operation_id: str, timeout: float = 10) -> None:
        left = _end_processes({operation_id: _JobProcesses(operation_id, self._jobs_dir / operation_id)}, timeout)
        if left:
            log.error("request %s: processes %s outlived the job", operation_id, sorted(left[operation_id]))

    def _record_group(self, operation_id: str, pgid: int) -> None:
        stat = proc_stat(pgid)
        with self._sessions.begin() as session:
            session.execute(update(Operation).where(Operation.id == operation_id)
                            .values(job_pgid=pgid, job_start=stat.start if stat else None))

    # -- start-up: what a dead API process left -------------------------------------------
    def owner_alive(self, operation: Operation) -> bool:
        """Whether the API process that owns the operation provably still runs (on this host: a
        live owner elsewhere cannot be seen, see `end_orphaned_jobs`)."""
        if not self.worker.same_boot(operation) or not operation.worker_pid:
            return False
        if operation.worker_pid == self.worker.pid:
            return False  # this process has just started: whoever had the pid before is gone
        stat = proc_stat(operation.worker_pid)
        return stat is not None and not stat.dead and stat.start == operation.worker_start

    def end_orphaned_jobs(self, operations: list[Operation], timeout: float = 20) -> set[str]:
        """SIGKILL every process of these operations' jobs and wait until none is left.

        A process is the job's when it is provably so: it carries the job's mark in its
        environment, or runs the job's own ansible command line (it names the job directory,
        unique per operation; jobs from before the mark), or is the recorded group leader (pid and
        start time, this host since this boot). The servers of SERVICE_COMMS are never signalled.

        Returns the ids of the operations none of whose processes is left. An operation owned on
        another host is not among them: its processes cannot be seen from here (in-process mode:
        one API process per store is the supported layout, and recovery does not observe such a
        cluster; several processes and hosts: the queue mode, whose workers' heartbeats say who
        is alive, api.engine.queue).
        """
        jobs: dict[str, _JobProcesses] = {}
        done: set[str] = set()
        for operation in operations:
            if operation.worker_host is not None and operation.worker_host != self.worker.host:
                log.warning("request %s was run by %s (pid %s): its processes cannot be checked from here",
                            operation.id, operation.worker_host, operation.worker_pid)
                continue
            if operation.worker_host is not None and operation.worker_boot_id != self.worker.boot_id:
                done.add(operation.id)  # the host rebooted since: none of its processes is left
                continue
            leader = (operation.job_pgid, operation.job_start) if operation.job_pgid else None
            jobs[operation.id] = _JobProcesses(operation.id, self._jobs_dir / operation.id, leader)
        left = _end_processes(jobs, timeout, announce="request %s was interrupted: ending its orphaned job, "
                                                      "process group %d (%s)")
        for operation_id, pids in left.items():
            log.error("request %s: processes %s still alive; its cluster is not observed", operation_id, sorted(pids))
        return done | (set(jobs) - set(left))

    def clean_leftovers(self, keep: set[str]) -> None:
        """Secrets files left by a crash go, after their job directory is scrubbed with them (the
        secrets file is the one place a job's passwords were); no job directory keeps an
        environment. `keep`: operations of a live API process, whose files are still in use."""
        secrets_dir = self._jobs_dir / ".secrets"
        for path in sorted(secrets_dir.glob("*")) if secrets_dir.is_dir() else []:
            operation_id = path.name.removesuffix(".json")
            if operation_id in keep:
                continue
            try:
                secrets = secret_values(json.loads(path.read_text()))
            except (OSError, ValueError):
                secrets = []
            job_dir = self._jobs_dir / operation_id
            if job_dir.is_dir():
                for partial in job_dir.glob("artifacts/*/job_events/*-partial.json*"):
                    partial.unlink(missing_ok=True)
                _scrub(job_dir, secrets)
            path.unlink(missing_ok=True)
            log.warning("removed the secrets left by interrupted request %s", operation_id)
        for job_dir in self._jobs_dir.iterdir():
            if job_dir.is_dir() and not job_dir.name.startswith(".") and job_dir.name not in keep:
                _strip_environment(job_dir)

    def _write_private_files(self, job: Job, job_dir: Path) -> Path | None:
        # One private_data_dir per operation, one inventory and artifacts ident per step.
        (job_dir / "inventory").mkdir(parents=True, exist_ok=True)
        (job_dir / "inventory" / f"{job.ident}.yml").write_text(yaml.safe_dump(job.inventory))
        if not job.secrets:
            return None
        # Secrets go to a 0600 file outside the runner's private_data_dir, read with -e @file and
        # deleted after the run: never argv, never env/extravars, never artifacts.
        secrets_dir = self._jobs_dir / ".secrets"
        secrets_dir.mkdir(mode=0o700, exist_ok=True)
        path = secrets_dir / f"{job.operation_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(job.secrets, handle)
        return path

    def _notify(self) -> None:
        with self.event_signal:
            self.event_signal.notify_all()


class Executor(PlaybookRunner):
    """The in-process pool (the embedded default): `submit(operation_id)` runs the operation in a
    worker thread of this process. The queue executor (api.engine.queue) offers the same interface
    and runs the same `run_operation` in worker processes."""

    def __init__(self, sessions: sessionmaker[Session], *, jobs_dir: Path, playbook_dir: Path,
                 workers: int, job_timeout: int = 3600):
        super().__init__(sessions, jobs_dir=jobs_dir, playbook_dir=playbook_dir, job_timeout=job_timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgdbaas-job")
        self._cancel: set[str] = set()
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- public interface -------------------------------------------------------------------
    def submit(self, operation_id: str) -> None:
        with self._lock:
            self._done[operation_id] = threading.Event()
        # The job is this process's from now on: a start-up elsewhere leaves it alone while we live.
        with self._sessions.begin() as session:
            session.execute(update(Operation).where(Operation.id == operation_id).values(**self.worker.columns()))
        self._pool.submit(self._run_guarded, operation_id)

    def request_cancel(self, operation_id: str) -> None:
        with self._lock:
            self._cancel.add(operation_id)

    def wait(self, operation_id: str, timeout: float | None = None) -> bool:
        with self._lock:
            done = self._done.get(operation_id)
        return True if done is None else done.wait(timeout)

    def shutdown(self) -> None:
        """Let running jobs finish (a half-done provision helps nobody); queued ones stay QUEUED
        in the store and end as "interrupted" at the next start-up."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            waiting, self._done = list(self._done.values()), {}
        for done in waiting:  # nobody waits forever for a job that will not run in this process
            done.set()

    # -- one operation ----------------------------------------------------------------------
    def _run_guarded(self, operation_id: str) -> None:
        try:
            self.run_guarded(operation_id, should_cancel=lambda: operation_id in self._cancel)
        finally:
            with self._lock:
                self._cancel.discard(operation_id)
                done = self._done.pop(operation_id, None)
            if done:
                done.set()
            self._notify()


class _JobConfig(RunnerConfig):
    """RunnerConfig whose job environment holds only what the job needs.

    ansible-runner seeds a job's environment with the whole environment of the API (os.environ)
    and writes it, as soon as the run starts, into artifacts/<ident>/command. Here the job gets
    its explicit variables, runner's own (callback plugin, artifact dir ...) and a few harmless
    ones (HOME, locale ...): nothing secret is there to be written."""

    def __init__(self, *args, job_env: dict[str, str], **kwargs):
        self._job_env = job_env
        super().__init__(*args, **kwargs)

    def prepare_env(self):
        self.envvars = dict(self._job_env)
        super().prepare_env()
        inherited = os.environ
        self.env = {
            key: value for key, value in self.env.items()
            if key in self._job_env or key in INHERITED_ENV or key.startswith("LC_")
            or (inherited.get(key) != value and not key.startswith("PGDBAAS_"))
        }


def _is_service(pid: int) -> bool:
    return _proc_bytes(pid, "comm").strip() in SERVICE_COMMS


@dataclass(frozen=True)
class _JobProcesses:
    """How to recognise the processes of one job (see Executor.end_orphaned_jobs)."""

    operation_id: str
    job_dir: Path
    leader: tuple[int, int | None] | None = None  # recorded (pgid, start time)

    def find(self, processes: dict[int, ProcStat]) -> dict[int, list[int]]:
        """Live process groups holding a process of the job -> their live members (no PostgreSQL
        server among the groups' members counted: such a group is not the job's to end)."""
        mark = f"{JOB_MARK}={self.operation_id}".encode()
        command_mark = f"{self.job_dir}/".encode()
        own = (os.getpid(), os.getpgrp())
        found: set[int] = set()
        if self.leader is not None:
            stat = processes.get(self.leader[0])
            if stat is not None and not stat.dead and stat.start == self.leader[1]:
                found.add(self.leader[0])
        for pid, stat in processes.items():
            if stat.dead or pid in own or stat.pgrp in found:
                continue
            if mark in _proc_bytes(pid, "environ").split(b"\0") or command_mark in _proc_bytes(pid, "cmdline"):
                if not _is_service(pid):
                    found.add(stat.pgrp)
        found.discard(own[1])
        groups = {}
        for pgid in found:
            members = [pid for pid, stat in processes.items() if stat.pgrp == pgid and not stat.dead
                       and not _is_service(pid)]
            if members:
                groups[pgid] = members
        return groups


def _end_processes(jobs: dict[str, _JobProcesses], timeout: float, announce: str | None = None) -> dict[str, set[int]]:
    """SIGKILL the jobs' processes until none is left or timeout passed (0: one round).
    Returns what is still alive, by operation id."""
    deadline = time.monotonic() + timeout
    announced: set[int] = set()
    while True:
        processes = _processes()
        found = {op_id: groups for op_id, job in jobs.items() if (groups := job.find(processes))}
        if not found or (time.monotonic() > deadline and announced):
            return {op_id: {pid for members in groups.values() for pid in members} for op_id, groups in found.items()}
        for op_id, groups in found.items():
            for pgid, members in groups.items():
                if announce and pgid not in announced:
                    log.warning(announce, op_id, pgid, " ".join(map(str, sorted(members))))
                announced.add(pgid)
                _kill_group(pgid, members, processes)
        if timeout <= 0:
            return {}
        time.sleep(0.05)  # the kernel delivers SIGKILL asynchronously: look again


def _kill_group(pgid: int, members: list[int], processes: dict[int, ProcStat]) -> None:
    """SIGKILL a job's process group, or its members alone if a server of SERVICE_COMMS were in it."""
    if not any(stat.pgrp == pgid and _is_service(pid) for pid, stat in processes.items()):
        try:
            os.killpg(pgid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except PermissionError:
            pass
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _EventRecorder:
    """ansible-runner event_handler: masks secrets, stores events, counts progress, keeps stats."""

    def __init__(self, executor: PlaybookRunner, operation_id: str, secrets: list[str], tasks_before: int = 0):
        self._executor = executor
        self._operation_id = operation_id
        self._secrets = secrets
        self.tasks_started = tasks_before  # progress counts every step's tasks
        self.stats: dict = {}
        self.error: str | None = None

    def __call__(self, event: dict) -> bool:
        name = event.get("event", "")
        if name == "verbose" and str(event.get("stdout", "")).startswith(GUARD_MARKER):
            self._executor._record_group(self._operation_id, int(event["stdout"].split()[1]))
            return False
        if name not in RECORDED_EVENTS:
            return False  # runner need not write the event to artifacts either
        if self._secrets:  # runner writes this very dict to job_events: never with a secret in it
            masked = _mask_deep(event, self._secrets)
            event.clear()
            event.update(masked)
        data = event.get("event_data", {})
        message = None
        status = None
        if name == "playbook_on_task_start":
            self.tasks_started += 1
        elif name in ("runner_on_failed", "runner_on_unreachable"):
            status = "failed" if name == "runner_on_failed" else "unreachable"
            message = _result_message(data.get("res", {}))
            if not data.get("ignore_errors"):
                self.error = mask(message, self._secrets)
        elif name in ("runner_on_ok", "runner_on_changed"):
            status = "changed" if data.get("res", {}).get("changed") else "ok"
        elif name == "runner_on_skipped":
            status = "skipped"
        elif name == "playbook_on_stats":
            self.stats = (data.get("artifact_data") or {}).get("pgdbaas", {}) or {}
        with self._executor._sessions.begin() as session:
            session.add(OperationEvent(
                operation_id=self._operation_id, counter=event.get("counter", 0), event=name,
                host=data.get("host"), task=mask(data.get("task"), self._secrets), status=status,
                message=mask(message, self._secrets),
            ))
            if name == "playbook_on_task_start":
                session.execute(update(Operation).where(Operation.id == self._operation_id)
                                .values(tasks_done=self.tasks_started))
        self._executor._notify()
        return True


def _result_message(res: dict) -> str:
    message = res.get("msg") or res.get("stderr") or res.get("reason") or "task failed"
    if isinstance(message, (list, dict)):
        message = json.dumps(message)
    return str(message).strip()


def _last_output_line(job_dir: Path, ident: str) -> str:
    stdout = job_dir / "artifacts" / ident / "stdout"
    if not stdout.exists():
        return ""
    lines = [line.strip() for line in stdout.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _strip_environment(job_dir: Path) -> None:
    """No environment stays in a job directory (runner's command artifact, env/envvars; before the
    job environment was made minimal, they held the API's whole environment)."""
    for command_file in job_dir.glob("artifacts/*/command"):
        try:
            data = json.loads(command_file.read_text())
            if "env" in data:
                data.pop("env")
                command_file.write_text(json.dumps(data))
        except (OSError, ValueError):
            command_file.unlink(missing_ok=True)
    (job_dir / "env" / "envvars").unlink(missing_ok=True)


def _scrub(job_dir: Path, secrets: list[str]) -> None:
    """Drop the environment from the artifacts and mask the job's secrets in every file."""
    _strip_environment(job_dir)
    if not secrets:
        return
    for path in job_dir.rglob("*"):
        if path.is_file():
            try:
                text = path.read_text(errors="surrogateescape")
            except OSError:
                continue
            masked = mask(text, secrets)
            if masked != text:
                path.write_text(masked, errors="surrogateescape")
