"""The queue executor: operations as procrastinate jobs on the PostgreSQL store, run by any number
of worker processes (`python -m api worker`) for any number of API processes (`python -m api`).

The operation code is the in-process mode's: a job is the operation id, and a worker runs
`api.engine.run.run_operation` with the playbook runner of api/executor.py. What the queue adds:

- deferral: after the operation's row is committed the API defers `run_operation(operation_id)`
  with `lock="cluster-<id>"` (a second job of a cluster waits in todo while one runs; the API's
  immediate 409 is still the conditional UPDATE of `clusters.active_operation_id`) and
  `queueing_lock=<operation id>`; the job id is kept in `operations.queue_job_id`;
- no operation runs twice: run_operation starts only a QUEUED operation (one conditional UPDATE),
  so a retried or duplicate job finds it started or ended and returns;
- cancel from any API process: a QUEUED operation is ended CANCELED in the store and its job
  cancelled; for a running one the API sets `operations.cancel_requested` and asks procrastinate
  to abort the job; the worker's cancel check reads the store (at most every second) and its
  job's abort flag;
- heartbeats: each worker renews `operations.heartbeat_at` of the operations it runs every
  HEARTBEAT_INTERVAL; the reaper (a periodic task of the maintenance queue, every 10 s, one at a
  time across workers, and once at each worker's start) ends an operation whose heartbeat is older
  than PGDBAAS_HEARTBEAT_TIMEOUT as ERROR "interrupted", frees its cluster, marks the jobs of dead
  procrastinate workers failed (so their cluster locks free) and observes the cluster again. It
  never ends a job by its age: a long job that beats lives. A worker that cannot renew its
  heartbeats for most of the timeout cancels its own jobs (it is about to be declared dead);
- events: workers write them to the store; an API streams them by reading the store.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs
from procrastinate import utils as queue_utils
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api import operations as ops
from api.executor import PlaybookRunner, Worker
from api.store import QUEUE_SCHEMA
from api.store.models import Operation

log = logging.getLogger("pgdbaas.queue")

OPERATIONS_QUEUE, MAINTENANCE_QUEUE = "operations", "maintenance"
HEARTBEAT_INTERVAL = 5.0  # seconds between two heartbeats of a worker's running operations
CANCEL_POLL = 1.0  # a running job reads its cancel flag from the store at most this often
STORE_POLL = 0.25  # a synchronous caller (wait) reads its operation's state this often
REQUEUE_GRACE = 30.0  # a QUEUED operation without a live job this old is deferred again
REAPER_CRON = "* * * * * */10"  # every 10 s (6th field: seconds)


def store_now():
    """The store's clock, UTC without a zone (as every timestamp of the models): every heartbeat is
    written and compared with it, so the hosts' clocks do not matter."""
    return func.timezone("UTC", func.now())


def beat_of():
    """When the operation last showed life: its heartbeat, else its start (an operation started
    without heartbeats, e.g. by an in-process API before, beat once when it started)."""
    return func.coalesce(Operation.heartbeat_at, Operation.started_at, Operation.created_at)


def stale(timeout: float):
    return (Operation.state == ops.IN_PROGRESS) & (beat_of() < store_now() - timedelta(seconds=timeout))


