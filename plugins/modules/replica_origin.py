#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: replica_origin
short_description: The origin side of a read replica - replication role, physical slot, pg_hba entry; or its view of it
description:
  - Runs on the origin instance O(cluster) of a read replica (module M(dbaas.postgresql.replica) on the replica).
  - O(state=present) makes sure there is a C(LOGIN REPLICATION) role O(user) with O(password) (sent as a
    SCRAM-SHA-256 secret computed by libpq on this host; an existing role without C(REPLICATION) is refused,
    never altered), a physical replication slot O(slot) (C(pg_create_physical_replication_slot), the name bound
    as a value), and, with O(hba_address), the line C(host replication <user> <hba_address> scram-sha-256) in
    the origin's C(pg_hba.conf) (appended; the server is reloaded through its instance controller).
  - O(state=absent) drops the slot (ending the WAL sender that holds it first), so that the origin no longer
    retains WAL for the replica; the role and the C(pg_hba.conf) line stay (other replicas may use them).
    A stopped origin is left alone with a warning (RV(reachable) false).
  - O(state=observed) changes nothing and reports the slot and the WAL sender streaming through it
    (C(pg_replication_slots), C(pg_stat_replication)) in RV(origin).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
options:
  slot:
    description: Physical replication slot of the replica, 1-63 characters of C([a-z0-9_]).
    type: str
    required: true
  state:
    description: See the description.
    type: str
    default: present
    choices: [present, absent, observed]
  user:
    description: The replication role (O(state=present)); its name is quoted as an identifier.
    type: str
    default: pgdbaas_replication
  password:
    description: Password of O(user), required with O(state=present).
    type: str
  hba_address:
    description:
      - With O(state=present), the CIDR address the replica connects from (V(127.0.0.1/32) on one host).
    type: str
attributes:
  check_mode:
    description: Reports what would change and the statements that would run; changes nothing.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The C(pg_hba.conf) line is not part of the install role's template; re-provisioning the origin rewrites
    C(pg_hba.conf) without it (add it to C(pg_hba_entries) then, or run create_replica.yml again, which is
    idempotent).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Let replica app-1-r1 stream from instance app-1
  dbaas.postgresql.replica_origin:
    cluster: app-1
    slot: app_1_r1
    password: "{{ replication_password }}"
    hba_address: 127.0.0.1/32

- name: Drop its slot
  dbaas.postgresql.replica_origin:
    cluster: app-1
    slot: app_1_r1
    state: absent
'''

RETURN = r'''
origin:
  description: The slot and its WAL sender, as the origin sees them (null when there is no such slot).
  returned: when the origin runs
  type: dict
  sample: {slot_name: app_1_r1, active: true, restart_lsn: 0/3000148, current_lsn: 0/3000148, state: streaming,
           sync_state: async, client_addr: 127.0.0.1, application_name: app-1-r1, replay_lsn: 0/3000148,
           lag_bytes: 0, replay_lag_seconds: null, reply_time: '2026-12-03T10:20:00+00:00'}
server_version_num:
  description: C(server_version_num) of the origin.
  returned: when the origin runs
  type: int
  sample: 150015
reachable:
  description: Whether the origin runs (a stopped one is not touched).
  returned: always
  type: bool
  sample: true
queries:
  description: Statements run (or, in check mode, that would run); passwords masked.
  returned: always
  type: list
  elements: str
commands:
  description: Controller commands run (a reload after the pg_hba.conf change).
  returned: when the server was reloaded
  type: list
  elements: str
