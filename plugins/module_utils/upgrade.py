# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared code of the module dbaas.postgresql.upgrade (PostgreSQL major upgrades with pg_upgrade).

The pure parts, unit-tested without an instance: the upgrade record, pg_upgrade's reason for a
failure (its output and the report files it writes), settings files edits (port, start.conf,
the pgBackRest stanza's pg1-path/pg1-port), LSN comparison.

The record of an upgrade is the JSON file RECORD_NAME in the NEW instance's configuration directory
(/etc/postgresql/<new>/<cluster>/pgdbaas-upgraded-from). It names the kept old instance (its major,
configuration and data directories, the port it was moved to), the method and the WAL insert
position of the new instance when the upgrade ended: rollback (only while the new instance has
taken no writes), clean-up and the terminate role read it.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import read_json_record, write_json_record

RECORD_NAME = 'pgdbaas-upgraded-from'
MARKER_NAME = 'pgdbaas-instance'
WORK_ROOT = '/var/lib/postgresql/pgdbaas-upgrade'
# pg_upgrade's own default port of the servers it starts (unix socket in its work directory only).
UPGRADE_PORT = 50432
START_CONF_MANUAL = """# This cluster was upgraded to a newer major version (dbaas.postgresql.upgrade). The old
# cluster has been preserved for a rollback or until its clean-up, but is not started
# automatically.

manual
"""
START_CONF_AUTO = """# Automatic startup configuration (restored by dbaas.postgresql.upgrade rollback).
auto
"""
# What pg_upgrade's output says before the reason of a failure.
# A check line ends with "fatal"; other failures start with one of these words.
_FATAL_RE = re.compile(r'\bfatal\s*$', re.I)
_OK_RE = re.compile(r'\bok\s*$')
_LSN_RE = re.compile(r'^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$')
# Report files pg_upgrade writes and names in its output (loadable_libraries.txt, tables_using_*.txt, ...).
MAX_REPORT_CHARS = 4000


def record_path(conf_dir):
    return os.path.join(conf_dir, RECORD_NAME)


def read_record(conf_dir):
    """The upgrade record of the instance whose configuration directory is conf_dir, or None."""
    return read_json_record(record_path(conf_dir))


def write_record(conf_dir, record):
    """Write the record (root 0644), atomically."""
    write_json_record(record_path(conf_dir), record)


def read_marker(conf_dir):
    """The instance id the marker of conf_dir names, '' when there is none."""
    try:
        with open(os.path.join(conf_dir, MARKER_NAME), encoding='utf-8') as handle:
            return handle.read().strip()
    except OSError:
        return ''


def lsn_value(text):
    """An LSN 'X/Y' as an int, None when it is not one."""
    match = _LSN_RE.match((text or '').strip())
    if not match:
        return None
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def controldata_fields(text):
    """pg_controldata output -> {field: value}."""
    fields = {}
    for line in text.splitlines():
        if ':' in line:
            name, value = line.split(':', 1)
            fields[name.strip()] = value.strip()
    return fields


# --------------------------------------------------------------------------------------------
# pg_upgrade's reason

def report_files(*roots):
    """{path: text} of the report files (*.txt) pg_upgrade wrote under roots, sorted by path."""
    found = {}
    for root in roots:
        if not root or not os.path.isdir(root):
            continue
        for path in sorted(glob.glob(os.path.join(glob.escape(root), '**', '*.txt'), recursive=True)):
            try:
                with open(path, encoding='utf-8', errors='replace') as handle:
                    found[path] = handle.read()[:MAX_REPORT_CHARS].strip()
            except OSError:
                continue
    return found


def log_tails(roots, names=('pg_upgrade_utility.log', 'pg_upgrade_dump_*.log', 'pg_upgrade_server.log'), lines=12):
    """{path: last lines} of pg_upgrade's logs under roots (a failed restore, a server that did not start)."""
    found = {}
    for root in roots:
        if not root or not os.path.isdir(root):
            continue
        for name in names:
            for path in sorted(glob.glob(os.path.join(glob.escape(root), '**', name), recursive=True)):
                try:
                    with open(path, encoding='utf-8', errors='replace') as handle:
                        found[path] = '\n'.join(handle.read().splitlines()[-lines:])
                except OSError:
                    continue
    return found


def output_reason(stdout, stderr=''):
    """The part of pg_upgrade's output that says why it failed.

    pg_upgrade prints one line per check or step ("Checking for presence of required libraries
    fatal", "Checking database user is the install user   ok"), then a paragraph explaining the
    failure, often naming a report file, then "Failure, exiting". The reason is everything from the
    first check that says fatal on; else what follows the last step that said ok (the step that
    failed and its explanation), at most 25 lines.
    """
    lines = [line.rstrip() for line in (stdout or '').splitlines() if line.strip()]
    lines += [line.rstrip() for line in (stderr or '').splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if _FATAL_RE.search(line):
            return '\n'.join(lines[index:])
    last_ok = max((index for index, line in enumerate(lines) if _OK_RE.search(line)), default=-1)
    return '\n'.join((lines[last_ok + 1:] or lines)[-25:])


def failure_message(what, stdout, stderr, roots, server_logs=False):
    """what + pg_upgrade's reason + the content of the report files it wrote under roots."""
    parts = ['%s: %s' % (what, output_reason(stdout, stderr) or 'no output')]
    for path, text in report_files(*roots).items():
        parts.append('%s:\n%s' % (os.path.basename(path), text))
    if server_logs:
        for path, text in log_tails(roots).items():
            if text:
                parts.append('last lines of %s:\n%s' % (os.path.basename(path), text))
    return '\n'.join(parts)


# --------------------------------------------------------------------------------------------
# Configuration files

_PORT_RE = re.compile(r'^\s*port\s*=?\s*')


def set_port(path, port):
    """Set `port = <port>` in a postgresql.conf, in place (owner and mode kept). True when changed."""
    with open(path, encoding='utf-8', errors='surrogateescape') as handle:
        lines = handle.read().splitlines(keepends=True)
    wanted = 'port = %d\t\t\t\t# (change requires restart)\n' % port
    done, changed = False, False
    for index, line in enumerate(lines):
        if _PORT_RE.match(line) and not line.lstrip().startswith('#'):
            if not done:
                if line.split('#')[0].split('=')[-1].strip() != str(port):
                    lines[index] = wanted
                    changed = True
                done = True
    if not done:
        lines.append(wanted)
        changed = True
    if changed:
        with open(path, 'w', encoding='utf-8', errors='surrogateescape') as handle:
            handle.write(''.join(lines))
    return changed


def write_in_place(path, text):
    """Replace the content of path (owner and mode kept), or create it (0644)."""
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text)


def point_stanza(path, stanza, data_directory, port):
    """Set pg1-path and pg1-port of [stanza] in a pgBackRest configuration file. True when changed."""
    with open(path, encoding='utf-8') as handle:
        lines = handle.read().splitlines(keepends=True)
    section, seen, changed = None, set(), False
    wanted = {'pg1-path': data_directory, 'pg1-port': str(port)}
    insert_at = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            section = stripped[1:-1].strip()
            if section == stanza:
                insert_at = index + 1
            continue
        if section != stanza or '=' not in stripped or stripped.startswith('#'):
            continue
        name, value = (part.strip() for part in stripped.split('=', 1))
        if name in wanted:
            seen.add(name)
            if value != wanted[name]:
                lines[index] = '%s=%s\n' % (name, wanted[name])
                changed = True
    missing = [name for name in sorted(wanted) if name not in seen]
    if missing:
        added = ['%s=%s\n' % (name, wanted[name]) for name in missing]
        if insert_at is None:
            lines += ['[%s]\n' % stanza] + added
        else:
            lines[insert_at:insert_at] = added
        changed = True
    if changed:
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(''.join(lines))
    return changed


def configured_ports(conf_root='/etc/postgresql'):
    """Ports the instances of the host configure ({port}), read from each postgresql.conf."""
    # Imported here: module_utils.postgres needs psycopg (absent from the unit tests' imports too).
    from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import parse_conf
    ports = set()
    for conf in glob.glob(os.path.join(conf_root, '*', '*', 'postgresql.conf')):
        try:
            ports.add(int(parse_conf(conf).get('port', 5432)))
        except (OSError, ValueError):
            continue
    return ports


def upgrade_port(old_port):
    """The port of the servers pg_upgrade starts (socket in its work directory, no TCP): never old_port."""
    return UPGRADE_PORT if old_port != UPGRADE_PORT else UPGRADE_PORT + 1
