"""Backups, WAL archiving, point-in-time restore and verified backups, with pgBackRest.

Every cluster whose backups are set has one pgBackRest stanza (named after its instance) in the
installation's repository (PGDBAAS_BACKUP_REPO_*). Setting backups turns WAL archiving on and takes
a first full backup at once, so a point-in-time restore works from then on. The schedule lives in
the store (BackupPolicy) and the scheduler (api/engine/scheduler.py) opens the daily backup as an
ordinary operation of actor "scheduler". The backup history is what pgBackRest's `info` listed
last (Backup rows, numbered per cluster): every backup operation records it again.

A restore makes a NEW cluster (`restore`) on the host of the source's repository; ITCare's restore
replaces the data of an existing instance (`restore_into`). Either way the playbook checks that the
recovery target was reached, and the restored cluster is an ordinary one afterwards.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from api.context import Context
from api.engine.kinds import Step, registered
from api.errors import Conflict, Invalid, NotFound
from api.services import catalog, clusters
from api.services.members import RESTORING, RUNNING
from api.store.models import Account, Backup, BackupPolicy, Cluster, Credential, Database, Operation, utcnow

COMPLETED, BACKUP_ERROR = "COMPLETED", "ERROR"
VERIFIED, VERIFY_FAILED = "VERIFIED", "FAILED"
BACKUP_TYPES = ("full", "diff", "incr")
SCHEDULER = "scheduler"  # the actor of scheduled operations
# pgBackRest info status codes under which the listed backups are the whole truth (0 ok, 2 no
# valid backup); any other code (missing stanza, unreadable repository) changes no record.
INFO_TRUSTED = (0, 2)
FULL_EVERY = timedelta(days=7)  # a scheduled backup is full when the newest full is this old


class Scheduler:
    """The actor of the operations the scheduler opens (Operation.actor_id "scheduler")."""

    id = SCHEDULER
    role = "admin"
    name = SCHEDULER


# -- settings ---------------------------------------------------------------------------------------
def bounded_int(value, field_name: str, low: int, high: int) -> int:
    """The seed sends numbers as strings ("60"): either is accepted, within [low, high]."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise Invalid(f"{field_name} must be a whole number from {low} to {high}", field=field_name) from None
    if not low <= number <= high:
        raise Invalid(f"{field_name} must be from {low} to {high} (got {number})", field=field_name)
    return number


@dataclass
class BackupSettings:
    archive_frequency_minute: int = 60
    retention_period_day: int = 7
    starting_time_hour: int = 2
    verify_period_day: int = 0

    @classmethod
    def parse(cls, archive_frequency_minute=None, retention_period_day=None, starting_time_hour=None,
              verify_period_day=None) -> BackupSettings:
        defaults = cls()
        return cls(
            archive_frequency_minute=bounded_int(archive_frequency_minute, "archive_frequency_minute", 1, 1440)
            if archive_frequency_minute not in (None, "") else defaults.archive_frequency_minute,
            retention_period_day=bounded_int(retention_period_day, "retention_period_day", 1, 365)
            if retention_period_day not in (None, "") else defaults.retention_period_day,
            starting_time_hour=bounded_int(starting_time_hour, "starting_time_hour", 0, 23)
            if starting_time_hour not in (None, "") else defaults.starting_time_hour,
            verify_period_day=bounded_int(verify_period_day, "verify_period_day", 0, 365)
            if verify_period_day not in (None, "") else defaults.verify_period_day,
        )


def policy_of(session: Session, cluster_id: str) -> BackupPolicy | None:
    return session.get(BackupPolicy, cluster_id)


def require_backups_set(session: Session, cluster: Cluster) -> BackupPolicy:
    policy = policy_of(session, cluster.id)
    if policy is None or not policy.enabled:
        raise Conflict(f"backups are not set on cluster {cluster.id}: POST /v1/clusters/{cluster.id}/backups first")
    return policy