def conninfo(database_url: str) -> str:
    """libpq's form of the store's SQLAlchemy URL (postgresql+psycopg://... -> postgresql://...)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# The procrastinate app: its connector is set from the settings by `configure` (an API process
# opens it synchronously, a worker asynchronously); its tables live in schema `procrastinate`.
app = procrastinate.App(connector=procrastinate.PsycopgConnector())
_context = None  # the service context of a worker process (api.engine.worker)


def configure(database_url: str, *, max_size: int = 8) -> None:
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(database_url), min_size=1, max_size=max_size,
        kwargs={"options": f"-c search_path={QUEUE_SCHEMA}", "application_name": "pgdbaas-queue"})
    app.connector = connector
    app.job_manager.connector = connector


def set_worker_context(ctx) -> None:
    global _context
    _context = ctx


def _worker_context():
    if _context is None:
        raise RuntimeError("no pgdbaas worker context: jobs run in `python -m api worker`")
    return _context


class QueueWorker(Worker):
    """A worker process: what run_operation stamps on the operation it starts is its owner and its
    first heartbeat, in the same UPDATE that takes it from QUEUED."""

    def columns(self) -> dict:
        return {**super().columns(), "heartbeat_at": store_now()}


class QueueExecutor(PlaybookRunner):
    """The executor interface over procrastinate. In an API process (`role="api"`) it defers jobs,
    cancels them and waits on the store; in a worker process (`role="worker"`) it also runs them
    (`run_job`) and keeps their heartbeats."""

    local_events = False  # events come from other processes: readers poll the store

    def __init__(self, sessions: sessionmaker[Session], *, settings, role: str):
        super().__init__(sessions, jobs_dir=settings.jobs_dir, playbook_dir=settings.playbook_dir)
        self.worker = QueueWorker.current()
        self.role = role
        self.heartbeat_timeout = settings.heartbeat_timeout
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        configure(settings.database_url, max_size=8 if role == "worker" else 4)
        if role == "api":
            app.open()  # synchronous pool: the API defers and cancels from its request threads

    # -- the interface every executor offers ----------------------------------------------
    def submit(self, operation_id: str) -> None:
        from api.engine import kinds

        with self._sessions() as session:
            operation = session.get(Operation, operation_id)
            if operation is None or operation.state != ops.QUEUED:
                return
            locks = bool(operation.cluster_id) and kinds.get(operation.kind).lock
            lock = f"cluster-{operation.cluster_id}" if locks else None
        try:
            job_id = run_operation.configure(lock=lock, queueing_lock=operation_id).defer(operation_id=operation_id)
        except queue_errors.AlreadyEnqueued:
            return
        except Exception:  # the request is accepted (committed): the reaper defers it again
            log.exception("request %s: could not queue its job; the reaper will", operation_id)
            return
        with self._sessions.begin() as session:
            session.execute(update(Operation).where(Operation.id == operation_id).values(queue_job_id=job_id))

    def request_cancel(self, operation_id: str) -> None:
        """The operation runs: `cancel_requested` is set in the store already (the worker reads
        it); the job's abort request reaches the worker sooner."""
        self._abort_job(operation_id)

    def withdraw(self, operation_id: str) -> None:
        """The QUEUED operation was ended CANCELED: its job goes too (or, just fetched, finds the
        operation not QUEUED and returns)."""
        self._abort_job(operation_id)

    def wait(self, operation_id: str, timeout: float | None = None) -> bool:
        """Until the operation ends (any worker's), reading the store; False at the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._sessions() as session:
                state = session.scalar(select(Operation.state).where(Operation.id == operation_id))
            if state is None or state in ops.FINAL_STATES:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(STORE_POLL if left is None else min(STORE_POLL, left))

    def shutdown(self) -> None:
        self._stop.set()
        if self.role == "api":
            app.close()

    def _abort_job(self, operation_id: str) -> None:
        with self._sessions() as session:
            job_id = session.scalar(select(Operation.queue_job_id).where(Operation.id == operation_id))
        if job_id is None:
            return  # not deferred yet: the job will find the operation not QUEUED
        try:
            app.job_manager.cancel_job_by_id(job_id, abort=True)
        except Exception:
            log.exception("request %s: could not cancel its job %s", operation_id, job_id)

    # -- worker side ------------------------------------------------------------------------
    def run_job(self, operation_id: str, should_abort) -> None:
        """Run one operation in this worker thread (the job guard's PR_SET_PDEATHSIG is tied to
        it: if the worker dies, the job's processes die with it)."""
        checked = {"at": 0.0, "cancel": False}

        def should_cancel() -> bool:
            if should_abort():
                return True
            if self.fenced():
                log.error("request %s: no heartbeat reached the store for too long; canceling it", operation_id)
                return True
            now = time.monotonic()
            if now - checked["at"] >= CANCEL_POLL:
                checked["at"] = now
                try:
                    with self._sessions() as session:
                        row = session.execute(select(Operation.state, Operation.cancel_requested)
                                              .where(Operation.id == operation_id)).one_or_none()
                    # Canceled from any API, or ended by the reaper: stop.
                    checked["cancel"] = row is None or bool(row.cancel_requested) or row.state != ops.IN_PROGRESS
                except Exception:  # the store is away: the fence above decides
                    log.warning("request %s: could not read its cancel flag", operation_id, exc_info=True)
            return checked["cancel"]

        with self._lock:
            self._running.add(operation_id)
        try:
            self.run_guarded(operation_id, should_cancel)
        finally:
            with self._lock:
                self._running.discard(operation_id)

    def running(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def fenced(self) -> bool:
        """This worker could not renew its heartbeats for 80 % of the timeout."""
        return time.monotonic() - self._last_beat > 0.8 * self.heartbeat_timeout

    def start_heartbeats(self) -> None:
        self._beater = threading.Thread(target=self._beat, name="pgdbaas-heartbeat", daemon=True)
        self._beater.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            running = self.running()
            try:
                if running:
                    with self._sessions.begin() as session:
                        session.execute(update(Operation)
                                        .where(Operation.id.in_(running), Operation.state == ops.IN_PROGRESS)
                                        .values(heartbeat_at=store_now()))
                self._last_beat = time.monotonic()
            except Exception:
                log.warning("could not renew the heartbeats of %s", sorted(running), exc_info=True)

    def clean_stray_secrets(self, everything: bool = False) -> None:
        """Secrets files of this data directory whose operation is not running any more (a
        killed worker's) go, after their job directory is scrubbed with them. A file newer than
        the look at the store may be a job starting now: kept."""
        secrets_dir = self._jobs_dir / ".secrets"
        files = list(secrets_dir.glob("*.json")) if secrets_dir.is_dir() else []
        if not files and not everything:
            return
        looked = time.time()
        with self._sessions() as session:
            keep = set(session.scalars(select(Operation.id).where(Operation.state.in_((ops.QUEUED, ops.IN_PROGRESS)))))
        keep |= self.running()
        for path in files:
            try:
                if path.stat().st_mtime >= looked - 1:
                    keep.add(path.name.removesuffix(".json"))
            except OSError:
                pass
        if everything or any(path.name.removesuffix(".json") not in keep for path in files):
            self.clean_leftovers(keep=keep)


# -- tasks ----------------------------------------------------------------------------------
@app.task(name="run_operation", pass_context=True, queue=OPERATIONS_QUEUE)
def run_operation(context: procrastinate.JobContext, operation_id: str) -> None:
    """Run one operation. Harmless when repeated: only a QUEUED operation starts."""
    _worker_context().executor.run_job(operation_id, context.should_abort)


@app.periodic(cron=REAPER_CRON, periodic_id="reaper")
@app.task(name="reaper", queue=MAINTENANCE_QUEUE, queueing_lock="reaper")
async def reaper(timestamp: int) -> None:
    await reap(_worker_context())


@app.periodic(cron="* * * * *", periodic_id="scheduler")
@app.task(name="scheduler", queue=MAINTENANCE_QUEUE, queueing_lock="scheduler")
async def scheduler(timestamp: int) -> None:
    """The backup scheduler's tick (api/engine/scheduler.py), every minute, one worker at a time."""
    from api.engine import scheduler as backup_scheduler

    await queue_utils.sync_to_async(backup_scheduler.tick, _worker_context())


async def reap(ctx, *, starting: bool = False) -> None:
    """One pass of the reaper (see the module docstring). Sync parts run through asgiref's
    sync_to_async so that they may defer jobs (an observe) on this worker's event loop."""
    from api.services import requests

    sync = queue_utils.sync_to_async
    reaped = await sync(requests.reap_stale, ctx)
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=ctx.settings.heartbeat_timeout):
        operation_id = job.task_kwargs.get("operation_id") if job.task_name == "run_operation" else None
        if operation_id and await sync(_beating, ctx, operation_id):
            continue  # its operation still beats: whatever runs it is alive
        try:
            await app.job_manager.finish_job_by_id_async(job.id, status=queue_jobs.Status.FAILED, delete_job=False)
            log.warning("job %s (%s) of a dead worker marked failed", job.id, job.call_string)
        except Exception:  # it ended meanwhile
            log.info("job %s of a stalled worker was not marked failed", job.id, exc_info=True)
    await sync(requests.observe_again, ctx, reaped)
    await sync(requeue_orphans, ctx)
    await sync(ctx.executor.clean_stray_secrets, starting)


def _beating(ctx, operation_id: str) -> bool:
    timeout = ctx.settings.heartbeat_timeout
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(Operation).where(
            Operation.id == operation_id, Operation.state == ops.IN_PROGRESS,
            beat_of() >= store_now() - timedelta(seconds=timeout))) > 0


