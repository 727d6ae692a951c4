"""The API's own records (see docs/architecture.md, "Domain model")."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))  # admin | user
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    # sha256 of the bearer token: the token itself is shown once and never stored.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    engine_version_id: Mapped[str] = mapped_column(String(64))
    major_version: Mapped[str] = mapped_column(String(8))
    software_version: Mapped[str] = mapped_column(String(32), default="")
    topology: Mapped[str] = mapped_column(String(16), default="STANDALONE")
    service_state: Mapped[str] = mapped_column(String(16), index=True)
    database_name: Mapped[str] = mapped_column(String(63), default="")
    # Sizing, locale, encoding, allow list, timezone, initial user name ... (never a password).
    settings: Mapped[dict] = mapped_column(default=dict)
    tags: Mapped[list] = mapped_column(default=list)
    # Fields a dialect keeps that mean nothing on self-managed hosts (ITCare serviceId, area ...).
    dialect_fields: Mapped[dict] = mapped_column(default=dict)
    # What the last playbook observed (info module): databases, roles, size, version.
    observed: Mapped[dict] = mapped_column(default=dict)
    # The one operation allowed to run on this cluster (per-cluster lock, taken atomically).
    active_operation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(32))
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    modified_by: Mapped[str] = mapped_column(String(32))

    members: Mapped[list[Member]] = relationship(
        back_populates="cluster", cascade="all, delete-orphan", order_by="Member.name", lazy="selectin"
    )


class Member(Base):
    """One PostgreSQL instance of a cluster on one host: the standalone instance, or an HA
    cluster's Patroni member (leader or standby, with its REST API port)."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("host", "port", name="uq_member_host_port"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))  # Debian cluster name on the host
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # An HA member's Patroni REST API port (allocated from the same range as `port`).
    rest_port: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    role_type: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    # primary | standby | replica: what the member is to the cluster, from its last observation.
    role: Mapped[str] = mapped_column(String(16), default="primary")
    service_state: Mapped[str] = mapped_column(String(16))
    data_directory: Mapped[str] = mapped_column(String(512), default="")
    # What the last playbook observed of this member (info module: state, version, databases ...).
    observed: Mapped[dict] = mapped_column(default=dict)

    cluster: Mapped[Cluster] = relationship(back_populates="members")


