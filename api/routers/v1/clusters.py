"""/v1/clusters: create, list, show, start, stop, restart, terminate."""
from __future__ import annotations

from fastapi import APIRouter, Depends, status

from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1, page_query, size_query
from api.routers.v1.models import (AsyncResponse, BackupOptionOut, BackupStatusOut, ClusterCreateRequest,
                                   ClusterDetail, ClusterPage, ClusterSummary, InitConfigOptionOut, InstanceGroupOut,
                                   InstanceOut, SwitchoverRequest, UpgradeRecordOut)
from api.services import backups, ha
from api.services import clusters as service
from api.store.models import Account, Cluster, Operation

router = APIRouter(prefix="/clusters", tags=["clusters"])
ACCEPTED = {"status_code": status.HTTP_202_ACCEPTED, "response_model": AsyncResponse}
# An operation on an existing cluster: it may be gone (404), or busy / in the wrong state (409).
ON_CLUSTER = {**ACCEPTED, "responses": V1.responses(404, 409)}


def accepted(cluster_id: str, operation: Operation) -> AsyncResponse:
    return AsyncResponse(request_id=operation.id, resource={"id": cluster_id})


def summary(cluster: Cluster) -> ClusterSummary:
    return ClusterSummary(
        account_id=cluster.owner_id, created_at=cluster.created_at, created_by=cluster.created_by,
        database_name=cluster.database_name, ha_enabled=cluster.topology == "HA", id=cluster.id,
        instance_count=len(cluster.members), modified_at=cluster.modified_at, modified_by=cluster.modified_by,
        name=cluster.name, service_state=cluster.service_state,
        role_type="REPLICA" if cluster.topology == "REPLICA" else "ORIGIN",
    )


def detail(ctx: Context, cluster: Cluster) -> ClusterDetail:
    settings = cluster.settings
    window, policy = backups.backup_status(ctx, cluster.id)
    instances = [
        InstanceOut(name=m.name, host=m.host, port=m.port, rest_port=m.rest_port, role_type=m.role_type, role=m.role,
                    service_ip_address=ctx.hosts.address_of(m.host),
                    service_state=m.service_state, data_directory=m.data_directory,
                    server_version=(m.observed or {}).get("server_version"),
                    in_recovery=(m.observed or {}).get("in_recovery"),
                    lag_bytes=(m.observed or {}).get("lag_bytes"), timeline=(m.observed or {}).get("timeline"))
        for m in cluster.members
    ]
    return ClusterDetail(
        **summary(cluster).model_dump(exclude={"instance_count"}),
        instance_count=len(instances),
        allowable_ip_addresses=settings.get("allowable_ip_addresses", []),
        dbaas_engine_version_id=cluster.engine_version_id,
        dbaas_engine_version_name=f"PostgreSQL {cluster.software_version}",
        init_config_option=InitConfigOptionOut(
            database_encoding=settings.get("encoding", ""), database_locale=settings.get("locale", ""),
            database_name=cluster.database_name, database_port=settings.get("port"),
            database_user_name=settings.get("database_user_name", ""),
            backup_option=BackupOptionOut(archive_frequency_minute=str(policy.archive_frequency_minute),
                                          retention_period_day=str(policy.retention_period_day),
                                          starting_time_hour=str(policy.starting_time_hour))
            if policy is not None and policy.enabled else None,
        ),
        instance_groups=[InstanceGroupOut(id=cluster.id, role_type="ACTIVE",
                                          server_type_name=settings.get("sizing", ""), instances=instances)],
        software_version=cluster.software_version, tags=cluster.tags, timezone=settings.get("timezone", ""),
        active_request_id=cluster.active_operation_id,
        databases=[d["name"] for d in service.observed_databases(cluster)],
        size_bytes=cluster.observed.get("size_bytes"),
        origin_cluster_id=(settings.get("restored_from") or {}).get("source_cluster_id", "")
        or (settings.get("replica") or {}).get("origin_id", ""),
        backup=BackupStatusOut(**window),
        major_version=cluster.major_version,
        upgrade=UpgradeRecordOut(**{k: v for k, v in settings["upgrade"].items() if k in UpgradeRecordOut.model_fields})
        if isinstance(settings.get("upgrade"), dict) else None,
    )


@router.post("", **ACCEPTED, summary="Create Cluster", responses=V1.responses(409))
def create_cluster(body: ClusterCreateRequest, ctx: Context = Depends(get_context),
                   actor: Account = Depends(current_account)):
    init = body.init_config_option
    group = body.instance_groups[0] if body.instance_groups else None
    spec = service.ClusterSpec(
        name=body.name, engine_version=body.dbaas_engine_version_id, port=init.database_port,
        database_name=init.database_name, user_name=init.database_user_name,
        user_password=init.database_user_password.get_secret_value(), encoding=init.database_encoding,
        locale=init.database_locale, sizing=group.server_type_name if group else service.DEFAULT_SIZING,
        allowed_cidrs=body.allowable_ip_addresses, tags=body.tags, timezone=body.timezone,
        ha_enabled=body.ha_enabled,
    )
    cluster, operation = service.create_cluster(ctx, actor, spec)
    return accepted(cluster.id, operation)


@router.get("", response_model=ClusterPage, summary="List Clusters")
def list_clusters(size: int = size_query(20), page: int = page_query(0, 0), sort: str = "name:asc",
                  name: str | None = None, service_state: str | None = None, database_name: str | None = None,
                  ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    rows, count = service.list_clusters(ctx, actor, page=page, size=size, sort=sort, name=name,
                                        service_state=service_state, database_name=database_name)
    return ClusterPage(contents=[summary(c) for c in rows], count=count, page=page, size=size, sort=[sort])


@router.get("/{cluster_id}", response_model=ClusterDetail, summary="Show Cluster", responses=V1.responses(404))
def show_cluster(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return detail(ctx, service.get_cluster(ctx, actor, cluster_id))


@router.post("/{cluster_id}/start", **ON_CLUSTER, summary="Start Cluster")
def start_cluster(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.start(ctx, actor, cluster_id))


@router.post("/{cluster_id}/stop", **ON_CLUSTER, summary="Stop Cluster")
def stop_cluster(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.stop(ctx, actor, cluster_id))


@router.post("/{cluster_id}/restart", **ON_CLUSTER, summary="Restart Cluster")
def restart_cluster(cluster_id: str, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.restart(ctx, actor, cluster_id))


@router.post("/{cluster_id}/sync-state", **ON_CLUSTER, summary="Sync Cluster State (observe it again)")
def sync_state(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.observe(ctx, actor, cluster_id))


@router.post("/{cluster_id}/switchover", **ON_CLUSTER, summary="Switchover Cluster",
             description="An HA cluster's leader hands over to `candidate` (a member's name) or, without one, "
                         "to the standby with the least lag (Patroni's switchover); 409 for a standalone cluster.")
def switchover_cluster(cluster_id: str, body: SwitchoverRequest | None = None, ctx: Context = Depends(get_context),
                       actor: Account = Depends(current_account)):
    body = body or SwitchoverRequest()
    return accepted(cluster_id, ha.switchover(ctx, actor, cluster_id, body.candidate or ""))


@router.delete("/{cluster_id}", **ON_CLUSTER, summary="Terminate Cluster")
def terminate_cluster(cluster_id: str, ctx: Context = Depends(get_context),
                      actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.terminate(ctx, actor, cluster_id))