def cluster_timezone(cluster: Cluster) -> timezone:
    import zoneinfo

    name = cluster.settings.get("timezone") or "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def next_daily(now: datetime, hour: int, tz) -> datetime:
    """The first `hour`:00 in zone `tz` after `now` (naive UTC in, naive UTC out)."""
    local = now.replace(tzinfo=timezone.utc).astimezone(tz)
    candidate = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate + timedelta(days=1)).replace(hour=hour)
    return candidate.astimezone(timezone.utc).replace(tzinfo=None)


def scheduler_now(ctx: Context) -> datetime:
    """The scheduler's clock: UTC plus PGDBAAS_SCHEDULER_CLOCK_OFFSET (drills and tests)."""
    return utcnow() + timedelta(seconds=ctx.settings.scheduler_clock_offset)


# -- what pgBackRest said ---------------------------------------------------------------------------
def _utc(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def record_backup_info(session: Session, cluster: Cluster, info: dict, operation: Operation | None) -> None:
    """The stanza's backups as Backup rows (new ones numbered on), gone ones removed; the rest of
    the info (archive, archiver) on the policy."""
    policy = policy_of(session, cluster.id)
    if policy is not None:
        policy.last_info = {key: info.get(key) for key in ("status", "archive", "archiver", "repository", "settings")}
    if (info.get("status") or {}).get("code", 0) not in INFO_TRUSTED:
        return
    rows = {b.label: b for b in session.scalars(select(Backup).where(Backup.cluster_id == cluster.id))}
    number = max((b.number for b in rows.values()), default=0)
    listed = set()
    for entry in info.get("backups") or []:
        label = entry["label"]
        listed.add(label)
        row = rows.get(label)
        if row is None:
            number += 1
            row = Backup(cluster_id=cluster.id, number=number, label=label, verify_detail={},
                         software_version=cluster.software_version,
                         operation_id=operation.id if operation is not None else None)
            session.add(row)
        row.type = entry.get("type") or "full"
        row.prior = entry.get("prior")
        row.started_at = _utc(entry.get("start_at"))
        row.finished_at = _utc(entry.get("stop_at"))
        row.size_bytes = int(entry.get("size_bytes") or 0)
        # What this backup itself added to the repository (a diff or incr references the rest).
        row.repo_size_bytes = int(entry.get("repo_delta_bytes") or entry.get("repo_size_bytes") or 0)
        row.lsn_start = entry.get("lsn_start") or ""
        row.lsn_stop = entry.get("lsn_stop") or ""
        row.state = BACKUP_ERROR if entry.get("error") else COMPLETED
        row.state_detail = ("pgBackRest found page checksum errors in this backup" if entry.get("error")
                            else f"{row.type} backup, WAL {entry.get('wal_start')}..{entry.get('wal_stop')}")
    for label, row in rows.items():
        if label not in listed:  # expired by retention, or removed
            session.delete(row)
    session.flush()


def backups_of(session: Session, cluster_id: str) -> list[Backup]:
    """Oldest first."""
    return list(session.scalars(select(Backup).where(Backup.cluster_id == cluster_id).order_by(Backup.number)))


def restorable_window(session: Session, cluster: Cluster) -> dict:
    """What GET cluster shows: whether backups are set, the last backup, and the earliest and
    latest restorable times (with archiving off: the backups' own end times only)."""
    policy = policy_of(session, cluster.id)
    usable = [b for b in backups_of(session, cluster.id) if b.state == COMPLETED]
    window = {"backup_enabled": bool(policy and policy.enabled),
              "archive_enabled": bool(policy and policy.enabled and policy.archive_enabled),
              "last_backup": None, "earliest_restorable_time": None, "latest_restorable_time": None,
              "next_backup_at": policy.next_backup_at if policy else None,
              "next_verify_at": policy.next_verify_at if policy else None,
              "schedule_error": policy.schedule_error if policy else None}
    if not usable:
        return window
    last = usable[-1]
    window["last_backup"] = {"backup_history_number": str(last.number), "backup_end_at": last.finished_at,
                             "backup_type": last.type}
    window["earliest_restorable_time"] = usable[0].finished_at
    latest = last.finished_at
    if policy and policy.archive_enabled:
        archived = _utc(((policy.last_info or {}).get("archiver") or {}).get("last_archived_time"))
        if archived and archived > latest:
            latest = archived
    window["latest_restorable_time"] = latest
    return window


def backup_status(ctx: Context, cluster_id: str) -> tuple[dict, BackupPolicy | None]:
    """The restorable window and the policy of a cluster the caller may see (GET cluster)."""
    with ctx.sessions() as session:
        cluster = session.get(Cluster, cluster_id)
        policy = policy_of(session, cluster_id)
        if policy is not None:
            session.expunge(policy)
        return restorable_window(session, cluster), policy


# -- kinds ------------------------------------------------------------------------------------------
class BackupKind(clusters.ClusterKind):
    """A step that reports `backup_info` records the stanza's backups."""

    def apply_step(self, session, operation, cluster, index, outcome):
        super().apply_step(session, operation, cluster, index, outcome)
        info = outcome.first("backup_info")
        if cluster is not None and info:
            record_backup_info(session, cluster, info, operation)


def _set_policy(session: Session, cluster: Cluster, params: dict) -> BackupPolicy:
    policy = policy_of(session, cluster.id)
    if policy is None:
        policy = BackupPolicy(cluster_id=cluster.id, last_info={})
        session.add(policy)
    policy.enabled = True
    policy.archive_enabled = params.get("archive_enabled", True)
    policy.archive_frequency_minute = params["archive_frequency_minute"]
    policy.retention_period_day = params["retention_period_day"]
    policy.starting_time_hour = params["starting_time_hour"]
    policy.verify_period_day = params.get("verify_period_day", 0)
    # Computed when the request was made, on the scheduler's clock.
    policy.next_backup_at = datetime.fromisoformat(params["next_backup_at"])
    policy.next_verify_at = (policy.next_backup_at + timedelta(hours=1)) if policy.verify_period_day else None
    policy.schedule_error = None
    return policy


@registered
class SetBackup(BackupKind):
    """set_backup.yml: the stanza, archiving on, a first full backup. Its settings are recorded
    (and scheduled) only when it succeeded."""

    name = "set_backup"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok and cluster is not None:
            _set_policy(session, cluster, operation.params)


@registered
class UnsetBackup(BackupKind):
    """unset_backup.yml: archiving off; the backups stay listed and restorable until removed."""

    name = "unset_backup"

    def finish(self, session, operation, cluster, outcome):
        policy = policy_of(session, operation.cluster_id) if outcome.ok else None
        if policy is not None:
            policy.enabled = False
            policy.next_backup_at = policy.next_verify_at = None


@registered
class TakeBackup(BackupKind):
    """backup.yml (on demand, or opened by the scheduler): a backup, then retention."""

    name = "backup"

    def finish(self, session, operation, cluster, outcome):
        policy = policy_of(session, operation.cluster_id)
        if policy is not None and operation.params.get("scheduled"):
            policy.schedule_error = None if outcome.ok else f"scheduled backup {operation.id} failed: {outcome.error}"


@registered
class RemoveBackups(BackupKind):
    name = "remove_backups"


@registered
class SetArchive(BackupKind):
    """set_backup.yml again with the archive settings (no backup taken)."""

    name = "set_archive"

    def finish(self, session, operation, cluster, outcome):
        policy = policy_of(session, operation.cluster_id)
        if outcome.ok and policy is not None:
            policy.archive_enabled = operation.params["archive_enabled"]
            policy.retention_period_day = operation.params["retention_period_day"]


@registered
class SyncArchive(BackupKind):
    """set_backup.yml with the recorded settings: whatever drifted on the host is put back."""

    name = "sync_archive"


@registered
class DeleteArchive(BackupKind):
    name = "delete_archive"


def copy_records(session: Session, source_id: str, target: Cluster, actor_id: str) -> None:
    """The restored data holds the source's databases and roles: their records (and credentials,
    for the roles that exist in the restored instance) replace the target's."""
    session.execute(delete(Credential).where(Credential.cluster_id == target.id))
    session.execute(delete(Database).where(Database.cluster_id == target.id))
    session.flush()
    present_databases = {d["name"] for d in clusters.observed_databases(target)}
    present_roles = {r.get("name") for r in clusters.observed_roles(target)}
    ids = {}
    for database in session.scalars(select(Database).where(Database.cluster_id == source_id)):
        if database.name not in present_databases:
            continue
        copy = Database(cluster_id=target.id, name=database.name, owner=database.owner, plan_id=database.plan_id,
                        environment=database.environment, project_id=database.project_id, created_by=actor_id)
        session.add(copy)
        session.flush()
        ids[database.id] = copy.id
    for credential in session.scalars(select(Credential).where(Credential.cluster_id == source_id)):
        if present_roles and credential.user not in present_roles:
            continue
        session.add(Credential(cluster_id=target.id, database_id=ids.get(credential.database_id),
                               user=credential.user, password_encrypted=credential.password_encrypted,
                               created_by=actor_id))


@registered
class Restore(BackupKind):
    """restore.yml into the new cluster's instance. A failed restore leaves the cluster ERROR
    (its instance stopped): terminate it."""

    name = "restore"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok and cluster is not None:
            copy_records(session, operation.params["source_cluster_id"], cluster, operation.actor_id)
            cluster.settings = {**cluster.settings, "restored_from": {
                **operation.params["target"], "restored_at": utcnow().isoformat(timespec="seconds") + "Z"}}


@registered
class RestoreInto(Restore):
    """ITCare: restore.yml into an existing cluster's instance (its data replaced)."""

    name = "restore_into"


@registered
class VerifyBackup(BackupKind):
    """verify_backup.yml: the backup restored into a scratch instance, amcheck and row counts."""

    name = "verify_backup"

    def apply_step(self, session, operation, cluster, index, outcome):
        backup = session.scalar(select(Backup).where(Backup.cluster_id == operation.cluster_id,
                                                     Backup.label == operation.params["label"]))
        if backup is None:
            return
        verification = outcome.first("verification")
        backup.verified_at = utcnow()
        if verification:
            backup.verify_state = VERIFIED if verification.get("verified") else VERIFY_FAILED
            backup.verify_detail = {k: verification.get(k) for k in
                                    ("checked_at", "databases", "tables", "rows", "problems", "duration_s")
                                    if k in verification}
        else:
            backup.verify_state = VERIFY_FAILED
            backup.verify_detail = {"problems": [outcome.error or "the verification did not run"]}

    def finish(self, session, operation, cluster, outcome):
        policy = policy_of(session, operation.cluster_id)
        if policy is not None and operation.params.get("scheduled"):
            policy.schedule_error = None if outcome.ok else f"scheduled verification {operation.id} failed"


# -- opening operations ----------------------------------------------------------------------------
def _backup_step(ctx: Context, playbook: str, extravars: dict) -> Step:
    secrets = tuple(ctx.settings.backup_secrets)
    return Step(playbook, {**ctx.settings.backup_repository, **extravars}, secrets)


def _set_backup_vars(settings: BackupSettings, archive_enabled: bool, initial_full: bool) -> dict:
    return {"pg_backup_retention_days": settings.retention_period_day,
            "pg_backup_archive_timeout": settings.archive_frequency_minute * 60 if archive_enabled else 0,
            "pg_backup_archive_enabled": archive_enabled, "pg_backup_initial_full": initial_full}


def set_backup(ctx: Context, actor: Account, cluster_id: str, settings: BackupSettings) -> Operation:
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        policy = policy_of(session, cluster.id)
        archive_enabled = policy.archive_enabled if policy is not None else True
        step = _backup_step(ctx, "set_backup.yml", _set_backup_vars(settings, archive_enabled, True))
        next_at = next_daily(scheduler_now(ctx), settings.starting_time_hour, cluster_timezone(cluster))
        params = {**settings.__dict__, "archive_enabled": archive_enabled, "next_backup_at": next_at.isoformat()}
        return clusters.submit(ctx, session, cluster, actor, "set_backup", [step], params=params,
                               secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))


