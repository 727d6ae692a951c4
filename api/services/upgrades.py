"""Upgrades of a cluster's PostgreSQL: the minor patch (kind `patch_minor`) and the major upgrade with
pg_upgrade (kinds `upgrade`, `upgrade_rollback`, `upgrade_cleanup`).

A patch moves a cluster to a newer catalog version of the SAME major: the version's software is
installed (a binaries tree switches the host's `/usr/lib/postgresql/<major>` layout to it; apt
installs its packages), the instance restarts on it and reports the version it runs. With
`backup_before_upgrade` a backup (full when the newest full is a week old, else diff: the scheduler's
rule) is taken first, so the cluster can be restored to just before the patch.

The software of a major is per host (Debian's layout): every instance of that major on the host runs
whatever `/usr/lib/postgresql/<major>` holds at its next start. So a patch is refused (409, naming
them) while another live cluster of that major on the same host runs another version: patching one
would silently change the others' binaries at their next restart, and their records would lie.

A major upgrade (upgrade.yml) runs `pg_upgrade --check` first: a failing check fails the request with
pg_upgrade's reason and leaves the source untouched and running (observed again: status.yml). Then
pg_upgrade (`--link` by default, `--copy` on request) makes a new instance of the target major on the
same port; the old one is kept, stopped, for a rollback (upgrade_rollback.yml: copy mode only, and
only while the new instance has taken no writes) until a clean-up (upgrade_cleanup.yml). What the
upgrade did is kept on the cluster (`settings.upgrade`). When backups are set, the stanza is upgraded
by the playbook and a full backup of the new major is taken at once (a fresh backup set: the old
major's backups cannot restore the new instance). Clusters with standbys are refused (409) until
upgrades support them.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import Context
from api.engine.kinds import Step, registered
from api.errors import Conflict, Invalid
from api.services import backups, catalog, clusters
from api.services.members import ERROR, PRIMARY, RUNNING, STOPPED, TERMINATED, UPGRADING, primary, record_observation
from api.store.models import Account, Cluster, Member, Operation, utcnow


def _same_software(a: catalog.EngineVersion, b: catalog.EngineVersion) -> bool:
    return a.id == b.id or (a.source, a.path, a.packages) == (b.source, b.path, b.packages)


def sharing_the_software(session: Session, cluster: Cluster, target: catalog.EngineVersion) -> list[Cluster]:
    """The other live clusters of the cluster's major on its host whose version is not `target`'s
    software: a change of that major's software there changes theirs too."""
    host = primary(cluster).host
    others = session.scalars(select(Cluster).join(Member, Member.cluster_id == Cluster.id).where(
        Member.host == host, Cluster.id != cluster.id, Cluster.major_version == cluster.major_version,
        Cluster.service_state != TERMINATED)).unique()
    found = []
    for other in others:
        try:
            version = catalog.version_of(session, other)
        except Conflict:
            found.append(other)
            continue
        if not _same_software(version, target):
            found.append(other)
    return sorted(found, key=lambda c: c.name)


def _refuse_shared_host(session: Session, cluster: Cluster, target: catalog.EngineVersion) -> None:
    others = sharing_the_software(session, cluster, target)
    if others:
        names = ", ".join(f"{c.name} ({c.id}, PostgreSQL {c.software_version})" for c in others)
        raise Conflict(f"PostgreSQL {cluster.major_version}'s software is shared by every instance of that major on "
                       f"host {primary(cluster).host}, and {names} would run {target.name} from its next start "
                       f"without being patched: patch or move them first. Nothing was changed.",
                       field="software_version")


# -- minor patch -------------------------------------------------------------------------------------
@registered
class PatchMinor(backups.BackupKind):
    """[backup.yml,] patch.yml. Every step records what it observed (the backup its history); a
    success moves the cluster's engine version to the target. A failed patch.yml reports the
    instance as it is (still on the old version when the install failed)."""

    name = "patch_minor"

    def finish(self, session, operation, cluster, outcome):
        if not outcome.ok or cluster is None:
            return
        cluster.engine_version_id = operation.params["to_version_id"]
        if not cluster.software_version:
            cluster.software_version = operation.params["to_version"]
        cluster.settings = {**cluster.settings, "patched": {
            "from_version": operation.params["from_version"], "to_version": cluster.software_version,
            "patched_at": utcnow().isoformat(timespec="seconds") + "Z", "request_id": operation.id}}


