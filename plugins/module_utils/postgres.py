# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared code of the dbaas.postgresql modules.

The configuration reader, the description of one instance (Instance; finding it and acting on
its server is the business of the instance controllers of module_utils/instance.py), one
connection helper and one statement executor that records the statements it runs.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hashlib
import hmac
import json
import os
import re
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

DEFAULT_PORT = 5432
DEFAULT_SOCKET_DIR = '/var/run/postgresql'
# Every session of the modules resolves names in the catalog only: the superuser postgres connects
# to databases whose schema public a tenant writes to, and a function or operator there that
# matches a call better than the catalog's would run as the superuser (CVE-2018-1058). pg_temp
# is named last so that temporary objects never come first either. Statements that create objects
# name their schema (CREATE EXTENSION ... WITH SCHEMA).
SEARCH_PATH = 'pg_catalog, pg_temp'

CLUSTER_RE = re.compile(r'^[a-z0-9][a-z0-9_-]{0,62}$')
VERSION_RE = re.compile(r'^[0-9]+(\.[0-9]+)?$')
# PostgreSQL truncates longer names (NAMEDATALEN - 1 bytes).
MAX_NAME_BYTES = 63
MASK = '********'


def read_json_record(path):
    """The JSON object a module recorded at path (write_json_record), None when absent or unreadable."""
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_record(path, record):
    """Record a JSON object at path (0644, the writer's owner) atomically: a reader sees the old or the new one."""
    temporary = path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write('\n')
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


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
# One instance, as a controller (module_utils/instance.py) located it

@dataclass
class Instance:
    version: str
    cluster: str
    conf_dir: str
    config_file: str = ''
    bindir: str = ''
    port: int = DEFAULT_PORT
    data_directory: str = ''
    socket_dir: str = DEFAULT_SOCKET_DIR
    log_file: str = ''
    settings: dict = field(default_factory=dict)

    @property
    def name(self):
        return '%s/%s' % (self.version, self.cluster)

    def facts(self):
        """Identification every module returns."""
        return dict(version=self.version, cluster=self.cluster, port=self.port,
                    data_directory=self.data_directory)


# --------------------------------------------------------------------------------------------
# Database connections and statements

def connect(module, inst, dbname='postgres'):
    """Autocommit connection to dbname of the instance over its unix socket, or fail.

    The session's search_path is SEARCH_PATH, set in the startup packet (before any statement).
    """
    params = module.params
    kwargs = dict(host=inst.socket_dir, port=inst.port, user=params['login_user'], dbname=dbname,
                  connect_timeout=params['connect_timeout'], application_name='dbaas.postgresql',
                  options='-c search_path=%s' % SEARCH_PATH.replace(' ', ''))
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