def _on_backups(ctx: Context, actor, cluster_id: str, kind: str, playbook: str, extravars: dict | None = None,
                params: dict | None = None) -> Operation:
    """An operation of `kind` running `playbook` on a RUNNING cluster whose backups are set."""
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        require_backups_set(session, cluster)
        return clusters.submit(ctx, session, cluster, actor, kind, [_backup_step(ctx, playbook, extravars or {})],
                               params=params, secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))


def unset_backup(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _on_backups(ctx, actor, cluster_id, "unset_backup", "unset_backup.yml")


def backup_step(ctx: Context, backup_type: str, **extravars) -> Step:
    """The backup.yml step of one backup (on demand, scheduled, or a step of another operation such as
    a patch or an upgrade); the operation needs ctx.settings.backup_secrets as its secrets."""
    return _backup_step(ctx, "backup.yml", {"pg_backup_type": backup_type, **extravars})


def due_backup_type(session: Session, cluster_id: str, now: datetime) -> str:
    """full when the newest full backup is FULL_EVERY old (or there is none), else diff."""
    newest_full = session.scalar(select(Backup.finished_at).where(Backup.cluster_id == cluster_id,
                                                                  Backup.type == "full")
                                 .order_by(Backup.finished_at.desc()).limit(1))
    return "full" if newest_full is None or now - newest_full >= FULL_EVERY else "diff"


def take_backup(ctx: Context, actor, cluster_id: str, backup_type: str = "full", *, scheduled: bool = False,
                session: Session | None = None) -> Operation:
    if backup_type not in BACKUP_TYPES:
        raise Invalid(f"type must be one of {', '.join(BACKUP_TYPES)}", field="type")

    def open_in(s: Session) -> Operation:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, s)
        require_backups_set(s, cluster)
        return clusters.submit(ctx, s, cluster, actor, "backup", [backup_step(ctx, backup_type)],
                               params={"type": backup_type, "scheduled": scheduled},
                               secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))

    if session is not None:
        return open_in(session)
    with ctx.sessions.begin() as s:
        return open_in(s)


