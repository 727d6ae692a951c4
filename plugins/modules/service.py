#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: service
short_description: Start, stop, restart or reload one PostgreSQL instance
description:
  - Brings one instance of the Debian multi-instance layout into the requested run state and
    reports the state observed afterwards.
  - When systemd runs the host (C(/run/systemd/system) exists) the module runs
    C(systemctl <action> postgresql@<version>-<cluster>).
  - Otherwise it runs C(/usr/lib/postgresql/<version>/bin/pg_ctl) directly as the owner of the
    instance (normally C(postgres)) with C(-D /etc/postgresql/<version>/<cluster>), waiting for
    completion (C(-w)), stopping in C(fast) mode and logging to the instance's Debian log file,
    with the environment and C(pg_ctl.conf) options C(pg_ctlcluster) would use. A restart takes a
    fraction of a second and the instance stays manageable with C(pg_ctlcluster) and
    C(pg_lsclusters).
  - The run state is read with C(pg_ctl status) before and after the action.
options:
  state:
    description:
      - V(started) and V(stopped) act only when needed.
      - V(restarted) restarts a running instance and starts a stopped one; it always changes.
      - V(reloaded) makes a running instance reload its configuration and always changes when the
        instance runs; a stopped instance is left stopped (unchanged), as it reads its configuration
        when it next starts.
    type: str
    required: true
    choices: [started, stopped, restarted, reloaded]
  timeout:
    description:
      - Seconds to wait for the instance to start or stop (C(pg_ctl -t)).
      - Under systemd the unit's own timeouts apply instead.
    type: int
    default: 60
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
attributes:
  check_mode:
    description: Reports whether the instance would change; does nothing.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run as root (or as the instance owner). The module fails, with state V(error), when the instance
    does not exist or does not reach the requested state; the message then holds the last lines of
    the instance's log.
  - Option O(port) only changes where the module checks that the server accepts connections.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Start instance 15/tenant1
  dbaas.postgresql.service:
    cluster: tenant1
    state: started

- name: Apply a configuration change that needs a restart
  dbaas.postgresql.service:
    version: '15'
    cluster: tenant1
    state: restarted
'''

RETURN = r'''
state:
  description: Run state observed after the action (in check mode, the current state).
  returned: always
  type: str
  sample: started
  choices: [started, stopped, error]
version:
  description: Major version of the instance.
  returned: always
  type: str
  sample: '15'
cluster:
  description: Name of the instance.
  returned: always
  type: str
  sample: tenant1
port:
  description: Port of the instance.
  returned: when the instance exists
  type: int
  sample: 5433
data_directory:
  description: Data directory of the instance.
  returned: when the instance exists
  type: str
  sample: /var/lib/postgresql/15/tenant1
accepting_connections:
  description: Whether the server answers on its unix socket and port (libpq ping) after the action.
  returned: when the instance exists
  type: bool
  sample: true
commands:
  description: Commands run (none in check mode or when nothing had to change).
  returned: always
  type: list
  elements: str
  sample: ["/usr/lib/postgresql/15/bin/pg_ctl restart -D /etc/postgresql/15/tenant1 -w -t 60 -m fast -l /var/log/postgresql/postgresql-15-tenant1.log"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    accepting_connections,
    change_run_state,
    ensure_psycopg,
    instance_argument_spec,
    instance_state,
    locate_instance,
)


def planned_action(state, current):
    """The action that brings an instance in run state `current` to `state`, or None."""
    running = current == 'started'
    if state == 'started':
        return None if running else 'start'
    if state == 'stopped':
        return 'stop' if running else None
    if state == 'restarted':
        return 'restart' if running else 'start'
    return 'reload' if running else None


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(
        state=dict(type='str', required=True, choices=['started', 'stopped', 'restarted', 'reloaded']),
        timeout=dict(type='int', default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    inst = locate_instance(module)
    state = module.params['state']

    current = instance_state(inst)
    action = planned_action(state, current)
    result = dict(changed=action is not None, commands=[], **inst.facts())
    if action is None or module.check_mode:
        result.update(state=current, accepting_connections=accepting_connections(inst))
        module.exit_json(**result)

    result['state'] = change_run_state(module, inst, action, result, timeout=module.params['timeout'])
    module.exit_json(**result)


if __name__ == '__main__':
    main()
