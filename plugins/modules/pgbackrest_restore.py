#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pgbackrest_restore
short_description: Restore a pgBackRest backup of an instance into an instance of this host, to a point in time
description:
  - Replaces the data of the instance O(cluster) (the target, an instance pgdbaas made for O(instance_id))
    with a backup of the stanza O(source_stanza) (the source instance's name), recovered to a point in time
    (O(type=time)), to the end of one backup (O(type=backup)) or to the end of the archived WAL
    (O(type=latest)), and leaves it running read-write as an ordinary instance.
  - Refuses, before touching anything, a target whose marker C(/etc/postgresql/<version>/<cluster>/pgdbaas-instance)
    is missing or names another id than O(instance_id), a source without backups, an unknown O(backup_label)
    and a O(target_time) earlier than the start of the oldest backup.
  - Steps. With O(source_port) and the source running, the module first commits an empty transaction on
    the source (calling C(pg_current_xact_id)) and runs C(pgbackrest check) on it, which switches and
    archives the current WAL segment - so that a O(target_time) up to now is reachable (PostgreSQL ends a
    recovery to a time only on a transaction committed after it). Then it stops the target (through its
    instance controller), empties its data directory and runs, as the instance owner,
    C(pgbackrest --stanza=<source_stanza> restore --pg1-path=<target data directory> --target-action=promote ...)
    (C(--type=time --target=<target_time>) with C(--target-exclusive) when O(inclusive=false);
    C(--type=immediate --set=<backup_label>); C(--type=default) for V(latest)).
  - It starts the target and waits until it has left recovery. When PostgreSQL ends the recovery before
    the target (e.g. C(recovery ended before configured recovery target was reached) for a time after the
    last archived transaction), the module fails with PostgreSQL's reason and leaves the target stopped.
  - Then it stops the target, removes the recovery settings pgBackRest wrote to C(postgresql.auto.conf)
    (C(restore_command), C(recovery_target*); they are postmaster settings, so removing them from a running
    server would leave it pending a restart) and starts it again. The settings in
    C(/etc/postgresql/<version>/<cluster>) (port, sizing, C(pg_hba.conf)) are the target's own, outside the
    backup; databases, roles and their passwords are the source's.
  - The restore is recorded in C(/etc/postgresql/<version>/<cluster>/pgdbaas-restore). Running the module
    again with the same options on the instance it restored (same database system identifier, no recovery
    settings left) changes nothing, so that a repeated request does not throw away what was written since;
    O(force=true) restores again.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
options:
  instance_id:
    description:
      - Whose instance the target is (the pgdbaas API passes its cluster id). The module refuses a target
        whose marker names another id, or that has none.
    type: str
    required: true
  source_stanza:
    description:
      - The pgBackRest stanza to restore from, i.e. the name of the source instance (its configuration
        C(/etc/pgbackrest/conf.d/<source_stanza>.conf)).
      - May be O(cluster) itself (an in-place restore).
    type: str
    required: true
  type:
    description:
      - V(time) recovers to O(target_time); V(backup) to the end of the backup O(backup_label) (consistency
        point, no WAL replayed after it); V(latest) replays all archived WAL.
    type: str
    required: true
    choices: [time, backup, latest]
  target_time:
    description:
      - With O(type=time), required. A date and time with its UTC offset (V(2026-12-02 19:39:40.280024+00:00),
        V(2026-12-02T19:39:40Z), V(2026-12-02 21:39:40+02)), microseconds kept. The exact commit time of a
        transaction is C(pg_xact_commit_timestamp(xmin)) of a row it wrote (C(track_commit_timestamp=on)).
    type: str
  inclusive:
    description:
      - With O(type=time), whether a transaction committed exactly at O(target_time) is kept (V(true), AFTER)
        or not (V(false), BEFORE; C(--target-exclusive)).
    type: bool
    default: true
  backup_label:
    description:
      - With O(type=backup), required - the backup to restore (C(--set)).
      - With O(type=time), optional - the backup to start from; by default pgBackRest chooses the newest
        backup that ended before O(target_time).
    type: str
  source_port:
    description:
      - Port of the source instance, when it runs on this host. Before restoring, the module commits an empty
        transaction there and runs C(pgbackrest check) (which archives the current WAL). A source that does
        not answer is skipped, with a warning.
    type: int
  force:
    description:
      - Restore even when the target holds the result of the same restore already (see above).
    type: bool
    default: false
  timeout:
    description:
      - Seconds for the C(pgbackrest restore) command, and for the recovery (start until read-write).
    type: int
    default: 3600
attributes:
  check_mode:
    description: Checks the target's marker, the stanza and the backup, and reports whether it would restore; changes nothing.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run as root. pgBackRest runs as the owner of the target instance (C(postgres)), never as root.
  - A failure of C(pgbackrest restore) leaves the target stopped with an incomplete data directory; a
    failed recovery leaves it stopped with the restored files and the recovery settings. Run the module
    again (e.g. with another O(target_time)) or terminate the instance.
  - When the target archives its WAL to a stanza of its own (set_backup.yml), that stanza belongs to
    another database system after the restore; the module warns, and backups of the target must be set up
    again.
  - Tablespaces are not supported (pgdbaas creates none).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Restore instance app-1 as it was just before the transaction committed at 19:39:40.280024 UTC
  dbaas.postgresql.pgbackrest_restore:
    cluster: app-1-restored
    instance_id: cluster-0042
    source_stanza: app-1
    source_port: 55432
    type: time
    target_time: '2026-12-02 19:39:40.280024+00:00'
    inclusive: false
  register: restored

- name: Restore the backup 20261202-193933F of app-1 (no WAL replayed after its end)
  dbaas.postgresql.pgbackrest_restore:
    cluster: app-1-restored
    instance_id: cluster-0042
    source_stanza: app-1
    type: backup
    backup_label: 20261202-193933F
'''

RETURN = r'''
restore:
  description:
    - What was restored (when nothing changed, what the previous identical restore recorded).
    - In check mode, what would be restored (RV(restore.promoted_at) null).
  returned: success
  type: dict
  contains:
    source_stanza:
      description: The stanza restored from.
      type: str
      sample: app-1
    type:
      description: O(type).
      type: str
      sample: time
    target_time:
      description: O(target_time) in ISO 8601 UTC, null unless O(type=time).
      type: str
      sample: '2026-12-02T19:39:40.280024+00:00'
    inclusive:
      description: O(inclusive) with O(type=time), else null.
      type: bool
      sample: false
    backup_label:
      description: The backup restored - O(backup_label), or the one pgBackRest chose.
      type: str
      sample: 20261202-193933F
    promoted_at:
      description: When the target was seen read-write after the recovery (ISO 8601 UTC).
      type: str
      sample: '2026-12-02T19:39:52+00:00'
    recovery_stop:
      description: PostgreSQL's message on where the recovery stopped (null for V(backup) and V(latest)).
      type: str
      sample: recovery stopping before commit of transaction 726, time 2026-12-02 19:39:40.280024+00
    timeline:
      description: Timeline of the target after its promotion.
      type: int
      sample: 2
    system_identifier:
      description: Database system identifier of the restored data (the source's).
      type: str
      sample: '7714793642774035595'
timings:
  description:
    - Seconds spent on the source check (C(check_seconds)), on stopping the target and running
      C(pgbackrest restore) (C(restore_seconds)), on starting it and recovering until read-write
      (C(recovery_seconds)), on restarting it without the recovery settings (C(restart_seconds)),
      and in all (C(total_seconds)).
  returned: when the target was restored
  type: dict
  sample: {check_seconds: 1.4, restore_seconds: 1.1, recovery_seconds: 2.6, restart_seconds: 0.9, total_seconds: 6.0}
accepting_connections:
  description: Whether the target answers on its unix socket after the last start or stop.
  returned: when the target was started or stopped
  type: bool
  sample: true
source_checked:
  description: Whether C(pgbackrest check) ran on the running source first (O(source_port)).
  returned: success
  type: bool
  sample: true
reasons:
  description: On a failed recovery, the FATAL and PANIC messages PostgreSQL logged.
  returned: failure
  type: list
  elements: str
  sample: ['FATAL: recovery ended before configured recovery target was reached']
state:
  description: Run state of the target afterwards.
  returned: always
  type: str
  sample: started
version:
  description: Major version of the target.
  returned: always
  type: str
  sample: '15'
cluster:
  description: Name of the target.
  returned: always
  type: str
  sample: app-1-restored
port:
  description: Port of the target.
  returned: when the target exists
  type: int
  sample: 55433
data_directory:
  description: Data directory of the target.
  returned: when the target exists
  type: str
  sample: /var/lib/postgresql/15/app-1-restored
commands:
  description: Commands run (pgBackRest and the instance controller's).
  returned: always
  type: list
  elements: str
  sample:
    - /usr/bin/pgbackrest --stanza=app-1 --pg1-path=/var/lib/postgresql/15/app-1-restored --type=immediate
      --set=20261202-193933F --target-action=promote --log-level-console=info restore
'''

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    LABEL_RE,
    command_error,
    find_backup,
    read_stanza_options,
    require_stanza,
    run_pgbackrest,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    CLUSTER_RE,
    DEFAULT_SOCKET_DIR,
    Instance,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
    read_json_record,
    write_json_record,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.restore import (
    Clock,
    attempt,
    chosen_backup,
    empty_directory,
    iso,
    log_lines,
    log_offset,
    log_reasons,
    now_iso,
    parse_target_time,
    recovery_settings,
    recovery_stop,
    strip_recovery_settings,
    system_identifier,
    target_text,
    timeline,
    try_connect,
    wait_read_write,
)

INSTANCE_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$')
MARKER = 'pgdbaas-instance'
RECORD = 'pgdbaas-restore'
STOP_TIMEOUT = 120


def check_options(module):
    """The validated options: (target moment or None)."""
    params = module.params
    if not INSTANCE_ID_RE.match(params['instance_id']):
        module.fail_json(msg='instance_id must be 1-128 characters of [A-Za-z0-9_.:-] starting with a letter '
                         'or digit (got %r)' % params['instance_id'])
    if not CLUSTER_RE.match(params['source_stanza']):
        module.fail_json(msg='source_stanza must match %s (got %r)' % (CLUSTER_RE.pattern, params['source_stanza']))
    label = params['backup_label']
    if label is not None and not LABEL_RE.match(label):
        module.fail_json(msg='backup_label must be a pgBackRest backup label such as 20261202-193933F '
                         '(got %r)' % label)
    if params['type'] == 'latest' and label:
        module.fail_json(msg='backup_label is for type backup or time, not latest')
    if params['type'] != 'time':
        if params['target_time']:
            module.fail_json(msg='target_time is for type time only')
        return None
    try:
        return parse_target_time(params['target_time'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))


def check_marker(module, inst, result):
    """Fail unless the target's marker names instance_id (nothing touched yet)."""
    path = os.path.join(inst.conf_dir, MARKER)
    try:
        with open(path, encoding='utf-8') as marker:
            owner = marker.read().strip()
    except OSError:
        owner = None
    wanted = module.params['instance_id']
    if owner != wanted:
        why = ('it was made for id %s' % owner) if owner else ('it has no %s marker (not made by pgdbaas)' % path)
        module.fail_json(msg="Refusing to restore into instance %s for id '%s': %s. Nothing was changed."
                         % (inst.name, wanted, why), **result)


def request_of(module, moment):
    params = module.params
    is_time = params['type'] == 'time'
    return dict(source_stanza=params['source_stanza'], type=params['type'],
                target_time=iso(moment) if is_time else None,
                inclusive=params['inclusive'] if is_time else None,
                backup_label=params['backup_label'] or None)


def read_record(inst):
    return read_json_record(os.path.join(inst.conf_dir, RECORD))


def write_record(inst, record):
    write_json_record(os.path.join(inst.conf_dir, RECORD), record)


def remove_record(inst):
    try:
        os.unlink(os.path.join(inst.conf_dir, RECORD))
    except FileNotFoundError:
        pass


def already_restored(module, inst, request):
    """The recorded restore when the target holds the result of this very request, else None."""
    record = read_record(inst)
    if module.params['force'] or not record or record.get('request') != request:
        return None
    if record.get('system_identifier') != system_identifier(inst.data_directory):
        return None
    if recovery_settings(inst.data_directory):
        return None
    return record.get('restore')


def check_source(module, ctl, result):
    """On the running source: commit an empty transaction, then `pgbackrest check` (archives the current WAL)."""
    params = module.params
    stanza, port = params['source_stanza'], params['source_port']
    socket_dir = read_stanza_options(stanza).get('pg1-socket-path') or DEFAULT_SOCKET_DIR
    source = Instance(version=params['version'], cluster=stanza, conf_dir='', port=port, socket_dir=socket_dir)
    try:
        with try_connect(module, source) as conn:
            conn.execute('SELECT pg_catalog.pg_current_xact_id()')
    except psycopg.Error as exc:
        module.warn('Source %s does not answer on port %d (%s): pgbackrest check skipped, the WAL it has not '
                    'archived yet is not restored' % (stanza, port, error_text(exc)))
        return False
    # A Patroni cluster's stanza lists its members (pg1, pg2, ...): pgBackRest finds the primary itself.
    several = 'pg2-path' in read_stanza_options(stanza)
    options = [] if several else ['--pg1-port=%d' % port, '--pg1-socket-path=%s' % socket_dir]
    rc, out, err = run_pgbackrest(ctl, stanza, 'check', options, timeout=params['timeout'], result=result)
    if rc != 0:
        module.fail_json(msg='%s. Nothing was changed on the target.' % command_error('check', rc, out, err), **result)
    return True


def restore_options(module, moment, data_directory):
    params = module.params
    options = ['--pg1-path=%s' % data_directory]
    if params['type'] == 'time':
        options += ['--type=time', '--target=%s' % target_text(moment), '--target-action=promote']
        if not params['inclusive']:
            options.append('--target-exclusive')
        if params['backup_label']:
            options.append('--set=%s' % params['backup_label'])
    elif params['type'] == 'backup':
        options += ['--type=immediate', '--set=%s' % params['backup_label'], '--target-action=promote']
    else:
        options.append('--type=default')
    return options + ['--log-level-console=info']


def archive_warning(module, inst):
    command = inst.settings.get('archive_command', '') or ''
    match = re.search(r'--stanza=(\S+)', command)
    if 'pgbackrest' in command and match and match.group(1) != module.params['source_stanza']:
        module.warn('Instance %s archives its WAL to stanza %s, which holds another database system than the one '
                    'restored: set its backups up again (set_backup.yml)' % (inst.name, match.group(1)))


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        instance_id=dict(type='str', required=True),
        source_stanza=dict(type='str', required=True),
        type=dict(type='str', required=True, choices=['time', 'backup', 'latest']),
        target_time=dict(type='str'),
        inclusive=dict(type='bool', default=True),
        backup_label=dict(type='str'),
        source_port=dict(type='int'),
        force=dict(type='bool', default=False),
        timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('type', 'time', ['target_time']), ('type', 'backup', ['backup_label'])])
    ensure_psycopg(module)
    params = module.params
    moment = check_options(module)
    ctl = instance_controller(module)
    inst = ctl.instance
    result = dict(changed=False, commands=[], source_checked=False, **inst.facts())
    result['state'] = ctl.status()
    check_marker(module, inst, result)

    source = params['source_stanza']
    info = require_stanza(module, ctl, source, result)
    if not info['backups']:
        module.fail_json(msg='Stanza %s has no backup to restore' % source, **result)
    label = params['backup_label']
    first = info['backups'][0]
    if label:
        first = find_backup(info, label)
        if first is None:
            module.fail_json(msg='Stanza %s has no backup %s (it has %s)'
                             % (source, label, ', '.join(b['label'] for b in info['backups'])), **result)
    if moment is not None and moment.timestamp() < first['start_epoch']:
        module.fail_json(msg='target_time %s is before the start of backup %s (%s): no backup of stanza %s can be '
                         'restored to it' % (iso(moment), first['label'], first['start_at'], source), **result)

    request = request_of(module, moment)
    done = already_restored(module, inst, request)
    if done is not None:
        result['restore'] = done
        module.exit_json(**result)
    if module.check_mode:
        result.update(changed=True, restore=dict(request, promoted_at=None, recovery_stop=None, timeline=None,
                                                 system_identifier=None))
        module.exit_json(**result)

    timeout = params['timeout']
    clock = Clock(result)
    if params['source_port']:
        result['source_checked'] = check_source(module, ctl, result)
    archive_warning(module, inst)

    # From here on the target's data is replaced.
    result['changed'] = True
    clock.lap('check_seconds')
    if ctl.status() == 'started':
        ctl.stop(result, timeout=STOP_TIMEOUT)
    result['state'] = 'stopped'
    remove_record(inst)
    empty_directory(inst.data_directory)
    rc, out, err = run_pgbackrest(ctl, source, 'restore', restore_options(module, moment, inst.data_directory),
                                  timeout=timeout, result=result)
    if rc != 0:
        module.fail_json(msg='%s. Instance %s is stopped and its data directory incomplete: restore again, or '
                         'terminate it.' % (command_error('restore', rc, out, err), inst.name), **result)
    restored = dict(request, backup_label=label or chosen_backup(out + err))
    clock.lap('restore_seconds')

    offset = log_offset(ctl)
    deadline = time.monotonic() + timeout
    failure = attempt(ctl, 'start', result, timeout) or wait_read_write(module, ctl, deadline)
    lines = log_lines(ctl, offset)
    if failure:
        if ctl.status() == 'started':
            attempt(ctl, 'stop', result, STOP_TIMEOUT)
        result['state'] = ctl.status()
        reasons = log_reasons(lines)
        module.fail_json(msg='Restore of instance %s from stanza %s failed: %s. The instance is left %s.'
                         % (inst.name, source, '; '.join(reasons) or failure, result['state']),
                         reasons=reasons, restore=dict(restored, promoted_at=None), **result)
    restored.update(promoted_at=now_iso(), recovery_stop=recovery_stop(lines) if params['type'] == 'time' else None)
    clock.lap('recovery_seconds')

    # An ordinary instance: without pgBackRest's recovery settings (postmaster settings: changed while stopped).
    ctl.stop(result, timeout=STOP_TIMEOUT)
    strip_recovery_settings(inst.data_directory)
    result['state'] = ctl.start(result, timeout=timeout)
    clock.lap('restart_seconds')
    try:
        restored['timeline'] = timeline(module, ctl)
    except psycopg.Error as exc:
        module.fail_json(msg='Reading the timeline of instance %s failed: %s' % (inst.name, error_text(exc)),
                         restore=restored, **result)
    restored['system_identifier'] = system_identifier(inst.data_directory)
    write_record(inst, dict(request=request, restore=restored, system_identifier=restored['system_identifier']))
    result['restore'] = restored
    clock.total()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