def patch_target(session: Session, cluster: Cluster, wanted: str) -> catalog.EngineVersion:
    """The catalog version a patch of `cluster` goes to (400 naming `software_version` otherwise)."""
    field = "software_version"
    if not wanted:
        raise Invalid("software_version is required: a version name (16.14) or id of GET /v1/engine-versions",
                      field=field)
    target = catalog.find_version(session, wanted, by_major=False)
    if target is None:
        raise Invalid(f"software_version: unknown engine version {catalog.shown(wanted)}: give a version name "
                      "(16.14) or id of GET /v1/engine-versions", field=field)
    if target.major != cluster.major_version:
        raise Invalid(f"software_version {target.name} is PostgreSQL {target.major} and the cluster runs PostgreSQL "
                      f"{cluster.major_version}: a patch stays within its major (a major upgrade is "
                      f"POST /v1/clusters/{cluster.id}/upgrade)", field=field)
    if not target.active:
        raise Invalid(f"software_version {target.name} ({target.id}) is not active in the catalog", field=field)
    current = cluster.software_version or catalog.version_of(session, cluster).name
    if catalog.version_key(target.name) <= catalog.version_key(current):
        which = "the version it runs" if catalog.version_key(target.name) == catalog.version_key(current) \
            else "older than the version it runs"
        raise Invalid(f"software_version {target.name} is {which} ({current}): a patch only moves to a newer "
                      "minor version", field=field)
    return target


def patch_minor(ctx: Context, actor: Account, cluster_id: str, software_version: str,
                backup_before_upgrade: bool = False) -> Operation:
    """SCP's Patch Minor Version: the cluster on a newer minor of its major (202)."""
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        clusters.refuse_ha(cluster, "a minor patch (member by member through Patroni)")
        target = patch_target(session, cluster, software_version)
        steps: list[Step] = []
        secrets: dict = {}
        if backup_before_upgrade:
            policy = backups.policy_of(session, cluster.id)
            if policy is None or not policy.enabled:
                raise Invalid(f"backup_before_upgrade: backups are not set on cluster {cluster.id}: set them "
                              f"(POST /v1/clusters/{cluster.id}/backups) or patch without a backup",
                              field="backup_before_upgrade")
            steps.append(backups.backup_step(ctx, backups.due_backup_type(session, cluster.id, utcnow())))
            secrets = dict(ctx.settings.backup_secrets)
        if cluster.service_state == RUNNING:  # else submit answers 409 for the state, as every operation does
            _refuse_shared_host(session, cluster, target)
        steps.append(Step("patch.yml", target.install_vars()))
        params = {"from_version": cluster.software_version, "from_version_id": cluster.engine_version_id,
                  "to_version": target.name, "to_version_id": target.id,
                  "backup_before_upgrade": bool(backup_before_upgrade)}
        return clusters.submit(ctx, session, cluster, actor, "patch_minor", steps, params=params, secrets=secrets,
                               allowed_states=(RUNNING,), transitional_state=UPGRADING)


# -- major upgrade -----------------------------------------------------------------------------------
UPGRADE_METHODS = ("link", "copy")
KEPT, ROLLED_BACK, CLEANED = "kept", "rolled_back", "cleaned"  # settings.upgrade.old_instance


def kept_upgrade(cluster: Cluster) -> dict | None:
    """The last upgrade's record while its old instance is kept (for a rollback or a clean-up)."""
    record = cluster.settings.get("upgrade")
    return record if isinstance(record, dict) and record.get("old_instance") == KEPT else None


class UpgradeKindBase(backups.BackupKind):
    """Every step records what it observed; a failed step that reported no instance is observed again."""

    observe_after_failure = "status.yml"

    def apply_observation(self, session, operation, cluster, outcome):
        record_observation(session, operation, cluster, outcome)


