#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: patroni_member
short_description: Reinitialize a member of a Patroni cluster, pause or resume the cluster, or remove it from the DCS
description:
  - V(reinitialized) makes Patroni wipe the data directory of replica O(member) and clone it again from the
    leader (C(POST /reinitialize) with C(force)), then waits until it runs as a replica again. Always changes.
  - V(paused) and V(resumed) set the cluster's maintenance mode (C(PATCH /config) C(pause)); while paused
    Patroni neither fails over nor restarts PostgreSQL. They change only when needed.
  - V(configured) brings the dynamic configuration (DCS) to O(config); it changes only what differs.
  - V(removed) deletes the cluster's keys from the DCS (etcd, prefix C(/pgdbaas/<cluster>/)), only once no
    member configured on this host runs (role C(dbaas.postgresql.terminate) stops them first).
  - V(removed) with O(keep_config) keeps the dynamic configuration (key C(config)) and forgets the rest (leader,
    members, history, C(initialize)), so that the first member to start takes over its data directory as the
    leader, as after an in-place restore (playbook restore.yml).
options:
  member:
    description: Member to reinitialize (required with O(state=reinitialized)).
    type: str
  state:
    description: What to do (see the description).
    type: str
    required: true
    choices: [reinitialized, paused, resumed, removed, configured]
  config:
    description:
      - With O(state=configured), settings of the dynamic configuration (C(ttl), C(loop_wait),
        C(maximum_lag_on_failover), C(synchronous_mode), C(postgresql.use_pg_rewind), ...); those that differ from
        C(GET /config) are sent with one C(PATCH /config).
    type: dict
  keep_config:
    description: With O(state=removed), keep the dynamic configuration (see the description).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the reinitialized member, or for the pause to show.
    type: int
    default: 60
extends_documentation_fragment:
  - dbaas.postgresql.instance.patroni_cluster
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    description: Tells whether it would change; changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - A member that is down (its REST API does not answer) cannot be reinitialized; the module fails saying so.
    The leader is never reinitialized.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Clone tenant1-m1 again from the leader
  dbaas.postgresql.patroni_member:
    cluster: tenant1
    member: tenant1-m1
    state: reinitialized

- name: Maintenance mode
  dbaas.postgresql.patroni_member:
    cluster: tenant1
    state: paused
'''

RETURN = r'''
paused:
  description: Whether the cluster is paused afterwards (in check mode, would be).
  returned: with states paused, resumed, reinitialized
  type: bool
member:
  description: The reinitialized member as M(dbaas.postgresql.patroni_info) describes it afterwards.
  returned: with state reinitialized
  type: dict
config_changes:
  description: The settings V(configured) sent (or would send).
  returned: with state configured
  type: dict
deleted_keys:
  description: Number of DCS keys deleted (in check mode, that would be).
  returned: with state removed
  type: int
seconds:
  description: Seconds the reinitialization took.
  returned: with state reinitialized, not in check mode
  type: float
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.patroni import (
    NAMESPACE,
    Cluster,
    PatroniError,
    cluster_argument_spec,
    daemon_pid,
    dcs_endpoint,
    etcd_count_prefix,
    etcd_delete_prefix,
    wait_for,
)


def remove(module, cluster):
    scope = cluster.scope
    running = [name for name, dummy, dummy in cluster.local if daemon_pid(cluster.version, name)]
    if cluster.reachable or running:
        module.fail_json(msg='Patroni cluster %s still runs on this host (%s): stop its members first'
                         % (scope, ', '.join(running) or 'its REST API answers'))
    endpoints = sorted({dcs_endpoint(cfg) for dummy, dummy, cfg in cluster.local} - {None})
    if not endpoints:
        module.exit_json(changed=False, deleted_keys=0)
    prefix = '%s%s/' % (NAMESPACE, scope)
    keep = [prefix + 'config'] if module.params['keep_config'] else []
    try:
        if module.check_mode:
            count = etcd_count_prefix(endpoints[0], prefix, keep=keep)
        else:
            count = etcd_delete_prefix(endpoints[0], prefix, keep=keep)
    except PatroniError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=count > 0, deleted_keys=count)


