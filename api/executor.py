"""The executor: runs "playbook P with inventory I and vars V (secrets S) for operation O".

It knows nothing about PostgreSQL. Each job gets its own private_data_dir, runs ansible-runner
in a worker thread (never on the event loop) with a cancel_callback (so runner does not install
its own signal handlers over uvicorn's), streams masked task events into the store, reads the
playbook's `set_stats` result, and hands the outcome to the caller's `on_finish` hook inside the
same transaction that ends the operation and frees its cluster.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner
import yaml
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api import operations as ops
from api.settings import REPO_ROOT
from api.store.models import Operation, OperationEvent, utcnow

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


@dataclass
class Outcome:
    status: str  # ansible-runner status: successful | failed | canceled | timeout
    stats: dict = field(default_factory=dict)  # the playbook's set_stats data
    error: str | None = None  # message of the last failed task, masked

    @property
    def ok(self) -> bool:
        return self.status == "successful"


FinishHook = Callable[[Session, Operation, Outcome], None]


@dataclass
class Job:
    operation_id: str
    playbook: str
    inventory: dict
    extravars: dict
    secrets: dict = field(default_factory=dict)
    on_finish: FinishHook | None = None


def mask(text: str | None, secrets: list[str]) -> str | None:
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class Executor:
    def __init__(self, sessions: sessionmaker[Session], *, jobs_dir: Path, playbook_dir: Path,
                 workers: int, job_timeout: int = 3600):
        self._sessions = sessions
        self._jobs_dir = jobs_dir
        self._playbook_dir = playbook_dir
        self._job_timeout = job_timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgdbaas-job")
        self._cancel: set[str] = set()
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.event_signal = threading.Condition()
        jobs_dir.mkdir(parents=True, exist_ok=True)

    # -- public interface -------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._lock:
            self._done[job.operation_id] = threading.Event()
        self._pool.submit(self._run_guarded, job)

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

    # -- one job ----------------------------------------------------------------------------
    def _run_guarded(self, job: Job) -> None:
        try:
            self._run(job)
        except Exception:  # the operation must end even if something here is wrong
            log.exception("job %s crashed", job.operation_id)
            outcome = Outcome(status="failed", error="internal error while running the job")
            with self._sessions.begin() as session:
                operation = session.get(Operation, job.operation_id)
                if operation is not None and operation.state not in ops.FINAL_STATES:
                    if job.on_finish is not None:
                        job.on_finish(session, operation, outcome)
                    ops.finish(session, operation, ops.ERROR, error=outcome.error)
        finally:
            with self._lock:
                self._cancel.discard(job.operation_id)
                done = self._done.pop(job.operation_id, None)
            if done:
                done.set()
            self._notify()

    def _run(self, job: Job) -> None:
        with self._sessions.begin() as session:
            # Only a QUEUED operation starts: a cancel may have ended it while it waited.
            started = session.execute(
                update(Operation).where(Operation.id == job.operation_id, Operation.state == ops.QUEUED)
                .values(state=ops.IN_PROGRESS, started_at=utcnow())
            ).rowcount
        if not started:
            return

        secrets = [str(value) for value in job.secrets.values() if value]
        job_dir = self._jobs_dir / job.operation_id
        secrets_file = self._write_private_files(job, job_dir)
        recorder = _EventRecorder(self, job.operation_id, secrets)
        try:
            runner = ansible_runner.run(
                private_data_dir=str(job_dir),
                ident="run",
                playbook=str(self._playbook_dir / job.playbook),
                inventory=str(job_dir / "inventory" / "hosts.yml"),
                extravars=job.extravars,
                cmdline=f"-e @{secrets_file}" if secrets_file else None,
                envvars={
                    "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
                    "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT),
                    "ANSIBLE_NOCOLOR": "1",
                },
                event_handler=recorder,
                cancel_callback=lambda: job.operation_id in self._cancel,
                quiet=True,
                timeout=self._job_timeout,
                settings={"suppress_ansible_output": True},
            )
            status = runner.status
        finally:
            if secrets_file:
                secrets_file.unlink(missing_ok=True)
            _scrub(job_dir, secrets)

        outcome = Outcome(status=status, stats=recorder.stats, error=recorder.error)
        if status == "canceled":
            outcome.error = "canceled"
        elif status == "timeout":
            outcome.error = f"the job exceeded {self._job_timeout} s"
        elif not outcome.ok and not outcome.error:
            # Failed before any task (syntax, inventory, vars): the last line ansible printed.
            outcome.error = _last_output_line(job_dir) or f"the playbook ended with status {status}"
        with self._sessions.begin() as session:
            operation = session.get(Operation, job.operation_id)
            operation.tasks_done = recorder.tasks_started
            if job.on_finish is not None:
                job.on_finish(session, operation, outcome)
            state = ops.SUCCESS if outcome.ok else ops.CANCELED if status == "canceled" else ops.ERROR
            ops.finish(session, operation, state, error=None if outcome.ok else outcome.error,
                       result=outcome.stats)

    def _write_private_files(self, job: Job, job_dir: Path) -> Path | None:
        if job_dir.exists():
            shutil.rmtree(job_dir)
        (job_dir / "inventory").mkdir(parents=True)
        (job_dir / "inventory" / "hosts.yml").write_text(yaml.safe_dump(job.inventory))
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


class _EventRecorder:
    """ansible-runner event_handler: masks secrets, stores events, counts progress, keeps stats."""

    def __init__(self, executor: Executor, operation_id: str, secrets: list[str]):
        self._executor = executor
        self._operation_id = operation_id
        self._secrets = secrets
        self.tasks_started = 0
        self.stats: dict = {}
        self.error: str | None = None

    def __call__(self, event: dict) -> bool:
        name = event.get("event", "")
        if name not in RECORDED_EVENTS:
            return False  # runner need not write the event to artifacts either
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


def _last_output_line(job_dir: Path) -> str:
    stdout = job_dir / "artifacts" / "run" / "stdout"
    if not stdout.exists():
        return ""
    lines = [line.strip() for line in stdout.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _scrub(job_dir: Path, secrets: list[str]) -> None:
    """Runner artifacts keep the whole server environment and every event: drop and mask."""
    for command_file in job_dir.glob("artifacts/*/command"):
        try:
            data = json.loads(command_file.read_text())
            data.pop("env", None)
            command_file.write_text(json.dumps(data))
        except (OSError, ValueError):
            command_file.unlink(missing_ok=True)
    (job_dir / "env" / "envvars").unlink(missing_ok=True)
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