@registered
class Upgrade(UpgradeKindBase):
    """upgrade.yml[, backup.yml full]. Once upgrade.yml succeeded the cluster is of the new major
    (whatever the backup then does): its version, and the upgrade's facts for a rollback or clean-up."""

    name = "upgrade"

    def apply_step(self, session, operation, cluster, index, outcome):
        super().apply_step(session, operation, cluster, index, outcome)
        if index != 0 or not outcome.ok or cluster is None:
            return
        params = operation.params
        facts = outcome.host(primary(cluster).host).get("upgrade") or outcome.first("upgrade") or {}
        cluster.major_version = params["to_major"]
        cluster.engine_version_id = params["to_version_id"]
        if not (primary(cluster).observed or {}).get("server_version"):
            cluster.software_version = params["to_version"]
        cluster.settings = {**cluster.settings, "upgrade": {
            "from_version": params["from_version"], "from_version_id": params["from_version_id"],
            "from_major": params["from_major"], "to_version": cluster.software_version,
            "to_version_id": params["to_version_id"], "to_major": params["to_major"],
            "method": facts.get("method", params["method"]),
            "old_data_directory": facts.get("old_data_directory"),
            "new_data_directory": facts.get("new_data_directory"), "old_port": facts.get("old_port"),
            "extensions_updated": facts.get("extensions_updated"), "analyzed": facts.get("analyzed"),
            "change_reference": params.get("change_reference"), "request_id": operation.id,
            "upgraded_at": utcnow().isoformat(timespec="seconds") + "Z", "old_instance": KEPT}}


@registered
class UpgradeRollback(UpgradeKindBase):
    """upgrade_rollback.yml: the old instance back on its port, running; the cluster of the old major."""

    name = "upgrade_rollback"

    def finish(self, session, operation, cluster, outcome):
        if not outcome.ok or cluster is None:
            return
        record = dict(cluster.settings.get("upgrade") or {})
        cluster.major_version = record["from_major"]
        cluster.engine_version_id = record["from_version_id"]
        if not (primary(cluster).observed or {}).get("server_version"):
            cluster.software_version = record["from_version"]
        record.update(old_instance=ROLLED_BACK, rolled_back_at=utcnow().isoformat(timespec="seconds") + "Z",
                      rollback_request_id=operation.id)
        cluster.settings = {**cluster.settings, "upgrade": record}


@registered
class UpgradeCleanup(UpgradeKindBase):
    """upgrade_cleanup.yml: the kept old instance (and its data directory) dropped."""

    name = "upgrade_cleanup"

    def finish(self, session, operation, cluster, outcome):
        if not outcome.ok or cluster is None:
            return
        record = dict(cluster.settings.get("upgrade") or {})
        record.update(old_instance=CLEANED, cleaned_at=utcnow().isoformat(timespec="seconds") + "Z",
                      cleanup_request_id=operation.id)
        cluster.settings = {**cluster.settings, "upgrade": record}


def upgrade_target(session: Session, cluster: Cluster, wanted: str, field: str) -> catalog.EngineVersion:
    """The catalog version an upgrade goes to: a major (16: its default or newest active version), a
    version name (16.14) or an id; active, of a greater major than the cluster's (400 naming `field`)."""
    if not wanted:
        raise Invalid(f"{field} is required: a major (16), a version name (16.14) or an id of "
                      "GET /v1/engine-versions", field=field)
    target = catalog.find_version(session, wanted, by_major=True)
    if target is None:
        raise Invalid(f"{field}: unknown engine version {catalog.shown(wanted)}: give a major, a version name or an "
                      "id of GET /v1/engine-versions", field=field)
    if not target.active:
        raise Invalid(f"{field}: engine version {target.name} ({target.id}) is not active in the catalog", field=field)
    if int(target.major) <= int(cluster.major_version):
        raise Invalid(f"{field}: PostgreSQL {target.name} is not of a greater major than the cluster's "
                      f"PostgreSQL {cluster.major_version}: an upgrade goes to a newer major (a newer minor of the "
                      f"same major is a patch: PUT /v1/clusters/{cluster.id}/patch)", field=field)
    return target


def upgrade_targets(ctx: Context, actor: Account, cluster_id: str) -> list[int]:
    """The majors a cluster can be upgraded to: those of active catalog versions greater than its own."""
    with ctx.sessions() as session:
        cluster = clusters.get_cluster(ctx, actor, cluster_id, session)
        current = int(cluster.major_version)
        return sorted({int(v.major) for v in catalog.active_versions(session) if int(v.major) > current})


def _refuse_standbys(cluster: Cluster) -> None:
    others = [m for m in cluster.members if m.role != PRIMARY]
    if others or len(cluster.members) != 1:
        raise Conflict(f"cluster {cluster.id} has {len(cluster.members)} members (standbys or replicas): a major "
                       "upgrade is not supported with standbys yet")