def list_backups(ctx: Context, actor: Account, cluster_id: str, *, limit: int = 20,
                 page: int = 0) -> tuple[list[Backup], int]:
    """Newest first."""
    with ctx.sessions() as session:
        cluster = clusters.get_cluster(ctx, actor, cluster_id, session)
        statement = select(Backup).where(Backup.cluster_id == cluster.id)
        total = session.scalar(select(func.count()).select_from(statement.subquery()))
        rows = list(session.scalars(statement.order_by(Backup.number.desc()).offset(page * limit).limit(limit)))
        return rows, total


def _dependents(backups: list[Backup], label: str) -> list[Backup]:
    """Backups that need `label` (directly or through another one)."""
    found, frontier = [], {label}
    for backup in backups:  # oldest first: a backup's prior is older than it
        if backup.prior in frontier:
            found.append(backup)
            frontier.add(backup.label)
    return found


def remove_backups(ctx: Context, actor: Account, cluster_id: str, numbers: list) -> Operation:
    if not numbers:
        raise Invalid("backup_history_number must list at least one backup", field="backup_history_number")
    wanted = {bounded_int(n, "backup_history_number", 1, 2**31 - 1) for n in numbers}
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        backups = backups_of(session, cluster.id)
        by_number = {b.number: b for b in backups}
        unknown = sorted(wanted - set(by_number))
        if unknown:
            raise NotFound(f"cluster {cluster.id} has no backup numbered {', '.join(map(str, unknown))}",
                           field="backup_history_number")
        for number in sorted(wanted):
            needing = [b for b in _dependents(backups, by_number[number].label) if b.number not in wanted]
            if needing:
                raise Conflict(f"backup {number} is the base of backup(s) {', '.join(str(b.number) for b in needing)}, "
                               "which cannot be restored without it: list them too to remove them together",
                               field="backup_history_number")
        if wanted == set(by_number):
            raise Conflict(f"that would remove every backup of cluster {cluster.id}: no restore point would remain. "
                           "Keep one, or unset backups (DELETE /v1/clusters/{id}/backups) and remove them after",
                           field="backup_history_number")
        labels = [by_number[n].label for n in sorted(wanted)]
        step = _backup_step(ctx, "remove_backups.yml", {"pg_backup_labels": labels})
        return clusters.submit(ctx, session, cluster, actor, "remove_backups", [step],
                               params={"numbers": sorted(wanted), "labels": labels},
                               secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))


