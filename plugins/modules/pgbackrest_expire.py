#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pgbackrest_expire
short_description: Remove pgBackRest backups or archived WAL of one PostgreSQL instance
description:
  - With O(labels), removes those backups (C(pgbackrest expire --set=<label>) for each), and with each the
    backups that depend on it (the differential and incremental backups of a full backup, the incremental
    backups of a differential one). Every label is checked first; an unknown label, or a set of labels that
    would remove every full backup (pgBackRest keeps at least one), fails the module before anything is removed.
  - Without O(labels), applies the stanza's retention (C(pgbackrest expire)). Under time retention
    (C(repo1-retention-full-type=time)) the full backups older than C(repo1-retention-full) days go, except the
    newest of them (pgBackRest keeps the backups a point-in-time restore to any moment of the period
    needs); under count retention all but the newest C(repo1-retention-full) full backups go. WAL older than the
    oldest backup left goes with them.
  - With O(archive_only), removes only archived WAL, all of it except what each backup needs to be
    consistent and what follows the newest backup (C(expire) with C(repo1-retention-archive-type=incr),
    C(repo1-retention-archive=1) and no full retention on its command line). No backup is removed, and a
    point-in-time restore then works only from the newest backup on (the API's Delete Archive Log).
  - Runs as the OS owner of the instance (C(postgres)); the stanza and its configuration must exist.
options:
  labels:
    description: Labels of the backups to remove (as listed by M(dbaas.postgresql.pgbackrest_info)).
    type: list
    elements: str
  archive_only:
    description: Remove archived WAL only (see the description). Not with O(labels).
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
    description:
      - Reports what would be removed (RV(removed), RV(removed_archive)) without removing it; C(expire) runs
        with C(--dry-run) when the retention decides.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dbaas.postgresql.pgbackrest_info
  - module: dbaas.postgresql.pgbackrest_backup
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Remove a differential backup of instance 15/tenant1
  dbaas.postgresql.pgbackrest_expire:
    cluster: tenant1
    labels:
      - 20250102-030405F_20250103-030405D

- name: Apply the retention of the stanza
  dbaas.postgresql.pgbackrest_expire:
    cluster: tenant1

- name: Delete the archived WAL no backup needs
  dbaas.postgresql.pgbackrest_expire:
    cluster: tenant1
    archive_only: true
'''

RETURN = r'''
removed:
  description: Labels of the backups removed (in check mode, that would be removed), oldest first.
  returned: always
  type: list
  elements: str
  sample: [20250102-030405F_20250103-030405D]
removed_archive:
  description: Ranges of archived WAL segments pgBackRest removed (or would remove), each C(archive_id), C(start), C(stop).
  returned: always
  type: list
  elements: dict
  sample: [{archive_id: 15-1, start: '000000010000000000000005', stop: '00000001000000000000000D'}]
backup_info:
  description: The stanza afterwards, as RV(dbaas.postgresql.pgbackrest_info#module:backup_info).
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
  description: pgBackRest commands run.
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/pgbackrest --stanza=tenant1 --set=20250102-030405F_20250103-030405D --log-level-console=info expire"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    LABEL_RE,
    backup_info,
    dependents,
    fail_command,
    parse_expire_output,
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

# The "Delete Archive Log" of the API: keep the WAL of each backup's consistency and the continuous
# archive from the newest backup on; no full retention (the highest count pgBackRest accepts).
ARCHIVE_ONLY_OPTIONS = ['--repo1-retention-full-type=count', '--repo1-retention-full=9999999',
                        '--repo1-retention-archive-type=incr', '--repo1-retention-archive=1']


def check_labels(module, info, labels, result):
    """The labels and their dependents that removing labels removes; fails when that cannot be done."""
    known = [b['label'] for b in info['backups']]
    unknown = [label for label in labels if label not in known]
    if unknown:
        module.fail_json(msg='Unknown backup label(s) of stanza %s: %s (it has %s). Nothing was removed.'
                         % (info['stanza'], ', '.join(unknown), ', '.join(known) or 'no backup'),
                         backup_info=info, **result)
    removed = dependents(info['backups'], labels)
    fulls = [b['label'] for b in info['backups'] if b['type'] == 'full']
    if fulls and all(label in removed for label in fulls):
        module.fail_json(msg='Removing %s would remove every full backup of stanza %s: pgBackRest keeps at '
                         'least one (take another full backup first). Nothing was removed.'
                         % (', '.join(labels), info['stanza']), backup_info=info, **result)
    return removed


def run_expire(module, ctl, stanza, options, result):
    """Run expire (with --dry-run in check mode); returns (labels, archive) its output names."""
    options = list(options) + ['--log-level-console=info']
    if module.check_mode:
        options.append('--dry-run')
    rc, out, err = run_pgbackrest(ctl, stanza, 'expire', options, timeout=module.params['timeout'], result=result)
    for warning in warnings_of(err + '\n' + out):
        module.warn('pgbackrest: %s' % warning)
    if rc != 0:
        fail_command(module, 'expire', rc, out, err, backup_info=backup_info(module, ctl, stanza), **result)
    return parse_expire_output(out + '\n' + err)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(stanza_argument_spec())
    argument_spec.update(
        labels=dict(type='list', elements='str'),
        archive_only=dict(type='bool', default=False),
        timeout=dict(type='int', default=600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('labels', 'archive_only')])
    ensure_psycopg(module)
    ctl = instance_controller(module)
    inst = ctl.instance
    stanza = stanza_of(module, inst)
    labels = module.params['labels']
    result = dict(changed=False, removed=[], removed_archive=[], commands=[], **inst.facts())

    before = require_stanza(module, ctl, stanza, result)
    if labels is not None:
        bad = [label for label in labels if not LABEL_RE.match(label)]
        if bad:
            module.fail_json(msg='Not backup labels: %s. Nothing was removed.' % ', '.join(bad), backup_info=before,
                             **result)
        removed = check_labels(module, before, labels, result)
        if not module.check_mode:
            gone = set()
            for label in removed:
                if label in labels and label not in gone:  # its dependents go with it
                    dummy, archive = run_expire(module, ctl, stanza, ['--set=%s' % label], result)
                    result['removed_archive'].extend(archive)
                    gone.update(dependents(before['backups'], [label]))
    else:
        options = ARCHIVE_ONLY_OPTIONS if module.params['archive_only'] else []
        removed, result['removed_archive'] = run_expire(module, ctl, stanza, options, result)

    info = backup_info(module, ctl, stanza)
    if not module.check_mode:
        remaining = set(b['label'] for b in info['backups'])
        removed = [b['label'] for b in before['backups'] if b['label'] not in remaining]
    else:
        removed = [b['label'] for b in before['backups'] if b['label'] in removed]
    result.update(removed=removed, changed=bool(removed or result['removed_archive']), backup_info=info)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
