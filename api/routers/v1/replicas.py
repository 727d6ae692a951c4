"""/v1/clusters/{id}: read replicas (SCP's Create Replica, Create Other region Replica, List
Replicas, Promote Replica Cluster, Reset Replica, Synchronize Replica State). Each replica is a
cluster of its own: GET /v1/clusters/{replica id} shows it, DELETE terminates it."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from api.context import Context
from api.deps import current_account, get_context
from api.errors import Invalid
from api.routers.common import V1
from api.routers.v1.clusters import ON_CLUSTER, accepted
from api.routers.v1.models import (ReplicaOut, ReplicasCreateRequest, ReplicasListResponse,
                                   ReplicasOtherRegionCreateRequest)
from api.services import replicas as service
from api.store.models import Account, Cluster

router = APIRouter(prefix="/clusters", tags=["replicas"])
# Bad names or count (400), no such cluster (404), busy, not RUNNING, a replica or HA origin (409).
ON_REPLICAS = {**ON_CLUSTER, "responses": V1.responses(400, 404, 409)}


def _count(value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Invalid("must be a whole number", field="replica_count") from None


def _create(ctx: Context, actor: Account, cluster_id: str, body: ReplicasCreateRequest, region: str | None):
    _, operation = service.create_replicas(ctx, actor, cluster_id, [r.name for r in body.replicas],
                                           _count(body.replica_count), region=region,
                                           allowed_cidrs=body.allowable_ip_addresses, tags=body.tags)
    return accepted(cluster_id, operation)


@router.post("/{cluster_id}/replicas", **ON_REPLICAS, summary="Create Replica")
def create_replicas(cluster_id: str, body: ReplicasCreateRequest, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    """Streaming read replicas of the cluster, each a new cluster (pg_basebackup, then streaming
    replication through a slot of its own); the request runs on the origin."""
    return _create(ctx, actor, cluster_id, body, None)


@router.post("/{cluster_id}/replicas/other-region", **ON_REPLICAS, summary="Create Other region Replica")
def create_other_region_replicas(cluster_id: str, body: ReplicasOtherRegionCreateRequest,
                                 ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """As Create Replica, placed on the hosts of the inventory group `region`."""
    return _create(ctx, actor, cluster_id, body, body.region)


def _row(replica: Cluster) -> ReplicaOut:
    record = service.replica_record(replica)
    return ReplicaOut(id=replica.id, name=replica.name, region=record.get("region") or "",
                      replica_state=record.get("replica_state") or replica.service_state,
                      replica_state_detail=record.get("replica_state_detail") or "",
                      synced_at=record.get("synced_at") or "", lag_bytes=record.get("lag_bytes"),
                      lag_seconds=record.get("lag_seconds"), service_state=replica.service_state)


@router.get("/{cluster_id}/replicas", response_model=ReplicasListResponse, summary="List Replicas",
            responses=V1.responses(404))
def list_replicas(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """The cluster's read replicas as last observed (POST .../sync-replica-state reads them again)."""
    rows = [_row(r) for r in service.replicas_of(ctx, actor, cluster_id)]
    return ReplicasListResponse(contents=rows, count=len(rows))


@router.post("/{origin_cluster_id}/sync-replica-state", **ON_CLUSTER, summary="Synchronize Replica State")
def sync_replica_state(origin_cluster_id: str, ctx: Context = Depends(get_context),
                       actor: Account = Depends(current_account)):
    return accepted(origin_cluster_id, service.sync_replica_state(ctx, actor, origin_cluster_id))


@router.post("/{cluster_id}/promote", **ON_CLUSTER, summary="Promote Replica Cluster")
def promote_replica(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """The replica becomes an independent primary: it accepts writes and no longer follows its origin."""
    return accepted(cluster_id, service.promote(ctx, actor, cluster_id))


@router.post("/{replica_cluster_id}/reset-replica", **ON_CLUSTER, summary="Reset Replica")
def reset_replica(replica_cluster_id: str, ctx: Context = Depends(get_context),
                  actor: Account = Depends(current_account)):
    """A fresh copy of the origin replaces the replica's data (what a promoted replica wrote is lost),
    and it follows the origin again."""
    return accepted(replica_cluster_id, service.reset_replica(ctx, actor, replica_cluster_id))
