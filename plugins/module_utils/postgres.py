# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared code of the dbaas.postgresql modules.

One instance locator (Debian multi-instance layout), one way to run pg_ctl as the
instance owner, one connection helper and one statement executor that records the
statements it runs.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hashlib
import hmac
import os
import pwd
import re
import shlex
import subprocess
import traceback
from dataclasses import dataclass, field

from ansible.module_utils.basic import missing_required_lib

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - depends on the target host
    psycopg = None
    sql = None
    dict_row = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

CONF_ROOT = '/etc/postgresql'
LOG_ROOT = '/var/log/postgresql'
BIN_ROOT = '/usr/lib/postgresql'
DEFAULT_PORT = 5432
DEFAULT_SOCKET_DIR = '/var/run/postgresql'
SYSTEMD_RUN_DIR = '/run/systemd/system'

CLUSTER_RE = re.compile(r'^[a-z0-9][a-z0-9_-]{0,62}$')
VERSION_RE = re.compile(r'^[0-9]+(\.[0-9]+)?$')
# PostgreSQL truncates longer names (NAMEDATALEN - 1 bytes).
MAX_NAME_BYTES = 63
MASK = '********'


def instance_argument_spec():
    """Options locating one instance (doc fragment dbaas.postgresql.instance)."""
    return dict(
        version=dict(type='str', default='15'),
        cluster=dict(type='str', required=True),
        port=dict(type='int'),
    )


def login_argument_spec():
    """Options of the database connection (doc fragment dbaas.postgresql.instance.login)."""
    return dict(
        login_user=dict(type='str', default='postgres'),
        login_password=dict(type='str', no_log=True),
        login_unix_socket=dict(type='str'),
        connect_timeout=dict(type='int', default=10),
    )


def ensure_psycopg(module):
    if psycopg is None:
        module.fail_json(msg=missing_required_lib('psycopg'), exception=PSYCOPG_IMPORT_ERROR)


def check_object_name(module, option, value):
    """Fail unless value can be a PostgreSQL role or database name, kept exactly."""
    if value is None:
        return
    if not value or '\x00' in value or len(value.encode('utf-8')) > MAX_NAME_BYTES:
        module.fail_json(msg='%s must be 1 to %d bytes long and must not contain NUL characters'
                         % (option, MAX_NAME_BYTES))


# --------------------------------------------------------------------------------------------
# Configuration files

_SETTING_RE = re.compile(r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.$]*)\s*=?\s*
                             (?P<value>'(?:[^'\\\n]|\\.|'')*'|[^\s'\#]+)?\s*(?:\#.*)?$""", re.X)
_ESCAPES = {'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}
_MAX_INCLUDE_DEPTH = 10


def _unquote(value):
    if not value.startswith("'"):
        return value
    return re.sub(r"''|\\(.)", lambda m: "'" if m.group(0) == "''" else _ESCAPES.get(m.group(1), m.group(1)),
                  value[1:-1])


def parse_conf(path, settings=None, lowercase=True, _depth=0):
    """Read a postgresql.conf-style file into settings (name -> value, last value wins).

    include, include_if_exists and include_dir are followed where they appear, as the
    server does, so Debian's trailing include_dir = 'conf.d' overrides postgresql.conf.
    A missing file raises OSError unless reached through include_if_exists.
    """
    settings = {} if settings is None else settings
    if _depth > _MAX_INCLUDE_DEPTH:
        return settings
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding='utf-8', errors='replace') as conf:
        lines = conf.read().splitlines()
    for line in lines:
        match = _SETTING_RE.match(line)
        if not match or match.group('value') is None:
            continue
        name = match.group('name').lower() if lowercase else match.group('name')
        value = _unquote(match.group('value'))
        if name in ('include', 'include_if_exists', 'include_dir'):
            target = os.path.join(base, value)
            if name == 'include_dir':
                pattern = os.path.join(glob.escape(target), '*.conf')
                for included in sorted(glob.glob(pattern)):
                    parse_conf(included, settings, lowercase, _depth + 1)
            elif name == 'include' or os.path.isfile(target):
                parse_conf(target, settings, lowercase, _depth + 1)
            continue
        settings[name] = value
    return settings


# --------------------------------------------------------------------------------------------
# Instance locator

