"""The backup scheduler: due backups and verifications become ordinary operations (actor "scheduler").

The schedule is the store's (BackupPolicy.next_backup_at / next_verify_at, naive UTC). One `tick`
looks for what is due on the scheduler's clock (UTC + PGDBAAS_SCHEDULER_CLOCK_OFFSET), claims each
occurrence with a conditional UPDATE that moves it to the next one (so of several processes
ticking at once, one opens it), and opens the operation. A busy cluster's occurrence stays due
(it opens at the first tick that finds the cluster free); one that cannot open (the cluster is
not RUNNING, or lost its backups) is tried again RETRY later, and why is kept in
BackupPolicy.schedule_error.

Who ticks: the in-process executor's API process, in a thread, every PGDBAAS_SCHEDULER_INTERVAL
seconds (`SchedulerThread`); in queue mode the workers, as the procrastinate periodic task
`scheduler` (api/engine/queue.py, every minute, one at a time). Nothing is left to a cron line.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select, update

from api.errors import ServiceError
from api.store.models import BackupPolicy, Cluster

log = logging.getLogger("pgdbaas.scheduler")
RETRY = timedelta(minutes=5)


def _claim(session, policy: BackupPolicy, column: str, due: datetime, following: datetime | None) -> bool:
    attribute = getattr(BackupPolicy, column)
    return session.execute(update(BackupPolicy).where(
        BackupPolicy.cluster_id == policy.cluster_id, BackupPolicy.enabled.is_(True), attribute == due)
        .values({column: following})).rowcount == 1


def tick(ctx) -> list[str]:
    """Open every due backup and verification; returns the request ids opened."""
    from api.services import backups

    now = backups.scheduler_now(ctx)
    opened: list[str] = []
    with ctx.sessions() as session:
        due = list(session.scalars(select(BackupPolicy).where(
            BackupPolicy.enabled.is_(True),
            (BackupPolicy.next_backup_at <= now) | (BackupPolicy.next_verify_at <= now))))
        session.expunge_all()
    for policy in due:
        for column in ("next_backup_at", "next_verify_at"):
            at = getattr(policy, column)
            if at is None or at > now:
                continue
            opened_id = _fire(ctx, policy, column, at, now)
            if opened_id:
                opened.append(opened_id)
    return opened


def _fire(ctx, policy: BackupPolicy, column: str, at: datetime, now: datetime) -> str | None:
    from api.services import backups

    with ctx.sessions.begin() as session:
        cluster = session.get(Cluster, policy.cluster_id)
        if cluster is None:
            return None
        if cluster.active_operation_id:
            return None  # busy (e.g. its backup runs before its verification): still due at the next tick
        if column == "next_backup_at":
            following = backups.next_daily(now, policy.starting_time_hour, backups.cluster_timezone(cluster))
        else:
            following = now + timedelta(days=policy.verify_period_day) if policy.verify_period_day else None
        if not _claim(session, policy, column, at, following):
            return None  # another process fired it, or it was unset meanwhile
        backup_type = backups.due_backup_type(session, cluster.id, now)
    actor = backups.Scheduler()
    try:
        if column == "next_backup_at":
            operation = backups.take_backup(ctx, actor, policy.cluster_id, backup_type, scheduled=True)
        else:
            operation = backups.verify_backup(ctx, actor, policy.cluster_id, scheduled=True)
    except ServiceError as exc:
        # Busy or not RUNNING: try again soon rather than skip a day.
        retry = min(following, now + RETRY) if following else now + RETRY
        with ctx.sessions.begin() as session:
            session.execute(update(BackupPolicy).where(BackupPolicy.cluster_id == policy.cluster_id,
                                                       BackupPolicy.enabled.is_(True))
                            .values({column: retry, "schedule_error": f"{now.isoformat()}Z: {exc.message}"}))
        log.info("scheduled %s of cluster %s not opened: %s", column[5:-3], policy.cluster_id, exc.message)
        return None
    log.info("scheduled %s of cluster %s: request %s", operation.kind, policy.cluster_id, operation.id)
    return operation.id


class SchedulerThread:
    """The in-process executor's scheduler: `tick` every `interval` seconds until stopped."""

    def __init__(self, ctx, interval: float):
        self.ctx, self.interval = ctx, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgdbaas-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                tick(self.ctx)
            except Exception:  # the next tick tries again
                log.exception("scheduler tick failed")
