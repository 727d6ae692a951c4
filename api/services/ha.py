"""High availability: an HA cluster is a Patroni cluster over etcd (roles dbaas.postgresql.etcd and
dbaas.postgresql.patroni). Create with HA (provision.yml with pg_ha_enabled), enable_ha of a running
standalone cluster (enable_ha.yml), switchover (switchover.yml); what they observe updates every
member by name (members.record_ha_members).

The Patroni cluster is named after the cluster's first member (its scope, `settings.ha.scope`):
the standalone instance it is made from, which leads at first. Its standbys are `<scope>-m<k>` on
the same host (the inventory's host of the leader), each member with a PostgreSQL port and a
Patroni REST port from PGDBAAS_PORT_RANGE, like any other port. The passwords Patroni needs (the
superuser's, the replication and rewind users', the REST API's) are made for each run and reach
ansible only in the job's 0600 vars file: Patroni keeps them in its own 0600 configuration.
"""
from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from api.context import Context
from api.engine.kinds import Step, registered
from api.errors import Conflict, Invalid
from api.services import backups
from api.services.clusters import (HA, RUNNING, STANDALONE, ClusterKind, get_live_cluster, ha_scope_member, primary,
                                   submit)
from api.services.members import CREATING, STANDBY
from api.store.models import Account, Cluster, Member, Operation

MIN_MAJOR = 12  # the ITCare seed's floor for enable_ha
STANDBY_COUNT = 1  # the ITCare and /v1 seeds' HA: a primary and one standby
DEFAULT_LAG_MB = 16
LAG_RANGE = (1, 500)  # enable_ha's replicationLag (MB)
CREATE_LAG_MAX = 10240  # ITCare's allowedReplicationLag on create (MB)
PASSWORDS = ("pg_superuser_password", "pg_replication_password", "pg_rewind_password", "pg_ha_rest_password")


def check_version(major: str, field: str) -> None:
    if not major.isdigit() or int(major) < MIN_MAJOR:
        raise Invalid(f"HA needs PostgreSQL {MIN_MAJOR} or later; this cluster runs {major}", field=field)


def check_lag(lag_mb: int, field: str, high: int = LAG_RANGE[1]) -> None:
    low = LAG_RANGE[0]
    if not low <= lag_mb <= high:
        raise Invalid(f"must be between {low} and {high} (MB)", field=field)


def standby_name(scope: str, index: int) -> str:
    return f"{scope}-m{index}"


def add_members(ctx: Context, session: Session, cluster: Cluster, standby_count: int = STANDBY_COUNT) -> None:
    """The standby members of the cluster's leader-to-be (the standalone member), and a REST port for
    every member, allocated on the leader's host (kept if a failed enable_ha left them)."""
    lead = primary(cluster) if cluster.topology != HA else ha_scope_member(cluster)
    host = ctx.hosts.hosts.get(lead.host)
    if host is None:
        raise Conflict(f"host {lead.host} of cluster {cluster.id} is not in the inventory any more")
    cluster.settings = {**cluster.settings, "ha": {**(cluster.settings.get("ha") or {}), "scope": lead.name}}
    names = {m.name: m for m in cluster.members}
    wanted = [standby_name(lead.name, k) for k in range(1, standby_count + 1)]
    missing = [name for name in wanted if name not in names]
    needed = len(missing) * 2 + (lead.rest_port is None) + sum(names[n].rest_port is None for n in wanted if n in names)
    ports = iter(ctx.hosts.free_ports(session, host, ctx.settings.ports, needed))
    if lead.rest_port is None:
        lead.rest_port = next(ports)
    for name in wanted:
        member = names.get(name)
        if member is None:
            member = Member(name=name, host=lead.host, port=next(ports), role_type="STANDBY", role=STANDBY,
                            service_state=CREATING)
            cluster.members.append(member)
        if member.rest_port is None:
            member.rest_port = next(ports)
    session.flush()


def ha_vars(ctx: Context, cluster: Cluster, lag_mb: int) -> dict:
    """enable_ha's extra-vars (also provision.yml's with pg_ha_enabled) for the cluster's members."""
    lead = next(m for m in cluster.members if m.name == cluster.settings["ha"]["scope"])
    standbys = sorted((m for m in cluster.members if m is not lead), key=lambda m: m.name)
    extravars = {
        "pg_ha_standby_count": len(standbys),
        "pg_ha_standby_ports": [m.port for m in standbys],
        "pg_ha_rest_ports": [lead.rest_port, *(m.rest_port for m in standbys)],
        "pg_ha_address": ctx.hosts.address_of(lead.host),
        "pg_ha_replication_lag_mb": lag_mb,
        "pg_ha_etcd_client_port": ctx.settings.etcd_client_port,
        "pg_ha_etcd_peer_port": ctx.settings.etcd_peer_port,
    }
    if ctx.settings.etcd_name:
        extravars["pg_ha_etcd_name"] = ctx.settings.etcd_name
    return extravars