@dataclass
class Instance:
    version: str
    cluster: str
    conf_dir: str
    port: int = DEFAULT_PORT
    data_directory: str = ''
    socket_dir: str = DEFAULT_SOCKET_DIR
    log_file: str = ''
    settings: dict = field(default_factory=dict)

    @property
    def name(self):
        return '%s/%s' % (self.version, self.cluster)

    @property
    def bindir(self):
        return os.path.join(BIN_ROOT, self.version, 'bin')

    @property
    def systemd_unit(self):
        return 'postgresql@%s-%s' % (self.version, self.cluster)

    def facts(self):
        """Identification every module returns."""
        return dict(version=self.version, cluster=self.cluster, port=self.port,
                    data_directory=self.data_directory)


def _first_socket_dir(value):
    for entry in value.split(','):
        entry = entry.strip().strip('"')
        if entry and not entry.startswith('@'):
            return entry
    return DEFAULT_SOCKET_DIR


def locate_instance(module):
    """Find the instance named by the module's version/cluster/port (and login_unix_socket).

    Fails the module (state=error, exists=false) when the instance does not exist.
    """
    params = module.params
    version, cluster = params['version'], params['cluster']
    if not VERSION_RE.match(version):
        module.fail_json(msg='version must be a PostgreSQL major version such as 15, not %r' % version,
                         state='error')
    if not CLUSTER_RE.match(cluster):
        module.fail_json(msg='cluster must match %s, not %r' % (CLUSTER_RE.pattern, cluster),
                         state='error')
    inst = Instance(version=version, cluster=cluster, conf_dir=os.path.join(CONF_ROOT, version, cluster))
    main_conf = os.path.join(inst.conf_dir, 'postgresql.conf')
    if not os.path.isfile(main_conf):
        module.fail_json(msg='Instance %s does not exist (no %s)' % (inst.name, main_conf),
                         state='error', exists=False, version=version, cluster=cluster)

    def broken(reason):
        module.fail_json(msg='Cannot read the configuration of instance %s: %s' % (inst.name, reason),
                         state='error', exists=True, version=version, cluster=cluster)

    try:
        settings = parse_conf(main_conf)
    except OSError as exc:
        broken(exc)
    inst.data_directory = settings.get('data_directory') or os.path.join('/var/lib/postgresql', version, cluster)
    auto_conf = os.path.join(inst.data_directory, 'postgresql.auto.conf')
    try:
        parse_conf(auto_conf, settings)  # ALTER SYSTEM settings are read last by the server
    except OSError:
        pass
    inst.settings = settings

    try:
        inst.port = params.get('port') or int(settings.get('port', DEFAULT_PORT))
    except ValueError:
        broken('port = %r is not a number' % settings['port'])
    inst.socket_dir = (params.get('login_unix_socket')
                       or _first_socket_dir(settings.get('unix_socket_directories', DEFAULT_SOCKET_DIR)))
    log_link = os.path.join(inst.conf_dir, 'log')  # pg_ctlcluster's per-instance log override
    inst.log_file = (os.path.realpath(log_link) if os.path.islink(log_link)
                     else os.path.join(LOG_ROOT, 'postgresql-%s-%s.log' % (version, cluster)))
    return inst


# --------------------------------------------------------------------------------------------
# Running server programs as the instance owner

def instance_owner(inst):
    """pwd entry of the OS user owning the instance (its data directory, else its configuration)."""
    for path in (inst.data_directory, os.path.join(inst.conf_dir, 'postgresql.conf')):
        try:
            return pwd.getpwuid(os.stat(path).st_uid)
        except (OSError, KeyError):
            continue
    return pwd.getpwnam('postgres')


def _server_env(inst):
    """Environment pg_ctlcluster gives the server: the instance's 'environment' file plus LANG."""
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


def run_as_owner(inst, argv, timeout=90):
    """Run argv as the OS owner of the instance (pg_ctl refuses to run as root).

    Returns (rc, stdout, stderr). Output is captured; callers that start a server must
    redirect its output to a log file (pg_ctl -l) so the pipes close when pg_ctl exits.
    """
    kwargs = {}
    owner = instance_owner(inst)
    if os.geteuid() == 0 and owner.pw_uid != 0:
        kwargs = dict(user=owner.pw_uid, group=owner.pw_gid,
                      extra_groups=os.getgrouplist(owner.pw_name, owner.pw_gid))
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd='/',
                              env=_server_env(inst), timeout=timeout, check=False, **kwargs)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, '', str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def pg_ctl_options(inst):
    """Extra pg_ctl options from the instance's pg_ctl.conf, as pg_ctlcluster applies them."""
    try:
        value = parse_conf(os.path.join(inst.conf_dir, 'pg_ctl.conf')).get('pg_ctl_options', '')
    except OSError:
        return []
    return shlex.split(value)