def differences(wanted, current):
    """The part of wanted that current (GET /config) does not already hold."""
    changes = {}
    for key, value in wanted.items():
        have = current.get(key) if isinstance(current, dict) else None
        if isinstance(value, dict):
            sub = differences(value, have if isinstance(have, dict) else {})
            if sub:
                changes[key] = sub
        elif have != value:
            changes[key] = value
    return changes


def configure(module, cluster):
    try:
        changes = differences(module.params['config'] or {}, cluster.client.config())
        if changes and not module.check_mode:
            cluster.client.patch_config(changes)
    except PatroniError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=bool(changes), config_changes=changes)


def main():
    argument_spec = cluster_argument_spec()
    argument_spec.update(member=dict(type='str'),
                         state=dict(type='str', required=True,
                                    choices=['reinitialized', 'paused', 'resumed', 'removed', 'configured']),
                         config=dict(type='dict'),
                         keep_config=dict(type='bool', default=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('state', 'reinitialized', ['member']), ('state', 'configured', ['config'])])
    params = module.params
    scope, state = params['cluster'], params['state']
    cluster = Cluster(params['version'], scope, params.get('patroni'))
    if state == 'removed':
        remove(module, cluster)
    if not cluster.reachable:
        module.fail_json(msg='No member of Patroni cluster %s answers on this host%s'
                         % (scope, (': ' + '; '.join(cluster.errors)) if cluster.errors else ' (none configured)'))
    if state == 'configured':
        configure(module, cluster)
    try:
        before = cluster.describe()
    except PatroniError as exc:
        module.fail_json(msg=str(exc))
    if state in ('paused', 'resumed'):
        wanted = state == 'paused'
        result = dict(changed=before['paused'] != wanted, paused=wanted)
        if result['changed'] and not module.check_mode:
            try:
                cluster.client.patch_config({'pause': wanted})
            except PatroniError as exc:
                module.fail_json(msg=str(exc))
            if not wait_for(lambda: cluster.describe()['paused'] == wanted, params['timeout']):
                module.fail_json(msg='Patroni cluster %s is not %s after %d s' % (scope, state, params['timeout']))
        module.exit_json(**result)

    name = params['member']
    members = {m['name']: m for m in before['members']}
    member = members.get(name)
    result = dict(changed=True, paused=before['paused'], member=member)
    if member is None:
        module.fail_json(msg='%s is not a member of Patroni cluster %s (members: %s)'
                         % (name, scope, ', '.join(sorted(members))), **result)
    if name == before['leader']:
        module.fail_json(msg='Member %s leads Patroni cluster %s: the leader is never reinitialized '
                         '(switch over first)' % (name, scope), **result)
    if not member.get('reachable'):
        module.fail_json(msg='Member %s of Patroni cluster %s is down: its REST API (%s) does not answer; '
                         'start it before reinitializing it' % (name, scope, member.get('api_url')), **result)
    if module.check_mode:
        module.exit_json(**result)
    client = cluster.member_client(member)
    try:
        previous = client.patroni()
    except PatroniError as exc:
        module.fail_json(msg='Member %s of Patroni cluster %s is down: %s' % (name, scope, exc), **result)
    previous_start = previous.get('postmaster_start_time') if isinstance(previous, dict) else None
    started = time.monotonic()
    try:
        client.post('/reinitialize', {'force': True}, ok=(200, 202))
    except PatroniError as exc:
        module.fail_json(msg='Reinitializing %s failed: %s' % (name, exc), **result)

    def back():
        try:
            state_now = client.patroni()
            now = {m['name']: m for m in cluster.describe()['members']}
        except PatroniError:
            return None
        entry = now.get(name)
        ok = (isinstance(state_now, dict) and state_now.get('state') == 'running' and entry
              and state_now.get('postmaster_start_time') != previous_start
              and entry['role'] in ('replica', 'sync_standby') and entry['state'] in ('running', 'streaming'))
        return entry if ok else None

    entry = wait_for(back, params['timeout'])
    if not entry:
        module.fail_json(msg='Member %s does not run as a replica again %d s after its reinitialization'
                         % (name, params['timeout']), **result)
    result.update(member=entry, seconds=round(time.monotonic() - started, 3))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
