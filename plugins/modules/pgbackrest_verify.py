#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pgbackrest_verify
short_description: Prove that a pgBackRest backup of an instance restores, starts and reads without corruption
description:
  - Restores the backup O(backup_label) of the stanza of instance O(cluster) (named like it) into a scratch
    instance O(scratch_cluster) made for it on port O(scratch_port), starts it, checks it and drops it.
    The instance O(cluster) itself and its repository are only read.
  - The scratch instance is made with C(pg_createcluster) (its configuration directory first holds the
    marker C(pgdbaas-verify), naming the stanza), its data directory emptied, and
    C(pgbackrest --stanza=<cluster> restore --pg1-path=<scratch data directory> --type=immediate
    --set=<backup_label> --target-action=promote --archive-mode=off) run as the instance owner; pgBackRest
    checks every file against the checksum the backup recorded. The scratch instance starts with
    C(listen_addresses) empty (unix socket only), C(archive_mode=off) and the C(max_*) settings of the
    backup's C(pg_control), through the C(pg_ctl.conf) of its configuration, and recovers to the end of the
    backup, replaying the archived WAL the backup needs.
  - Read-write, it is checked with C(pg_amcheck --install-missing --all) (heap tables and B-tree indexes of
    every database; data checksums, when the source has them, are verified on every page read) and a
    C(count(*)) of every user table (permanent tables of every schema but C(pg_catalog),
    C(information_schema) and C(pg_toast)) of every database that is not a template.
  - The scratch instance is always dropped (stopped through its instance controller, then C(pg_dropcluster)),
    whatever was found. An instance of that name is refused unless it is a scratch instance of the same
    stanza left over by an interrupted run, which is dropped first.
  - A problem found (the restore fails, the server does not start or recover, C(pg_amcheck) reports
    corruption, a table cannot be read) gives RV(verification.verified=false) with RV(verification.problems);
    the module fails only when it cannot verify at all (unknown backup, a port or instance name in use,
    C(pg_createcluster) failing, the scratch instance not dropped).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
  - dbaas.postgresql.instance.stanza
options:
  backup_label:
    description:
      - Label of the backup to verify (a backup of the stanza O(cluster)).
    type: str
    required: true
  scratch_port:
    description:
      - Port of the scratch instance, which names its unix socket (it listens on no TCP address). No other
        instance of the host may use it.
    type: int
    required: true
  scratch_cluster:
    description:
      - Name of the scratch instance. Defaults to C(verify-) followed by the first 40 characters of O(cluster).
    type: str
  timeout:
    description:
      - Seconds for the restore, and for the recovery of the scratch instance (start until read-write).
    type: int
    default: 3600
attributes:
  check_mode:
    description:
      - Checks the backup, the port and the scratch name; verifies nothing and returns no RV(verification).
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run as root. pgBackRest runs as the instance owner (C(postgres)).
  - The module never reports a change - the scratch instance lives only while it runs - but it needs the disk
    space of a restored copy and the memory of one more server (the default C(shared_buffers) of 128 MB).
  - Unlogged tables are restored empty and are not counted.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Verify the backup 20261202-193933F of instance app-1
  dbaas.postgresql.pgbackrest_verify:
    cluster: app-1
    backup_label: 20261202-193933F
    scratch_port: 57200
  register: checked

- name: Fail unless it is sound
  ansible.builtin.assert:
    that: checked.verification.verified
    fail_msg: "{{ checked.verification.problems | join('; ') }}"
'''

RETURN = r'''
verification:
  description: What the verification found.
  returned: success, not in check mode
  type: dict
  contains:
    label:
      description: The backup verified.
      type: str
      sample: 20261202-193933F
    verified:
      description: Whether it restored, recovered and read without any problem.
      type: bool
      sample: true
    checked_at:
      description: When the checks ended (ISO 8601 UTC).
      type: str
      sample: '2026-12-02T19:45:10+00:00'
    databases:
      description: Number of databases counted (those that are not templates).
      type: int
      sample: 2
    tables:
      description: Number of user tables counted in them.
      type: int
      sample: 4
    rows:
      description: Sum of their rows.
      type: int
      sample: 1000040
    per_database:
      description: The same counts per database.
      type: list
      elements: dict
      sample: [{name: app, tables: 4, rows: 1000040}, {name: postgres, tables: 0, rows: 0}]
    problems:
      description: What went wrong (empty when verified).
      type: list
      elements: str
      sample: ["pgbackrest restore failed (rc=26): ERROR: [026]: raised from local-1 protocol: error restoring ..."]