def instance_state(inst):
    """'started' when the postmaster of the instance runs, else 'stopped' (pg_ctl status)."""
    rc, dummy, dummy = run_as_owner(inst, [os.path.join(inst.bindir, 'pg_ctl'), 'status',
                                           '-D', inst.data_directory], timeout=30)
    return 'started' if rc == 0 else 'stopped'


def accepting_connections(inst):
    """True when the server answers on its unix socket (libpq ping, no authentication)."""
    conninfo = psycopg.conninfo.make_conninfo(host=inst.socket_dir, port=inst.port, connect_timeout=5)
    return psycopg.pq.PGconn.ping(conninfo.encode()) in (psycopg.pq.Ping.OK, psycopg.pq.Ping.REJECT)


def log_size(inst):
    try:
        return os.path.getsize(inst.log_file)
    except OSError:
        return 0


def log_tail(inst, offset=0, lines=20):
    """Last lines written to the instance's log after offset (bytes)."""
    try:
        with open(inst.log_file, 'rb') as log:
            size = log.seek(0, os.SEEK_END)
            start = offset if offset <= size else 0
            log.seek(max(start, size - 65536))
            text = log.read().decode('utf-8', errors='replace')
    except OSError:
        return []
    return text.splitlines()[-lines:]


def ensure_socket_dir(inst):
    """Create a missing socket directory as the Debian packaging does (tmpfiles.d)."""
    if os.path.isdir(inst.socket_dir) or os.geteuid() != 0:
        return
    owner = instance_owner(inst)
    os.makedirs(inst.socket_dir, mode=0o2775)
    os.chown(inst.socket_dir, owner.pw_uid, owner.pw_gid)
    os.chmod(inst.socket_dir, 0o2775)


def service_command(module, inst, action, timeout=60):
    """Run start|stop|restart|reload for the instance; returns (argv, rc, output).

    Under systemd: systemctl on the postgresql@<version>-<cluster> unit. Otherwise pg_ctl as the
    instance owner, with the options pg_ctlcluster would use (wait, fast shutdown, Debian log file,
    the instance's environment and pg_ctl.conf).
    """
    if os.path.isdir(SYSTEMD_RUN_DIR):
        argv = [module.get_bin_path('systemctl', required=True), action, inst.systemd_unit]
        rc, out, err = module.run_command(argv)
        return argv, rc, out + err
    argv = [os.path.join(inst.bindir, 'pg_ctl'), action, '-D', inst.conf_dir]
    if action != 'reload':
        argv += ['-w', '-t', str(timeout)]
    if action in ('stop', 'restart'):
        argv += ['-m', 'fast']
    if action in ('start', 'restart'):
        ensure_socket_dir(inst)
        argv += ['-l', inst.log_file]
    argv += pg_ctl_options(inst)
    rc, out, err = run_as_owner(inst, argv, timeout=timeout + 30)
    return argv, rc, out + err


def change_run_state(module, inst, action, result, timeout=60):
    """Run action (start|stop|restart|reload) and check the run state reached.

    Appends the command to result['commands'] and sets result['accepting_connections'].
    Returns the observed state; on failure, fails the module with result (state=error) and a
    message holding the last lines the instance logged meanwhile.
    """
    offset = log_size(inst)
    argv, rc, output = service_command(module, inst, action, timeout)
    result.setdefault('commands', []).append(shlex.join(argv))
    observed = instance_state(inst)
    result['accepting_connections'] = accepting_connections(inst)
    wanted = 'stopped' if action == 'stop' else 'started'
    if rc != 0 or observed != wanted:
        msg = '%s of instance %s failed (rc=%d, now %s): %s' % (action, inst.name, rc, observed, output.strip())
        lines = log_tail(inst, offset)
        if lines:
            msg += '\nLast lines of %s:\n%s' % (inst.log_file, '\n'.join(lines))
        result['state'] = 'error'
        module.fail_json(msg=msg, **result)
    return observed


# --------------------------------------------------------------------------------------------
# Database connections and statements