'''

import ipaddress
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    check_object_name,
    check_password,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
    scram_secret_matches,
    set_password,
    sql,
    stored_secret,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.replica import ORIGIN_STATUS, SLOT_RE, iso


def origin_view(db, slot):
    row = db.row(ORIGIN_STATUS, (slot,))
    if row is not None:
        row['reply_time'] = iso(row['reply_time'])
    return row


def wait_released(db, slot, timeout=10):
    """Wait until no WAL sender holds the slot (the terminated one lets go of it as it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not db.row("SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (slot,))['active']:
            return
        time.sleep(0.1)


def ensure_role(db, user, password):
    role = db.row("SELECT rolreplication, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = %s", (user,))
    if role is None:
        set_password(db, lambda ident, secret: sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}")
                     .format(ident, secret), user, password)
        return True
    if not role['rolreplication']:
        return None
    changed = False
    if not role['rolcanlogin']:
        db.run(sql.SQL("ALTER ROLE {} WITH LOGIN").format(sql.Identifier(user)))
        changed = True
    if not scram_secret_matches(stored_secret(db, user), password):
        set_password(db, lambda ident, secret: sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(ident, secret),
                     user, password)
        changed = True
    return changed


def ensure_hba(module, inst, user, address):
    """Append the replication line to the origin's pg_hba.conf; True when it was missing."""
    path = os.path.join(inst.conf_dir, 'pg_hba.conf')
    wanted = ['host', 'replication', user, address, 'scram-sha-256']
    with open(path, encoding='utf-8') as hba:
        text = hba.read()
    if any(line.split()[:5] == wanted for line in text.splitlines()):
        return False
    if not module.check_mode:
        with open(path, 'a', encoding='utf-8') as hba:
            hba.write(('' if text.endswith('\n') or not text else '\n')
                      + '# dbaas.postgresql.replica_origin: read replicas\n' + ' '.join(wanted) + '\n')
    return True


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        slot=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent', 'observed']),
        user=dict(type='str', default='pgdbaas_replication'),
        password=dict(type='str', no_log=True),
        hba_address=dict(type='str'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('state', 'present', ['password'])])
    ensure_psycopg(module)
    params = module.params
    if not SLOT_RE.match(params['slot']):
        module.fail_json(msg='slot must be 1-63 characters of [a-z0-9_] (got %r)' % params['slot'])
    check_object_name(module, 'user', params['user'])
    if params['state'] == 'present':
        check_password(module, params['password'])
    if params['hba_address']:
        try:
            params['hba_address'] = str(ipaddress.ip_network(params['hba_address'], strict=False))
        except ValueError:
            module.fail_json(msg='hba_address must be a CIDR address such as 10.0.0.12/32 (got %r)'
                             % params['hba_address'])
    ctl = instance_controller(module)
    inst = ctl.instance
    result = dict(changed=False, reachable=True, queries=[], **inst.facts())
    if ctl.status() != 'started':
        result['reachable'] = False
        if params['state'] == 'present':
            module.fail_json(msg='Origin instance %s is not running' % inst.name, **result)
        module.warn('Origin instance %s is not running: slot %s left as it is' % (inst.name, params['slot']))
        module.exit_json(**result)

    conn = connect(module, inst)
    db = Executor(conn, check_mode=module.check_mode, queries=result['queries'])
    slot = params['slot']
    try:
        result['server_version_num'] = int(db.row("SHOW server_version_num")['server_version_num'])
        existing = origin_view(db, slot)
        if params['state'] == 'present':
            role_changed = ensure_role(db, params['user'], params['password'])
            if role_changed is None:
                module.fail_json(msg="Role %s exists without REPLICATION (not a replication role): refused, "
                                 "nothing was changed" % params['user'], **result)
            if existing is None:
                db.run("SELECT pg_catalog.pg_create_physical_replication_slot(%s)", (slot,))
            result['changed'] = bool(role_changed or existing is None)
            if params['hba_address'] and ensure_hba(module, inst, params['user'], params['hba_address']):
                result['changed'] = True
                if not module.check_mode:
                    ctl.reload(result)
        elif params['state'] == 'absent' and existing is not None:
            if existing['active']:
                db.run("SELECT pg_catalog.pg_terminate_backend(active_pid, 5000) FROM pg_catalog.pg_replication_slots "
                       "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
            if existing['active'] and not module.check_mode:
                wait_released(db, slot)
            db.run("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
            result['changed'] = True
        result['origin'] = None if (params['state'] == 'absent' and not module.check_mode) else origin_view(db, slot)
    except psycopg.Error as exc:
        module.fail_json(msg='Origin instance %s: %s' % (inst.name, error_text(exc)), **result)
    finally:
        conn.close()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
