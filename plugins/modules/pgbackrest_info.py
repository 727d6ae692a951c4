#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pgbackrest_info
short_description: Report the pgBackRest backups of one PostgreSQL instance, and create or delete its stanza
description:
  - Reports the backups, the WAL archive and the backup settings of the pgBackRest stanza of one
    instance. The stanza is named like the instance (O(cluster)); its configuration is
    C(/etc/pgbackrest/conf.d/<cluster>.conf), which the role dbaas.postgresql.pgbackrest writes.
  - Read-only unless O(stanza_state) or O(check) is given.
  - An instance without a stanza (no configuration file, or nothing in its repository yet) is reported
    with RV(backup_info.exists=false), a non-zero C(code) in RV(backup_info.status) and no backups, without
    failing. Without the configuration file pgBackRest is not run at all (nor needed on the host).
  - pgBackRest runs as the OS owner of the instance (C(postgres)), never as root, like C(pg_ctl) in
    M(dbaas.postgresql.service).
options:
  stanza_state:
    description:
      - V(present) creates the stanza in its repository (C(pgbackrest stanza-create)) when pgBackRest does
        not know it; the instance must run and its configuration file must exist.
      - V(absent) deletes the stanza, all its backups and archived WAL from its repository
        (C(pgbackrest stop), then C(pgbackrest stanza-delete --force), which also removes the stop file)
        when it exists there. Stop archiving first (an C(archive_command) pushing to a deleted stanza
        fails). The configuration file is left for the caller to remove.
      - Omitted, the module changes nothing.
    type: str
    choices: [present, absent]
  check:
    description:
      - Run C(pgbackrest check) after O(stanza_state) (the instance must run). It checks the
        configuration and makes the server switch to a new WAL file and waits until pgBackRest has archived
        it, so archiving is proven to work. Failing, the module fails with pgBackRest's reason.
      - A verification, not a change (RV(checked)); skipped in check mode.
    type: bool
    default: false
  timeout:
    description: Seconds each pgBackRest command may run.
    type: int
    default: 600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
  - dbaas.postgresql.instance.stanza
attributes:
  check_mode:
    description: Reports whether the stanza would be created or deleted; changes nothing and runs no C(check).
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - RV(backup_info.archiver) comes from C(pg_stat_archiver), read over the instance's unix socket when it runs.
  - pgBackRest's C(info) reports a repository it cannot reach (e.g. an S3 endpoint) in
    RV(backup_info.status) (code 99, C(other)) rather than failing.
seealso:
  - module: dbaas.postgresql.pgbackrest_backup
  - module: dbaas.postgresql.pgbackrest_expire
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: List the backups of instance 15/tenant1
  dbaas.postgresql.pgbackrest_info:
    cluster: tenant1
  register: backups

- name: Show the labels
  ansible.builtin.debug:
    msg: "{{ backups.backup_info.backups | map(attribute='label') }}"

- name: Create the stanza when missing and prove that WAL reaches the repository
  dbaas.postgresql.pgbackrest_info:
    cluster: tenant1
    stanza_state: present
    check: true
'''

RETURN = r'''
backup_info:
  description: The stanza as pgBackRest's C(info --output=json), the instance and its configuration report it.
  returned: always
  type: dict
  contains:
    stanza:
      description: Stanza name (the instance name).
      type: str
      sample: tenant1
    exists:
      description: Whether the stanza exists in its repository (status codes 1 and 3 mean it does not).
      type: bool
      sample: true
    status:
      description:
        - pgBackRest's status of the stanza. C(code) 0 ok, 1 missing stanza path (also used when there is
          no configuration file), 2 no valid backups, 3 missing stanza data, 99 other (e.g. the repository
          cannot be reached).
      type: dict
      sample: {code: 0, message: ok}
    repository:
      description: Repository 1 of the stanza, C(type) (V(posix) or V(s3)) and C(path).
      type: dict
      sample: {type: posix, path: /var/lib/pgbackrest}
    backups:
      description: The backups, oldest first.
      type: list
      elements: dict
      contains:
        label:
          description: Backup label (C(<date>-<time>F), C(<full label>_<date>-<time>D) or C(I)).
          type: str
        type:
          description: V(full), V(diff) or V(incr).
          type: str
        prior:
          description: Label of the backup it is based on (null for a full backup).
          type: str
        start_at:
          description: Start time, ISO 8601 UTC (C(YYYY-MM-DDTHH:MM:SS+00:00)).
          type: str
        stop_at:
          description: Stop time, ISO 8601 UTC; a point-in-time restore can target any time after it.
          type: str
        start_epoch:
          description: Start time, seconds since the epoch.
          type: int
        stop_epoch:
          description: Stop time, seconds since the epoch.
          type: int
        lsn_start:
          description: WAL location where the backup started.
          type: str
        lsn_stop:
          description: WAL location where the backup stopped.
          type: str
        wal_start:
          description: First WAL segment the backup needs to be consistent.
          type: str
        wal_stop:
          description: Last WAL segment the backup needs to be consistent.
          type: str
        size_bytes:
          description: Size of the database when backed up (uncompressed).
          type: int
        delta_bytes:
          description: Part of it this backup copied (equal to C(size_bytes) for a full backup).
          type: int
        repo_size_bytes:
          description: Size in the repository of this backup with the backups it depends on (compressed).
          type: int
        repo_delta_bytes:
          description: Size in the repository of this backup alone.
          type: int
        database_version:
          description: PostgreSQL major version of the backed up instance.
          type: str
        error:
          description: Whether pgBackRest found checksum errors in the backed up pages.
          type: bool
      sample: [{label: 20250102-030405F, type: full, prior: null, start_at: '2025-01-02T03:04:05+00:00',
                stop_at: '2025-01-02T03:04:09+00:00', start_epoch: 1735787045, stop_epoch: 1735787049,
                lsn_start: 0/2000028, lsn_stop: 0/2000100, wal_start: '000000010000000000000002',
                wal_stop: '000000010000000000000002', size_bytes: 23185774, delta_bytes: 23185774,
                repo_size_bytes: 2815106, repo_delta_bytes: 2815106, database_version: '15', error: false}]
    archive:
      description: Oldest and newest WAL segment in the archive (C(min_wal), C(max_wal)); null when there is none.
      type: dict
      sample: {min_wal: '000000010000000000000002', max_wal: '000000010000000000000009'}
    archiver:
      description:
        - C(pg_stat_archiver) of the running instance (C(archived_count), C(last_archived_wal),
          C(last_archived_time), C(failed_count), C(last_failed_wal), C(last_failed_time); times ISO 8601 UTC).
        - Null when the instance is stopped.
      type: dict
      sample: {archived_count: 9, last_archived_wal: '000000010000000000000009',
               last_archived_time: '2025-01-02T03:04:09+00:00', failed_count: 0, last_failed_wal: null,
               last_failed_time: null}
    settings:
      description:
        - C(archive_enabled) whether the instance's configuration archives WAL with pgBackRest into this stanza
          and the stanza keeps the continuous archive (point-in-time restore between backups);
          C(archive_timeout) the instance's C(archive_timeout) in seconds;
          C(retention_days) the stanza's C(repo1-retention-full) under time retention (else null);
          C(retention_full_count) the same under count retention (else null).
      type: dict
      sample: {archive_enabled: true, archive_timeout: 3600, retention_days: 7, retention_full_count: null}
