"""Request and response bodies of the /v1 dialect (field names from the SCP seed)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, SecretStr

from api.routers.common import rule
from api.services.clusters import CLUSTER_NAME_RE, LOCALE_RE, SIZING_RE, SQL_NAME_RE

SQL_NAME, CLUSTER_NAME, SIZING, LOCALE = rule(SQL_NAME_RE), rule(CLUSTER_NAME_RE), rule(SIZING_RE), rule(LOCALE_RE)

# The store keeps naive UTC; the API shows it as the seed does: 2024-05-17T00:23:17Z.
Timestamp = Annotated[datetime, PlainSerializer(
    lambda value: value.replace(tzinfo=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    return_type=str)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BackupOption(Strict):
    archive_frequency_minute: str | None = None
    retention_period_day: str | None = None
    starting_time_hour: str | None = None


class InitConfigOption(Strict):
    audit_enabled: bool = False
    backup_option: BackupOption | None = None
    database_encoding: str = "UTF-8"
    database_locale: str = Field(default="C.UTF-8", json_schema_extra=LOCALE)
    database_name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    database_port: int | None = Field(default=None, ge=1024, le=65535)
    database_user_name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    database_user_password: SecretStr = Field(min_length=8, max_length=128)


class BlockStorageGroup(Strict):
    role_type: str | None = None
    size_gb: int | None = Field(default=None, ge=1, le=1_048_576, description="accepted and ignored")
    volume_type: str | None = None


class InstanceRequest(Strict):
    public_ip_id: str | None = None
    role_type: str | None = "ACTIVE"
    service_ip_address: str | None = None


class InstanceGroupRequest(Strict):
    block_storage_groups: list[BlockStorageGroup] = []
    instances: list[InstanceRequest] = []
    role_type: str | None = "ACTIVE"
    server_type_name: str = Field(default="2cpu4gb", description="sizing, e.g. 2cpu4gb", json_schema_extra=SIZING)


class MaintenanceOption(Strict):
    period_hour: str | None = None
    starting_day_of_week: str | None = None
    starting_time: str | None = None


class ClusterCreateRequest(Strict):
    name: str = Field(min_length=3, max_length=63, json_schema_extra=CLUSTER_NAME)
    dbaas_engine_version_id: str = Field(default="", description="id from GET /v1/engine-versions; empty: default")
    ha_enabled: bool = Field(default=False, description="HA from the start: a Patroni cluster of the primary and one "
                                                         "streaming standby (PostgreSQL 12 or later)")
    init_config_option: InitConfigOption
    instance_groups: list[InstanceGroupRequest] = Field(default_factory=lambda: [InstanceGroupRequest()])
    allowable_ip_addresses: list[str] = []
    instance_name_prefix: str | None = None
    maintenance_option: MaintenanceOption | None = None
    nat_enabled: bool = False
    origin_cluster_id: str | None = None
    subnet_id: str | None = None
    tags: list = []
    timezone: str = ""
    vip_public_ip_id: str | None = None
    virtual_ip_address: str | None = None


class AsyncResource(BaseModel):
    id: str


class AsyncResponse(BaseModel):
    request_id: str
    resource: AsyncResource


class ClusterSummary(BaseModel):
    account_id: str
    created_at: Timestamp
    created_by: str
    database_name: str
    ha_enabled: bool
    id: str
    instance_count: int
    modified_at: Timestamp
    modified_by: str
    name: str
    role_type: str = "ORIGIN"
    service_state: str


class ClusterPage(BaseModel):
    contents: list[ClusterSummary]
    count: int
    page: int
    size: int
    sort: list[str]


class BackupOptionOut(BaseModel):
    archive_frequency_minute: str
    retention_period_day: str
    starting_time_hour: str


class InitConfigOptionOut(BaseModel):
    audit_enabled: bool = False
    backup_option: BackupOptionOut | None = None
    database_encoding: str
    database_locale: str
    database_name: str
    database_port: int | None
    database_user_name: str


class InstanceOut(BaseModel):
    """One member of the cluster: a PostgreSQL instance on one host."""

    name: str = Field(description="the PostgreSQL instance's name on its host")
    host: str = Field(description="the host's name in the inventory")
    port: int
    role_type: str
    role: str = Field(description="primary, standby or replica, from the last observation")
    service_ip_address: str
    service_state: str
    data_directory: str
    server_version: str | None = Field(description="observed on this member; null before its first observation")
    in_recovery: bool | None = Field(description="observed on this member (a standby is in recovery)")
    rest_port: int | None = Field(default=None, description="an HA member's Patroni REST API port")
    lag_bytes: int | None = Field(default=None, description="an HA standby's replication lag behind the leader")
    timeline: int | None = Field(default=None, description="an HA member's timeline")


class SwitchoverRequest(Strict):
    candidate: str | None = Field(default=None, max_length=63,
                                  description="the member to lead (GET the cluster: instance_groups[].instances[]."
                                              "name); empty: the standby with the least lag")


class InstanceGroupOut(BaseModel):
    id: str
    role_type: str
    server_type_name: str
    instances: list[InstanceOut]


class ClusterDetail(BaseModel):
    account_id: str
    allowable_ip_addresses: list[str]
    created_at: Timestamp
    created_by: str
    dbaas_engine: str = "PostgreSQL Community"
    dbaas_engine_version_id: str
    dbaas_engine_version_name: str
    ha_enabled: bool
    id: str
    init_config_option: InitConfigOptionOut
    instance_count: int
    instance_groups: list[InstanceGroupOut]
    modified_at: Timestamp
    modified_by: str
    name: str
    product_image_type: str = "PostgreSQL Community"
    role_type: str = "ORIGIN"
    service_state: str
    software_version: str
    tags: list
    timezone: str
    active_request_id: str | None
    databases: list[str]
    size_bytes: int | None
    origin_cluster_id: str = Field(default="", description="the cluster this one was restored from, or a read "
                                                         "replica's origin")
    backup: "BackupStatusOut | None" = Field(default=None, description="backups and the restorable window")
    major_version: str = Field(default="", description="the PostgreSQL major the cluster runs")
    upgrade: "UpgradeRecordOut | None" = Field(default=None, description="the last major upgrade, while recorded")


class Progress(BaseModel):
    tasks_done: int = Field(description="tasks started so far, over every step")
    tasks_total: int | None = Field(description="tasks of every step's playbook, known once the request runs")
    step: int = Field(description="the step running (or the last one run), from 1")
    steps: int = Field(description="playbook runs of this request")


class RequestState(BaseModel):
    request_id: str
    state: str
    operation: str
    cluster_id: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: Progress
    message: str | None = None
    created_by: str = Field(default="", description="the account id that made it, or \"scheduler\"")


class RequestPage(BaseModel):
    contents: list[RequestState]
    count: int
    page: int
    size: int


class RequestEvent(BaseModel):
    id: int
    counter: int
    event: str
    host: str | None
    task: str | None
    status: str | None
    message: str | None
    created_at: Timestamp


class EngineVersionOut(BaseModel):
    end_of_service: bool
    id: str
    major_version: str
    name: str
    os_type: str = "Linux"
    os_version: str
    product_image_type: str = "PostgreSQL Community"
    software_version: str
    install_source: str = Field(description="apt (Debian packages) or binaries (a relocatable tree)")
    active: bool = Field(description="new clusters may use it")
    default: bool = Field(description="what a create that names no version uses")


class EngineVersionList(BaseModel):
    contents: list[EngineVersionOut]


class EngineProperty(BaseModel):
    name: str
    value: str


class EnginePropertyList(BaseModel):
    contents: list[EngineProperty]


class AccountCreate(Strict):
    name: str = Field(min_length=2, max_length=64)
    password: SecretStr = Field(min_length=8, max_length=128)
    role: str = Field(default="user", pattern="^(admin|user)$")


class AccountOut(BaseModel):
    id: str
    name: str
    role: str
    created_at: Timestamp


class AccountList(BaseModel):
    contents: list[AccountOut]
    count: int


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"


class ExtensionRef(Strict):
    name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    version: str | None = Field(default=None, max_length=32)


class DatabaseCreate(Strict):
    name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    owner: str = Field(default="", max_length=63, description="login role owning it; default: the initial user")
    owner_password: SecretStr | None = Field(default=None, min_length=8, max_length=128,
                                             description="when given, the owner role is created with it")


class DatabaseOut(BaseModel):
    id: int | None = Field(description="record id (the DBaaS dialect's); null for databases made outside pgdbaas")
    name: str
    owner: str | None = None
    encoding: str | None = None
    size_bytes: int | None = None
    extensions: list[dict] = []


class UserCreate(Strict):
    name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    database: str = Field(min_length=1, max_length=63, description="the one database this user may connect to",
                          json_schema_extra=SQL_NAME)
    password: SecretStr | None = Field(default=None, min_length=8, max_length=128, description="default: generated")


class PasswordReset(Strict):
    password: SecretStr | None = Field(default=None, min_length=8, max_length=128, description="default: generated")


class UserOut(BaseModel):
    name: str
    database: str | None
    createdb: bool
    createrole: bool
    managed: bool = Field(description="created through pgdbaas (its password is kept encrypted)")


class AsyncPasswordResponse(AsyncResponse):
    password: str | None = Field(description="the generated password, shown once (the request applies it); "
                                             "null when the caller chose it: a chosen secret is never echoed")


class ExtensionInstall(Strict):
    database: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    extensions: list[ExtensionRef] = Field(min_length=1)


class ExtensionOut(BaseModel):
    name: str
    default_version: str | None = None
    installed_version: str | None = None
    comment: str | None = None
    requires_restart: bool = False
    package: str | None = None
    package_installed: bool | None = None


# -- backups (issue 9) ----------------------------------------------------------------------------
Number = str | int


class BackupSettingRequest(Strict):
    """The seed sends numbers as strings ("60"); numbers are accepted too."""

    archive_frequency_minute: Number | None = Field(
        default=None, description="1-1440: archive_timeout, the most data (minutes) a crash loses; default 60")
    retention_period_day: Number | None = Field(default=None, description="1-365 days of backups kept; default 7")
    starting_time_hour: Number | None = Field(
        default=None, description="0-23: the daily backup's hour in the cluster's timezone; default 2")
    verify_period_day: Number | None = Field(
        default=None, description="0-365: days between two verifications of the newest backup (0: none); "
                                  "pgdbaas extension")


class BackupRun(Strict):
    type: str = Field(default="full", pattern="^(full|diff|incr)$", description="full, diff or incr")


class BackupHistoryNumberRequest(Strict):
    backup_history_number: list[Number] = Field(min_length=1, max_length=1000)


class BackupHistoryOut(BaseModel):
    backup_history_number: str
    backup_start_at: Timestamp
    backup_end_at: Timestamp
    backup_size_gb: str = Field(description="the database's size in the backup, GB (3 decimals)")
    backup_size_bytes: int
    backup_repository_size_bytes: int = Field(description="what it added to the repository (compressed; "
                                                            "a diff or incr stores only what changed)")
    backup_type: str
    backup_label: str
    backup_state: str = Field(description="COMPLETED, or ERROR when pgBackRest found page checksum errors")
    backup_state_detail: str
    software_version: str
    verified_at: Timestamp | None = None
    verify_state: str | None = Field(default=None, description="VERIFIED or FAILED (last verification)")
    verify_detail: dict = {}


class BackupHistoryList(BaseModel):
    contents: list[BackupHistoryOut]
    total_count: int


class ArchiveConfigSetRequest(Strict):
    archive_enabled: bool
    retention_period_day: Number | None = None


class ArchiveConfigDetailResponse(BaseModel):
    archive_enabled: bool
    retention_period_day: int


class ClusterRestoreRequest(Strict):
    name: str = Field(min_length=3, max_length=63, json_schema_extra=CLUSTER_NAME)
    backup_history_number: Number | None = Field(default=None, description="restore this backup (its end)")
    backup_recovery_time: str | None = Field(
        default=None, description="restore to this time, with its UTC offset (2024-05-17T00:23:17.000+00:00); "
                                  "neither: the latest")
    allowable_ip_addresses: list[str] = []
    server_type_name: str = Field(default="2cpu4gb", json_schema_extra=SIZING)
    block_storage_groups: list[BlockStorageGroup] = []
    instance_name_prefix: str | None = None
    maintenance_option: MaintenanceOption | None = None
    tags: list = []


class LastBackupOut(BaseModel):
    backup_history_number: str
    backup_end_at: Timestamp
    backup_type: str


class BackupStatusOut(BaseModel):
    backup_enabled: bool
    archive_enabled: bool
    last_backup: LastBackupOut | None
    earliest_restorable_time: Timestamp | None
    latest_restorable_time: Timestamp | None
    next_backup_at: Timestamp | None = Field(default=None, description="the next scheduled backup (UTC)")
    next_verify_at: Timestamp | None = None
    schedule_error: str | None = Field(default=None, description="why the last scheduled occurrence did not run")


class UpgradeRecordOut(BaseModel):
    """What the last major upgrade did (`old_instance`: kept, rolled_back or cleaned)."""

    from_version: str | None = None
    from_major: str | None = None
    to_version: str | None = None
    to_major: str | None = None
    method: str | None = None
    old_instance: str | None = None
    old_data_directory: str | None = None
    new_data_directory: str | None = None
    old_port: int | None = None
    extensions_updated: list | dict | None = None
    analyzed: bool | None = None
    change_reference: str | None = None
    request_id: str | None = None
    upgraded_at: str | None = None


def _flag(value):
    """The seed's example sends "" for a boolean: no."""
    return False if value == "" else value


