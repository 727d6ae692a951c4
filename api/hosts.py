"""The host pool: hosts of the configured inventory, placement, and job inventories."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import Conflict
from api.store.models import Cluster, Member

# Members of terminated clusters no longer occupy a host.
GONE_STATES = ("TERMINATED",)


@dataclass
class Host:
    name: str
    groups: list[str]
    # Connection vars exactly as written in the inventory (templates left for ansible).
    vars: dict = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.vars.get("ansible_connection") == "local"

    @property
    def address(self) -> str:
        """Address clients use to reach instances on this host."""
        if self.is_local:
            return "127.0.0.1"
        return str(self.vars.get("ansible_host", self.name))


def _plain(value):
    """Ansible's tagged strings and containers as plain Python values (YAML-dumpable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class HostPool:
    def __init__(self, inventory: Path, group: str):
        manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
        self.group = group
        self.hosts: dict[str, Host] = {}
        for host in manager.get_hosts(pattern=group):
            self.hosts[host.name] = Host(
                name=host.name,
                groups=sorted(g.name for g in host.get_groups() if g.name not in ("all", "ungrouped")),
                vars=_plain(dict(host.vars)),
            )
        if not self.hosts:
            raise RuntimeError(f"inventory {inventory} has no host in group {group!r}")

    def address_of(self, host_name: str) -> str:
        """Client address of a host by inventory name (the name itself if it left the inventory)."""
        host = self.hosts.get(host_name)
        return host.address if host else host_name

    def groups(self) -> list[str]:
        return sorted({g for host in self.hosts.values() for g in host.groups})

    def place(self, session: Session, ports: range, group: str | None = None) -> tuple[Host, int]:
        """The host with the fewest members (of the group), and a port free there."""
        candidates = [h for h in self.hosts.values() if group is None or group in h.groups]
        if not candidates:
            raise Conflict(f"no host in group {group!r}", field="group")
        counts = dict(session.execute(
            select(Member.host, func.count()).join(Cluster)
            .where(Cluster.service_state.notin_(GONE_STATES))
            .group_by(Member.host)
        ).all())
        for host in sorted(candidates, key=lambda h: (counts.get(h.name, 0), h.name)):
            port = self.free_port(session, host, ports)
            if port is not None:
                return host, port
        raise Conflict("no free port left in the configured port range on any host")

    @staticmethod
    def kept_ports(session: Session, host: Host) -> set[int]:
        """Ports of the old instances that major upgrades keep (stopped) on the host until a clean-up."""
        kept = set()
        for settings in session.scalars(select(Cluster.settings).join(Member, Member.cluster_id == Cluster.id)
                                        .where(Member.host == host.name, Cluster.service_state.notin_(GONE_STATES))):
            record = (settings or {}).get("upgrade")
            if isinstance(record, dict) and record.get("old_instance") == "kept" and record.get("old_port"):
                kept.add(int(record["old_port"]))
        return kept

    def used_ports(self, session: Session, host: Host) -> set[int]:
        """Ports of the host's members (PostgreSQL and Patroni REST) and of kept old instances."""
        used = set()
        for port, rest_port in session.execute(select(Member.port, Member.rest_port).where(Member.host == host.name)):
            used.update(p for p in (port, rest_port) if p is not None)
        return used | self.kept_ports(session, host)

    def free_port(self, session: Session, host: Host, ports: range, also_taken: set[int] = frozenset()) -> int | None:
        used = self.used_ports(session, host) | set(also_taken)
        for port in ports:
            if port not in used and self.port_free_on_host(host, port):
                return port
        return None

    def free_ports(self, session: Session, host: Host, ports: range, count: int,
                   also_taken: set[int] = frozenset()) -> list[int]:
        """`count` distinct free ports of the host (an HA cluster's standbys and REST APIs), or 409."""
        chosen: list[int] = []
        for _ in range(count):
            port = self.free_port(session, host, ports, set(also_taken) | set(chosen))
            if port is None:
                raise Conflict(f"no {count} free ports left in the configured port range on {host.name}")
            chosen.append(port)
        return chosen

    def port_in_use(self, session: Session, host: Host, port: int) -> bool:
        return port in self.used_ports(session, host) or not self.port_free_on_host(host, port)

    @staticmethod
    def port_free_on_host(host: Host, port: int) -> bool:
        # Remote hosts are checked by the provision playbook itself (it fails on a busy port).
        if not host.is_local:
            return True
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def job_inventory(self, host_names: list[str], group: str) -> dict:
        """An inventory holding just the cluster's hosts, under the group the playbooks target."""
        return {"all": {"children": {group: {"hosts": {
            name: self.hosts[name].vars if name in self.hosts else {} for name in host_names
        }}}}}