timings:
  description:
    - Seconds spent making the scratch instance, restoring the backup into it, recovering it until read-write,
      running C(pg_amcheck), counting rows, dropping it, and in all.
  returned: when the verification ran
  type: dict
  sample: {create_seconds: 1.2, restore_seconds: 0.6, recovery_seconds: 1.0, amcheck_seconds: 0.3,
           count_seconds: 0.1, drop_seconds: 0.8, total_seconds: 4.0}
scratch_cluster:
  description: Name of the scratch instance (dropped).
  returned: always
  type: str
  sample: verify-app-1
commands:
  description: Commands run.
  returned: always
  type: list
  elements: str
  sample: ["pg_createcluster 15 verify-app-1 --port=57200 --locale=C"]
version:
  description: Major version of the instance.
  returned: always
  type: str
  sample: '15'
cluster:
  description: Name of the instance whose backup was verified.
  returned: always
  type: str
  sample: app-1
'''

import fcntl
import glob
import os
import shlex
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    CONF_ROOT,
    DATA_ROOT,
    LOG_ROOT,
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    LABEL_RE,
    command_error,
    find_backup,
    require_stanza,
    run_pgbackrest,
    stanza_argument_spec,
    stanza_of,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    CLUSTER_RE,
    DEFAULT_SOCKET_DIR,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    parse_conf,
    psycopg,
    sql,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.restore import (
    Clock,
    ControllerFailure,
    attempt,
    controller_for,
    empty_directory,
    log_lines,
    log_offset,
    log_reasons,
    now_iso,
    try_connect,
    wait_read_write,
)

MARKER = 'pgdbaas-verify'
# One verification at a time per scratch instance: the second would take the first's scratch for a leftover.
LOCK_DIR = '/run/lock'
STOP_TIMEOUT = 120
MAX_PROBLEM_LINES = 20
# pg_controldata line -> setting: the scratch server needs at least the source's values to recover.
CONTROL_SETTINGS = {
    'max_connections setting': 'max_connections',
    'max_worker_processes setting': 'max_worker_processes',
    'max_wal_senders setting': 'max_wal_senders',
    'max_prepared_xacts setting': 'max_prepared_transactions',
    'max_locks_per_xact setting': 'max_locks_per_transaction',
}
HBA = '# dbaas.postgresql.pgbackrest_verify: scratch instance\nlocal all postgres peer map=pgdbaas\n'
IDENT = 'pgdbaas root postgres\npgdbaas postgres postgres\n'
DATABASES = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
TABLES = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
ORDER BY 1, 2
"""


class CannotVerify(Exception):
    """The verification could not run (the module fails)."""


def lock_scratch(version, name):
    """An open file holding an exclusive lock on the scratch instance's name, or None when another run holds it."""
    directory = LOCK_DIR if os.path.isdir(LOCK_DIR) else '/tmp'
    handle = open(os.path.join(directory, 'pgdbaas-verify-%s-%s.lock' % (version, name)), 'w')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def ports_in_use(version_root=CONF_ROOT):
    """{port: instance name} of every instance configured on the host."""
    used = {}
    for path in glob.glob(os.path.join(version_root, '*', '*', 'postgresql.conf')):
        try:
            port = int(parse_conf(path).get('port', 5432))
        except (OSError, ValueError):
            continue
        parts = path.split(os.sep)
        used[port] = '%s/%s' % (parts[-3], parts[-2])
    return used


class Scratch:
    """The scratch instance: made, restored into, checked, dropped."""

    def __init__(self, module, source_ctl, stanza, name, port, result):
        self.module = module
        self.source_ctl = source_ctl
        self.stanza = stanza
        self.name = name
        self.port = port
        self.result = result
        self.version = module.params['version']
        self.conf_dir = os.path.join(CONF_ROOT, self.version, name)
        self.data_dir = os.path.join(DATA_ROOT, self.version, name)
        self.ctl = None

    # -- checks before anything is made

    def leftover(self):
        """True for a scratch instance of this stanza left over; fails (CannotVerify) for any other instance."""
        if not (os.path.exists(self.conf_dir) or os.path.exists(self.data_dir)):
            return False
        try:
            with open(os.path.join(self.conf_dir, MARKER), encoding='utf-8') as marker:
                owner = marker.read().strip()
        except OSError:
            owner = None
        if owner != self.stanza:
            raise CannotVerify('Refusing to use instance %s/%s as the scratch instance: %s exists and is not a '
                               'scratch instance of stanza %s%s. Choose another scratch_cluster.'
                               % (self.version, self.name,
                                  self.conf_dir if os.path.exists(self.conf_dir) else self.data_dir, self.stanza,
                                  (' (its %s names %s)' % (MARKER, owner)) if owner else ''))
        return True

    def check_port(self):
        used = ports_in_use()
        if self.port in used and used[self.port] != '%s/%s' % (self.version, self.name):
            raise CannotVerify('Port %d is used by instance %s: choose another scratch_port' % (self.port, used[self.port]))
        if os.path.exists(os.path.join(DEFAULT_SOCKET_DIR, '.s.PGSQL.%d' % self.port)):
            raise CannotVerify('Port %d is in use (socket %s/.s.PGSQL.%d exists): choose another scratch_port'
                               % (self.port, DEFAULT_SOCKET_DIR, self.port))

    # -- running things

    def run(self, argv, check=True):
        self.result['commands'].append(shlex.join(argv))
        rc, out, err = self.module.run_command(argv, environ_update=dict(LANG='C', LC_ALL='C'))
        if check and rc != 0:
            raise CannotVerify('%s failed (rc=%d): %s' % (argv[0], rc, (err or out).strip()))
        return rc, out, err

    def create(self):
        """pg_createcluster (its configuration directory first holds the marker), then its data emptied."""
        owner = self.source_ctl.owner()
        for path in (os.path.dirname(self.conf_dir), self.conf_dir):
            if not os.path.isdir(path):
                os.mkdir(path, 0o755)
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.write(MARKER, self.stanza + '\n', mode=0o644, root=True)
        self.run(['pg_createcluster', self.version, self.name, '--port=%d' % self.port, '--locale=C'])
        self.write('pg_hba.conf', HBA)
        self.write('pg_ident.conf', IDENT)
        try:
            self.ctl = controller_for(self.module, self.name, self.port)
        except ControllerFailure as exc:
            raise CannotVerify(exc.msg)
        self.data_dir = self.ctl.data_directory
        empty_directory(self.data_dir)

    def write(self, name, text, mode=0o640, root=False):
        path = os.path.join(self.conf_dir, name)
        with open(path, 'w', encoding='utf-8') as out:
            out.write(text)
        os.chmod(path, mode)
        if not root:
            owner = self.source_ctl.owner()
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def restore(self, label, timeout):
        """Problems of pgbackrest restore (empty when it succeeded)."""
        rc, out, err = run_pgbackrest(self.source_ctl, self.stanza, 'restore',
                                      ['--pg1-path=%s' % self.data_dir, '--type=immediate', '--set=%s' % label,
                                       '--target-action=promote', '--archive-mode=off'],
                                      timeout=timeout, result=self.result)
        return [command_error('restore', rc, out, err)] if rc != 0 else []

    def server_options(self):
        """pg_ctl.conf: what the server must run with, over anything of the restored postgresql.auto.conf."""
        settings = dict(listen_addresses='', port=str(self.port), archive_mode='off')
        dummy, out, dummy = self.run([os.path.join(self.ctl.instance.bindir, 'pg_controldata'), self.data_dir])
        for line in out.splitlines():
            name, dummy, value = line.partition(':')
            if name.strip() in CONTROL_SETTINGS and value.strip().isdigit():
                settings[CONTROL_SETTINGS[name.strip()]] = value.strip()
        options = ' '.join('-c %s=%s' % (name, value) for name, value in sorted(settings.items()))
        self.write('pg_ctl.conf', "# dbaas.postgresql.pgbackrest_verify: scratch instance\n"
                                  "pg_ctl_options = '-o \"%s\"'\n" % options, mode=0o644)

    def start(self, timeout):
        """Problems of starting the restored backup and waiting until it is read-write."""
        offset = log_offset(self.ctl)
        failure = (attempt(self.ctl, 'start', self.result, timeout)
                   or wait_read_write(self.module, self.ctl, time.monotonic() + timeout))
        if not failure:
            return []
        reasons = log_reasons(log_lines(self.ctl, offset))
        return ['the restored backup did not start read-write: %s' % ('; '.join(reasons) or failure.splitlines()[0])]

    def amcheck(self):
        inst = self.ctl.instance
        rc, out, err = self.run([os.path.join(inst.bindir, 'pg_amcheck'), '--install-missing', '--all',
                                 '--host=%s' % inst.socket_dir, '--port=%d' % inst.port, '--username=postgres',
                                 '--no-password'], check=False)
        if rc == 0:
            return []
        lines = [line.strip() for line in (out + '\n' + err).splitlines() if line.strip()]
        problems = ['pg_amcheck found problems (rc=%d)%s' % (rc, ':' if lines else '')]
        problems += lines[:MAX_PROBLEM_LINES]
        if len(lines) > MAX_PROBLEM_LINES:
            problems.append('... and %d more lines' % (len(lines) - MAX_PROBLEM_LINES))
        return problems

    def count(self, verification):
        """Count the rows of every user table into verification; problems found."""
        problems = []
        inst = self.ctl.instance
        try:
            with try_connect(self.module, inst) as conn:
                names = [row[0] for row in conn.execute(DATABASES).fetchall()]
        except psycopg.Error as exc:
            return ['listing the databases failed: %s' % error_text(exc)]
        for name in names:
            entry = dict(name=name, tables=0, rows=0)
            try:
                with try_connect(self.module, inst, name) as conn:
                    for schema, table in conn.execute(TABLES).fetchall():
                        try:
                            query = sql.SQL('SELECT count(*) FROM {}.{}').format(sql.Identifier(schema),
                                                                                 sql.Identifier(table))
                            entry['rows'] += conn.execute(query).fetchone()[0]
                            entry['tables'] += 1
                        except psycopg.Error as exc:
                            problems.append('reading table %s.%s.%s failed: %s' % (name, schema, table, error_text(exc)))
            except psycopg.Error as exc:
                problems.append('reading database %s failed: %s' % (name, error_text(exc)))
            verification['per_database'].append(entry)
        verification['databases'] = len(names)
        verification['tables'] = sum(e['tables'] for e in verification['per_database'])
        verification['rows'] = sum(e['rows'] for e in verification['per_database'])
        return problems

    def drop(self):
        """Stop and drop the scratch instance and remove what is left of it; the problem, or None."""
        problem = None
        ctl = self.ctl
        if ctl is None and os.path.isfile(os.path.join(self.conf_dir, 'postgresql.conf')):
            try:
                ctl = controller_for(self.module, self.name, self.port)
            except ControllerFailure:
                ctl = None
        if ctl is not None and ctl.status() == 'started':
            problem = attempt(ctl, 'stop', self.result, STOP_TIMEOUT)
        if problem is None and os.path.isfile(os.path.join(self.conf_dir, 'postgresql.conf')):
            rc, out, err = self.run(['pg_dropcluster', self.version, self.name], check=False)
            if rc != 0:
                problem = 'pg_dropcluster failed (rc=%d): %s' % (rc, (err or out).strip())
        if problem is None:
            shutil.rmtree(self.conf_dir, ignore_errors=True)
            shutil.rmtree(self.data_dir, ignore_errors=True)
            try:
                os.unlink(os.path.join(LOG_ROOT, 'postgresql-%s-%s.log' % (self.version, self.name)))
            except OSError:
                pass
        return problem


def verify(scratch, label, timeout, verification, clock):
    """Problems found in the backup (CannotVerify when it could not be verified)."""
    scratch.create()
    clock.lap('create_seconds')
    problems = scratch.restore(label, timeout)
    clock.lap('restore_seconds')
    if problems:
        return problems
    scratch.server_options()
    problems = scratch.start(timeout)
    clock.lap('recovery_seconds')
    if problems:
        return problems
    problems = scratch.amcheck()
    clock.lap('amcheck_seconds')
    problems += scratch.count(verification)
    clock.lap('count_seconds')
    return problems


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(stanza_argument_spec())
    argument_spec.update(
        backup_label=dict(type='str', required=True),
        scratch_port=dict(type='int', required=True),
        scratch_cluster=dict(type='str'),
        timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    params = module.params
    ctl = instance_controller(module)
    stanza = stanza_of(module, ctl.instance)
    label = params['backup_label']
    name = params['scratch_cluster'] or 'verify-' + stanza[:40]
    result = dict(changed=False, commands=[], scratch_cluster=name, version=params['version'], cluster=stanza)
    if not LABEL_RE.match(label):
        module.fail_json(msg='backup_label must be a pgBackRest backup label such as 20261202-193933F (got %r)' % label,
                         **result)
    if not CLUSTER_RE.match(name) or name == stanza:
        module.fail_json(msg='scratch_cluster must match %s and differ from cluster (got %r)' % (CLUSTER_RE.pattern, name),
                         **result)
    if not 1 <= params['scratch_port'] <= 65535 or params['scratch_port'] == ctl.instance.port:
        module.fail_json(msg='scratch_port must be a free port 1-65535 (got %d)' % params['scratch_port'], **result)
    info = require_stanza(module, ctl, stanza, result)
    if find_backup(info, label) is None:
        module.fail_json(msg='Stanza %s has no backup %s (it has %s)'
                         % (stanza, label, ', '.join(b['label'] for b in info['backups']) or 'none'), **result)

    scratch = Scratch(module, ctl, stanza, name, params['scratch_port'], result)
    lock = lock_scratch(params['version'], name)
    if lock is None:
        module.fail_json(msg='Another verification is using the scratch instance %s/%s: choose another '
                         'scratch_cluster and scratch_port, or wait until it ends' % (params['version'], name), **result)
    try:
        leftover = scratch.leftover()
        scratch.check_port()
    except CannotVerify as exc:
        module.fail_json(msg=str(exc), **result)
    if module.check_mode:
        module.exit_json(**result)

    verification = dict(label=label, verified=False, checked_at=None, databases=0, tables=0, rows=0,
                        per_database=[], problems=[])
    cannot = None
    if leftover:
        cannot = scratch.drop()
        if cannot:
            module.fail_json(msg='The scratch instance %s/%s left over could not be dropped: %s' % (
                scratch.version, name, cannot), **result)
    clock = Clock(result)
    try:
        verification['problems'] = verify(scratch, label, params['timeout'], verification, clock)
    except CannotVerify as exc:
        cannot = str(exc)
    finally:
        dropped = scratch.drop()
        clock.lap('drop_seconds')
        clock.total()
    verification.update(verified=not verification['problems'] and cannot is None, checked_at=now_iso())
    result.pop('accepting_connections', None)  # the scratch instance's, set by its controller
    result['verification'] = verification
    if cannot:
        module.fail_json(msg='Backup %s of stanza %s could not be verified: %s' % (label, stanza, cannot), **result)
    if dropped:
        module.fail_json(msg='Backup %s of stanza %s was checked, but the scratch instance %s/%s could not be '
                         'dropped: %s' % (label, stanza, scratch.version, name, dropped), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
