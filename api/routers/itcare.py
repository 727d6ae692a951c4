"""ITCare dialect: /itcare/databases/postgresql, over the same service layer and cluster ids as /v1.

An instance's nodes are the cluster's members (GET .../nodes); PATCH is a union on `operation`.

Fields with no meaning on self-managed hosts (serviceId, networkId, area, az, trigram, cloudId,
...) are accepted and kept on the cluster record. The admin user that `admPassword` is for is
named `admin`, a tenant admin (see dbaas.postgresql.admin: CREATEDB, CREATEROLE only from PostgreSQL 16).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import operations as ops
from api.context import Context
from api.deps import current_account, get_context
from api.errors import Conflict
from api.routers.common import INT64_MAX, ITCARE, rule
from api.services import clusters as service
from api.services import backups, databases, ha, members, upgrades
from api.services import requests as requests_service
from api.store.models import Account, Cluster, Member, Operation

# Errors (validation included) render as the seed's body: {"status", "error", "message", "field", "errors"}.
router = APIRouter(prefix=ITCARE.prefix, tags=["itcare"], responses=ITCARE.responses(401))

ADMIN_USER = "admin"


class ItcareExtension(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    version: str | None = Field(default=None, max_length=32)


class NoOptions(BaseModel):
    """start and stop take no options."""

    model_config = ConfigDict(extra="forbid")


class PatchStart(BaseModel):
    """Start the instance (asynchronous, 202)."""

    operation: Literal["start"]
    options: NoOptions | None = None


class PatchStop(BaseModel):
    """Stop the instance (asynchronous, 202)."""

    operation: Literal["stop"]
    options: NoOptions | None = None


class InstallExtensionOptions(BaseModel):
    dbname: str = Field(min_length=1, max_length=63, description="the database to install them in",
                        json_schema_extra=rule(service.SQL_NAME_RE))
    extensions_list: list[ItcareExtension] = Field(min_length=1, max_length=64)


class PatchInstallExtension(BaseModel):
    """Install extensions in one database of the instance (asynchronous, 202)."""

    operation: Literal["install_extension"]
    options: InstallExtensionOptions


class RestoreOptions(BaseModel):
    sourceId: str | int = Field(description="the instance whose backups are restored (same major, backed up, ACTIVE)")
    stop: Literal["BEFORE", "AFTER"] = Field(
        description="BEFORE: up to the transactions committed before timestamp; AFTER: those committed at it too")
    timestamp: str = Field(description="date-time with its offset, e.g. 2022-11-02T09:32:02.000+00:00; within "
                                       "now - 14 days (production) or now - 7 days (otherwise)")


class PatchRestore(BaseModel):
    """Restore another instance's backups into this one, whose data is replaced (asynchronous, 202)."""

    operation: Literal["restore"]
    options: RestoreOptions


class UpgradeOptions(BaseModel):
    targetVersion: str = Field(min_length=1, max_length=64,
                               description="the target: a major (\"16\", from GET .../versions), a version name "
                                           "(16.14) or an id of GET /v1/engine-versions")
    changeReference: str | None = Field(default=None, max_length=128,
                                        description="kept on the request's parameters (e.g. RFC 1234)")
    upgradeMethod: Literal["link", "copy"] = Field(default="link", description="pgdbaas: pg_upgrade --link or --copy")


class PatchUpgrade(BaseModel):
    """Upgrade the instance to a newer PostgreSQL major with pg_upgrade (asynchronous, 202)."""

    operation: Literal["upgrade"]
    options: UpgradeOptions


class EnableHaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicationLag: int = Field(strict=True, description="MB, 1-500: the lag a standby may have and still be "
                                                         "promoted on failover (Patroni's maximum_lag_on_failover)")
    changeReference: str | None = Field(default=None, max_length=128,
                                        description="kept on the request's parameters (e.g. RFC 1234)")


class PatchEnableHa(BaseModel):
    """Convert the standalone instance (PostgreSQL 12 or later, ACTIVE) into an HA one: a Patroni
    cluster of it and a streaming standby, without dumping its data (asynchronous, 202)."""

    operation: Literal["enable_ha"]
    options: EnableHaOptions


# The seed's PATCH body, one member per operation: /docs shows each one's options, and a body that
# names no supported operation, or lacks its options, is a 400 before anything is looked up.
PatchInstance = Annotated[PatchStart | PatchStop | PatchInstallExtension | PatchRestore | PatchUpgrade | PatchEnableHa,
                          Field(discriminator="operation")]
PRODUCTION = ("production", "prod", "prd")