def upgrade(ctx: Context, actor: Account, cluster_id: str, target_version: str, method: str = "link", *,
            change_reference: str | None = None, field: str = "target_version",
            method_field: str = "upgrade_method") -> Operation:
    """The cluster on a newer major with pg_upgrade (202); a full backup after it when backups are set."""
    if method not in UPGRADE_METHODS:
        raise Invalid(f"{method_field} must be one of {', '.join(UPGRADE_METHODS)}", field=method_field)
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        target = upgrade_target(session, cluster, target_version, field)
        if cluster.service_state == RUNNING:  # else submit answers 409 for the state
            _refuse_standbys(cluster)
            kept = kept_upgrade(cluster)
            if kept:
                raise Conflict(f"cluster {cluster.id} keeps its PostgreSQL {kept['from_major']} instance from the last "
                               f"upgrade: remove it (POST /v1/clusters/{cluster.id}/upgrade/cleanup) or roll back "
                               f"(POST /v1/clusters/{cluster.id}/upgrade/rollback) first")
        install = target.install_vars()
        # The old instance is kept (stopped) on a port of the installation's range, which the host pool
        # then hands to no other instance until the clean-up.
        host = ctx.hosts.hosts[primary(cluster).host]
        old_port = ctx.hosts.free_port(session, host, ctx.settings.ports)
        if old_port is None:
            raise Conflict(f"no free port on {host.name} for the old instance an upgrade keeps until its clean-up")
        steps = [Step("upgrade.yml", {"pg_upgrade_old_port": old_port,
            "pg_upgrade_version": target.major, "pg_upgrade_install_method": install["pg_install_method"],
            "pg_upgrade_binaries_source": install.get("pg_binaries_source", ""),
            "pg_upgrade_packages": install.get("pg_packages", []),
            "pg_upgrade_method": method, "pg_upgrade_check_only": False})]
        secrets: dict = {}
        policy = backups.policy_of(session, cluster.id)
        if policy is not None and policy.enabled:
            # The new major's first backup: a full one, in the stanza upgrade.yml upgraded.
            steps.append(backups.backup_step(ctx, "full", pg_version=target.major))
            secrets = dict(ctx.settings.backup_secrets)
        params = {"from_version": cluster.software_version, "from_version_id": cluster.engine_version_id,
                  "from_major": cluster.major_version, "to_version": target.name, "to_version_id": target.id,
                  "to_major": target.major, "method": method, "change_reference": change_reference}
        return clusters.submit(ctx, session, cluster, actor, "upgrade", steps, params=params, secrets=secrets,
                               allowed_states=(RUNNING,), transitional_state=UPGRADING)


def _on_kept_upgrade(ctx: Context, actor: Account, cluster_id: str, kind: str, playbook: str,
                     transitional: str | None) -> Operation:
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        kept = kept_upgrade(cluster)
        if kept is None:
            raise Conflict(f"cluster {cluster.id} keeps no old instance from an upgrade: nothing to "
                           f"{'roll back' if kind == 'upgrade_rollback' else 'clean up'}")
        if kind == "upgrade_rollback" and kept.get("method") != "copy":
            raise Conflict(f"cluster {cluster.id} was upgraded with --link: the new server has run on the old "
                           "instance's data files, which cannot be started safely any more (only a copy-mode "
                           "upgrade can be rolled back). Restore a backup instead")
        # pg_version (the contract's): the cluster's current, new major.
        return clusters.submit(ctx, session, cluster, actor, kind, [Step(playbook)],
                               params={"upgrade_request_id": kept.get("request_id")},
                               allowed_states=(RUNNING, STOPPED, ERROR), transitional_state=transitional)


def rollback_upgrade(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    """Back to the kept old instance (copy-mode upgrades whose new instance took no writes)."""
    return _on_kept_upgrade(ctx, actor, cluster_id, "upgrade_rollback", "upgrade_rollback.yml", UPGRADING)


def cleanup_upgrade(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    """Drop the kept old instance: the upgrade can no longer be rolled back."""
    return _on_kept_upgrade(ctx, actor, cluster_id, "upgrade_cleanup", "upgrade_cleanup.yml", None)
