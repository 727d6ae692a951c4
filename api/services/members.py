"""Members of a cluster: states, what an observation changes, and the one rule that derives the
cluster's service_state from its members' states.

Every cluster has 1..N members (instances: host, port, data directory, role primary | standby |
replica, state, observed facts). An operation addresses the primary (found from observation) or
all members explicitly; nothing assumes a single member.
"""
from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from api.engine.kinds import Outcome
from api.errors import Conflict
from api.store.models import Cluster, Credential, Database, Member, Operation

CREATING, RUNNING, STARTING, STOPPING, STOPPED = "CREATING", "RUNNING", "STARTING", "STOPPING", "STOPPED"
RESTARTING, TERMINATING, TERMINATED, ERROR = "RESTARTING", "TERMINATING", "TERMINATED", "ERROR"
RESTORING = "RESTORING"  # its data is being replaced by a restore (ITCare's restore into an instance)
UPGRADING = "UPGRADING"  # a minor patch or a major upgrade (or its rollback) changes its server
TRANSITIONAL = (CREATING, STARTING, STOPPING, RESTARTING, TERMINATING, RESTORING, UPGRADING)
SERVICE_STATES = (CREATING, RUNNING, STARTING, STOPPING, STOPPED, RESTARTING, TERMINATING, TERMINATED, ERROR,
                  RESTORING, UPGRADING)
# What the info module reports, mapped to service_state.
OBSERVED_STATES = {"started": RUNNING, "stopped": STOPPED, "error": ERROR}
PRIMARY, STANDBY, REPLICA = "primary", "standby", "replica"
# Facts of the info module kept per member (and, for the primary, on the cluster).
OBSERVED_KEYS = ("databases", "roles", "size_bytes", "server_version", "in_recovery", "state")


def primary(cluster: Cluster) -> Member:
    """The member writes go to: the one observed as primary (not in recovery); a read replica's
    one member (it is the replica cluster's instance)."""
    for member in cluster.members:
        if member.role == PRIMARY:
            return member
    replicas = [m for m in cluster.members if m.role == REPLICA]
    if len(replicas) == 1 and len(cluster.members) == 1:
        return replicas[0]
    raise Conflict(f"cluster {cluster.id} has no primary member")


def derive_service_state(members: list[Member]) -> str:
    """The cluster's state from its members': all alike -> that state; else RUNNING while the
    primary runs (a standby's trouble shows on that member); else ERROR."""
    states = {m.service_state for m in members}
    if len(states) == 1:
        return states.pop()
    if any(m.role == PRIMARY and m.service_state == RUNNING for m in members):
        return RUNNING
    return ERROR


def alias(member: Member) -> str:
    """The member's host name in a job's inventory (the key of its report in the results)."""
    return member.host


def record_observation(session: Session, operation: Operation, cluster: Cluster | None, outcome: Outcome) -> None:
    """What the playbook observed of each member; the stable state comes from there, never assumed."""
    if cluster is None:
        return
    reported = []
    for member in cluster.members:
        instance = outcome.host(alias(member)).get("instance")
        if not instance or instance.get("cluster", member.name) != member.name:
            continue  # the report of another member on the same host (an HA cluster's)
        reported.append(member)
        state = OBSERVED_STATES.get(instance.get("state"), ERROR)
        if instance.get("exists") is False:
            state = TERMINATED if operation.kind == "terminate" else ERROR
        member.service_state = state
        member.data_directory = instance.get("data_directory") or member.data_directory
        member.observed = {k: instance.get(k) for k in OBSERVED_KEYS if k in instance}
        if instance.get("in_recovery") is not None:
            member.role = STANDBY if instance["in_recovery"] else PRIMARY
    observed_ha = record_ha_members(cluster, outcome)
    if reported or observed_ha:
        # The cluster's facts (databases, roles, size) are those of a member read this run, the
        # primary if it was; of an HA cluster (its playbooks read the member named after the
        # cluster, which may be a standby, or down), a running one's, else those kept.
        candidates = [m for m in reported if m.service_state == RUNNING] if observed_ha else reported
        lead = next((m for m in candidates if m.role == PRIMARY), candidates[0] if candidates else None)
        if lead is not None:
            cluster.observed = dict(lead.observed)
            if lead.observed.get("server_version"):
                cluster.software_version = lead.observed["server_version"]
        cluster.service_state = derive_service_state(cluster.members)
    elif not outcome.ok and (cluster.service_state in TRANSITIONAL or operation.kind == "observe"):
        # Failed, canceled or unobserved: ERROR until the next observation says otherwise.
        cluster.service_state = ERROR
        for member in cluster.members:
            member.service_state = ERROR


# What patroni_info says of a member (role, state), as a member's role and service_state.
HA_ROLES = {"leader": PRIMARY, "replica": STANDBY, "sync_standby": STANDBY, "standby_leader": STANDBY}
HA_STATES = {"running": RUNNING, "streaming": RUNNING, "stopped": STOPPED, "starting": STARTING,
             "stopping": STOPPING, "restarting": RESTARTING, "creating replica": CREATING}
# Facts of patroni_info kept per member.
HA_KEYS = ("lag_bytes", "timeline", "pending_restart", "server_version", "reachable")


def record_ha_members(cluster: Cluster, outcome: Outcome) -> bool:
    """What a Patroni cluster's report (`.ha`, patroni_info) says of each member, by name: who
    leads, each member's state, lag and timeline. A member it does not list is ERROR (not even
    configured on its host any more). Whether any host reported the cluster."""
    reports = [outcome.host(alias(m)).get("ha") for m in cluster.members]
    listed = {entry["name"]: entry for report in reports if isinstance(report, dict) and report.get("exists")
              for entry in report.get("members") or [] if isinstance(entry, dict) and entry.get("name")}
    if not any(isinstance(report, dict) for report in reports):
        return False
    files = {name: paths for report in reports if isinstance(report, dict)
             for name, paths in (report.get("local_files") or {}).items() if isinstance(paths, dict)}
    leader = next((r.get("leader") for r in reports if isinstance(r, dict) and r.get("leader")), None)
    for member in cluster.members:
        entry = listed.get(member.name)
        member.data_directory = files.get(member.name, {}).get("data_dir") or member.data_directory
        if entry is None:
            member.service_state = ERROR
            continue
        member.service_state = HA_STATES.get(entry.get("state"), ERROR)
        if leader:  # who leads is the cluster's word (a member that is down has no role of its own)
            member.role = PRIMARY if member.name == leader else STANDBY
        elif entry.get("role") in HA_ROLES:
            member.role = HA_ROLES[entry["role"]]
        member.observed = {**(member.observed or {}), "ha_role": entry.get("role"), "ha_state": entry.get("state"),
                           **{k: entry.get(k) for k in HA_KEYS if k in entry}}
        if entry.get("server_version"):
            member.observed["server_version"] = _version_text(entry["server_version"])
    return True


def _version_text(version) -> str:
    """Patroni's server_version (150020) as PostgreSQL's (15.20)."""
    if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
        number = int(version)
        return f"{number // 10000}.{number % 10000}" if number >= 100000 else str(number)
    return str(version)


def forget_instances(session: Session, cluster: Cluster) -> None:
    """The cluster's instances are gone: it is TERMINATED, its hosts and ports are free, and its
    databases and credentials are gone with them."""
    cluster.service_state = TERMINATED
    cluster.members.clear()
    session.execute(delete(Credential).where(Credential.cluster_id == cluster.id))
    session.execute(delete(Database).where(Database.cluster_id == cluster.id))