def new_passwords() -> dict:
    return {name: secrets.token_urlsafe(24) for name in PASSWORDS}


def plan_create(ctx: Context, session: Session, cluster: Cluster, provision: Step, lag_mb: int) -> tuple[Step, dict]:
    """A new HA cluster: provision.yml makes the standalone instance, then its Patroni cluster (the
    Debian controller for that run: the install role acts on the standalone instance first)."""
    add_members(ctx, session, cluster)
    cluster.settings = {**cluster.settings, "ha": {**cluster.settings["ha"], "replication_lag_mb": lag_mb}}
    extravars = {**provision.extravars, **ha_vars(ctx, cluster, lag_mb), "pg_ha_enabled": True,
                 "pg_controller": "debian"}
    return Step(provision.playbook, extravars, (*provision.secrets, *PASSWORDS)), new_passwords()


@registered
class EnableHa(ClusterKind):
    """enable_ha.yml: the running standalone cluster becomes the leader of a Patroni cluster with a
    streaming standby. A failure leaves the cluster STANDALONE with what was observed of its members
    (the standby ERROR): enable_ha again resumes (the playbook is idempotent, the ports are kept)."""

    name = "enable_ha"

    def finish(self, session, operation, cluster, outcome):
        if cluster is None or not outcome.ok:
            return
        cluster.topology = HA
        lag_mb = operation.params["replication_lag_mb"]
        cluster.settings = {**cluster.settings, "ha": {**cluster.settings["ha"], "replication_lag_mb": lag_mb}}
        itcare = cluster.dialect_fields.get("itcare")
        if isinstance(itcare, dict):
            cluster.dialect_fields = {**cluster.dialect_fields, "itcare": {**itcare, "allowedReplicationLag": lag_mb}}


@registered
class Switchover(ClusterKind):
    """switchover.yml: the leader hands over (Patroni's switchover); its `.ha` report says who leads."""

    name = "switchover"


def enable_ha(ctx: Context, actor: Account, cluster_id: str, replication_lag_mb: int = DEFAULT_LAG_MB, *,
              change_reference: str | None = None, lag_field: str = "replication_lag_mb",
              version_field: str = "version") -> Operation:
    """Standalone -> HA (409 if it is HA already or not RUNNING; 400 below PostgreSQL 12)."""
    check_lag(replication_lag_mb, lag_field)
    with ctx.sessions.begin() as session:
        cluster = get_live_cluster(ctx, actor, cluster_id, session)
        if cluster.topology == HA:
            raise Conflict(f"cluster {cluster.id} is HA already")
        if cluster.topology != STANDALONE:
            raise Conflict(f"cluster {cluster.id} is {cluster.topology}: only a standalone cluster becomes HA")
        check_version(cluster.major_version, version_field)
        policy = backups.policy_of(session, cluster.id)
        if policy is not None and policy.enabled:
            raise Conflict(f"cluster {cluster.id} has backups set: backups of an HA cluster are not supported "
                           f"yet; unset them first (DELETE /v1/clusters/{cluster.id}/backups)")
        if cluster.service_state != RUNNING:
            raise Conflict(f"cluster {cluster.id} is {cluster.service_state}: enable_ha needs it RUNNING")
        add_members(ctx, session, cluster)
        step = Step("enable_ha.yml", ha_vars(ctx, cluster, replication_lag_mb), PASSWORDS)
        params = {"replication_lag_mb": replication_lag_mb}
        if change_reference:
            params["change_reference"] = change_reference
        return submit(ctx, session, cluster, actor, "enable_ha", [step], params=params, secrets=new_passwords(),
                      allowed_states=(RUNNING,))


def switchover(ctx: Context, actor: Account, cluster_id: str, candidate: str = "", timeout: int = 60) -> Operation:
    """The leader hands over to `candidate` (a standby's name) or, empty, to the best standby."""
    with ctx.sessions.begin() as session:
        cluster = get_live_cluster(ctx, actor, cluster_id, session)
        if cluster.topology != HA:
            raise Conflict(f"cluster {cluster.id} is {cluster.topology}: only an HA cluster switches over")
        if candidate and candidate not in {m.name for m in cluster.members}:
            raise Invalid(f"{candidate!r} is no member of cluster {cluster.id}", field="candidate")
        step = Step("switchover.yml", {"pg_ha_candidate": candidate, "pg_ha_timeout": timeout})
        return submit(ctx, session, cluster, actor, "switchover", [step], params={"candidate": candidate},
                      allowed_states=(RUNNING,))