def connect(module, inst, dbname='postgres'):
    """Autocommit connection to dbname of the instance over its unix socket, or fail."""
    params = module.params
    kwargs = dict(host=inst.socket_dir, port=inst.port, user=params['login_user'], dbname=dbname,
                  connect_timeout=params['connect_timeout'], application_name='dbaas.postgresql')
    if params.get('login_password'):
        kwargs['password'] = params['login_password']
    try:
        return psycopg.connect(autocommit=True, **kwargs)
    except psycopg.Error as exc:
        module.fail_json(msg='Unable to connect to database %r of instance %s as %r: %s'
                         % (dbname, inst.name, params['login_user'], str(exc).strip()),
                         **inst.facts())


class Executor:
    """Runs statements on one connection and records the ones that change something.

    Identifiers are composed with sql.Identifier. Utility statements (CREATE ROLE, CREATE
    DATABASE, ...) cannot take server-side parameters, so their values are composed with
    sql.Literal and they run without parameters; other statements bind their values as
    parameters (never both: psycopg would read a '%' inside an identifier as a placeholder).
    Each statement is recorded as text, before binding, before it runs (in ``queries``, which
    executors on the connections to several databases may share); ``shown`` replaces
    the recorded text of statements that carry a secret. In check mode statements are
    recorded and not run. Reads (rows, row) are never recorded.
    """

    def __init__(self, conn, check_mode=False, queries=None):
        self.conn = conn
        self.check_mode = check_mode
        self.queries = [] if queries is None else queries  # may be shared by several executors

    def run(self, statement, params=None, shown=None):
        if isinstance(statement, str):
            statement = sql.SQL(statement)
        self.queries.append((statement if shown is None else shown).as_string(self.conn))
        if not self.check_mode:
            self.conn.execute(statement, params)

    def rows(self, query, params=None):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def row(self, query, params=None):
        found = self.rows(query, params)
        return found[0] if found else None


def error_text(exc):
    """One-line message of a psycopg error."""
    return ' '.join(str(exc).split())


def scram_secret(conn, role, password):
    """SCRAM-SHA-256 secret of password for role, computed by libpq on this host.

    Sending the secret instead of the password keeps the clear text out of the server,
    its logs and pg_stat_activity (what psql's \\password does).
    """
    return conn.pgconn.encrypt_password(password.encode('utf-8'), role.encode('utf-8'),
                                        b'scram-sha-256').decode('ascii')


_SCRAM_RE = re.compile(r'^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$')


def scram_secret_matches(secret, password):
    """Whether a stored SCRAM-SHA-256 secret (pg_authid.rolpassword) was made from password.

    Only decided for ASCII passwords, which SASLprep leaves unchanged; others return False.
    """
    match = _SCRAM_RE.match(secret or '')
    if not match or not password.isascii():
        return False
    try:
        salt = base64.b64decode(match.group(2), validate=True)
        stored_key = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        return False
    salted = hashlib.pbkdf2_hmac('sha256', password.encode('ascii'), salt, int(match.group(1)))
    client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def stored_secret(db, role):
    """pg_authid.rolpassword of role, or None when the login user may not read it."""
    try:
        row = db.row("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    except psycopg.errors.InsufficientPrivilege:
        return None
    return row['rolpassword'] if row else None


def alter_password(ident, password):
    """ALTER ROLE ... PASSWORD, composed for set_password."""
    return sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(ident, password)


def set_password(db, statement, role, password):
    """Run statement(identifier, password literal) with the SCRAM secret of password, recorded masked.

    statement composes e.g. CREATE ROLE {} ... PASSWORD {}; in check mode the mask is sent nowhere.
    """
    ident = sql.Identifier(role)
    secret = MASK if db.check_mode else scram_secret(db.conn, role, password)
    db.run(statement(ident, sql.Literal(secret)), shown=statement(ident, sql.Literal(MASK)))


def check_password(module, password):
    """Fail unless password can be set (not empty, no NUL character)."""
    if not password or '\x00' in password:
        module.fail_json(msg='password must not be empty nor contain NUL characters')


def terminate_role_sessions(db, role):
    """End the sessions of role (other than ours), waiting up to 5 s for each; returns how many."""
    count = db.row("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                   (role,))['n']
    if count:
        db.run("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
               "WHERE usename = %s AND pid <> pg_backend_pid()", (role,))
    return count
