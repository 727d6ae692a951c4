#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pgbackrest_backup
short_description: Take a full, differential or incremental pgBackRest backup of one PostgreSQL instance
description:
  - Runs C(pgbackrest --stanza=<cluster> --type=<type> --no-expire-auto backup) as the OS owner of the
    instance (C(postgres)) and returns the new backup as pgBackRest lists it.
  - The stanza (named like the instance) must exist in its repository with its configuration
    C(/etc/pgbackrest/conf.d/<cluster>.conf) (the role dbaas.postgresql.pgbackrest), and the instance must run
    with WAL archiving to that stanza (pgBackRest waits until the WAL the backup needs is archived).
  - Nothing expires here (C(--no-expire-auto)); M(dbaas.postgresql.pgbackrest_expire) applies the retention.
  - A backup always changes something. Its options (compression, C(start-fast), ...) are the stanza's.
options:
  type:
    description:
      - V(full) copies every file; V(diff) what changed since the last full backup; V(incr) what changed since the
        last backup of any type.
      - Without a prior full backup pgBackRest takes a full one instead of V(diff) or V(incr) (the C(type) of RV(backup)
        says which, with a warning).
    type: str
    choices: [full, diff, incr]
    default: full
  timeout:
    description: Seconds the backup may run before it is killed and the module fails.
    type: int
    default: 3600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
  - dbaas.postgresql.instance.stanza
attributes:
  check_mode:
    description: Checks that the stanza exists and the instance runs, reports changed, takes no backup.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The module fails, with pgBackRest's reason, when the backup fails (e.g. WAL not archived within the
    stanza's C(archive-timeout)), when the stanza or its configuration is missing and when the instance is
    stopped.
seealso:
  - module: dbaas.postgresql.pgbackrest_info
  - module: dbaas.postgresql.pgbackrest_expire
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Take a differential backup of instance 15/tenant1
  dbaas.postgresql.pgbackrest_backup:
    cluster: tenant1
    type: diff
  register: taken

- name: Show its label and size
  ansible.builtin.debug:
    msg: "{{ taken.backup.label }}: {{ taken.backup.size_bytes }} bytes"
'''

RETURN = r'''
backup:
  description:
    - The backup taken, one entry of RV(dbaas.postgresql.pgbackrest_info#module:backup_info.backups)
      (C(label), C(type), C(prior), C(start_at), C(stop_at), C(start_epoch), C(stop_epoch), C(lsn_start),
      C(lsn_stop), C(wal_start), C(wal_stop), C(size_bytes), C(delta_bytes), C(repo_size_bytes),
      C(repo_delta_bytes), C(database_version), C(error)).
    - Null in check mode.
  returned: always
  type: dict
  sample: {label: 20250102-030405F_20250102-040506D, type: diff, prior: 20250102-030405F,
           start_at: '2025-01-02T04:05:06+00:00', stop_at: '2025-01-02T04:05:08+00:00',
           start_epoch: 1735790706, stop_epoch: 1735790708, lsn_start: 0/7000028, lsn_stop: 0/7000100,
           wal_start: '000000010000000000000007', wal_stop: '000000010000000000000007', size_bytes: 26814830,
           delta_bytes: 5120266, repo_size_bytes: 3121185, repo_delta_bytes: 460724, database_version: '15',
           error: false}
backup_info:
  description: The stanza after the backup, as RV(dbaas.postgresql.pgbackrest_info#module:backup_info).
  returned: always
  type: dict
  sample: {stanza: tenant1, exists: true, status: {code: 0, message: ok}, backups: []}
version:
  description: Major version of the instance.
  returned: always
  type: str
  sample: '15'
cluster:
  description: Name of the instance (and of its stanza).
  returned: always
  type: str
  sample: tenant1
port:
  description: Port of the instance.
  returned: always
  type: int
  sample: 5433
data_directory:
  description: Data directory of the instance.
  returned: always
  type: str
  sample: /var/lib/postgresql/15/tenant1
commands:
  description: pgBackRest commands run (the backup is not run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/pgbackrest --stanza=tenant1 --type=diff --no-expire-auto backup"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    backup_info,
    fail_command,
    require_stanza,
    run_pgbackrest,
    stanza_argument_spec,
    stanza_of,
    warnings_of,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    ensure_psycopg,
    login_argument_spec,
)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(stanza_argument_spec())
    argument_spec.update(
        type=dict(type='str', default='full', choices=['full', 'diff', 'incr']),
        timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    ctl = instance_controller(module)
    inst = ctl.instance
    stanza = stanza_of(module, inst)
    result = dict(changed=False, backup=None, commands=[], **inst.facts())

    before = require_stanza(module, ctl, stanza, result)
    if ctl.status() != 'started':
        module.fail_json(msg='Instance %s is stopped: pgBackRest backs up a running instance' % inst.name,
                         backup_info=before, **result)
    result['changed'] = True
    if module.check_mode:
        result['backup_info'] = backup_info(module, ctl, stanza)
        module.exit_json(**result)

    options = ['--type=%s' % module.params['type'], '--no-expire-auto']
    rc, out, err = run_pgbackrest(ctl, stanza, 'backup', options, timeout=module.params['timeout'], result=result)
    for warning in warnings_of(err + '\n' + out):
        module.warn('pgbackrest: %s' % warning)
    if rc != 0:
        fail_command(module, 'backup', rc, out, err, backup_info=backup_info(module, ctl, stanza), **result)
    info = backup_info(module, ctl, stanza)
    known = set(b['label'] for b in before['backups'])
    new = [b for b in info['backups'] if b['label'] not in known]
    if not new:
        module.fail_json(msg='pgbackrest backup succeeded but no new backup is listed for stanza %s' % stanza,
                         backup_info=info, **result)
    result.update(backup=new[-1], backup_info=info)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