def is_production(cluster: Cluster) -> bool:
    """The seed's production service: the instance's kept `environment` (or `platform`) says so."""
    kept = cluster.dialect_fields.get("itcare", {})
    return any(str(kept.get(key, "")).lower() in PRODUCTION for key in ("environment", "platform"))


def _install_extension(ctx: Context, actor: Account, instance_id: str, body: PatchInstallExtension) -> Operation:
    extensions = [e.model_dump(exclude_none=True) for e in body.options.extensions_list]
    return databases.install_extensions(ctx, actor, instance_id, body.options.dbname, extensions)


def _restore(ctx: Context, actor: Account, instance_id: str, body: PatchRestore) -> Operation:
    options = body.options
    when = backups.parse_target_time(options.timestamp, "timestamp")
    target = service.get_cluster(ctx, actor, instance_id)
    max_age = timedelta(days=14 if is_production(target) else 7)
    return backups.restore_into(ctx, actor, instance_id, str(options.sourceId), when,
                                inclusive=options.stop == "AFTER", max_age=max_age)


def _upgrade(ctx: Context, actor: Account, instance_id: str, body: PatchUpgrade) -> Operation:
    options = body.options
    return upgrades.upgrade(ctx, actor, instance_id, options.targetVersion, options.upgradeMethod,
                            change_reference=options.changeReference, field="options.targetVersion",
                            method_field="options.upgradeMethod")


def _enable_ha(ctx: Context, actor: Account, instance_id: str, body: PatchEnableHa) -> Operation:
    return ha.enable_ha(ctx, actor, instance_id, body.options.replicationLag,
                        change_reference=body.options.changeReference, lag_field="options.replicationLag",
                        version_field="operation")


# operation -> service call (ctx, actor, instance id, body)
PATCH_OPERATIONS = {
    "enable_ha": _enable_ha,
    "upgrade": _upgrade,
    "restore": _restore,
    "start": lambda ctx, actor, instance_id, _body: service.start(ctx, actor, instance_id),
    "stop": lambda ctx, actor, instance_id, _body: service.stop(ctx, actor, instance_id),
    "install_extension": _install_extension,
}
ASYNC_STATUS = {ops.QUEUED: "IN_PROGRESS", ops.IN_PROGRESS: "IN_PROGRESS", ops.SUCCESS: "SUCCESS",
                ops.ERROR: "ERROR", ops.CANCELED: "ERROR"}
INSTANCE_STATUS = {service.RUNNING: "ACTIVE", service.TERMINATED: "DELETED"}


def instance_status(cluster: Cluster) -> str:
    """ACTIVE, STOPPED, ERROR, DELETED; IN_PROGRESS while an operation holds the instance."""
    if cluster.active_operation_id:
        return "IN_PROGRESS"
    return INSTANCE_STATUS.get(cluster.service_state, cluster.service_state)
KEPT_FIELDS = ("serviceId", "networkId", "area", "az", "trigram", "cloudId", "region", "regulation", "platform",
               "prefix", "nodePrefix", "tls", "environment", "backupEnabled", "dbBackupPolicyId",
               "serverBackupPolicyId",
               "monitoringEnabled", "monitoringAlerting", "onCallSupervision", "replicationEnabled",
               "noBackupProdReason", "noMonitoringProdReason", "noReplicationProdReason", "diskSize",
               "allowedReplicationLag")


