#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: replica
short_description: Make, observe, promote or re-sync a read replica (a streaming standby instance of an origin)
description:
  - Acts on the replica instance O(cluster), an instance of its own made for O(instance_id) (its marker
    C(pgdbaas-instance)). The origin side (role, slot, C(pg_hba.conf)) is M(dbaas.postgresql.replica_origin)'s.
  - O(state=standby) - when the instance is not yet a replica (no record C(pgdbaas-replica) in its
    configuration directory), stops it, empties its data directory and runs, as the instance owner,
    C(pg_basebackup -X stream -S <slot> -c fast) from the origin (O(origins)); then writes C(standby.signal),
    C(conf.d/pgdbaas-replica.conf) (C(primary_conninfo) with C(passfile=), C(primary_slot_name)), the 0600
    passfile C(pgdbaas-replication.pgpass) holding O(password), and the record; and starts the instance. On an
    instance that already is a replica of that origin it only rewrites what differs and starts it (a second
    run changes nothing). A promoted replica is refused (use O(state=resynced)).
  - O(state=promoted) - C(pg_promote()) (waits until read-write), then removes C(pgdbaas-replica.conf) and
    the passfile so it never follows again, and records it promoted. The origin's slot is
    M(dbaas.postgresql.replica_origin)'s to drop.
  - O(state=resynced) - a fresh C(pg_basebackup) as for a new replica (whatever it holds, diverged writes
    after a promotion included, is replaced), then it follows again. C(pg_rewind) is not used - it needs a
    role with C(pg_read_binary_file) rights on the origin, which the replication role does not have.
  - O(state=observed) - changes nothing; reports RV(replica).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
options:
  instance_id:
    description: Whose instance the replica is; a marker naming another id (or none) is refused.
    type: str
  origins:
    description:
      - The origin's addresses (libpq C(host), C(port)); several (the members of an HA cluster) give a multi-host
        C(primary_conninfo) with C(target_session_attrs=read-write), so the replica follows whichever is the leader.
      - Required with O(state=standby) and O(state=resynced).
    type: list
    elements: dict
    suboptions:
      host:
        description: Host name or address.
        type: str
        required: true
      port:
        description: Port.
        type: int
        required: true
  origin_name:
    description: Name of the origin (recorded, reported).
    type: str
  user:
    description: The replication role on the origin.
    type: str
    default: pgdbaas_replication
  password:
    description: Its password (O(state=standby), O(state=resynced)); written to the 0600 passfile only.
    type: str
  slot:
    description: The physical slot on the origin (C([a-z0-9_]), 1-63).
    type: str
  state:
    description: See the description.
    type: str
    default: observed
    choices: [standby, promoted, resynced, observed]
  timeout:
    description: Seconds for C(pg_basebackup), and for a start or a promotion.
    type: int
    default: 3600
attributes:
  check_mode:
    description: Reports whether it would clone, promote or re-sync; changes nothing.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Instance app-1-r1 (made by the install role, stopped) becomes a replica of app-1
  dbaas.postgresql.replica:
    cluster: app-1-r1
    instance_id: app-1-r1
    origins: [{host: 127.0.0.1, port: 55432}]
    origin_name: app-1
    slot: app_1_r1
    password: "{{ replication_password }}"
    state: standby

- name: How far behind is it
  dbaas.postgresql.replica:
    cluster: app-1-r1
  register: replica