def get_archive(ctx: Context, actor: Account, cluster_id: str) -> dict:
    with ctx.sessions() as session:
        cluster = clusters.get_cluster(ctx, actor, cluster_id, session)
        policy = policy_of(session, cluster.id)
        return {"archive_enabled": bool(policy and policy.enabled and policy.archive_enabled),
                "retention_period_day": policy.retention_period_day if policy else 0}


def _policy_settings(policy: BackupPolicy) -> BackupSettings:
    return BackupSettings(policy.archive_frequency_minute, policy.retention_period_day, policy.starting_time_hour,
                          policy.verify_period_day)


def set_archive(ctx: Context, actor: Account, cluster_id: str, archive_enabled: bool,
                retention_period_day=None) -> Operation:
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        policy = require_backups_set(session, cluster)
        settings = _policy_settings(policy)
        if retention_period_day not in (None, ""):
            settings.retention_period_day = bounded_int(retention_period_day, "retention_period_day", 1, 365)
        step = _backup_step(ctx, "set_backup.yml", _set_backup_vars(settings, archive_enabled, False))
        return clusters.submit(ctx, session, cluster, actor, "set_archive", [step],
                               params={"archive_enabled": archive_enabled,
                                       "retention_period_day": settings.retention_period_day},
                               secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))


