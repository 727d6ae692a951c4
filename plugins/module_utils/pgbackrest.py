# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared code of the pgbackrest_* modules (backups with pgBackRest, issue 9).

One stanza per instance, named like the instance (pg_cluster). Its configuration is the file
``stanza_config_path(stanza)`` = /etc/pgbackrest/conf.d/<stanza>.conf, which pgBackRest reads
without --config (config-include-path), written by the role dbaas.postgresql.pgbackrest. Its
stanza section holds the stanza's own repository (repo1-type, repo1-path or the S3 options) and
retention (repo1-retention-full-type, repo1-retention-full), so every instance has its own.

pgBackRest always runs as the OS owner of the instance (postgres), never as root, through the
controller's ``run_as_owner`` (module_utils/instance.py), the same way pg_ctl runs:

    ctl = instance_controller(module)
    rc, out, err = run_pgbackrest(ctl, stanza, 'backup', ['--type=full'], result=result)
    info = backup_info(module, ctl, stanza)     # the backup_info shape of the contract

``parse_backup_info`` is the pure part (JSON of ``pgbackrest info --output=json`` plus an optional
pg_stat_archiver row and the stanza's options -> backup_info), unit-tested without an instance.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex

CONF_DIR = '/etc/pgbackrest/conf.d'
DEFAULT_REPO_PATH = '/var/lib/pgbackrest'
DEFAULT_TIMEOUT = 3600
# Seconds of silence after which `info` gives up on a read from the repository (see read_info).
INFO_IO_TIMEOUT = 10
STANZA_RE = re.compile(r'^[a-z0-9][a-z0-9_-]{0,62}$')
LABEL_RE = re.compile(r'^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$')

# pgBackRest's stanza status codes (info --output=json, status.code).
STATUS_OK = 0
STATUS_MISSING_STANZA_PATH = 1
STATUS_NO_BACKUP = 2
STATUS_MISSING_STANZA_DATA = 3

ARCHIVER_QUERY = """
SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time
FROM pg_catalog.pg_stat_archiver
"""
ARCHIVER_KEYS = ('archived_count', 'last_archived_wal', 'last_archived_time', 'failed_count',
                 'last_failed_wal', 'last_failed_time')


def stanza_argument_spec():
    """Option stanza (doc fragment dbaas.postgresql.instance.stanza)."""
    return dict(stanza=dict(type='str'))


def stanza_of(module, inst):
    """The stanza a module acts on: option stanza, else the instance's name; fails on a bad name."""
    stanza = module.params.get('stanza') or inst.cluster
    if not STANZA_RE.match(stanza):
        module.fail_json(msg='stanza must be 1-63 characters of [a-z0-9_-] starting with a letter or digit (got %r)'
                         % stanza)
    return stanza


def stanza_config_path(stanza):
    """The configuration file of stanza: /etc/pgbackrest/conf.d/<stanza>.conf."""
    return os.path.join(CONF_DIR, '%s.conf' % stanza)


# --------------------------------------------------------------------------------------------
# Timestamps

def format_timestamp(value):
    """ISO 8601 UTC text 'YYYY-MM-DDTHH:MM:SS+00:00' of an epoch (int/float) or a datetime; None stays None.

    A naive datetime is taken as UTC.
    """
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    else:
        moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------------------------
# The stanza's configuration file

def read_stanza_options(stanza, path=None):
    """Options of the [stanza] section of its configuration file (name -> value text), {} when absent.

    pgBackRest's ini format: '[section]' lines, 'name=value' lines, '#' comments; a repeated name
    is a list option (kept as a list).
    """
    path = path or stanza_config_path(stanza)
    try:
        with open(path, encoding='utf-8', errors='replace') as conf:
            lines = conf.read().splitlines()
    except OSError:
        return {}
    options, section = {}, None
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('[') and line.endswith(']'):
            section = line[1:-1].strip()
            continue
        if section != stanza or '=' not in line:
            continue
        name, value = (part.strip() for part in line.split('=', 1))
        if name in options:
            previous = options[name]
            options[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            options[name] = value
    return options


def repository_of(options):
    """{type, path} of repository 1 of the stanza's options (pgBackRest's defaults when unset)."""
    repo_type = options.get('repo1-type', 'posix')
    path = options.get('repo1-path', DEFAULT_REPO_PATH)
    return dict(type=repo_type, path=path)


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_SECONDS = {'': 1, 's': 1, 'min': 60, 'h': 3600, 'd': 86400, 'ms': 0.001}


def seconds_of(value):
    """Seconds of a PostgreSQL time setting ('3600', '1h', '5min'), None when unreadable."""
    if value is None:
        return None
    match = re.match(r'^\s*([0-9]+)\s*(ms|s|min|h|d)?\s*$', str(value))
    if not match:
        return None
    return int(int(match.group(1)) * _SECONDS[match.group(2) or ''])


def settings_of(options, instance_settings=None, stanza=None):
    """settings of backup_info: what the stanza's options and the instance's configuration have.

    archive_enabled: the instance archives its WAL with pgBackRest into this stanza and the stanza
    keeps the continuous archive (no repo1-retention-archive limit); archive_timeout: seconds of the
    instance's archive_timeout; retention_days: repo1-retention-full under time retention, else None;
    retention_full_count: repo1-retention-full under count retention, else None.
    """
    instance_settings = instance_settings or {}
    archive_mode = str(instance_settings.get('archive_mode', 'off')).lower()
    command = instance_settings.get('archive_command', '') or ''
    archiving = (archive_mode in ('on', 'always', 'true', 'yes', '1')
                 and 'pgbackrest' in command
                 and (stanza is None or '--stanza=%s ' % stanza in command + ' '))
    full_type = options.get('repo1-retention-full-type', 'count')
    full = _int_or_none(options.get('repo1-retention-full'))
    return dict(
        archive_enabled=bool(archiving and 'repo1-retention-archive' not in options),
        archive_timeout=seconds_of(instance_settings.get('archive_timeout', '0')),
        retention_days=full if full_type == 'time' else None,
        retention_full_count=full if full_type == 'count' else None,
    )


# --------------------------------------------------------------------------------------------
# Parsing `pgbackrest --stanza=X info --output=json`

def _backup_entry(raw, versions):
    info = raw.get('info') or {}
    repo = info.get('repository') or {}
    timestamp = raw.get('timestamp') or {}
    lsn = raw.get('lsn') or {}
    archive = raw.get('archive') or {}
    database = raw.get('database') or {}
    return dict(
        label=raw.get('label'),
        type=raw.get('type'),
        prior=raw.get('prior'),
        start_at=format_timestamp(timestamp.get('start')),
        stop_at=format_timestamp(timestamp.get('stop')),
        start_epoch=timestamp.get('start'),
        stop_epoch=timestamp.get('stop'),
        lsn_start=lsn.get('start'),
        lsn_stop=lsn.get('stop'),
        wal_start=archive.get('start'),
        wal_stop=archive.get('stop'),
        size_bytes=info.get('size'),
        delta_bytes=info.get('delta'),
        repo_size_bytes=repo.get('size'),
        repo_delta_bytes=repo.get('delta'),
        database_version=versions.get(database.get('id')),
        error=bool(raw.get('error', False)),
    )


def archiver_of(row):
    """archiver of backup_info from a pg_stat_archiver row (dict), times as ISO UTC; None stays None."""
    if row is None:
        return None
    archiver = {key: row.get(key) for key in ARCHIVER_KEYS}
    for key in ('last_archived_time', 'last_failed_time'):
        archiver[key] = format_timestamp(archiver[key])
    return archiver


def parse_backup_info(stanza, data, archiver=None, options=None, instance_settings=None):
    """backup_info (the contract's shape) of stanza from the parsed JSON of ``info --output=json``.

    data: the JSON list (or its text, or None when pgBackRest gave nothing); archiver: a
    pg_stat_archiver row (dict) when the instance runs, else None; options: the stanza's options
    (read_stanza_options); instance_settings: the instance's configuration (Instance.settings).
    A stanza pgBackRest does not know gives status.code 1 (missing stanza path), no backups,
    archive None and exists False.
    """
    if isinstance(data, (str, bytes)):
        data = json.loads(data) if data.strip() else []
    options = options or {}
    entry = None
    for candidate in data or []:
        if candidate.get('name') == stanza:
            entry = candidate
            break
    if entry is None:
        entry = dict(status=dict(code=STATUS_MISSING_STANZA_PATH, message='missing stanza path'))
    status = entry.get('status') or {}
    versions = {db.get('id'): str(db.get('version')) for db in entry.get('db') or []}
    backups = [_backup_entry(raw, versions) for raw in entry.get('backup') or []]
    backups.sort(key=lambda b: (b['start_epoch'] or 0, b['label'] or ''))
    archive = None
    ranges = [a for a in entry.get('archive') or [] if a.get('min') or a.get('max')]
    if ranges:
        archive = dict(min_wal=min(a['min'] for a in ranges if a.get('min')),
                       max_wal=max(a['max'] for a in ranges if a.get('max')))
    code = status.get('code', STATUS_MISSING_STANZA_PATH)
    return dict(
        stanza=stanza,
        exists=code not in (STATUS_MISSING_STANZA_PATH, STATUS_MISSING_STANZA_DATA),
        status=dict(code=code, message=status.get('message', '')),
        repository=repository_of(options),
        backups=backups,
        archive=archive,
        archiver=archiver_of(archiver),
        settings=settings_of(options, instance_settings, stanza),
    )


# --------------------------------------------------------------------------------------------
# Running pgBackRest as the instance owner

def pgbackrest_argv(module, stanza, command, options=()):
    """argv of `pgbackrest --stanza=<stanza> <options...> <command>` (the binary found on PATH)."""
    binary = module.get_bin_path('pgbackrest', required=True)
    return [binary, '--stanza=%s' % stanza] + list(options) + [command]


def run_pgbackrest(ctl, stanza, command, options=(), timeout=DEFAULT_TIMEOUT, result=None):
    """Run pgbackrest command for stanza as the owner of the controller's instance: (rc, out, err).

    ctl is an instance controller (module_utils/instance.py); its ``run_as_owner`` drops root to the
    instance owner as for pg_ctl. options are extra command-line options (e.g. ['--type=full']);
    the stanza's own options come from its configuration file. When result is given the command
    line is appended to result['commands'] (options never hold secrets: those are in the file).
    """
    argv = pgbackrest_argv(ctl.module, stanza, command, options)
    if result is not None:
        result.setdefault('commands', []).append(shlex.join(argv))
    return ctl.run_as_owner(argv, timeout=timeout)


def command_error(command, rc, out, err):
    """One message for a failed pgbackrest command: its ERROR lines, else its output."""
    text = '\n'.join(part.strip() for part in (err, out) if part and part.strip())
    errors = [line.strip() for line in text.splitlines() if 'ERROR' in line]
    return 'pgbackrest %s failed (rc=%d): %s' % (command, rc, '\n'.join(errors) or text or 'no output')


def fail_command(module, command, rc, out, err, **result):
    """Fail the module with command_error and result."""
    module.fail_json(msg=command_error(command, rc, out, err), rc=rc, **result)


def read_info(ctl, stanza, result=None):
    """(data, rc, err): the parsed JSON of `pgbackrest --stanza=X info --output=json` (a list, [] when unreadable).

    With INFO_IO_TIMEOUT: pgBackRest retries an unreachable repository (an S3 endpoint refusing
    connections) for about 4 io-timeouts, 4 minutes with its default of 60 s; a read gives up in ~40 s
    and reports it in status (code 99).
    """
    rc, out, err = run_pgbackrest(ctl, stanza, 'info', ['--output=json', '--io-timeout=%d' % INFO_IO_TIMEOUT],
                                  timeout=300, result=result)
    try:
        data = json.loads(out) if out.strip() else []
    except ValueError:
        data = []
    return data, rc, err


def read_archiver(module, ctl):
    """The pg_stat_archiver row of the running instance (dict), None when it is stopped or unreadable."""
    # Imported here: module_utils.postgres needs psycopg only for the connection.
    from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
        Executor,
        connect,
        psycopg,
    )
    if psycopg is None or ctl.status() != 'started':
        return None
    try:
        with connect(module, ctl.instance) as conn:
            return Executor(conn).row(ARCHIVER_QUERY)
    except psycopg.Error:
        return None


def has_config(stanza):
    """Whether the stanza's configuration file exists."""
    return os.path.isfile(stanza_config_path(stanza))


def backup_info(module, ctl, stanza, result=None, archiver=True):
    """backup_info of stanza read now: pgBackRest's info, pg_stat_archiver (archiver=True), the stanza file.

    Without the stanza's configuration file pgBackRest is not run (nor needed on the host): the
    stanza is reported missing (status.code 1, exists False).
    """
    if has_config(stanza):
        data, dummy, dummy = read_info(ctl, stanza, result=result)
    else:
        data = [dict(name=stanza, status=dict(code=STATUS_MISSING_STANZA_PATH,
                                              message='missing stanza configuration %s' % stanza_config_path(stanza)))]
    row = read_archiver(module, ctl) if archiver else None
    return parse_backup_info(stanza, data, archiver=row, options=read_stanza_options(stanza),
                             instance_settings=ctl.instance.settings)


def require_stanza(module, ctl, stanza, result, archiver=False):
    """backup_info of stanza; fails the module (with result) unless its configuration and repository exist."""
    if not has_config(stanza):
        module.fail_json(msg='Instance %s has no backup configuration (%s): set backups up first '
                         '(set_backup.yml, role dbaas.postgresql.pgbackrest)' % (ctl.instance.name,
                                                                                 stanza_config_path(stanza)),
                         **result)
    info = backup_info(module, ctl, stanza, result=result, archiver=archiver)
    if not info['exists']:
        module.fail_json(msg='Stanza %s does not exist in its repository (%s %s): %s (code %d)'
                         % (stanza, info['repository']['type'], info['repository']['path'],
                            info['status']['message'], info['status']['code']), backup_info=info, **result)
    return info


_EXPIRED_RE = re.compile(r'repo[0-9]+: remove expired backup (\S+)')
_ARCHIVE_RE = re.compile(r'repo[0-9]+: (\S+) remove archive, start = ([0-9A-F]+), stop = ([0-9A-F]+)')


def parse_expire_output(text):
    """(labels, archive) removed according to the INFO lines of `pgbackrest expire` (also with --dry-run).

    labels: in the order pgBackRest names them; archive: [{archive_id, start, stop}] WAL ranges removed.
    """
    labels, archive = [], []
    for line in (text or '').splitlines():
        match = _EXPIRED_RE.search(line)
        if match:
            labels.append(match.group(1))
            continue
        match = _ARCHIVE_RE.search(line)
        if match:
            archive.append(dict(archive_id=match.group(1), start=match.group(2), stop=match.group(3)))
    return labels, archive


def warnings_of(text):
    """The WARN messages of pgBackRest's console output (continuation lines joined)."""
    found, current = [], None
    for line in (text or '').splitlines():
        match = re.search(r'(?:^|\s)WARN: (.*)$', line)
        if match:
            current = [match.group(1).strip()]
            found.append(current)
        elif current is not None and line.startswith(' ') and not re.search(r'\b(INFO|DETAIL|ERROR):', line):
            current.append(line.strip())
        else:
            current = None
    return [' '.join(parts) for parts in found]


def dependents(backups, labels):
    """labels plus every backup whose chain of prior backups reaches one of them (oldest first)."""
    removed = set(labels)
    prior = {b['label']: b['prior'] for b in backups}
    for backup in backups:
        chain, label = set(), backup['label']
        while label is not None and label not in chain:
            if label in removed:
                removed.add(backup['label'])
                break
            chain.add(label)
            label = prior.get(label)
    return [b['label'] for b in backups if b['label'] in removed]


def find_backup(info, label):
    """The entry of info['backups'] labelled label, or None."""
    for backup in info.get('backups') or []:
        if backup['label'] == label:
            return backup
    return None
