"""/v1/clusters/{id}: the minor patch (SCP's Patch Minor Version) and the major upgrade with pg_upgrade.

Routes beyond the seed: POST .../upgrade (a major upgrade), POST .../upgrade/rollback and
.../upgrade/cleanup (the old instance an upgrade kept), GET .../upgrade-targets.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1
from api.routers.v1.clusters import ON_CLUSTER, accepted
from api.routers.v1.models import MinorPatchRequest, UpgradeRequest, UpgradeTargets
from api.services import clusters
from api.services import upgrades as service
from api.store.models import Account

router = APIRouter(prefix="/clusters", tags=["upgrades"])
# Bad target (400), no such cluster (404), busy, not RUNNING, standbys, kept old instance (409).
ON_UPGRADE = {**ON_CLUSTER, "responses": V1.responses(400, 404, 409)}


@router.put("/{cluster_id}/patch", **ON_UPGRADE, summary="Patch Minor Version")
def patch_minor_version(cluster_id: str, body: MinorPatchRequest, ctx: Context = Depends(get_context),
                        actor: Account = Depends(current_account)):
    """Installs a newer minor of the cluster's major (a catalog version), restarts the instance on it and
    reports the new `software_version`; with `backup_before_upgrade`, a backup first."""
    return accepted(cluster_id, service.patch_minor(ctx, actor, cluster_id, body.software_version,
                                                    body.backup_before_upgrade))


@router.post("/{cluster_id}/upgrade", **ON_UPGRADE, summary="Upgrade Major Version (pg_upgrade)")
def upgrade_major_version(cluster_id: str, body: UpgradeRequest, ctx: Context = Depends(get_context),
                          actor: Account = Depends(current_account)):
    """`pg_upgrade --check`, then pg_upgrade into a new instance of the target major on the same port (the
    old one kept, stopped, until `.../upgrade/cleanup`), statistics rebuilt, extensions updated; a full
    backup after it when backups are set. A failed check fails the request with pg_upgrade's reason and
    leaves the cluster running its old version. Refused (409) with standbys."""
    return accepted(cluster_id, service.upgrade(ctx, actor, cluster_id, body.target_version, body.upgrade_method))


@router.post("/{cluster_id}/upgrade/rollback", **ON_CLUSTER, summary="Roll back the last major upgrade")
def rollback_upgrade(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """Back to the kept old instance: only after a copy-mode upgrade whose new instance took no writes
    (else the request fails, nothing changed). 409 when no old instance is kept."""
    return accepted(cluster_id, service.rollback_upgrade(ctx, actor, cluster_id))


@router.post("/{cluster_id}/upgrade/cleanup", **ON_CLUSTER, summary="Remove the old instance of the last upgrade")
def cleanup_upgrade(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """Drops the old instance (and its data directory) the last upgrade kept: no rollback afterwards.
    409 when none is kept."""
    return accepted(cluster_id, service.cleanup_upgrade(ctx, actor, cluster_id))


@router.get("/{cluster_id}/upgrade-targets", response_model=UpgradeTargets, summary="List Upgrade Targets",
            responses=V1.responses(404))
def upgrade_targets(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """The majors of the active catalog versions greater than the cluster's (ITCare's GET .../versions)."""
    cluster = clusters.get_cluster(ctx, actor, cluster_id)
    return UpgradeTargets(major_version=cluster.major_version, software_version=cluster.software_version,
                          targets=service.upgrade_targets(ctx, actor, cluster_id))
