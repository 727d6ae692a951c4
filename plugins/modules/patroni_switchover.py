#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: patroni_switchover
short_description: Switch the leadership of a Patroni cluster over to another member
description:
  - Finds the leader at run time (C(GET /cluster) of a member configured on this host) and asks Patroni to
    hand its leadership to O(candidate), or to the best candidate (the running replica with the least lag,
    a synchronous standby first; in synchronous mode the synchronous standby, waited for at most
    O(timeout) seconds) when O(candidate) is omitted.
  - A switchover (C(POST /switchover)) needs a running leader and demotes it cleanly; with O(failover=true)
    the module asks for a failover (C(POST /failover)), which Patroni also performs when no member leads.
  - Waits until the candidate leads and, after a switchover, until the old leader runs again as a replica,
    at most O(timeout) seconds.
  - Idempotent; when O(candidate) already leads, nothing changes.
options:
  candidate:
    description: Member to lead; default the best candidate.
    type: str
  failover:
    description: Ask for a failover instead of a switchover (the leader may be down).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the new leader (and the old one's return as a replica).
    type: int
    default: 60
extends_documentation_fragment:
  - dbaas.postgresql.instance.patroni_cluster
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    description: Tells which member would lead; changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Fails with a message naming the reason when the cluster does not answer, when O(candidate) is not a
    member, is down or lags, or when no member can take over.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Switch over to the best standby
  dbaas.postgresql.patroni_switchover:
    cluster: tenant1

- name: Fail over to tenant1-m1
  dbaas.postgresql.patroni_switchover:
    cluster: tenant1
    candidate: tenant1-m1
    failover: true
'''

RETURN = r'''
previous_leader:
  description: Member that led before (none when no member led).
  returned: always
  type: str
leader:
  description: Member that leads afterwards (in check mode, the one that would).
  returned: always
  type: str
seconds:
  description: Seconds the switchover took, from the request to the new leader.
  returned: when changed and not in check mode
  type: float
members:
  description: The members afterwards, as M(dbaas.postgresql.patroni_info) returns them.
  returned: always
  type: list
  elements: dict
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.patroni import (
    Cluster,
    PatroniError,
    best_candidate,
    cluster_argument_spec,
    wait_for,
)


def main():
    argument_spec = cluster_argument_spec()
    argument_spec.update(candidate=dict(type='str'), failover=dict(type='bool', default=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    scope = params['cluster']
    cluster = Cluster(params['version'], scope, params.get('patroni'))
    if not cluster.reachable:
        module.fail_json(msg='No member of Patroni cluster %s answers on this host%s'
                         % (scope, (': ' + '; '.join(cluster.errors)) if cluster.errors else ' (none configured)'))
    try:
        before = cluster.describe()
    except PatroniError as exc:
        module.fail_json(msg=str(exc))
    members = {m['name']: m for m in before['members']}
    leader = before['leader']
    result = dict(changed=False, previous_leader=leader, leader=leader, members=before['members'])
    wanted = params['candidate']
    if wanted:
        if wanted not in members:
            module.fail_json(msg='%s is not a member of Patroni cluster %s (members: %s)'
                             % (wanted, scope, ', '.join(sorted(members))), **result)
        if wanted == leader:
            module.exit_json(**result)
        member = members[wanted]
        if not member.get('reachable') or member['state'] not in ('running', 'streaming'):
            module.fail_json(msg='Member %s of %s cannot take over: it is down (state %s)'
                             % (wanted, scope, member['state']), **result)
    else:
        member = best_candidate(before['members'], exclude=leader)
        if member is not None and before.get('synchronous_mode') and not params['failover']:
            # Patroni switches over to the synchronous standby only; a replica becomes one within
            # loop_wait of running (e.g. right after a restart): wait for it, at most timeout seconds.
            def synchronous_standby():
                try:
                    return best_candidate(cluster.describe()['members'], exclude=leader, synchronous=True)
                except PatroniError:
                    return None

            member = wait_for(synchronous_standby, params['timeout'])
            if member is None:
                module.fail_json(msg='Patroni cluster %s is in synchronous mode and no synchronous standby '
                                     'runs to take over from %s' % (scope, leader), **result)
        if member is None:
            module.fail_json(msg='No member of Patroni cluster %s can take over from %s: no replica runs'
                             % (scope, leader), **result)
        wanted = member['name']
    if leader is None and not params['failover']:
        module.fail_json(msg='Patroni cluster %s has no leader: a switchover needs one, ask for a failover'
                         % scope, **result)
    if before['paused'] and not params['failover']:
        module.fail_json(msg='Patroni cluster %s is paused: resume it first' % scope, **result)
    result.update(changed=True, leader=wanted)
    if module.check_mode:
        module.exit_json(**result)
    body = dict(candidate=wanted)
    if leader:
        body['leader'] = leader
    started = time.monotonic()
    try:
        cluster.client.post('/failover' if params['failover'] else '/switchover', body,
                            ok=(200, 202), timeout=params['timeout'] + 5)
    except PatroniError as exc:
        module.fail_json(msg='%s of %s to %s failed: %s' % ('Failover' if params['failover'] else 'Switchover',
                                                            scope, wanted, exc), **result)

    def led_by_candidate():
        try:
            return cluster.describe()['leader'] == wanted and cluster.client.cluster()
        except PatroniError:
            return False

    if not wait_for(led_by_candidate, params['timeout']):
        module.fail_json(msg='%s does not lead %s after %d s' % (wanted, scope, params['timeout']), **result)
    result['seconds'] = round(time.monotonic() - started, 3)

    def old_leader_back():
        try:
            now = cluster.describe()
        except PatroniError:
            return None
        old = [m for m in now['members'] if m['name'] == leader]
        return now if not old or (old[0]['role'] in ('replica', 'sync_standby')
                                  and old[0]['state'] in ('running', 'streaming')) else None

    after = wait_for(old_leader_back, params['timeout']) if leader else None
    result['members'] = (after or cluster.describe())['members']
    module.exit_json(**result)


if __name__ == '__main__':
    main()