class Operation(Base):
    """The async request of every dialect: an operation of a kind (api.engine.kinds), whose steps
    are playbook runs. Everything a worker needs to run it is here: any worker can."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), index=True, nullable=True)
    actor_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The kind's parameters (never a secret) and its plan: [{playbook, extravars, secrets}].
    params: Mapped[dict] = mapped_column(default=dict)
    steps: Mapped[list] = mapped_column(default=list)
    # The step running (or the last one run) and its playbook and non-secret extra-vars.
    step: Mapped[int] = mapped_column(Integer, default=0)
    playbook: Mapped[str] = mapped_column(String(64))
    extravars: Mapped[dict] = mapped_column(default=dict)
    # The steps' secrets, Fernet-encrypted (PGDBAAS_SECRET_KEY) for the worker that runs them;
    # removed when the operation ends.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    tasks_done: Mapped[int] = mapped_column(Integer, default=0)
    tasks_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The API process owning the job (host, kernel boot id, pid, pid start time in clock ticks):
    # at start-up only a job whose owner is provably gone is recovered, only on its own host.
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_boot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The job's process group (leader pid) and the leader's start time, ended after a crash.
    job_pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    job_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Queue mode (0006): the worker running the operation renews heartbeat_at (UTC) every few
    # seconds; one left stale is ended as "interrupted" by the reaper. The procrastinate job id.
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OperationEvent(Base):
    """A job's task events, secrets masked, kept in the store so any API node can stream them."""

    __tablename__ = "operation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    counter: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    task: Mapped[str | None] = mapped_column(String(512), nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Plan(Base):
    """DBaaS plan: the sizing of the instance a database gets and its size limit."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    sizing: Mapped[str] = mapped_column(String(16))
    size_limit_bytes: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(256), default="")


class Project(Base):
    """A DBaaS project: it belongs to one account (names are unique per owner)."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_project_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Database(Base):
    """A database of a cluster, whichever dialect made it (integer ids: the DBaaS seed's)."""

    __tablename__ = "databases"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_database_cluster_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    owner: Mapped[str] = mapped_column(String(63))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), nullable=True)
    environment: Mapped[str | None] = mapped_column(String(255), nullable=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True)
    quarantine_dt: Mapped[datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Credential(Base):
    """A login role scoped to one database; its password Fernet-encrypted (shown again by DBaaS)."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("cluster_id", "user", name="uq_credential_cluster_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    database_id: Mapped[int | None] = mapped_column(ForeignKey("databases.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    user: Mapped[str] = mapped_column(String(63))
    password_encrypted: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServiceFact(Base):
    """A fact the service keeps about itself, e.g. which cluster the agent facade serves (by id)."""

    __tablename__ = "service_facts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class BackupPolicy(Base):
    """A cluster's backup settings (issue 9): set by POST /v1/clusters/{id}/backups, fired by the
    scheduler (api/engine/scheduler.py) at `next_backup_at` (UTC), claimed with a conditional UPDATE
    so that one process fires each occurrence."""

    __tablename__ = "backup_policies"

    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    # False once backups are unset: the settings stay for the record, nothing is scheduled.
    enabled: Mapped[bool] = mapped_column(default=True)
    archive_enabled: Mapped[bool] = mapped_column(default=True)
    archive_frequency_minute: Mapped[int] = mapped_column(Integer, default=60)
    retention_period_day: Mapped[int] = mapped_column(Integer, default=7)
    starting_time_hour: Mapped[int] = mapped_column(Integer, default=2)
    # Days between two verifications of the newest backup (0: none scheduled).
    verify_period_day: Mapped[int] = mapped_column(Integer, default=0)
    next_backup_at: Mapped[datetime | None] = mapped_column(nullable=True)
    next_verify_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Why the last scheduled occurrence did not open an operation (e.g. the cluster was busy).
    schedule_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the stanza's last `info` said beside the backups: archive (min/max WAL), archiver
    # (pg_stat_archiver: last archived WAL and time), repository, settings.
    last_info: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Backup(Base):
    """One pgBackRest backup of a cluster, as its stanza's `info` last listed it; `number` is the
    seed's backup_history_number (per cluster, in the order backups were first seen)."""

    __tablename__ = "backups"
    __table_args__ = (UniqueConstraint("cluster_id", "number", name="uq_backup_cluster_number"),
                      UniqueConstraint("cluster_id", "label", name="uq_backup_cluster_label"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(8))  # full | diff | incr
    prior: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the backup it depends on
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    repo_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    lsn_start: Mapped[str] = mapped_column(String(32), default="")
    lsn_stop: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(16))  # COMPLETED | ERROR (pgBackRest flagged errors)
    state_detail: Mapped[str] = mapped_column(Text, default="")
    software_version: Mapped[str] = mapped_column(String(32), default="")
    # Who took it: the operation (a scheduled one has actor "scheduler").
    operation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The last verification (restore into a scratch instance + amcheck): VERIFIED | FAILED.
    verified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    verify_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verify_detail: Mapped[dict] = mapped_column(default=dict)


class Datastore(Base):
    """A datastore of the engine catalog (Trove's word): PostgreSQL, seeded at start-up from what
    this machine installs, or one an admin made (`POST /mgmt/datastores`)."""

    __tablename__ = "datastores"
    __table_args__ = (UniqueConstraint("name", name="uq_datastores_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    # The version a create uses when it names none. No foreign key (versions point here): the
    # catalog service keeps it one of this datastore's active versions.
    default_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[DatastoreVersion]] = relationship(
        back_populates="datastore", order_by="DatastoreVersion.created_at", lazy="selectin")


class DatastoreVersion(Base):
    """One installable engine version of a datastore: what `clusters.engine_version_id` names.
    Seeded ones keep the ids clusters had before the catalog was stored (`postgresql-15`)."""

    __tablename__ = "datastore_versions"
    __table_args__ = (UniqueConstraint("datastore_id", "name", name="uq_datastore_version_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    datastore_id: Mapped[str] = mapped_column(ForeignKey("datastores.id"), index=True)
    name: Mapped[str] = mapped_column(String(32))  # the PostgreSQL version, e.g. 16.14
    major: Mapped[str] = mapped_column(String(8))  # its first number
    manager: Mapped[str] = mapped_column(String(32), default="postgresql")
    # Where the install role takes it from: apt packages, or a relocatable binaries tree (a path on
    # the database hosts); exactly one is set.
    packages: Mapped[str] = mapped_column(String(255), default="")
    binaries: Mapped[str] = mapped_column(String(255), default="")
    image_id: Mapped[str] = mapped_column(String(255), default="")  # opaque (Trove's image): kept, unused
    active: Mapped[bool] = mapped_column(default=True)
    end_of_service: Mapped[bool] = mapped_column(default=False)
    origin: Mapped[str] = mapped_column(String(16), default="admin")  # admin | discovered (the start-up seed)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    datastore: Mapped[Datastore] = relationship(back_populates="versions", lazy="joined")