'''

RETURN = r'''
replica:
  description:
    - The replica as it is afterwards. C(replica_state) is V(streaming) (its WAL receiver streams
      from the origin), V(catchup) (in recovery, the WAL receiver starting or catching up), V(disconnected)
      (in recovery with no WAL receiver, e.g. the origin is down), V(stopped) (the instance does not run),
      V(promoted) (an independent primary, it no longer follows).
    - C(lag_seconds) is 0 when everything received is replayed, else the age of the last replayed
      transaction; C(synced_at) the last time the origin's position was known to the replica
      (C(pg_stat_wal_receiver.latest_end_time)), or when it was promoted. Lag in bytes is the origin's
      (M(dbaas.postgresql.replica_origin) O(dbaas.postgresql.replica_origin#module:state=observed)).
  returned: always
  type: dict
  sample: {replica_state: streaming, replica_state_detail: 'streaming from 127.0.0.1:58100 (slot trr_r1)',
           origin: app-1, slot: app_1_r1, in_recovery: true, receive_lsn: 0/3000148, replay_lsn: 0/3000148,
           lag_seconds: 0, synced_at: '2026-12-03T10:20:00+00:00', timeline: 1, promoted_at: null}
action:
  description: What was done - V(cloned), V(configured), V(promoted), V(resynced) or V(none).
  returned: always
  type: str
  sample: cloned
state:
  description: Run state of the replica afterwards.
  returned: always
  type: str
  sample: started
commands:
  description: Commands run (pg_basebackup without secrets, the controller's).
  returned: always
  type: list
  elements: str
'''

import datetime
import os
import shlex
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
    read_json_record,
    write_json_record,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.replica import (
    HOST_RE,
    PASSFILE,
    RECORD,
    REPLICA_CONF,
    REPLICA_STATUS,
    SLOT_RE,
    conninfo,
    iso,
    pgpass_text,
    remove,
    replica_conf_text,
    write_owned,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.restore import empty_directory, system_identifier

MARKER = 'pgdbaas-instance'


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def check_marker(module, inst, result):
    wanted = module.params['instance_id']
    if not wanted:
        return
    try:
        with open(os.path.join(inst.conf_dir, MARKER), encoding='utf-8') as marker:
            owner = marker.read().strip()
    except OSError:
        owner = None
    if owner != wanted:
        module.fail_json(msg="Refusing to act on instance %s for id '%s': %s. Nothing was changed."
                         % (inst.name, wanted, ('it was made for id %s' % owner) if owner
                            else 'it has no %s marker (not made by pgdbaas)' % MARKER), **result)


def observe(module, ctl, record):
    """RV(replica)."""
    view = dict(origin=record.get('origin'), slot=record.get('slot'), promoted_at=record.get('promoted_at'),
                in_recovery=None, receive_lsn=None, replay_lsn=None, lag_seconds=None, synced_at=None, timeline=None)
    if ctl.status() != 'started':
        view.update(replica_state='stopped', replica_state_detail='the instance is not running')
        return view
    conn = connect(module, ctl.instance)
    try:
        row = conn.cursor(row_factory=psycopg.rows.dict_row).execute(REPLICA_STATUS).fetchone()
    finally:
        conn.close()
    view.update(in_recovery=row['in_recovery'], receive_lsn=row['receive_lsn'], replay_lsn=row['replay_lsn'],
                lag_seconds=row['lag_seconds'], timeline=row['timeline'])
    if not row['in_recovery']:
        view.update(replica_state='promoted', synced_at=record.get('promoted_at'),
                    replica_state_detail='an independent primary since %s' % (record.get('promoted_at') or '?'))
    elif row['receiver_status'] == 'streaming':
        view.update(replica_state='streaming', synced_at=iso(row['latest_end_time'] or row['last_msg_receipt_time']),
                    replica_state_detail='streaming from %s:%s (slot %s)'
                    % (row['sender_host'], row['sender_port'], row['slot_name']))
    elif row['receiver_status']:
        view.update(replica_state='catchup', synced_at=iso(row['latest_end_time']),
                    replica_state_detail='WAL receiver %s' % row['receiver_status'])
    else:
        view.update(replica_state='disconnected', synced_at=iso(row['replay_timestamp']),
                    replica_state_detail='in recovery without a WAL receiver (is the origin reachable?)')
    return view


def write_settings(module, ctl, origins):
    """standby.signal, conf.d/pgdbaas-replica.conf and the passfile; True when one changed."""
    params = module.params
    inst = ctl.instance
    owner = ctl.owner()
    passfile = os.path.join(inst.conf_dir, PASSFILE)
    primary = conninfo(origins, params['user'], passfile, inst.cluster)
    changed = write_owned(passfile, pgpass_text(origins, params['user'], params['password']),
                          owner.pw_uid, owner.pw_gid, 0o600)
    changed |= write_owned(os.path.join(inst.conf_dir, 'conf.d', REPLICA_CONF),
                           replica_conf_text(primary, params['slot']), owner.pw_uid, owner.pw_gid, 0o644)
    changed |= write_owned(os.path.join(inst.data_directory, 'standby.signal'), '', owner.pw_uid, owner.pw_gid,
                           0o600)
    return changed


def clone(module, ctl, origins, result):
    """Replace the data directory with a pg_basebackup of the origin (the instance is stopped)."""
    params = module.params
    inst = ctl.instance
    if ctl.status() == 'started':
        ctl.stop(result, timeout=120)
    passfile = os.path.join(inst.conf_dir, PASSFILE)
    owner = ctl.owner()
    write_owned(passfile, pgpass_text(origins, params['user'], params['password']), owner.pw_uid, owner.pw_gid,
                0o600)
    empty_directory(inst.data_directory)
    argv = [os.path.join(inst.bindir, 'pg_basebackup'), '-D', inst.data_directory, '-X', 'stream', '-c', 'fast',
            '-S', params['slot'], '--no-password',
            '-d', conninfo(origins, params['user'], passfile, inst.cluster)]
    result.setdefault('commands', []).append(shlex.join(argv))
    rc, out, err = ctl.run_as_owner(argv, timeout=params['timeout'])
    if rc != 0:
        module.fail_json(msg='pg_basebackup of instance %s from its origin failed (rc=%d): %s. The instance is '
                         'stopped with an incomplete data directory: run again, or terminate it.'
                         % (inst.name, rc, (out + err).strip()), **result)
    # The origin's auto.conf may carry settings of its own past (a restore's, a promotion's): not ours.
    remove(os.path.join(inst.data_directory, 'standby.signal'))


def wait_until(module, ctl, wanted_recovery, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with connect(module, ctl.instance) as conn:
                if conn.execute('SELECT pg_catalog.pg_is_in_recovery()').fetchone()[0] == wanted_recovery:
                    return
        except psycopg.Error as exc:
            last = error_text(exc)
        time.sleep(0.2)
    module.fail_json(msg='Instance %s did not reach %s within %ss (%s)'
                     % (ctl.instance.name, 'recovery' if wanted_recovery else 'read-write', timeout, last))


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        instance_id=dict(type='str'),
        origins=dict(type='list', elements='dict',
                     options=dict(host=dict(type='str', required=True), port=dict(type='int', required=True))),
        origin_name=dict(type='str'),
        user=dict(type='str', default='pgdbaas_replication'),
        password=dict(type='str', no_log=True),
        slot=dict(type='str'),
        state=dict(type='str', default='observed', choices=['standby', 'promoted', 'resynced', 'observed']),
        timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('state', 'standby', ['origins', 'password', 'slot', 'instance_id']),
                                        ('state', 'resynced', ['origins', 'password', 'slot', 'instance_id']),
                                        ('state', 'promoted', ['instance_id'])])
    ensure_psycopg(module)
    params = module.params
    origins = params['origins'] or []
    for origin in origins:
        if not HOST_RE.match(origin['host']) or not 1 <= origin['port'] <= 65535:
            module.fail_json(msg='origins: each host must be a host name or address and each port 1-65535 (got %r)'
                             % origin)
    if params['slot'] is not None and not SLOT_RE.match(params['slot']):
        module.fail_json(msg='slot must be 1-63 characters of [a-z0-9_] (got %r)' % params['slot'])
    if params['password'] is not None and ('\n' in params['password'] or not params['password']):
        module.fail_json(msg='password must not be empty nor contain a line break')
    ctl = instance_controller(module)
    inst = ctl.instance
    result = dict(changed=False, action='none', commands=[], **inst.facts())
    check_marker(module, inst, result)
    record_path = os.path.join(inst.conf_dir, RECORD)
    record = read_json_record(record_path) or {}
    state = params['state']
    try:
        if state in ('standby', 'resynced'):
            wanted = dict(origin=params['origin_name'], slot=params['slot'],
                          origins=[dict(host=o['host'], port=o['port']) for o in origins])
            is_replica = bool(record) and record.get('system_identifier') == system_identifier(inst.data_directory)
            if state == 'standby' and is_replica and record.get('promoted_at'):
                module.fail_json(msg='Instance %s was promoted on %s: it no longer follows its origin (reset it with '
                                 'reset_replica.yml, state=resynced)' % (inst.name, record['promoted_at']), **result)
            fresh = state == 'resynced' or not is_replica
            if module.check_mode:
                result.update(changed=True, action='cloned' if fresh else 'configured')
            else:
                if fresh:
                    write_json_record(record_path, dict(wanted, state='cloning'))
                    clone(module, ctl, origins, result)
                    result.update(changed=True, action='resynced' if state == 'resynced' else 'cloned')
                changed = write_settings(module, ctl, origins)
                record = dict(wanted, state='standby', promoted_at=None,
                              system_identifier=system_identifier(inst.data_directory),
                              cloned_at=now_iso() if fresh else record.get('cloned_at'))
                write_json_record(record_path, record)
                if ctl.status() != 'started':
                    ctl.start(result, timeout=min(params['timeout'], 600))
                    changed = True
                elif changed:
                    ctl.reload(result)
                if changed and not fresh:
                    result.update(changed=True, action='configured')
                wait_until(module, ctl, True, min(params['timeout'], 600))
        elif state == 'promoted':
            view = observe(module, ctl, record)
            if view['replica_state'] == 'stopped':
                module.fail_json(msg='Instance %s is not running: start it before promoting it' % inst.name, **result)
            leftovers = [p for p in (os.path.join(inst.conf_dir, 'conf.d', REPLICA_CONF),
                                     os.path.join(inst.conf_dir, PASSFILE)) if os.path.exists(p)]
            if view['in_recovery'] or leftovers:
                result.update(changed=True, action='promoted')
                if not module.check_mode:
                    if view['in_recovery']:
                        with connect(module, inst) as conn:
                            conn.execute('SELECT pg_catalog.pg_promote(true, %s)', (min(params['timeout'], 600),))
                        wait_until(module, ctl, False, min(params['timeout'], 600))
                    for path in leftovers:
                        remove(path)
                    ctl.reload(result)
                    record = dict(record, state='promoted', promoted_at=record.get('promoted_at') or now_iso())
                    write_json_record(record_path, record)
        result['replica'] = observe(module, ctl, record)
    except psycopg.Error as exc:
        module.fail_json(msg='Replica instance %s: %s' % (inst.name, error_text(exc)), **result)
    result['state'] = ctl.status()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