def sync_archive(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        policy = require_backups_set(session, cluster)
        step = _backup_step(ctx, "set_backup.yml",
                            _set_backup_vars(_policy_settings(policy), policy.archive_enabled, False))
        return clusters.submit(ctx, session, cluster, actor, "sync_archive", [step],
                               secrets=ctx.settings.backup_secrets, allowed_states=(RUNNING,))


def delete_archive(ctx: Context, actor: Account, cluster_id: str, log_type: str | None = "ALL") -> Operation:
    if (log_type or "ALL") != "ALL":
        raise Invalid("type must be ALL (the archived WAL that no backup needs for its own consistency)",
                      field="type")
    return _on_backups(ctx, actor, cluster_id, "delete_archive", "delete_archive.yml")


# -- restore ---------------------------------------------------------------------------------------
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


def parse_target_time(value: str, field_name: str) -> datetime:
    """An ISO 8601 date-time with its UTC offset (2022-11-02T09:32:02.000+00:00 or ...Z), as naive UTC."""
    if not isinstance(value, str) or not TIMESTAMP_RE.match(value.strip()):
        raise Invalid(f"{field_name} must be a date-time with its UTC offset, like 2022-11-02T09:32:02.000+00:00",
                      field=field_name)
    return _utc(value.strip())


@dataclass
class RestoreTarget:
    """Where in the source's history to restore: a backup (`backup`), a time, or the latest."""

    type: str  # backup | time | latest
    backup: Backup | None = None
    time: datetime | None = None
    inclusive: bool = True
    extravars: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"type": self.type, "backup_history_number": str(self.backup.number) if self.backup else None,
                "target_time": self.time.isoformat() + "Z" if self.time else None, "inclusive": self.inclusive}


