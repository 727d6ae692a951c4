# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Instance controllers: the one way the dbaas.postgresql modules find an instance and act on its server.

A controller knows where one instance is (configuration, data directory, port, unix socket) and
acts on its server process. Modules never run pg_ctl or systemctl, nor signal a server, themselves:

    ctl = instance_controller(module)   # fails the module (state=error, exists=false) when the instance is missing
    inst = ctl.instance                 # postgres.Instance: version, cluster, port, socket_dir, data_directory, ...
    ctl.status()                        # 'started' or 'stopped'
    ctl.restart(result, timeout=60)     # start, stop, restart, reload: fail the module unless the state is reached
    ctl.pending_restart(db)             # settings written but applied only by a restart: ['shared_buffers', ...]

Restarts happen in one place: the module dbaas.postgresql.service (the playbooks and the handlers
of the install role call it). A module that changes settings reports ``pending_restart`` and leaves
the restart to the caller, who restarts once for everything that waits (RDS's "pending-reboot").

Choosing a controller
---------------------
Every module of the action group ``dbaas.postgresql.instance`` (meta/runtime.yml) has the option
``controller`` (doc fragment dbaas.postgresql.instance), default ``debian``. ``CONTROLLERS`` maps
its value to a class and ``instance_controller(module)`` builds it. The playbooks pass
``pg_controller`` (default ``debian``, a role default of dbaas.postgresql.contract) through
``module_defaults``, so an inventory chooses it per host, e.g. per member of a cluster.

debian (DebianController)
    The Debian multi-instance layout of postgresql-common: configuration in
    /etc/postgresql/<version>/<cluster>/ (postgresql.conf, its include files, conf.d/), data in its
    data_directory, binaries in /usr/lib/postgresql/<version>/bin. Under systemd
    (/run/systemd/system exists) it runs ``systemctl <action> postgresql@<version>-<cluster>``;
    otherwise pg_ctl as the owner of the instance with what pg_ctlcluster would use (wait, fast
    shutdown, the Debian log file, the instance's ``environment`` and ``pg_ctl.conf``), so the
    instance stays manageable with pg_ctlcluster and pg_lsclusters. The run state is
    ``pg_ctl status``.

How a Patroni controller slots in
---------------------------------
Under Patroni, the Patroni daemon owns the postmaster: pg_ctl or systemctl postgresql@ would fight
it, and restarts and reloads go through the REST API of the member. It is one more subclass of
InstanceController, registered as ``CONTROLLERS['patroni']`` (which adds ``patroni`` to the choices
of ``controller``), with its connection to the REST API as module options added to
``instance_argument_spec`` under one dict option (URL of the member, default
http://127.0.0.1:8008; user and password, the password ``no_log``; CA file):

- ``locate()``: the data directory, configuration directory, port and socket directory from the
  member's Patroni configuration (postgresql.data_dir, config_dir, listen; GET /config), as the
  same Instance, so ``connect()`` and every SQL path of the modules work unchanged;
- ``status()``: GET /patroni, ``state`` ``running`` -> 'started', anything else 'stopped';
- ``change('restart' | 'reload')``: POST /restart or POST /reload, then GET /patroni until the
  member runs again (bounded by ``timeout``); ``change('start' | 'stop')``: the patroni service
  itself (a stopped Patroni stops its postmaster), since the REST API has no start;
- ``pending_restart(db)``: GET /patroni ``pending_restart``, or this base implementation (Patroni
  reads the same pg_settings).

Ordering members (standbys first with ``serial: 1``, then a switchover, then the old leader) is
the playbooks' business, from the topology Patroni reports (GET /leader), not the controller's:
a controller acts on one member.
"""

from __future__ import annotations

import abc
import os
import pwd
import shlex
import subprocess

from ansible_collections.dbaas.postgresql.plugins.module_utils import patroni
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    CLUSTER_RE,
    DEFAULT_PORT,
    DEFAULT_SOCKET_DIR,
    VERSION_RE,
    Instance,
    parse_conf,
    psycopg,
)

CONF_ROOT = '/etc/postgresql'
DATA_ROOT = '/var/lib/postgresql'
LOG_ROOT = '/var/log/postgresql'
BIN_ROOT = '/usr/lib/postgresql'
SYSTEMD_RUN_DIR = '/run/systemd/system'

ACTIONS = ('start', 'stop', 'restart', 'reload')

# Settings written (configuration files, ALTER SYSTEM) that only a restart applies. pg_settings
# knows once the server has reloaded; pg_file_settings reads the files now and marks a
# postmaster-context setting whose file value differs from the running one "could not be applied".
PENDING_RESTART = """
SELECT s.name FROM pg_catalog.pg_settings s WHERE s.pending_restart
UNION
SELECT f.name FROM pg_catalog.pg_file_settings f JOIN pg_catalog.pg_settings s ON s.name = f.name
WHERE s.context = 'postmaster' AND NOT f.applied AND f.error IS NOT NULL
ORDER BY 1
"""
PENDING_RESTART_RELOADED = "SELECT name FROM pg_catalog.pg_settings WHERE pending_restart ORDER BY 1"
READS_FILE_SETTINGS = """
SELECT pg_catalog.has_table_privilege('pg_catalog.pg_file_settings', 'SELECT')
       AND pg_catalog.has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE') AS ok
"""


def instance_argument_spec():
    """Options locating one instance (doc fragment dbaas.postgresql.instance)."""
    return dict(
        version=dict(type='str', default='15'),
        cluster=dict(type='str', required=True),
        port=dict(type='int'),
        controller=dict(type='str', default='debian', choices=sorted(CONTROLLERS)),
        patroni=dict(type='dict', options=dict(
            url=dict(type='str'),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            ca_file=dict(type='path'),
            config_file=dict(type='path'),
        )),
    )


def instance_controller(module):
    """The controller named by the module's option controller, for the instance its options name."""
    return CONTROLLERS[module.params.get('controller') or 'debian'](module)


class InstanceController(abc.ABC):
    """What a module may ask about, and of, the server of one instance.

    ``instance`` is located when the controller is made; the module fails then when the instance
    does not exist. The actions take the module's ``result``: they append what they ran to
    ``result['commands']``, set ``result['accepting_connections']`` and, when the requested state is
    not reached, fail the module with that result (``state='error'``) and a message saying why.
    """

    name = None

    def __init__(self, module):
        self.module = module
        self.instance = self.locate()

    @abc.abstractmethod
    def locate(self):
        """The Instance named by the module's options; fails the module when it does not exist."""

    @abc.abstractmethod
    def status(self):
        """'started' when the server of the instance runs, else 'stopped'."""

    @abc.abstractmethod
    def change(self, action, result, timeout=60):
        """Run action (one of ACTIONS) and return the run state observed afterwards (see the class)."""

    @property
    def data_directory(self):
        return self.instance.data_directory

    @property
    def config_file(self):
        return self.instance.config_file

    def start(self, result, timeout=60):
        return self.change('start', result, timeout)

    def stop(self, result, timeout=60):
        return self.change('stop', result, timeout)

    def restart(self, result, timeout=60):
        return self.change('restart', result, timeout)

    def reload(self, result, timeout=60):
        return self.change('reload', result, timeout)

    def accepting_connections(self):
        """True when the server answers on its unix socket (libpq ping, no authentication)."""
        inst = self.instance
        conninfo = psycopg.conninfo.make_conninfo(host=inst.socket_dir, port=inst.port, connect_timeout=5)
        return psycopg.pq.PGconn.ping(conninfo.encode()) in (psycopg.pq.Ping.OK, psycopg.pq.Ping.REJECT)

    def pending_restart(self, db):
        """Names of the settings of the running server that wait for a restart (sorted).

        db is a postgres.Executor on any database of the instance. Without the right to read
        pg_file_settings (superusers only, by default) only what pg_settings knows after a reload.
        """
        query = PENDING_RESTART if db.row(READS_FILE_SETTINGS)['ok'] else PENDING_RESTART_RELOADED
        return [row['name'] for row in db.rows(query)]

    # Running programs as the instance owner (pg_ctl, pgBackRest, pg_basebackup), shared by the controllers.

    def owner(self):
        """pwd entry of the OS user owning the instance (its data directory, else its configuration)."""
        for path in (self.instance.data_directory, self.instance.config_file):
            try:
                return pwd.getpwuid(os.stat(path).st_uid)
            except (OSError, KeyError):
                continue
        return pwd.getpwnam('postgres')

    def server_env(self):
        """Environment pg_ctlcluster gives the server: the instance's 'environment' file plus LANG."""
        inst = self.instance
        env = {}
        try:
            env = parse_conf(os.path.join(inst.conf_dir, 'environment'), lowercase=False)
        except OSError:
            pass
        env.setdefault('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')
        if 'LANG' not in env and inst.settings.get('lc_messages'):
            env['LANG'] = inst.settings['lc_messages']
        env.setdefault('PG_OOM_ADJUST_FILE', '/proc/self/oom_score_adj')
        return env

    def run_as_owner(self, argv, timeout=90):
        """Run argv as the OS owner of the instance (pg_ctl refuses to run as root): (rc, stdout, stderr).

        Output is captured; a started server must log to a file (pg_ctl -l) so the pipes close
        when pg_ctl exits.
        """
        kwargs = {}
        owner = self.owner()
        if os.geteuid() == 0 and owner.pw_uid != 0:
            kwargs = dict(user=owner.pw_uid, group=owner.pw_gid,
                          extra_groups=os.getgrouplist(owner.pw_name, owner.pw_gid))
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd='/',
                                  env=self.server_env(), timeout=timeout, check=False, **kwargs)
        except (OSError, subprocess.SubprocessError) as exc:
            return 127, '', str(exc)
        return proc.returncode, proc.stdout, proc.stderr

    # The server log, shared by the controllers: where a failed action's reason is read.
    def _log_size(self):
        try:
            return os.path.getsize(self.instance.log_file)
        except OSError:
            return 0

    def _log_tail(self, offset=0, lines=20):
        """Last lines the instance logged after offset (bytes)."""
        try:
            with open(self.instance.log_file, 'rb') as log:
                size = log.seek(0, os.SEEK_END)
                start = offset if offset <= size else 0
                log.seek(max(start, size - 65536))
                text = log.read().decode('utf-8', errors='replace')
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def _fail_action(self, msg, offset, result):
        """Fail the module for an action that did not reach its state: msg, then what the log got since offset."""
        lines = self._log_tail(offset)
        if lines:
            msg += '\nLast lines of %s:\n%s' % (self.instance.log_file, '\n'.join(lines))
        result['state'] = 'error'
        self.module.fail_json(msg=msg, **result)


# --------------------------------------------------------------------------------------------
# Debian multi-instance layout (postgresql-common)

def _first_socket_dir(value):
    for entry in value.split(','):
        entry = entry.strip().strip('"')
        if entry and not entry.startswith('@'):
            return entry
    return DEFAULT_SOCKET_DIR


def _checked_name(module):
    """The options version and cluster, validated (the module fails on a bad one)."""
    version, cluster = module.params['version'], module.params['cluster']
    if not VERSION_RE.match(version):
        module.fail_json(msg='version must be a PostgreSQL major version such as 15, not %r' % version,
                         state='error')
    if not CLUSTER_RE.match(cluster):
        module.fail_json(msg='cluster must match %s, not %r' % (CLUSTER_RE.pattern, cluster),
                         state='error')
    return version, cluster


class DebianController(InstanceController):
    """The instances of postgresql-common (pg_createcluster): see the module docstring."""

    name = 'debian'

    def locate(self):
        module = self.module
        params = module.params
        version, cluster = _checked_name(module)
        conf_dir = os.path.join(CONF_ROOT, version, cluster)
        inst = Instance(version=version, cluster=cluster, conf_dir=conf_dir,
                        config_file=os.path.join(conf_dir, 'postgresql.conf'),
                        bindir=os.path.join(BIN_ROOT, version, 'bin'))
        if not os.path.isfile(inst.config_file):
            module.fail_json(msg='Instance %s does not exist (no %s)' % (inst.name, inst.config_file),
                             state='error', exists=False, version=version, cluster=cluster)

        def broken(reason):
            module.fail_json(msg='Cannot read the configuration of instance %s: %s' % (inst.name, reason),
                             state='error', exists=True, version=version, cluster=cluster)

        try:
            settings = parse_conf(inst.config_file)
        except OSError as exc:
            broken(exc)
        inst.data_directory = settings.get('data_directory') or os.path.join(DATA_ROOT, version, cluster)
        try:  # ALTER SYSTEM settings are read last by the server
            parse_conf(os.path.join(inst.data_directory, 'postgresql.auto.conf'), settings)
        except OSError:
            pass
        inst.settings = settings
        try:
            inst.port = params.get('port') or int(settings.get('port', DEFAULT_PORT))
        except ValueError:
            broken('port = %r is not a number' % settings['port'])
        inst.socket_dir = (params.get('login_unix_socket')
                           or _first_socket_dir(settings.get('unix_socket_directories', DEFAULT_SOCKET_DIR)))
        log_link = os.path.join(conf_dir, 'log')  # pg_ctlcluster's per-instance log override
        inst.log_file = (os.path.realpath(log_link) if os.path.islink(log_link)
                         else os.path.join(LOG_ROOT, 'postgresql-%s-%s.log' % (version, cluster)))
        return inst

    @property
    def systemd_unit(self):
        return 'postgresql@%s-%s' % (self.instance.version, self.instance.cluster)

    def pg_ctl_options(self):
        """Extra pg_ctl options from the instance's pg_ctl.conf, as pg_ctlcluster applies them."""
        try:
            value = parse_conf(os.path.join(self.instance.conf_dir, 'pg_ctl.conf')).get('pg_ctl_options', '')
        except OSError:
            return []
        return shlex.split(value)

    def ensure_socket_dir(self):
        """Create a missing socket directory as the Debian packaging does (tmpfiles.d)."""
        socket_dir = self.instance.socket_dir
        if os.path.isdir(socket_dir) or os.geteuid() != 0:
            return
        owner = self.owner()
        os.makedirs(socket_dir, mode=0o2775)
        os.chown(socket_dir, owner.pw_uid, owner.pw_gid)
        os.chmod(socket_dir, 0o2775)

    # -- the interface

    def status(self):
        rc, dummy, dummy = self.run_as_owner([os.path.join(self.instance.bindir, 'pg_ctl'), 'status',
                                              '-D', self.instance.data_directory], timeout=30)
        return 'started' if rc == 0 else 'stopped'

    def command(self, action, timeout=60):
        """Run action for the instance; returns (argv, rc, output)."""
        inst = self.instance
        if os.path.isdir(SYSTEMD_RUN_DIR):
            argv = [self.module.get_bin_path('systemctl', required=True), action, self.systemd_unit]
            rc, out, err = self.module.run_command(argv)
            return argv, rc, out + err
        argv = [os.path.join(inst.bindir, 'pg_ctl'), action, '-D', inst.conf_dir]
        if action != 'reload':
            argv += ['-w', '-t', str(timeout)]
        if action in ('stop', 'restart'):
            argv += ['-m', 'fast']
        if action in ('start', 'restart'):
            self.ensure_socket_dir()
            argv += ['-l', inst.log_file]
        argv += self.pg_ctl_options()
        rc, out, err = self.run_as_owner(argv, timeout=timeout + 30)
        return argv, rc, out + err

    def change(self, action, result, timeout=60):
        if action not in ACTIONS:
            raise ValueError('unknown action %r' % action)
        offset = self._log_size()
        argv, rc, output = self.command(action, timeout)
        result.setdefault('commands', []).append(shlex.join(argv))
        observed = self.status()
        result['accepting_connections'] = self.accepting_connections()
        wanted = 'stopped' if action == 'stop' else 'started'
        if rc != 0 or observed != wanted:
            self._fail_action('%s of instance %s failed (rc=%d, now %s): %s'
                              % (action, self.instance.name, rc, observed, output.strip()), offset, result)
        return observed


# --------------------------------------------------------------------------------------------
# Patroni members (role dbaas.postgresql.patroni; layout in module_utils/patroni.py)

class PatroniController(InstanceController):
    """A member of a Patroni cluster: see the module docstring, "How a Patroni controller slots in".

    The member is named by version and cluster (the member's instance name, Patroni's ``name``);
    its configuration is /etc/patroni/<version>-<cluster>.yml unless ``patroni.config_file`` names
    another. The REST API's URL and credentials come from options ``patroni.url``, ``user`` and
    ``password`` or else from that configuration (restapi.connect_address, restapi.authentication).
    """

    name = 'patroni'

    def locate(self):
        module = self.module
        params = module.params
        version, cluster = _checked_name(module)
        options = params.get('patroni') or {}
        path = options.get('config_file') or patroni.config_path(version, cluster)
        if not os.path.isfile(path):
            module.fail_json(msg='Instance %s/%s is not a Patroni member (no %s)' % (version, cluster, path),
                             state='error', exists=False, version=version, cluster=cluster)
        try:
            cfg = patroni.load_config(path)
        except (OSError, ValueError) as exc:
            module.fail_json(msg='Cannot read the Patroni configuration of %s/%s: %s' % (version, cluster, exc),
                             state='error', exists=True, version=version, cluster=cluster)
        self.patroni_config_file = path
        self.patroni_config = cfg
        pg = cfg.get('postgresql') or {}
        data_dir = str(pg.get('data_dir') or os.path.join(DATA_ROOT, version, cluster))
        conf_dir = str(pg.get('config_dir') or data_dir)
        inst = Instance(version=version, cluster=cluster, conf_dir=conf_dir,
                        config_file=os.path.join(conf_dir, 'postgresql.conf'),
                        bindir=str(pg.get('bin_dir') or os.path.join(BIN_ROOT, version, 'bin')),
                        data_directory=data_dir, log_file=patroni.log_path(version, cluster))
        settings = {}
        for conf in (inst.config_file, os.path.join(data_dir, 'postgresql.auto.conf')):
            try:
                parse_conf(conf, settings)
            except OSError:
                pass
        settings.update({str(k).lower(): str(v) for k, v in (pg.get('parameters') or {}).items()})
        inst.settings = settings
        listen_port = str(pg.get('listen', '')).rpartition(':')[2]
        try:
            inst.port = params.get('port') or int(listen_port or settings.get('port', DEFAULT_PORT))
        except ValueError:
            module.fail_json(msg='Cannot read the port of member %s from %s' % (inst.name, path),
                             state='error', exists=True, version=version, cluster=cluster)
        inst.socket_dir = (params.get('login_unix_socket')
                           or _first_socket_dir(settings.get('unix_socket_directories', DEFAULT_SOCKET_DIR)))
        user, password = patroni.rest_auth(cfg)
        self.client = patroni.PatroniClient(url=options.get('url') or patroni.rest_url(cfg),
                                            user=options.get('user') or user,
                                            password=options.get('password') or password,
                                            ca_file=options.get('ca_file'))
        return inst

    @property
    def systemd_unit(self):
        return 'patroni@%s-%s' % (self.instance.version, self.instance.cluster)

    def member_state(self):
        """GET /patroni of the member (dict), or None when its REST API does not answer."""
        try:
            body = self.client.patroni()
        except patroni.PatroniError:
            return None
        return body if isinstance(body, dict) else None

    def status(self):
        """'started' while the member's Patroni runs (its REST API answers, or its daemon lives), else 'stopped'.

        A member still starting (base backup, recovery, rewind) counts as started, so that a stop
        stops it; the actions wait for Patroni's state ``running`` themselves.
        """
        if self.member_state() is not None or self._daemon_alive(strict=True):
            return 'started'
        return 'stopped'

    def running(self):
        state = self.member_state()
        return bool(state) and state.get('state') == 'running'

    def pending_restart(self, db):
        state = self.member_state()
        if state and state.get('pending_restart'):
            return sorted(set(super().pending_restart(db)) or {'(patroni pending_restart)'})
        return super().pending_restart(db)

    def _daemon(self, action):
        """Start or stop the member's Patroni daemon: (argv, rc, output)."""
        inst = self.instance
        if os.path.isdir(SYSTEMD_RUN_DIR):
            argv = [self.module.get_bin_path('systemctl', required=True), action, self.systemd_unit]
        else:
            if action == 'start':
                patroni.prepare_daemon_files(inst.version, inst.cluster, self.patroni_config)
            argv = patroni.daemon_argv(action, inst.version, inst.cluster, self.patroni_config,
                                       self.patroni_config_file)
        rc, out, err = self.module.run_command(argv, environ_update={'LANG': 'C.UTF-8'})
        return argv, rc, out + err

    def _postmaster_running(self):
        try:
            with open(os.path.join(self.instance.data_directory, 'postmaster.pid')) as handle:
                pid = int(handle.readline())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def change(self, action, result, timeout=60):
        if action not in ACTIONS:
            raise ValueError('unknown action %r' % action)
        inst = self.instance
        offset = self._log_size()
        rc, output = 0, ''
        client = self.client
        try:
            if action in ('start', 'stop'):
                argv, rc, output = self._daemon(action)
                result.setdefault('commands', []).append(shlex.join(argv))
            else:
                result.setdefault('commands', []).append('POST %s/%s' % (client.url, action))
                answer = client.post('/' + action, {}, timeout=timeout + 5)
                output = answer if isinstance(answer, str) else ''
        except patroni.PatroniError as exc:
            rc, output = 1, str(exc)
        wanted = 'stopped' if action == 'stop' else 'started'
        if rc == 0:
            if wanted == 'started':
                patroni.wait_for(lambda: self.running() or (action == 'start' and not self._daemon_alive()), timeout)
            else:
                patroni.wait_for(lambda: self.member_state() is None and not self._postmaster_running(), timeout)
        observed = 'started' if self.running() else self.status() if wanted == 'stopped' else 'stopped'
        if wanted == 'stopped' and self._postmaster_running():
            observed = 'started'
        result['accepting_connections'] = self.accepting_connections()
        if rc != 0 or observed != wanted:
            state = self.member_state()
            self._fail_action('%s of Patroni member %s failed (rc=%d, now %s%s): %s' % (
                action, inst.name, rc, observed,
                ', Patroni state %r' % state.get('state') if state else ', Patroni does not answer',
                output.strip()), offset, result)
        return observed

    def _daemon_alive(self, strict=False):
        if os.path.isdir(SYSTEMD_RUN_DIR):
            return not strict
        return patroni.daemon_pid(self.instance.version, self.instance.cluster) is not None


CONTROLLERS = {DebianController.name: DebianController, PatroniController.name: PatroniController}