class CreateInstance(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="5-60 lowercase letters or digits, not 'cluster' (upper case is folded)",
                      json_schema_extra={"pattern": "^[A-Za-z0-9]{5,60}$"})
    admPassword: str = Field(description="12+ characters with a lowercase, an uppercase, a digit and a special")
    nodeSizing: str = Field(description="e.g. 2cpu4gb", json_schema_extra=rule(service.SIZING_RE))
    diskSize: int = Field(strict=True, description="GB, 40-1024 (an integer, as the seed says)")
    postgreVersion: str = Field(description="a major of GET /v1/engine-versions")
    topology: str = "STANDALONE"
    allowedReplicationLag: int | None = Field(default=None, strict=True, description="MB, 1-10240")
    # Kept on the record and shown by GET (cloud-only elsewhere): typed so that GET can show them.
    serviceId: int | None = Field(default=None, strict=True, ge=0, le=INT64_MAX)
    networkId: int | None = Field(default=None, strict=True, ge=0, le=INT64_MAX)
    area: str | None = Field(default=None, max_length=64)
    trigram: str | None = Field(default=None, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.lower()
        if not re.fullmatch(r"[a-z0-9]{5,60}", value):
            raise ValueError("must be 5 to 60 lowercase letters or digits")
        if value == "cluster":
            raise ValueError("must not be the keyword 'cluster'")
        return value

    @field_validator("admPassword")
    @classmethod
    def _password(cls, value: str) -> str:
        if len(value) < 12 or not re.search(r"[a-z]", value) or not re.search(r"[A-Z]", value) \
                or not re.search(r"[0-9]", value) or not re.search(r"[^A-Za-z0-9]", value):
            raise ValueError("must be at least 12 characters with one lowercase, one uppercase, one digit and "
                             "one special character")
        return value

    @field_validator("diskSize")
    @classmethod
    def _disk(cls, value: int) -> int:
        if not 40 <= value <= 1024:
            raise ValueError("must be between 40 and 1024 (GB)")
        return value

    @field_validator("nodeSizing")
    @classmethod
    def _sizing(cls, value: str) -> str:
        if not service.SIZING_RE.match(value):
            raise ValueError("must look like 2cpu4gb")
        return value

    @field_validator("topology")
    @classmethod
    def _topology(cls, value: str) -> str:
        if value.upper() not in ("STANDALONE", "HA"):
            raise ValueError("must be STANDALONE or HA")
        return value.upper()

    @field_validator("allowedReplicationLag")
    @classmethod
    def _lag(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 10240:
            raise ValueError("must be between 1 and 10240 (MB)")
        return value


class AsyncBody(BaseModel):
    family: str = "DATABASE"
    id: str
    internalId: str | None
    lastUpdatedAt: datetime
    message: str
    process: str
    resourceName: str
    resourceType: str = "POSTGRESQL"
    status: str


class BackupRow(BaseModel):
    backupLastDate: datetime
    backupSize: int = Field(description="bytes")
    id: int = Field(description="the backup's number (backup_history_number of /v1)")
    type: str


class BackupPolicyRow(BaseModel):
    backupLastDate: datetime | None
    backupSize: int | None
    durationInHours: float | None = Field(description="how long the last backup took")
    frequencies: dict
    label: str
    name: str
    policyId: str
    replication: bool = False
    scope: str = "INSTANCE"
    startTime: str
    timezone: str
    type: str = "PGBACKREST"


class BackupPolicyDetails(BaseModel):
    backups: list[BackupRow]
    policies: list[BackupPolicyRow]


class Instance(BaseModel):
    id: str
    name: str
    label: str
    status: str
    version: str
    productVersion: str
    technology: str = "PostgreSQL"
    nodeCount: int
    instanceCount: int
    topology: str
    nodeSizing: str
    cpu: int | None
    ram: int | None
    storage: int | None
    ipAddress: str
    url: str
    creationTime: str
    creationUser: str
    resourceType: str = "POSTGRESQL"
    lastRequestId: str | None = None
    lastRequestStatus: str | None = None
    serviceId: int | None = None
    networkId: int | None = None
    area: str | None = None
    trigram: str | None = None
    allowedReplicationLag: int | None = None
    backupStatus: bool = Field(default=False, description="backups are set and at least one is usable")
    backupPolicyDetails: BackupPolicyDetails | None = None


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value else None


def backup_details(ctx: Context, actor: Account, cluster: Cluster) -> tuple[bool, BackupPolicyDetails]:
    """From the real backups (the /v1 backup history) and the cluster's backup policy."""
    window, policy = backups.backup_status(ctx, cluster.id)
    rows, _ = backups.list_backups(ctx, actor, cluster.id, limit=1000)
    usable = [b for b in rows if b.state == backups.COMPLETED]
    last = usable[0] if usable else None
    policies = []
    if policy is not None and policy.enabled:
        policies.append(BackupPolicyRow(
            backupLastDate=_utc(last.finished_at) if last else None, backupSize=last.size_bytes if last else None,
            durationInHours=round((last.finished_at - last.started_at).total_seconds() / 3600, 4) if last else None,
            frequencies={"daily": True, "archiveFrequencyMinutes": policy.archive_frequency_minute,
                         "verifyPeriodDays": policy.verify_period_day},
            label=f"daily at {policy.starting_time_hour:02d}:00, kept {policy.retention_period_day} days",
            name=f"{cluster.name}-daily", policyId=cluster.id, startTime=f"{policy.starting_time_hour:02d}:00",
            timezone=cluster.settings.get("timezone") or "UTC"))
    details = BackupPolicyDetails(
        backups=[BackupRow(backupLastDate=_utc(b.finished_at), backupSize=b.size_bytes, id=b.number, type=b.type)
                 for b in rows], policies=policies)
    return bool(window["backup_enabled"] and usable), details


def _render_async(cluster: Cluster, operation: Operation, process: str) -> AsyncBody:
    return AsyncBody(id=operation.id, internalId=cluster.id, status=ASYNC_STATUS[operation.state],
                     lastUpdatedAt=(operation.finished_at or operation.started_at or operation.created_at)
                     .replace(tzinfo=timezone.utc),  # the store keeps naive UTC; RFC 3339 wants the offset
                     message=operation.error or f"{process} {ASYNC_STATUS[operation.state].lower()}",
                     process=process, resourceName=cluster.name)


def _accepted(cluster: Cluster, operation: Operation, process: str) -> JSONResponse:
    body = _render_async(cluster, operation, process)
    return JSONResponse(status_code=status.HTTP_202_ACCEPTED, content=body.model_dump(mode="json"))


@router.post("", status_code=202, response_model=AsyncBody, summary="Create a PostgreSQL instance",
             responses=ITCARE.responses(400, 409))
def create_instance(request: CreateInstance, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    kept = {key: value for key, value in request.model_dump(exclude_unset=True).items() if key in KEPT_FIELDS}
    spec = service.ClusterSpec(name=request.name, engine_version=request.postgreVersion,
                               user_name=ADMIN_USER, user_password=request.admPassword, sizing=request.nodeSizing,
                               dialect_fields={"itcare": kept}, version_field="postgreVersion",
                               ha_enabled=request.topology == "HA", ha_field="topology",
                               replication_lag_mb=request.allowedReplicationLag or ha.DEFAULT_LAG_MB,
                               lag_field="allowedReplicationLag")
    cluster, operation = service.create_cluster(ctx, actor, spec)
    return _accepted(cluster, operation, "CREATE_POSTGRESQL")


@router.get("/{instance_id}", response_model=Instance, summary="Get a PostgreSQL instance",
            responses=ITCARE.responses(404))
def get_instance(instance_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    cluster = service.get_cluster(ctx, actor, instance_id)
    kept = cluster.dialect_fields.get("itcare", {})
    cpu, ram = _sizing(cluster)
    lead = _primary(cluster)
    address = ctx.hosts.address_of(lead.host) if lead else ""
    last = _last_request(ctx, actor, cluster.id)
    backup_status, backup_policy = backup_details(ctx, actor, cluster)
    return Instance(
        id=cluster.id, name=cluster.name, label=cluster.name,
        status=instance_status(cluster),
        version=cluster.major_version, productVersion=cluster.software_version,
        nodeCount=len(cluster.members), instanceCount=len(cluster.members), topology=cluster.topology,
        nodeSizing=cluster.settings.get("sizing", ""), cpu=cpu, ram=ram, storage=kept.get("diskSize"),
        ipAddress=address, url=f"postgresql://{address}:{lead.port}/postgres" if lead else "",
        creationTime=cluster.created_at.replace(tzinfo=timezone.utc).isoformat(), creationUser=cluster.created_by,
        lastRequestId=last.id if last else None, lastRequestStatus=ASYNC_STATUS[last.state] if last else None,
        **{k: kept.get(k) for k in ("serviceId", "networkId", "area", "trigram", "allowedReplicationLag")},
        backupStatus=backup_status, backupPolicyDetails=backup_policy,
    )


def _sizing(cluster: Cluster) -> tuple[int | None, int | None]:
    """cpu and ram (GB) of each node, from the cluster's sizing (2cpu4gb)."""
    sizing = service.SIZING_RE.match(cluster.settings.get("sizing", ""))
    return (int(sizing.group(1)), int(sizing.group(2))) if sizing else (None, None)


def _primary(cluster: Cluster) -> Member | None:
    """The member clients connect to; none once the instance is deleted (or while no member is
    observed as primary): the instance is still shown, without an address."""
    try:
        return members.primary(cluster)
    except Conflict:
        return None


def node_status(member: Member) -> str:
    """ACTIVE, STOPPED, ERROR, DELETED; IN_PROGRESS while an operation changes the member's state."""
    if member.service_state in members.TRANSITIONAL:
        return "IN_PROGRESS"
    return INSTANCE_STATUS.get(member.service_state, member.service_state)


class Node(BaseModel):
    """One member of the instance (a PostgreSQL instance on one host): the seed's node fields that
    exist on self-managed hosts; the cloud's (area, availability zone, backup, network, patch party,
    snapshot, storage information ...) are left out."""

    id: str
    name: str = Field(description="the PostgreSQL instance's name on its host")
    label: str
    status: str = Field(description="ACTIVE, STOPPED, ERROR, DELETED or IN_PROGRESS")
    host: str = Field(description="the host's name in the inventory")
    ipAddress: str = Field(description="the address clients connect to")
    port: int
    role: str = Field(description="primary, standby or replica, from the last observation")
    cpu: int | None
    ram: int | None = Field(description="GB")
    storage: int | None = Field(description="GB, as asked at creation (diskSize)")
    productVersion: str = Field(description="the server version observed on this member (else the cluster's)")
    technology: str = "PostgreSQL"
    resourceType: str = "POSTGRESQL"
    parentResourceType: str = "POSTGRESQL"
    creationTime: str
    creationUser: str
    serviceId: int | None = None


@router.get("/{instance_id}/nodes", response_model=list[Node], summary="Get a PostgreSQL node informations",
            responses=ITCARE.responses(404))
def instance_nodes(instance_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    cluster = service.get_cluster(ctx, actor, instance_id)
    cpu, ram = _sizing(cluster)
    kept = cluster.dialect_fields.get("itcare", {})
    created = cluster.created_at.replace(tzinfo=timezone.utc).isoformat()
    return [Node(id=m.id, name=m.name, label=m.name, status=node_status(m), host=m.host,
                 ipAddress=ctx.hosts.address_of(m.host), port=m.port, role=m.role, cpu=cpu, ram=ram,
                 storage=kept.get("diskSize"),
                 productVersion=(m.observed or {}).get("server_version") or cluster.software_version,
                 creationTime=created, creationUser=cluster.created_by, serviceId=kept.get("serviceId"))
            for m in cluster.members]


def _last_request(ctx: Context, actor: Account, cluster_id: str) -> Operation | None:
    rows, _ = requests_service.list_requests(ctx, actor, cluster_id=cluster_id, size=1)
    return rows[0] if rows else None


@router.delete("/{instance_id}", status_code=202, response_model=AsyncBody, summary="Delete a PostgreSQL instance",
               responses=ITCARE.responses(404, 409))
def delete_instance(instance_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    cluster = service.get_cluster(ctx, actor, instance_id)
    operation = service.terminate(ctx, actor, instance_id)
    return _accepted(cluster, operation, "DELETE_POSTGRESQL")


@router.patch("/{instance_id}", status_code=202, response_model=AsyncBody,
              summary="Performs update state actions (operation: start | stop | install_extension | restore | upgrade "
                      "| enable_ha)",
              responses=ITCARE.responses(400, 404, 409))
def patch_instance(instance_id: str, body: PatchInstance, ctx: Context = Depends(get_context),
                   actor: Account = Depends(current_account)):
    cluster = service.get_cluster(ctx, actor, instance_id)
    operation = PATCH_OPERATIONS[body.operation](ctx, actor, instance_id, body)
    return _accepted(cluster, operation, f"{body.operation.upper()}_POSTGRESQL")


class ExtensionRow(BaseModel):
    name: str
    schema_: str | None = Field(default=None, serialization_alias="schema")
    version: str | None = None


class DatabaseRow(BaseModel):
    name: str
    extensions: list[ExtensionRow]


class AvailableExtension(BaseModel):
    name: str
    version: str | None
    comment: str | None
    requiresRestarting: bool
    link: str


@router.get("/{instance_id}/databases", response_model=list[DatabaseRow],
            summary="Get available databases (with their extensions)", responses=ITCARE.responses(404))
def instance_databases(instance_id: str, ctx: Context = Depends(get_context),
                       actor: Account = Depends(current_account)):
    rows = databases.list_databases(ctx, actor, instance_id)
    return [DatabaseRow(name=row["name"], extensions=[
        ExtensionRow(name=e.get("name"), schema_=e.get("schema"), version=e.get("version"))
        for e in row.get("extensions", []) if isinstance(e, dict)]) for row in rows]


@router.get("/{instance_id}/extensions", response_model=list[AvailableExtension],
            summary="Get available extensions", responses=ITCARE.responses(404, 409, 502, 504))
def instance_extensions(instance_id: str, ctx: Context = Depends(get_context),
                        actor: Account = Depends(current_account)):
    rows = databases.available_extensions(ctx, actor, instance_id)
    return [AvailableExtension(name=row["name"], version=row.get("default_version"), comment=row.get("comment"),
                               requiresRestarting=bool(row.get("requires_restart")),
                               link=row.get("link") or f"https://www.postgresql.org/search/?q={row['name']}")
            for row in rows]


@router.get("/{instance_id}/versions", response_model=list[int],
            summary="Get available versions (the majors the instance can be upgraded to)",
            responses=ITCARE.responses(404))
def instance_versions(instance_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """The majors of the active catalog versions greater than the instance's, ascending: PATCH
    {"operation": "upgrade", "options": {"targetVersion": "<one of them>"}}."""
    return upgrades.upgrade_targets(ctx, actor, instance_id)