def plan_target(session: Session, source: Cluster, *, number=None, time: datetime | None = None,
                inclusive: bool = True, time_field: str = "backup_recovery_time") -> RestoreTarget:
    """Check that the source can be restored to that point, or say why not (400)."""
    backups = [b for b in backups_of(session, source.id) if b.state == COMPLETED]
    if not backups:
        raise Invalid(f"cluster {source.id} has no backup to restore from: set backups on it first "
                      f"(POST /v1/clusters/{source.id}/backups)", field="cluster_id")
    policy = policy_of(session, source.id)
    if number not in (None, ""):
        wanted = bounded_int(number, "backup_history_number", 1, 2**31 - 1)
        backup = next((b for b in backups if b.number == wanted), None)
        if backup is None:
            raise Invalid(f"cluster {source.id} has no usable backup numbered {wanted}", field="backup_history_number")
        return RestoreTarget("backup", backup=backup,
                             extravars={"pg_restore_type": "backup", "pg_restore_backup_label": backup.label})
    if time is None:
        return RestoreTarget("latest", extravars={"pg_restore_type": "latest"})
    now = utcnow()
    if time > now:
        raise Invalid(f"{time_field} {time.isoformat()}Z is in the future", field=time_field)
    first = backups[0]
    if time < first.finished_at:
        raise Invalid(f"{time_field} {time.isoformat()}Z is before the end of the oldest backup "
                      f"({first.finished_at.isoformat()}Z): the earliest restorable time", field=time_field)
    if not (policy and policy.archive_enabled):
        last = backups[-1]
        raise Invalid(f"archiving is off on cluster {source.id}: no WAL is kept between or after its backups "
                      f"(the last ended {last.finished_at.isoformat()}Z), so it cannot be restored to a point in "
                      "time. Restore a backup by backup_history_number, or turn archiving on "
                      f"(PUT /v1/clusters/{source.id}/archive)", field=time_field)
    # pgBackRest picks the newest backup that ended before the target.
    stamp = time.replace(tzinfo=timezone.utc).isoformat(sep=" ")
    return RestoreTarget("time", time=time, inclusive=inclusive,
                         extravars={"pg_restore_type": "time", "pg_restore_time": stamp,
                                    "pg_restore_inclusive": inclusive})


def stanza_of(cluster: Cluster) -> str:
    """The cluster's pgBackRest stanza: named after its instance, an HA cluster's after its Patroni scope
    (one stanza for every member, whichever leads)."""
    if cluster.topology == clusters.HA:
        return clusters.ha_scope_member(cluster).name
    return clusters.primary(cluster).name


def _restore_vars(source: Cluster, target: RestoreTarget) -> dict:
    lead = clusters.primary(source)
    extravars = {"pg_restore_source": stanza_of(source), **target.extravars}
    if source.service_state == RUNNING:
        extravars["pg_restore_source_port"] = lead.port  # archive the current WAL first
    return extravars


@dataclass
class RestoreSpec:
    name: str
    backup_history_number: str | None = None
    backup_recovery_time: str | None = None
    sizing: str = clusters.DEFAULT_SIZING
    allowed_cidrs: list[str] = field(default_factory=list)
    tags: list = field(default_factory=list)


def restore(ctx: Context, actor: Account, source_id: str, spec: RestoreSpec) -> tuple[Cluster, Operation]:
    """A new cluster holding the source's data at a backup, a time, or the latest (202: its id)."""
    if spec.backup_history_number not in (None, "") and spec.backup_recovery_time not in (None, ""):
        raise Invalid("give backup_history_number or backup_recovery_time, not both", field="backup_recovery_time")
    time = parse_target_time(spec.backup_recovery_time, "backup_recovery_time") \
        if spec.backup_recovery_time not in (None, "") else None
    with ctx.sessions() as session:
        source = clusters.get_live_cluster(ctx, actor, source_id, session)
        target = plan_target(session, source, number=spec.backup_history_number, time=time)
        restore_vars = _restore_vars(source, target)
        source_host = clusters.primary(source).host
        source_fields = {"engine_version": source.engine_version_id,
                         "encoding": source.settings.get("encoding", "UTF8"),
                         "locale": source.settings.get("locale", "C.UTF-8"),
                         "timezone": source.settings.get("timezone", ""),
                         "user": source.settings.get("database_user_name", ""), "database": source.database_name}
    cluster_spec = clusters.ClusterSpec(
        name=spec.name, engine_version=source_fields["engine_version"], encoding=source_fields["encoding"],
        locale=source_fields["locale"], sizing=spec.sizing, allowed_cidrs=spec.allowed_cidrs, tags=spec.tags,
        timezone=source_fields["timezone"], host_name=source_host, allow_inactive_version=True)

    def plan(cluster: Cluster, provision: Step) -> list[Step]:
        # The restored data brings the source's roles and databases: no initial user is made.
        cluster.database_name = source_fields["database"]
        cluster.settings = {**cluster.settings, "database_user_name": source_fields["user"]}
        settings_vars = {k: v for k, v in provision.extravars.items() if k not in ("pg_admin_user", "pg_database")}
        return [Step("restore.yml", {**settings_vars, **restore_vars})]

    follow_up = clusters.FollowUp(kind="restore", plan=plan, params={
        "source_cluster_id": source_id, "target": {"source_cluster_id": source_id, **target.describe()}})
    return clusters.create_cluster(ctx, actor, cluster_spec, follow_up)