class MinorPatchRequest(Strict):
    """SCP's Patch Minor Version."""

    software_version: str = Field(max_length=64, description="the target: a version name (16.14) or id of "
                                                             "GET /v1/engine-versions, of the cluster's major, "
                                                             "newer than the version it runs")
    backup_before_upgrade: Annotated[bool, BeforeValidator(_flag)] = Field(
        default=False, description="take a backup first (backups must be set on the cluster); \"\" is false")


class UpgradeRequest(Strict):
    """A major upgrade with pg_upgrade (not in the SCP seed)."""

    target_version: str = Field(max_length=64, description="a major (16: its default or newest active version), "
                                                           "a version name (16.14) or an id of "
                                                           "GET /v1/engine-versions, of a greater major")
    upgrade_method: Literal["link", "copy"] = Field(
        default="link", description="link: pg_upgrade --link (fast; the old instance cannot run again once the new "
                                    "one started); copy: --copy (slower, twice the space; can be rolled back "
                                    "while the new instance has taken no writes)")


class UpgradeTargets(BaseModel):
    """The majors a cluster can be upgraded to (active catalog versions greater than its own)."""

    major_version: str
    software_version: str
    targets: list[int]


ClusterDetail.model_rebuild()


class ReplicaSpec(Strict):
    name: str = Field(min_length=3, max_length=63, json_schema_extra=CLUSTER_NAME,
                      description="the replica cluster's name (unique among your clusters)")
    instance_groups: list[InstanceGroupRequest] = Field(default_factory=list,
                                                        description="accepted; a replica has its origin's sizing")


class ReplicasCreateRequest(Strict):
    replica_count: Number | None = Field(default=None, description="1-5; default: as many as `replicas` names "
                                                                   "(unnamed ones are <origin>-replica-<k>)")
    replicas: list[ReplicaSpec] = Field(default_factory=list, max_length=5)
    allowable_ip_addresses: list[str] = []
    tags: list = []
    maintenance_option: MaintenanceOption | None = None
    nat_enabled: bool | str | None = None
    subnet_id: str | None = None


class ReplicasOtherRegionCreateRequest(ReplicasCreateRequest):
    region: str = Field(min_length=1, max_length=255,
                        description="the inventory group whose hosts the replicas are placed on")


class ReplicaOut(BaseModel):
    id: str = Field(description="the replica cluster's id (GET /v1/clusters/{id})")
    name: str
    region: str = Field(description="the inventory group it was placed in (empty: any host of the pool)")
    replica_state: str = Field(description="streaming, catchup, disconnected, stopped or promoted; CREATING "
                                           "before its first observation")
    replica_state_detail: str
    synced_at: str = Field(description="when it last received WAL from the origin (ISO 8601), empty if never")
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    service_state: str


class ReplicasListResponse(BaseModel):
    contents: list[ReplicaOut]
    count: int
