#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: service
short_description: Start, stop, restart or reload one PostgreSQL instance
description:
  - Brings one instance into the requested run state and reports the state observed afterwards,
    with the settings that wait for a restart.
  - The only module of the collection that starts, stops, restarts or reloads a server. Modules that
    change settings (M(dbaas.postgresql.extension)) report RV(pending_restart) and leave the restart to
    this module.
  - It acts through the instance controller named by O(controller) (C(plugins/module_utils/instance.py)).
    With V(debian), the Debian multi-instance layout - when systemd runs the host
    (C(/run/systemd/system) exists) the module runs C(systemctl <action> postgresql@<version>-<cluster>);
    otherwise it runs C(/usr/lib/postgresql/<version>/bin/pg_ctl) directly as the owner of the
    instance (normally C(postgres)) with C(-D /etc/postgresql/<version>/<cluster>), waiting for
    completion (C(-w)), stopping in C(fast) mode and logging to the instance's Debian log file,
    with the environment and C(pg_ctl.conf) options C(pg_ctlcluster) would use. A restart takes a
    fraction of a second and the instance stays manageable with C(pg_ctlcluster) and
    C(pg_lsclusters). The run state is read with C(pg_ctl status) before and after the action.
options:
  state:
    description:
      - V(started) and V(stopped) act only when needed.
      - V(restarted) restarts a running instance and starts a stopped one; it always changes.
      - V(reloaded) makes a running instance reload its configuration and always changes when the
        instance runs; a stopped instance is left stopped (unchanged), as it reads its configuration
        when it next starts. RV(pending_restart) then tells whether a changed setting needs a restart.
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
  - dbaas.postgresql.instance.login
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
  - Option O(port) only changes where the module checks that the server accepts connections and
    connects to read RV(pending_restart).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Start instance 15/tenant1
  dbaas.postgresql.service:
    cluster: tenant1
    state: started

- name: Reload the configuration of instance 15/tenant1
  dbaas.postgresql.service:
    version: '15'
    cluster: tenant1
    state: reloaded
  register: reloaded

- name: Restart it when a changed setting needs a restart
  dbaas.postgresql.service:
    version: '15'
    cluster: tenant1
    state: restarted
  when: reloaded.pending_restart
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
pending_restart:
  description:
    - Whether settings of the running server wait for a restart (written to its configuration files or
      with C(ALTER SYSTEM), but applied only when the server starts). False when the instance is stopped.
  returned: when the instance exists
  type: bool
  sample: false
pending_restart_settings:
  description: Names of those settings.
  returned: when the instance exists
  type: list
  elements: str
  sample: [shared_buffers]
commands:
  description: Commands run (none in check mode or when nothing had to change).
  returned: always
  type: list
  elements: str
  sample: ["/usr/lib/postgresql/15/bin/pg_ctl restart -D /etc/postgresql/15/tenant1 -w -t 60 -m fast -l /var/log/postgresql/postgresql-15-tenant1.log"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
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


def pending_restart(module, ctl, state, result):
    """Settings of the running server that wait for a restart (none when it is stopped)."""
    pending = []
    if state == 'started':
        try:
            with connect(module, ctl.instance) as conn:
                pending = ctl.pending_restart(Executor(conn))
        except psycopg.Error as exc:
            module.fail_json(msg='Reading the settings of instance %s failed: %s' % (ctl.instance.name,
                                                                                     error_text(exc)), **result)
    return dict(pending_restart=bool(pending), pending_restart_settings=pending)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        state=dict(type='str', required=True, choices=['started', 'stopped', 'restarted', 'reloaded']),
        timeout=dict(type='int', default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    ctl = instance_controller(module)
    state = module.params['state']

    current = ctl.status()
    action = planned_action(state, current)
    result = dict(changed=action is not None, commands=[], **ctl.instance.facts())
    if action is None or module.check_mode:
        result.update(state=current, accepting_connections=ctl.accepting_connections())
    else:
        result['state'] = ctl.change(action, result, timeout=module.params['timeout'])
    result.update(pending_restart(module, ctl, result['state'], result))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
