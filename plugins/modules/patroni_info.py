#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: patroni_info
short_description: Read the state of a Patroni cluster from its REST API
description:
  - Finds the members of Patroni cluster O(cluster) configured on this host
    (C(/etc/patroni/<version>-*.yml) whose C(scope) is O(cluster), as role C(dbaas.postgresql.patroni) writes them)
    and asks the first one that answers (or O(patroni.url)) for the cluster (C(GET /cluster), C(GET /config)),
    then each member for its own state (C(GET /patroni)).
  - Never fails because members are down; a cluster none of whose local members answers is reported
    with RV(reachable=false) and its local members V(stopped).
options:
  timeout:
    description: Unused by this module (shared option of the Patroni modules).
    type: int
    default: 60
extends_documentation_fragment:
  - dbaas.postgresql.instance.patroni_cluster
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    description: Only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Who leads cluster tenant1
  dbaas.postgresql.patroni_info:
    cluster: tenant1
  register: ha

- name: Show it
  ansible.builtin.debug:
    msg: "{{ ha.leader }} leads; members {{ ha.members | map(attribute='name') | list }}"
'''

RETURN = r'''
exists:
  description: Whether a member of the cluster is configured on this host.
  returned: always
  type: bool
scope:
  description: The cluster's name.
  returned: always
  type: str
reachable:
  description: Whether a member's REST API answered.
  returned: always
  type: bool
leader:
  description: Name of the member that leads (none when no member leads).
  returned: always
  type: str
  sample: tenant1
paused:
  description: Whether the cluster is paused (maintenance mode; none when unreachable).
  returned: always
  type: bool
synchronous_mode:
  description: Whether synchronous mode is on.
  returned: when reachable
  type: bool
ttl:
  description: Leader key TTL (s) of the dynamic configuration.
  returned: when reachable
  type: int
loop_wait:
  description: Patroni's loop wait (s).
  returned: when reachable
  type: int
maximum_lag_on_failover:
  description: Bytes of lag above which a replica may not be promoted.
  returned: when reachable
  type: int
members:
  description: Each member, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Member name (its instance name).
      type: str
    role:
      description: V(leader), V(replica), V(sync_standby) or V(standby_leader); none when stopped.
      type: str
    state:
      description: Patroni's state of the member (V(running), V(starting), V(stopped), ...).
      type: str
    host:
      description: Address of its PostgreSQL.
      type: str
    port:
      description: Port of its PostgreSQL.
      type: int
    api_url:
      description: URL of its REST API.
      type: str
    lag_bytes:
      description: Replication lag in bytes (0 for the leader, none when unknown).
      type: int
    timeline:
      description: Its PostgreSQL timeline.
      type: int
    local:
      description: Whether it is configured on this host.
      type: bool
    reachable:
      description: Whether its REST API answered.
      type: bool
  sample: [{name: tenant1, role: leader, state: running, host: 127.0.0.1, port: 5433, lag_bytes: 0, timeline: 2}]
local_members:
  description: Names of the members configured on this host.
  returned: always
  type: list
  elements: str
local_files:
  description: Files of each member configured on this host (what role dbaas.postgresql.terminate removes).
  returned: always
  type: dict
  sample: {tenant1-m1: {data_dir: /var/lib/postgresql/15/tenant1-m1, config_dir: /etc/postgresql/15/tenant1-m1,
           config_file: /etc/patroni/15-tenant1-m1.yml, pgpass: /var/lib/postgresql/.pgpass-patroni-15-tenant1-m1,
           log_file: /var/log/postgresql/patroni-15-tenant1-m1.log}}
local_instances:
  description:
    - Where each member configured on this host keeps and serves its PostgreSQL (from its Patroni configuration);
      the stanza of role dbaas.postgresql.pgbackrest lists them.
  returned: always
  type: dict
  sample: {tenant1-m1: {data_directory: /var/lib/postgresql/15/tenant1-m1, port: 5433, socket_dir: /var/run/postgresql}}
errors:
  description: Why local members did not answer (when none did).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.patroni import (
    Cluster,
    PatroniError,
    cluster_argument_spec,
)


def main():
    module = AnsibleModule(argument_spec=cluster_argument_spec(), supports_check_mode=True)
    params = module.params
    cluster = Cluster(params['version'], params['cluster'], params.get('patroni'))
    if not cluster.local and not (params.get('patroni') or {}).get('url'):
        module.exit_json(changed=False, exists=False, scope=params['cluster'], reachable=False, leader=None,
                         paused=None, members=[], local_members=[], local_files={}, local_instances={},
                         errors=[])
    try:
        described = cluster.describe()
    except PatroniError as exc:
        module.fail_json(msg='Reading Patroni cluster %s failed: %s' % (params['cluster'], exc))
    module.exit_json(changed=False, exists=True, **described)


if __name__ == '__main__':
    main()
