#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: upgrade
short_description: Upgrade one PostgreSQL instance to a newer major with pg_upgrade, roll it back or clean it up
description:
  - One step of a major upgrade of an instance of the Debian multi-instance layout (O(step)).
  - V(preflight) refuses, before anything changes, unless the source instance O(version)/O(cluster) exists,
    its marker C(pgdbaas-instance) names O(instance_id), it runs as a primary without standbys,
    O(target_version) is greater and no instance O(target_version)/O(cluster) exists - except the left-over
    of an interrupted upgrade of the same id (marker O(instance_id), no upgrade record), which V(upgrade)
    drops and makes again. An instance already upgraded from O(version) (its record names it) is reported
    unchanged by every step (RV(already_upgraded)).
  - V(check) runs C(pg_upgrade --check) against the running source, with a scratch data directory made by
    the target's C(initdb) (same encoding and locales, data checksums) that carries the source's
    C(conf.d) files and C(postgresql.auto.conf), so a parameter or a preloaded library the target cannot
    take fails the check too. A failing check fails the module with pg_upgrade's reason and the content of
    the report files it wrote (e.g. C(loadable_libraries.txt)); the source is left untouched and
    running, the scratch directory removed.
  - V(upgrade) runs the check, stops the source, makes the new instance with C(pg_createcluster) (the
    source's port, encoding and locales, data checksums, the marker), carries over C(conf.d/*),
    C(pg_hba.conf), C(pg_ident.conf), C(pg_ctl.conf), C(environment) and C(postgresql.auto.conf),
    runs C(pg_upgrade --link) or C(--copy) (O(method)), moves the old instance to O(old_port) with
    C(start.conf) C(manual), points the pgBackRest stanza of the instance (if any) at the new data
    directory and runs C(pgbackrest stanza-upgrade), starts the new instance, runs
    C(vacuumdb --all --analyze-in-stages) (with C(--missing-stats-only) from PostgreSQL 18 on, whose
    pg_upgrade keeps the statistics), updates the extensions the target has newer versions of and
    writes the record C(pgdbaas-upgraded-from) in the new configuration directory. When pg_upgrade
    fails, the new instance is dropped, the old one's C(pg_control) restored (link mode) and the old
    instance started again.
  - V(rollback) (O(version) is then the NEW major) drops the new instance and gives the old one its port
    back and starts it, only when the upgrade used copy mode (with C(--link), once the new server has
    started the old instance cannot be used safely), the instance has no pgBackRest stanza (it was
    upgraded with it) and the new instance has taken no writes (its WAL insert position, or the
    checkpoint of its clean shutdown, is the one recorded at the end of the upgrade).
  - V(cleanup) (O(version) the NEW major) drops the kept old instance (data directory included) and the
    record; nothing to do when there is no record.
options:
  version:
    description: Major of the instance the step starts from (the source for V(preflight), V(check), V(upgrade); the
      new, current one for V(rollback) and V(cleanup)).
    type: str
    required: true
  cluster:
    description: Instance name.
    type: str
    required: true
  instance_id:
    description: Id the instance was made for; the markers of the instances must name it.
    type: str
    required: true
  target_version:
    description: Major to upgrade to (V(preflight), V(check), V(upgrade)).
    type: str
  step:
    description: What to do (see the description).
    type: str
    choices: [preflight, check, upgrade, rollback, cleanup]
    required: true
  method:
    description: V(link) runs C(pg_upgrade --link) (hard links, fast, no rollback once started), V(copy) C(--copy).
    type: str
    choices: [link, copy]
    default: link
  old_port:
    description:
      - Port the kept old instance is moved to. V(0) picks the first port above the instance's that no instance of
        the host configures and that is free on 127.0.0.1.
    type: int
    default: 0
  timeout:
    description: Seconds pg_upgrade (and each long command) may run.
    type: int
    default: 3600
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance.login
attributes:
  check_mode:
    description: V(preflight) and V(check) run as usual (they change nothing); the other steps only report what
      they would do.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The target's binaries must be installed (role dbaas.postgresql.install, C(tasks_from=software)).
  - C(postgresql.conf) itself is the target's C(pg_createcluster) default; the settings pgdbaas makes live in
    C(conf.d) and C(postgresql.auto.conf), which are carried over.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Upgrade instance 15/tenant1 to PostgreSQL 16
  dbaas.postgresql.upgrade:
    version: "15"
    cluster: tenant1
    instance_id: tenant1
    target_version: "16"
    step: upgrade
  register: upgraded
'''

RETURN = r'''
changed:
  description: Whether anything changed (V(preflight) and V(check) never change anything).
  returned: always
  type: bool
already_upgraded:
  description: The instance was upgraded from O(version) to O(target_version) before (its record says so).
  returned: V(preflight), V(check), V(upgrade)
  type: bool
source:
  description: The source instance (version, server_version, port, data_directory, encoding, locales, superuser).
  returned: V(preflight), V(check), V(upgrade) when not already upgraded
  type: dict
upgrade:
  description:
    - from_version and to_version (full server versions), method, checked, old_data_directory,
      new_data_directory, old_port (the kept old instance's port), extensions_updated (database, name,
      from_version, to_version of each), analyzed (vacuumdb ran).
  returned: V(check) (checked only), V(upgrade)
  type: dict
rollback:
  description: from_version, to_version (full server versions), port, data_directory of the old instance now running.
  returned: V(rollback)
  type: dict
cleanup:
  description: removed (bool), old_version, old_data_directory.
  returned: V(cleanup)
  type: dict
report_version:
  description: Major of the instance to report afterwards (the new one, or the old one after a rollback).
  returned: always
  type: str
commands:
  description: Commands run.
  returned: always
  type: list
  elements: str
'''

import datetime
import os
import pwd
import shlex
import shutil
import socket
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    BIN_ROOT,
    CONF_ROOT,
    DATA_ROOT,
    CONTROLLERS,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import (
    command_error,
    has_config,
    run_pgbackrest,
    stanza_config_path,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    CLUSTER_RE,
    Executor,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
    sql,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.upgrade import (
    MARKER_NAME,
    START_CONF_AUTO,
    START_CONF_MANUAL,
    WORK_ROOT,
    configured_ports,
    controldata_fields,
    failure_message,
    lsn_value,
    point_stanza,
    read_marker,
    read_record,
    record_path,
    set_port,
    upgrade_port,
    write_in_place,
    write_record,
)

SOURCE_FACTS = """
SELECT current_setting('server_version_num')::int AS num, current_setting('data_directory') AS data_directory,
       pg_is_in_recovery() AS in_recovery, (SELECT rolname FROM pg_roles WHERE oid = 10) AS superuser,
       pg_encoding_to_char(d.encoding) AS encoding, d.datcollate AS lc_collate, d.datctype AS lc_ctype,
       current_setting('lc_messages') AS lc_messages, current_setting('lc_monetary') AS lc_monetary,
       current_setting('lc_numeric') AS lc_numeric, current_setting('lc_time') AS lc_time,
       current_setting('data_checksums') AS data_checksums,
       (SELECT count(*) FROM pg_stat_replication) AS standbys
FROM pg_database d WHERE d.datname = 'template1'
"""
OUTDATED_EXTENSIONS = """
SELECT e.extname AS name, e.extversion AS from_version, a.default_version AS to_version
FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
WHERE a.default_version IS NOT NULL AND a.default_version <> e.extversion ORDER BY e.extname
"""
CONNECTABLE = "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
CARRIED_FILES = ('pg_hba.conf', 'pg_ident.conf', 'pg_ctl.conf', 'environment')
# Written to the new instance only once the stanza has been upgraded (its WAL goes to the stanza).
ARCHIVE_CONF = 'pgdbaas-archive.conf'


class ModuleFor:
    """The module as seen by a controller of another instance (other version/cluster options)."""

    def __init__(self, module, **params):
        self._module = module
        self.params = dict(module.params, port=None, login_unix_socket=None, controller='debian', **params)

    def __getattr__(self, name):
        return getattr(self._module, name)


def version_text(num):
    return '%d.%d' % (num // 10000, num % 10000)


def conf_dir(version, cluster):
    return os.path.join(CONF_ROOT, version, cluster)


def bindir(version):
    return os.path.join(BIN_ROOT, version, 'bin')


def exists(version, cluster):
    return os.path.isfile(os.path.join(conf_dir(version, cluster), 'postgresql.conf'))


class Upgrade:
    def __init__(self, module):
        self.module = module
        params = module.params
        self.version = params['version']
        self.cluster = params['cluster']
        self.instance_id = params['instance_id']
        self.target = params['target_version']
        self.method = params['method']
        self.timeout = params['timeout']
        self.result = dict(changed=False, commands=[], report_version=self.version)
        self.owner = pwd.getpwnam('postgres')

    # -- helpers

    def fail(self, msg, **extra):
        self.result.update(extra)
        self.module.fail_json(msg=msg, **self.result)

    def controller(self, version):
        return CONTROLLERS['debian'](ModuleFor(self.module, version=version, cluster=self.cluster))

    def run(self, argv, cwd='/', as_owner=True, timeout=None, env=None):
        """Run argv (as postgres unless as_owner is false): (rc, stdout, stderr); recorded in commands."""
        self.result['commands'].append(shlex.join(argv))
        kwargs = {}
        if as_owner and os.geteuid() == 0:
            kwargs = dict(user=self.owner.pw_uid, group=self.owner.pw_gid,
                          extra_groups=os.getgrouplist(self.owner.pw_name, self.owner.pw_gid))
        environment = dict(PATH='/usr/sbin:/usr/bin:/sbin:/bin', LANG='C.UTF-8', LC_MESSAGES='C',
                           HOME=self.owner.pw_dir if as_owner else '/root')
        environment.update(env or {})
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=cwd,
                                  env=environment, timeout=timeout or self.timeout, check=False, **kwargs)
        except (OSError, subprocess.SubprocessError) as exc:
            return 127, '', str(exc)
        return proc.returncode, proc.stdout, proc.stderr

    def chown(self, path):
        if os.geteuid() == 0:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def fresh_dir(self, path):
        """An empty directory owned by postgres (0700), its parents made as needed."""
        if os.path.lexists(path):
            shutil.rmtree(path)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        self.chown(os.path.dirname(path))
        os.mkdir(path, 0o700)
        self.chown(path)

    def remove_dir(self, path):
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)

    def copy(self, src, dest, owner=True):
        """Copy src to dest (mode kept), owned by postgres."""
        shutil.copy2(src, dest)
        if owner:
            self.chown(dest)

    def check_marker(self, version, what):
        owner = read_marker(conf_dir(version, self.cluster))
        if owner != self.instance_id:
            marker = os.path.join(conf_dir(version, self.cluster), MARKER_NAME)
            why = ('it was made for id %s' % owner) if owner else 'it has no %s marker (not made by pgdbaas)' % marker
            self.fail('Refusing to %s instance %s/%s for id %r: %s. Nothing was changed.'
                      % (what, version, self.cluster, self.instance_id, why))

    # -- preflight

    def already_upgraded(self):
        """The record of an earlier upgrade of this instance from self.version to self.target, or None."""
        target_conf = conf_dir(self.target, self.cluster)
        record = read_record(target_conf)
        if (record and str(record.get('from_major')) == self.version and exists(self.target, self.cluster)
                and read_marker(target_conf) == self.instance_id):
            return record
        return None

    def preflight(self):
        """Refusals before anything changes; returns the source's facts (the source runs)."""
        try:
            old_major, new_major = int(self.version), int(self.target or 0)
        except ValueError:
            self.fail('version and target_version must be major versions (got %r, %r)' % (self.version, self.target))
        if new_major <= old_major:
            self.fail('Refusing to upgrade instance %s/%s to PostgreSQL %s: the target major must be greater than %s. '
                      'Nothing was changed.' % (self.version, self.cluster, self.target, self.version))
        if not exists(self.version, self.cluster):
            self.fail('Refusing to upgrade instance %s/%s: it does not exist (no %s). Nothing was changed.'
                      % (self.version, self.cluster, os.path.join(conf_dir(self.version, self.cluster),
                                                                  'postgresql.conf')))
        self.check_marker(self.version, 'upgrade')
        target_conf = conf_dir(self.target, self.cluster)
        target_data = os.path.join(DATA_ROOT, self.target, self.cluster)
        self.result['leftover'] = False
        if os.path.lexists(target_conf):
            owner = read_marker(target_conf)
            if owner != self.instance_id:
                self.fail('Refusing to upgrade instance %s/%s to %s: %s already exists and %s. Nothing was changed.'
                          % (self.version, self.cluster, self.target, target_conf,
                             ('was made for id %s' % owner) if owner else 'has no %s marker' % MARKER_NAME))
            if read_record(target_conf) is not None:
                record = read_record(target_conf)
                self.fail('Refusing to upgrade instance %s/%s to %s: instance %s/%s was already upgraded from '
                          'PostgreSQL %s. Nothing was changed.'
                          % (self.version, self.cluster, self.target, self.target, self.cluster,
                             record.get('from_major')))
            self.result['leftover'] = True  # an interrupted upgrade of this id: made again
        elif os.path.lexists(target_data):
            self.fail('Refusing to upgrade instance %s/%s to %s: the data directory %s already exists without its '
                      'configuration (not made by this upgrade). Nothing was changed.'
                      % (self.version, self.cluster, self.target, target_data))
        ctl = self.controller(self.version)
        if ctl.status() != 'started':
            self.fail('Refusing to upgrade instance %s/%s: it is not running (pg_upgrade --check runs against the '
                      'running instance): start it first. Nothing was changed.' % (self.version, self.cluster))
        try:
            with connect(ctl.module, ctl.instance) as conn:
                facts = Executor(conn).row(SOURCE_FACTS)
        except psycopg.Error as exc:
            self.fail('Reading instance %s/%s failed: %s' % (self.version, self.cluster, error_text(exc)))
        if facts['in_recovery']:
            self.fail('Refusing to upgrade instance %s/%s: it is a standby (in recovery); upgrade its primary. '
                      'Nothing was changed.' % (self.version, self.cluster))
        if facts['standbys']:
            self.fail('Refusing to upgrade instance %s/%s: %d standby(s) replicate from it, and pg_upgrade would '
                      'break their replication (not supported yet). Nothing was changed.'
                      % (self.version, self.cluster, facts['standbys']))
        source = dict(version=self.version, cluster=self.cluster, server_version=version_text(facts['num']),
                      port=ctl.instance.port, data_directory=facts['data_directory'],
                      conf_dir=ctl.instance.conf_dir, socket_dir=ctl.instance.socket_dir)
        for key in ('superuser', 'encoding', 'lc_collate', 'lc_ctype', 'lc_messages', 'lc_monetary', 'lc_numeric',
                    'lc_time', 'data_checksums'):
            source[key] = facts[key]
        self.result['source'] = source
        if not os.access(os.path.join(bindir(self.target), 'pg_upgrade'), os.X_OK) and self.module.params['step'] != 'preflight':
            self.fail('PostgreSQL %s is not installed (no %s): install its binaries first. Nothing was changed.'
                      % (self.target, os.path.join(bindir(self.target), 'pg_upgrade')))
        return ctl, source

    # -- check

    def pg_upgrade_argv(self, source, new_conf, check):
        argv = [os.path.join(bindir(self.target), 'pg_upgrade'),
                '-b', bindir(self.version), '-B', bindir(self.target),
                '-d', source['conf_dir'], '-D', new_conf,
                '-p', str(source['port']), '-P', str(upgrade_port(source['port'])),
                '-U', source['superuser']]
        if check:
            argv.insert(1, '--check')
        else:
            argv.append('--link' if self.method == 'link' else '--copy')
        return argv

    def check(self, source):
        """pg_upgrade --check against the running source, with a scratch target; fails with the reason."""
        work = os.path.join(WORK_ROOT, '%s-%s-check' % (self.target, self.cluster))
        scratch = os.path.join(work, 'data')
        self.fresh_dir(work)
        try:
            argv = [os.path.join(bindir(self.target), 'initdb'), '-D', scratch, '-U', source['superuser'],
                    '-E', source['encoding'], '--lc-collate=%s' % source['lc_collate'],
                    '--lc-ctype=%s' % source['lc_ctype'], '--data-checksums', '--auth-local=trust',
                    '--auth-host=reject', '--no-instructions']
            rc, out, err = self.run(argv, cwd=work)
            if rc:
                self.fail('The upgrade check of instance %s/%s could not make a scratch PostgreSQL %s data directory '
                          '(initdb rc=%d): %s. Nothing was changed.'
                          % (self.version, self.cluster, self.target, rc, (err or out).strip()))
            self.carry_settings(source, scratch, scratch, archive=False)
            with open(os.path.join(scratch, 'postgresql.conf'), 'a', encoding='utf-8') as conf:
                conf.write("\n# dbaas.postgresql.upgrade check: the instance's settings, no WAL archiving\n"
                           "include_dir = 'conf.d'\narchive_mode = off\n")
            rc, out, err = self.run(self.pg_upgrade_argv(source, scratch, check=True), cwd=work)
            if rc:
                reason = failure_message('pg_upgrade --check of instance %s/%s (PostgreSQL %s) to PostgreSQL %s '
                                         'failed' % (self.version, self.cluster, source['server_version'],
                                                     self.target), out, err, [work], server_logs=True)
                self.remove_dir(work)
                self.fail(reason + '\nNothing was changed: instance %s/%s still runs.' % (self.version, self.cluster),
                          check=dict(passed=False, output=out))
        finally:
            self.remove_dir(work)
        return True

    def carry_settings(self, source, new_conf, new_data, archive):
        """Copy the source's conf.d/*.conf (the archive settings when archive) and postgresql.auto.conf."""
        src_confd = os.path.join(source['conf_dir'], 'conf.d')
        dest_confd = os.path.join(new_conf, 'conf.d')
        if not os.path.isdir(dest_confd):
            os.mkdir(dest_confd, 0o755)
            self.chown(dest_confd)
        if os.path.isdir(src_confd):
            for name in sorted(os.listdir(src_confd)):
                path = os.path.join(src_confd, name)
                if os.path.isfile(path) and (archive or name != ARCHIVE_CONF):
                    self.copy(path, os.path.join(dest_confd, name))
        auto = os.path.join(source['data_directory'], 'postgresql.auto.conf')
        if os.path.isfile(auto):
            self.copy(auto, os.path.join(new_data, 'postgresql.auto.conf'))

    # -- upgrade

    def pick_old_port(self, port):
        wanted = self.module.params['old_port']
        if wanted:
            if wanted == port:
                self.fail('old_port must differ from the instance port %d. Nothing was changed.' % port)
            return wanted
        used = configured_ports(CONF_ROOT)
        for candidate in range(port + 1, 65536):
            if candidate in used:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(('127.0.0.1', candidate))
            except OSError:
                continue
            finally:
                probe.close()
            return candidate
        self.fail('No free port above %d for the kept old instance. Nothing was changed.' % port)
        return None

    def drop_target(self):
        """pg_dropcluster the new instance (stopped), then what it leaves of its configuration directory."""
        if exists(self.target, self.cluster):
            self.run(['pg_dropcluster', '--stop', self.target, self.cluster], as_owner=False, timeout=300)
        self.remove_dir(conf_dir(self.target, self.cluster))
        self.remove_dir(os.path.join(DATA_ROOT, self.target, self.cluster))
        self.remove_empty(os.path.join(CONF_ROOT, self.target))

    @staticmethod
    def remove_empty(path):
        try:
            os.rmdir(path)
        except OSError:
            pass

    def upgrade(self, ctl, source):
        module = self.module
        target_conf = conf_dir(self.target, self.cluster)
        old_port = self.pick_old_port(source['port'])
        self.result['changed'] = True
        if module.check_mode:
            self.result['upgrade'] = dict(from_version=source['server_version'], to_version=None, method=self.method,
                                          checked=True, old_data_directory=source['data_directory'],
                                          new_data_directory=os.path.join(DATA_ROOT, self.target, self.cluster),
                                          old_port=old_port, extensions_updated=[], analyzed=False)
            return
        if self.result['leftover']:
            self.drop_target()
        ctl.stop(self.result, timeout=120)
        work = os.path.join(WORK_ROOT, '%s-%s' % (self.target, self.cluster))
        old_control = os.path.join(source['data_directory'], 'global', 'pg_control')

        def revert(reason):
            """Back to the source as it was: pg_control (link mode), the new instance dropped, the source started."""
            if not os.path.exists(old_control) and os.path.exists(old_control + '.old'):
                os.rename(old_control + '.old', old_control)
            self.drop_target()
            self.remove_dir(work)
            ctl.start(self.result, timeout=120)
            self.fail(reason + '\nThe new instance was removed and instance %s/%s started again.'
                      % (self.version, self.cluster))

        self.fresh_dir(work)
        for path in (os.path.join(CONF_ROOT, self.target), target_conf):
            if not os.path.isdir(path):
                os.mkdir(path, 0o755)
                self.chown(path)
        marker = os.path.join(target_conf, MARKER_NAME)
        write_in_place(marker, self.instance_id + '\n')
        os.chmod(marker, 0o644)
        argv = ['pg_createcluster', '--port=%d' % source['port'], '--encoding=%s' % source['encoding']]
        for key in ('lc_collate', 'lc_ctype', 'lc_messages', 'lc_monetary', 'lc_numeric', 'lc_time'):
            argv.append('--%s=%s' % (key.replace('_', '-'), source[key]))
        argv += [self.target, self.cluster, '--', '--data-checksums', '--auth-local=peer', '--auth-host=scram-sha-256']
        if source['superuser'] != self.owner.pw_name:
            argv.append('--username=%s' % source['superuser'])
        rc, out, err = self.run(argv, as_owner=False, timeout=300)
        if rc:
            revert('pg_createcluster of instance %s/%s failed (rc=%d): %s' % (self.target, self.cluster, rc,
                                                                              (err or out).strip()))
        new_data = os.path.join(DATA_ROOT, self.target, self.cluster)
        try:
            self.carry_settings(source, target_conf, new_data, archive=False)
            for name in CARRIED_FILES:
                path = os.path.join(source['conf_dir'], name)
                if os.path.isfile(path):
                    self.copy(path, os.path.join(target_conf, name))
        except OSError as exc:
            revert('Carrying the configuration of instance %s/%s over failed: %s' % (self.version, self.cluster, exc))
        rc, out, err = self.run(self.pg_upgrade_argv(source, target_conf, check=False), cwd=work)
        if rc:
            revert(failure_message('pg_upgrade of instance %s/%s to PostgreSQL %s failed'
                                   % (self.version, self.cluster, self.target), out, err, [work, new_data],
                                   server_logs=True))
        # pg_upgrade succeeded: from here on the old instance is kept as it is, never reverted to.
        archive_conf = os.path.join(source['conf_dir'], 'conf.d', ARCHIVE_CONF)
        if os.path.isfile(archive_conf):
            self.copy(archive_conf, os.path.join(target_conf, 'conf.d', ARCHIVE_CONF))
        set_port(os.path.join(source['conf_dir'], 'postgresql.conf'), old_port)
        write_in_place(os.path.join(source['conf_dir'], 'start.conf'), START_CONF_MANUAL)
        record = dict(instance_id=self.instance_id, from_major=self.version, from_version=source['server_version'],
                      to_major=self.target, to_version=None, method=self.method,
                      old_conf_dir=source['conf_dir'], old_data_directory=source['data_directory'],
                      old_port=old_port, port=source['port'], new_data_directory=new_data, lsn=None,
                      stanza_upgraded=False, extensions_updated=[], analyzed=False,
                      upgraded_at=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat())
        write_record(target_conf, record)
        errors = []
        new_ctl = self.controller(self.target)
        if has_config(self.cluster):
            point_stanza(stanza_config_path(self.cluster), self.cluster, new_data, source['port'])
            rc, out, err = run_pgbackrest(new_ctl, self.cluster, 'stanza-upgrade', ['--no-online'],
                                          timeout=600, result=self.result)
            if rc:
                errors.append(command_error('stanza-upgrade', rc, out, err))
            else:
                record['stanza_upgraded'] = True
        new_ctl.start(self.result, timeout=120)
        argv = [os.path.join(bindir(self.target), 'vacuumdb'), '--all', '--analyze-in-stages',
                '-h', new_ctl.instance.socket_dir, '-p', str(new_ctl.instance.port), '-U', source['superuser']]
        if int(self.target) >= 18:
            argv.append('--missing-stats-only')
        rc, out, err = self.run(argv, cwd=work, env=dict(PGHOST=new_ctl.instance.socket_dir))
        if rc:
            errors.append('vacuumdb --all --analyze-in-stages failed (rc=%d): %s' % (rc, (err or out).strip()))
        record['analyzed'] = rc == 0
        try:
            record['extensions_updated'] = self.update_extensions(new_ctl)
            with connect(new_ctl.module, new_ctl.instance) as conn:
                db = Executor(conn)
                record['to_version'] = version_text(db.row("SELECT current_setting('server_version_num')::int AS n")['n'])
                db.run('CHECKPOINT')
                record['lsn'] = db.row('SELECT pg_current_wal_insert_lsn()::text AS lsn')['lsn']
        except psycopg.Error as exc:
            errors.append('Reading or updating the new instance failed: %s' % error_text(exc))
        write_record(target_conf, record)
        self.remove_dir(work)
        self.result['report_version'] = self.target
        self.result['upgrade'] = self.report(record, checked=True)
        if errors:
            self.fail('Instance %s/%s was upgraded to PostgreSQL %s (the old instance is kept on port %d), but: %s'
                      % (self.version, self.cluster, self.target, old_port, '; '.join(errors)))

    def update_extensions(self, new_ctl):
        """ALTER EXTENSION ... UPDATE where the target has a newer default version, in every database."""
        updated = []
        with connect(new_ctl.module, new_ctl.instance) as conn:
            databases = [row['datname'] for row in Executor(conn).rows(CONNECTABLE)]
        for name in databases:
            with connect(new_ctl.module, new_ctl.instance, name) as conn:
                db = Executor(conn, queries=[])
                for ext in db.rows(OUTDATED_EXTENSIONS):
                    db.run(sql.SQL('ALTER EXTENSION {} UPDATE').format(sql.Identifier(ext['name'])))
                    self.result['commands'].extend(db.queries[-1:])
                    updated.append(dict(database=name, **ext))
        return updated

    @staticmethod
    def report(record, checked):
        return dict(from_version=record.get('from_version'), to_version=record.get('to_version'),
                    method=record.get('method'), checked=checked,
                    old_data_directory=record.get('old_data_directory'),
                    new_data_directory=record.get('new_data_directory'), old_port=record.get('old_port'),
                    extensions_updated=record.get('extensions_updated', []), analyzed=record.get('analyzed', False))

    # -- rollback and cleanup (self.version is the new major)

    def current(self, what):
        """(conf_dir, record) of the upgraded instance; fails unless it exists and is this id's."""
        if not exists(self.version, self.cluster):
            self.fail('Cannot %s instance %s/%s: it does not exist.' % (what, self.version, self.cluster))
        self.check_marker(self.version, what)
        return conf_dir(self.version, self.cluster), read_record(conf_dir(self.version, self.cluster))

    def new_lsn_unchanged(self, record, ctl):
        """(unchanged, seen): whether the new instance has taken no writes since the upgrade ended."""
        recorded = lsn_value(record.get('lsn'))
        if recorded is None:
            return False, 'no WAL position recorded (the upgrade did not complete)'
        if ctl.status() == 'started':
            with connect(ctl.module, ctl.instance) as conn:
                seen = Executor(conn).row('SELECT pg_current_wal_insert_lsn()::text AS lsn')['lsn']
            return lsn_value(seen) == recorded, 'its WAL insert position is %s' % seen
        rc, out, err = self.run([os.path.join(bindir(self.version), 'pg_controldata'), '-D', ctl.data_directory])
        fields = controldata_fields(out)
        state, checkpoint = fields.get('Database cluster state'), fields.get('Latest checkpoint location')
        return (rc == 0 and state == 'shut down' and lsn_value(checkpoint) == recorded,
                'it is stopped (%s) with its latest checkpoint at %s' % (state, checkpoint))

    def rollback(self):
        new_conf, record = self.current('roll back')
        name = '%s/%s' % (self.version, self.cluster)
        if record is None:
            self.fail('Cannot roll back instance %s: it has no upgrade record (%s), nothing to roll back to.'
                      % (name, os.path.join(new_conf, 'pgdbaas-upgraded-from')))
        old_major, old_conf = str(record['from_major']), record['old_conf_dir']
        old_name = '%s/%s' % (old_major, self.cluster)
        if record.get('method') == 'link':
            self.fail('Refusing to roll back instance %s to %s: it was upgraded with pg_upgrade --link and the new '
                      'instance has run since, so both share the data files and the old instance cannot be used '
                      'safely (PostgreSQL documentation of pg_upgrade, "Reverting to old cluster"). Nothing was '
                      'changed. Restore a backup into a new instance instead, or keep the upgraded one.'
                      % (name, old_name))
        if record.get('stanza_upgraded') or has_config(self.cluster):
            self.fail('Refusing to roll back instance %s to %s: its pgBackRest stanza %s was upgraded to PostgreSQL '
                      '%s, and pgBackRest cannot take the old instance back into it. Nothing was changed.'
                      % (name, old_name, self.cluster, self.version))
        if not exists(old_major, self.cluster) or not os.path.isfile(
                os.path.join(record['old_data_directory'], 'global', 'pg_control')):
            self.fail('Cannot roll back instance %s: the old instance %s is gone or incomplete (%s). Nothing was '
                      'changed.' % (name, old_name, record['old_data_directory']))
        self.check_marker(old_major, 'roll back to')
        new_ctl = self.controller(self.version)
        try:
            unchanged, seen = self.new_lsn_unchanged(record, new_ctl)
        except psycopg.Error as exc:
            self.fail('Reading the WAL position of instance %s failed: %s' % (name, error_text(exc)))
        if not unchanged:
            self.fail('Refusing to roll back instance %s to %s: the new instance has taken writes since the upgrade '
                      '(at the end of the upgrade its WAL insert position was %s; now %s), which the old instance '
                      'does not have. Nothing was changed.' % (name, old_name, record.get('lsn'), seen))
        self.result['changed'] = True
        self.result['report_version'] = old_major
        self.result['rollback'] = dict(from_version=record.get('to_version'), to_version=record.get('from_version'),
                                       port=record['port'], data_directory=record['old_data_directory'])
        if self.module.check_mode:
            return
        new_ctl.stop(self.result, timeout=120)
        rc, out, err = self.run(['pg_dropcluster', self.version, self.cluster], as_owner=False, timeout=300)
        if rc:
            self.fail('pg_dropcluster %s %s failed (rc=%d): %s; instance %s/%s (the old one) is still stopped.'
                      % (self.version, self.cluster, rc, (err or out).strip(), old_major, self.cluster))
        self.remove_dir(new_conf)
        self.remove_empty(os.path.join(CONF_ROOT, self.version))
        set_port(os.path.join(old_conf, 'postgresql.conf'), int(record['port']))
        write_in_place(os.path.join(old_conf, 'start.conf'), START_CONF_AUTO)
        old_ctl = self.controller(old_major)
        old_ctl.start(self.result, timeout=120)
        with connect(old_ctl.module, old_ctl.instance) as conn:
            num = Executor(conn).row("SELECT current_setting('server_version_num')::int AS n")['n']
        self.result['rollback']['to_version'] = version_text(num)

    def cleanup(self):
        new_conf, record = self.current('clean up')
        if record is None:
            self.result['cleanup'] = dict(removed=False, old_version=None, old_data_directory=None)
            return
        old_major = str(record['from_major'])
        old_data = record.get('old_data_directory') or ''
        self.result['cleanup'] = dict(removed=True, old_version=record.get('from_version'), old_data_directory=old_data)
        if exists(old_major, self.cluster) or os.path.lexists(conf_dir(old_major, self.cluster)):
            self.check_marker(old_major, 'clean up')
        self.result['changed'] = True
        if self.module.check_mode:
            return
        if exists(old_major, self.cluster):
            rc, out, err = self.run(['pg_dropcluster', '--stop', old_major, self.cluster], as_owner=False, timeout=300)
            if rc:
                self.fail('pg_dropcluster %s %s failed (rc=%d): %s' % (old_major, self.cluster, rc, (err or out).strip()))
        self.remove_dir(conf_dir(old_major, self.cluster))
        self.remove_empty(os.path.join(CONF_ROOT, old_major))
        if old_data == os.path.join(DATA_ROOT, old_major, self.cluster):  # only the layout's own path
            self.remove_dir(old_data)
        os.unlink(record_path(new_conf))


def main():
    argument_spec = dict(
        version=dict(type='str', required=True),
        cluster=dict(type='str', required=True),
        instance_id=dict(type='str', required=True),
        target_version=dict(type='str'),
        step=dict(type='str', required=True, choices=['preflight', 'check', 'upgrade', 'rollback', 'cleanup']),
        method=dict(type='str', default='link', choices=['link', 'copy']),
        old_port=dict(type='int', default=0),
        timeout=dict(type='int', default=3600),
    )
    argument_spec.update(login_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('step', 'preflight', ['target_version']),
                                        ('step', 'check', ['target_version']),
                                        ('step', 'upgrade', ['target_version'])])
    ensure_psycopg(module)
    params = module.params
    if not CLUSTER_RE.match(params['cluster']):
        module.fail_json(msg='cluster must match %s, not %r' % (CLUSTER_RE.pattern, params['cluster']))
    if not 0 <= params['old_port'] <= 65535:
        module.fail_json(msg='old_port must be 0-65535, not %d' % params['old_port'])
    job = Upgrade(module)
    step = params['step']
    if step in ('preflight', 'check', 'upgrade'):
        record = job.already_upgraded()
        if record is not None:
            job.result.update(already_upgraded=True, report_version=job.target,
                              upgrade=job.report(record, checked=True))
            module.exit_json(**job.result)
        job.result['already_upgraded'] = False
        ctl, source = job.preflight()
        if step in ('check', 'upgrade'):
            job.check(source)
            job.result['upgrade'] = dict(from_version=source['server_version'], to_version=None, method=job.method,
                                         checked=True, old_data_directory=source['data_directory'],
                                         new_data_directory=None, old_port=source['port'], extensions_updated=[],
                                         analyzed=False)
        if step == 'upgrade':
            job.upgrade(ctl, source)
    elif step == 'rollback':
        job.rollback()
    else:
        job.cleanup()
    module.exit_json(**job.result)


if __name__ == '__main__':
    main()
