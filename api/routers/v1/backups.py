"""/v1/clusters/{id}: backups, backup histories, WAL archive, restore and verification (SCP seed).

Routes beyond the seed: POST .../backup-histories takes a backup now (on demand) and POST
.../backup-histories/{number}/verify verifies one (restore into a scratch instance, amcheck).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1, page_query
from api.routers.v1.clusters import ACCEPTED, ON_CLUSTER, accepted
from api.routers.v1.models import (ArchiveConfigDetailResponse, ArchiveConfigSetRequest, BackupHistoryList,
                                   BackupHistoryNumberRequest, BackupHistoryOut, BackupRun, BackupSettingRequest,
                                   ClusterRestoreRequest)
from api.services import backups as service
from api.store.models import Account, Backup

router = APIRouter(prefix="/clusters", tags=["backups"])
# Bad input (400), no such cluster or backup (404), busy or backups not set (409).
ON_BACKUPS = {**ON_CLUSTER, "responses": V1.responses(400, 404, 409)}


def history(backup: Backup) -> BackupHistoryOut:
    return BackupHistoryOut(
        backup_history_number=str(backup.number), backup_start_at=backup.started_at, backup_end_at=backup.finished_at,
        backup_size_gb=f"{backup.size_bytes / 1024 ** 3:.3f}", backup_size_bytes=backup.size_bytes,
        backup_repository_size_bytes=backup.repo_size_bytes, backup_type=backup.type, backup_label=backup.label,
        backup_state=backup.state, backup_state_detail=backup.state_detail, software_version=backup.software_version,
        verified_at=backup.verified_at, verify_state=backup.verify_state, verify_detail=backup.verify_detail or {})


@router.post("/{cluster_id}/backups", **ON_BACKUPS, summary="Set Backup")
def set_backup(cluster_id: str, body: BackupSettingRequest, ctx: Context = Depends(get_context),
               actor: Account = Depends(current_account)):
    """Turns WAL archiving on, takes a first full backup at once and schedules a daily one."""
    settings = service.BackupSettings.parse(body.archive_frequency_minute, body.retention_period_day,
                                            body.starting_time_hour, body.verify_period_day)
    return accepted(cluster_id, service.set_backup(ctx, actor, cluster_id, settings))


@router.delete("/{cluster_id}/backups", **ON_BACKUPS, summary="Unset Backup")
def unset_backup(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """Archiving off, nothing scheduled; the backups stay listed and restorable until removed."""
    return accepted(cluster_id, service.unset_backup(ctx, actor, cluster_id))


@router.get("/{cluster_id}/backup-histories", response_model=BackupHistoryList, summary="List Backup Histories",
            responses=V1.responses(404))
def list_backup_histories(cluster_id: str, limit: int = Query(20, ge=1, le=1000), page: int = page_query(0, 0),
                          ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    rows, total = service.list_backups(ctx, actor, cluster_id, limit=limit, page=page)
    return BackupHistoryList(contents=[history(b) for b in rows], total_count=total)


@router.post("/{cluster_id}/backup-histories", **ON_BACKUPS, summary="Take a backup now (on demand)")
def take_backup(cluster_id: str, body: BackupRun | None = None, ctx: Context = Depends(get_context),
                actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.take_backup(ctx, actor, cluster_id, (body or BackupRun()).type))


@router.put("/{cluster_id}/backup-histories", **ON_BACKUPS, summary="Remove Backup Histories")
def remove_backup_histories(cluster_id: str, body: BackupHistoryNumberRequest, ctx: Context = Depends(get_context),
                            actor: Account = Depends(current_account)):
    """Refused (409) when a listed backup is the base of one not listed, or when none would remain."""
    return accepted(cluster_id, service.remove_backups(ctx, actor, cluster_id, body.backup_history_number))


@router.post("/{cluster_id}/backup-histories/{number}/verify", **ON_BACKUPS, summary="Verify a backup")
def verify_backup(cluster_id: str, number: int, ctx: Context = Depends(get_context),
                  actor: Account = Depends(current_account)):
    """Restores the backup into a scratch instance, runs pg_amcheck and a row count, records the result
    (verified_at, verify_state) on it, and drops the scratch instance."""
    return accepted(cluster_id, service.verify_backup(ctx, actor, cluster_id, number))


@router.get("/{cluster_id}/archive", response_model=ArchiveConfigDetailResponse, summary="Show Archive Config",
            responses=V1.responses(404))
def show_archive(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return ArchiveConfigDetailResponse(**service.get_archive(ctx, actor, cluster_id))


@router.put("/{cluster_id}/archive", **ON_BACKUPS, summary="Set Archive Config")
def set_archive(cluster_id: str, body: ArchiveConfigSetRequest, ctx: Context = Depends(get_context),
                actor: Account = Depends(current_account)):
    """archive_enabled false: no point-in-time restore (WAL is kept only for the backups' own
    consistency); restores by backup number still work."""
    return accepted(cluster_id, service.set_archive(ctx, actor, cluster_id, body.archive_enabled,
                                                    body.retention_period_day))


@router.post("/{cluster_id}/archive/sync", **ON_BACKUPS, summary="Synchronize Archive Config")
def sync_archive(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """Applies the recorded backup and archive settings to the instance again and re-reads its backups."""
    return accepted(cluster_id, service.sync_archive(ctx, actor, cluster_id))


@router.delete("/{cluster_id}/archive", **ON_BACKUPS, summary="Delete Archive Log")
def delete_archive(cluster_id: str, type: str | None = Query("ALL", description="ALL"),  # noqa: A002 (seed name)
                   ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    """Removes the archived WAL that no backup needs for its own consistency: point-in-time restore
    then works from the newest backup on."""
    return accepted(cluster_id, service.delete_archive(ctx, actor, cluster_id, type))


@router.post("/{cluster_id}/restore", **ACCEPTED, summary="Create Restore Cluster",
             responses=V1.responses(400, 404, 409))
def restore(cluster_id: str, body: ClusterRestoreRequest, ctx: Context = Depends(get_context),
            actor: Account = Depends(current_account)):
    """A NEW cluster (resource.id) holding this one's data at a backup (backup_history_number), a time
    (backup_recovery_time) or the latest."""
    spec = service.RestoreSpec(name=body.name, backup_history_number=body.backup_history_number,
                               backup_recovery_time=body.backup_recovery_time, sizing=body.server_type_name,
                               allowed_cidrs=body.allowable_ip_addresses, tags=body.tags)
    cluster, operation = service.restore(ctx, actor, cluster_id, spec)
    return accepted(cluster.id, operation)
