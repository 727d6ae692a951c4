# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared code of the read-replica modules (replica_origin on the origin, replica on the replica).

A read replica is an instance of its own, a streaming standby of an origin instance: its data
directory comes from pg_basebackup of the origin, it has standby.signal and, in
conf.d/pgdbaas-replica.conf (no secret in it), primary_conninfo and primary_slot_name. The
replication password is in a 0600 passfile owned by the instance owner
(/etc/postgresql/<v>/<cluster>/pgdbaas-replication.pgpass), named by primary_conninfo's
passfile=. The replica's record (pgdbaas-replica, JSON) says what it replicates from.

Several origin hosts (e.g. the members of a Patroni cluster) give a multi-host primary_conninfo,
host=h1,h2 port=p1,p2 target_session_attrs=read-write: libpq connects to whichever accepts writes,
the leader.
"""

from __future__ import annotations

import os
import re

SLOT_RE = re.compile(r'^[a-z0-9_]{1,63}$')
HOST_RE = re.compile(r'^[A-Za-z0-9_.:-]{1,253}$')
REPLICA_CONF = 'pgdbaas-replica.conf'
PASSFILE = 'pgdbaas-replication.pgpass'
RECORD = 'pgdbaas-replica'


def slot_name(cluster):
    """The physical slot of a replica instance: its name with '-' as '_' (slot names allow [a-z0-9_])."""
    return cluster.replace('-', '_')[:63]


def pgpass_escape(value):
    return str(value).replace('\\', '\\\\').replace(':', '\\:')


def conninfo_quote(value):
    """A libpq keyword value, quoted."""
    return "'%s'" % str(value).replace('\\', '\\\\').replace("'", "\\'")


def conninfo(origins, user, passfile, application_name, dbname=None):
    """libpq connection string to the origin(s): one host, or several with target_session_attrs=read-write."""
    parts = [('host', ','.join(o['host'] for o in origins)),
             ('port', ','.join(str(o['port']) for o in origins)),
             ('user', user), ('passfile', passfile), ('application_name', application_name)]
    if dbname:
        parts.append(('dbname', dbname))
    if len(origins) > 1:
        parts.append(('target_session_attrs', 'read-write'))
    return ' '.join('%s=%s' % (key, conninfo_quote(value)) for key, value in parts)


def pgpass_text(origins, user, password):
    return ''.join('%s:%s:*:%s:%s\n' % (pgpass_escape(o['host']), o['port'], pgpass_escape(user),
                                        pgpass_escape(password)) for o in origins)


def write_owned(path, text, uid, gid, mode):
    """Write text to path atomically with that owner and mode; True when the content or mode changed."""
    try:
        with open(path, encoding='utf-8') as handle:
            same = handle.read() == text
        info = os.stat(path)
        if same and info.st_uid == uid and info.st_gid == gid and (info.st_mode & 0o7777) == mode:
            return False
    except OSError:
        pass
    temporary = path + '.tmp'
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.chown(temporary, uid, gid)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    return True


def remove(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def replica_conf_text(primary_conninfo, slot):
    def quote(value):
        return "'%s'" % value.replace("'", "''")
    return ('# dbaas.postgresql.replica: this instance streams from its origin (no secret here: passfile=)\n'
            'primary_conninfo = %s\nprimary_slot_name = %s\n' % (quote(primary_conninfo), quote(slot)))


# The replica's own view; lag_seconds is 0 once everything received is replayed.
REPLICA_STATUS = """
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       r.status AS receiver_status, r.sender_host, r.sender_port, r.slot_name,
       r.latest_end_time, r.last_msg_receipt_time,
       pg_catalog.pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_catalog.pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_catalog.pg_last_xact_replay_timestamp() AS replay_timestamp,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN NULL
            WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())::float8
       END AS lag_seconds,
       (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()) AS timeline
FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_stat_wal_receiver r ON true
"""

# The origin's view of one replica, by its slot.
ORIGIN_STATUS = """
SELECT s.slot_name, s.active, s.restart_lsn::text AS restart_lsn,
       pg_catalog.pg_current_wal_lsn()::text AS current_lsn,
       r.state, r.sync_state, r.client_addr::text AS client_addr, r.application_name,
       r.replay_lsn::text AS replay_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), COALESCE(r.replay_lsn, s.restart_lsn))::bigint
         AS lag_bytes,
       extract(epoch FROM r.replay_lag)::float8 AS replay_lag_seconds,
       r.reply_time
FROM pg_catalog.pg_replication_slots s
LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = %s AND s.slot_type = 'physical'
"""


def iso(value):
    return value.isoformat() if value is not None else None