def requeue_orphans(ctx) -> list[str]:
    """QUEUED operations older than REQUEUE_GRACE without a live job (the API died between its
    commit and its deferral, or the worker that fetched the job died before starting it): their
    job is deferred again (only a QUEUED operation starts, so this never runs one twice)."""
    with ctx.sessions() as session:
        waiting = session.execute(select(Operation.id, Operation.queue_job_id).where(
            Operation.state == ops.QUEUED,
            Operation.created_at < store_now() - timedelta(seconds=REQUEUE_GRACE))).all()
        orphans = []
        for operation_id, job_id in waiting:
            if job_id is not None:
                live = session.scalar(text(f"select count(*) from {QUEUE_SCHEMA}.procrastinate_jobs "
                                           "where id = :job and status in ('todo', 'doing')"), {"job": job_id})
            else:
                live = session.scalar(text(f"select count(*) from {QUEUE_SCHEMA}.procrastinate_jobs "
                                           "where task_name = 'run_operation' and args->>'operation_id' = :op "
                                           "and status in ('todo', 'doing')"), {"op": operation_id})
            if not live:
                orphans.append(operation_id)
    for operation_id in orphans:
        log.warning("request %s is QUEUED without a live job: queuing it again", operation_id)
        ctx.executor.submit(operation_id)
    return orphans