def restore_into(ctx: Context, actor: Account, target_id: str, source_id: str, time: datetime, inclusive: bool,
                 max_age: timedelta) -> Operation:
    """ITCare: the source's data at `time` replaces the target instance's (same major, both running)."""
    now = utcnow()
    if time > now or time < now - max_age:
        raise Invalid(f"timestamp must be between now - {max_age.days} days and now", field="timestamp")
    with ctx.sessions.begin() as session:
        source = clusters.get_live_cluster(ctx, actor, source_id, session)
        target_cluster = clusters.get_live_cluster(ctx, actor, target_id, session)
        if source.id == target_cluster.id:
            raise Invalid("sourceId must be another instance than the one restored into", field="sourceId")
        for cluster, name in ((source, "source"), (target_cluster, "destination")):
            if cluster.service_state != RUNNING:
                raise Conflict(f"the {name} instance {cluster.id} is {cluster.service_state}: both must be ACTIVE")
        if source.major_version != target_cluster.major_version:
            raise Invalid(f"the source runs PostgreSQL {source.major_version} and the destination "
                          f"{target_cluster.major_version}: a restore needs the same major version", field="sourceId")
        if clusters.primary(source).host != clusters.primary(target_cluster).host:
            raise Invalid("the destination must be on the host of the source's backup repository", field="sourceId")
        target = plan_target(session, source, time=time, inclusive=inclusive, time_field="timestamp")
        held = policy_of(session, target_cluster.id)
        if held is not None and held.enabled:
            # Its stanza belongs to the data being replaced: pgBackRest would refuse the new data's WAL.
            raise Conflict(f"the destination {target_cluster.id} has backups set: unset them first "
                           f"(DELETE /v1/clusters/{target_cluster.id}/backups), then set them again after the restore")
        version = catalog.version_of(session, target_cluster)
        settings_vars = clusters.provision_step(target_cluster, version).extravars
        settings_vars = {k: v for k, v in settings_vars.items() if k not in ("pg_admin_user", "pg_database")}
        step = Step("restore.yml", {**settings_vars, **_restore_vars(source, target)})
        return clusters.submit(ctx, session, target_cluster, actor, "restore_into", [step],
                               params={"source_cluster_id": source.id,
                                       "target": {"source_cluster_id": source.id, **target.describe()}},
                               allowed_states=(RUNNING,), transitional_state=RESTORING)


# -- verification ----------------------------------------------------------------------------------
def verify_backup(ctx: Context, actor, cluster_id: str, number=None, *, scheduled: bool = False) -> Operation:
    """Restore a backup (default: the newest) into a scratch instance on a spare port, run amcheck and
    a row count there, record the result on the backup, drop the scratch instance."""

    with ctx.sessions.begin() as s:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, s)
        backups = [b for b in backups_of(s, cluster.id) if b.state == COMPLETED]
        if number not in (None, ""):
            wanted = bounded_int(number, "backup_history_number", 1, 2**31 - 1)
            backup = next((b for b in backups_of(s, cluster.id) if b.number == wanted), None)
            if backup is None:
                raise NotFound(f"cluster {cluster.id} has no backup numbered {wanted}", field="backup_history_number")
        elif backups:
            backup = backups[-1]
        else:
            raise Conflict(f"cluster {cluster.id} has no backup to verify")
        lead = clusters.primary(cluster)
        host = ctx.hosts.hosts[lead.host]
        port = ctx.hosts.free_port(s, host, ctx.settings.ports)
        if port is None:
            raise Conflict(f"no free port on {host.name} for the scratch instance of the verification")
        step = Step("verify_backup.yml", {"pg_verify_backup_label": backup.label, "pg_verify_port": port,
                                          "pg_verify_instance": f"verify-{cluster.id[:12]}"})
        return clusters.submit(ctx, s, cluster, actor, "verify_backup", [step],
                               params={"label": backup.label, "number": backup.number, "scheduled": scheduled},
                               allowed_states=(RUNNING,))