stanza_changed:
  description: What O(stanza_state) did, V(created), V(deleted) or null.
  returned: always
  type: str
  sample: created
checked:
  description: Whether C(pgbackrest check) ran and passed.
  returned: always
  type: bool
  sample: true
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
  returned: always
  type: int
  sample: 5433
data_directory:
  description: Data directory of the instance (from its configuration).
  returned: always
  type: str
  sample: /var/lib/postgresql/15/tenant1
socket_dir:
  description: Directory of the unix socket of the instance (what the stanza's C(pg1-socket-path) must be).
  returned: always
  type: str
  sample: /var/run/postgresql
config_file:
  description: The stanza's configuration file.
  returned: always
  type: str
  sample: /etc/pgbackrest/conf.d/tenant1.conf
commands:
  description: pgBackRest commands run.
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/pgbackrest --stanza=tenant1 --output=json --io-timeout=10 info"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    archiver_of,
    backup_info,
    fail_command,
    has_config,
    read_archiver,
    run_pgbackrest,
    stanza_argument_spec,
    stanza_config_path,
    stanza_of,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    ensure_psycopg,
    login_argument_spec,
)


def require_running(module, ctl, what, result):
    if ctl.status() != 'started':
        module.fail_json(msg='Instance %s is stopped: %s needs it running' % (ctl.instance.name, what), **result)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(stanza_argument_spec())
    argument_spec.update(
        stanza_state=dict(type='str', choices=['present', 'absent']),
        check=dict(type='bool', default=False),
        timeout=dict(type='int', default=600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    ctl = instance_controller(module)
    inst = ctl.instance
    stanza = stanza_of(module, inst)
    params = module.params
    timeout = params['timeout']
    result = dict(changed=False, stanza_changed=None, checked=False, commands=[], socket_dir=inst.socket_dir,
                  config_file=stanza_config_path(stanza), **inst.facts())

    info = backup_info(module, ctl, stanza, result=result, archiver=False)
    if params['stanza_state'] == 'present' and not info['exists']:
        if not has_config(stanza) and not module.check_mode:  # in check mode the file may be due
            module.fail_json(msg='Instance %s has no backup configuration (%s): the role dbaas.postgresql.pgbackrest '
                             'writes it' % (inst.name, stanza_config_path(stanza)), backup_info=info, **result)
        result.update(changed=True, stanza_changed='created')
        if not module.check_mode:
            require_running(module, ctl, 'pgbackrest stanza-create', result)
            rc, out, err = run_pgbackrest(ctl, stanza, 'stanza-create', timeout=timeout, result=result)
            if rc != 0:
                fail_command(module, 'stanza-create', rc, out, err, backup_info=info, **result)
    elif params['stanza_state'] == 'absent' and info['exists']:
        result.update(changed=True, stanza_changed='deleted')
        if not module.check_mode:
            # stanza-delete wants the stop file of `pgbackrest stop` (and removes it); --force: the
            # instance may run (archiving already off).
            for command, options in (('stop', []), ('stanza-delete', ['--force'])):
                rc, out, err = run_pgbackrest(ctl, stanza, command, options, timeout=timeout, result=result)
                if rc != 0:
                    fail_command(module, command, rc, out, err, backup_info=info, **result)

    if params['check'] and not module.check_mode:
        require_running(module, ctl, 'pgbackrest check', result)
        rc, out, err = run_pgbackrest(ctl, stanza, 'check', timeout=timeout, result=result)
        if rc != 0:
            fail_command(module, 'check', rc, out, err, backup_info=info, **result)
        result['checked'] = True

    if (result['changed'] and not module.check_mode) or result['checked']:
        info = backup_info(module, ctl, stanza, result=result)  # read again after the change
    else:
        info['archiver'] = archiver_of(read_archiver(module, ctl))
    result['backup_info'] = info
    module.exit_json(**result)


if __name__ == '__main__':
    main()
