# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups and point-in-time restore of a Patroni cluster: the stanza follows the leader.

One module-scoped cluster of real processes: instance thb1 made by provision.yml, converted by
enable_ha.yml with standby thb1-m1 (PostgreSQL on 58300-58301, Patroni's REST API on 58340-58341,
etcd member thb-etcd on 58345-58346), backups set by set_backup.yml into a temporary repository.
Restores go to instance thb-restored (58302). Every test finds the leader at run time, so each
passes alone too. Processes are ended by PID, never by name.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from tests.collection.conftest import PgInstance
from tests.patroni_processes import pid_of, poll, rest_get, wipe_etcd, wipe_members

CLUSTER, STANDBY, TARGET = 'thb1', 'thb1-m1', 'thb-restored'
PORTS = {CLUSTER: 58300, STANDBY: 58301}
TARGET_PORT = 58302
REST = {CLUSTER: 58340, STANDBY: 58341}
ETCD = dict(name='thb-etcd', client=58345, peer=58346)
SECRETS = dict(pg_superuser_password='thb-su-secret', pg_replication_password='thb-repl-secret',
               pg_rewind_password='thb-rewind-secret', pg_ha_rest_password='thb-rest-secret')
HA_VARS = dict(pg_port=PORTS[CLUSTER], pg_ha_standby_ports=[PORTS[STANDBY]],
               pg_ha_rest_ports=[REST[CLUSTER], REST[STANDBY]], pg_ha_etcd_name=ETCD['name'],
               pg_ha_etcd_client_port=ETCD['client'], pg_ha_etcd_peer_port=ETCD['peer'],
               pg_ha_ttl=10, pg_ha_loop_wait=2, pg_ha_retry_timeout=4)
STANZA_FILE = Path('/etc/pgbackrest/conf.d/%s.conf' % CLUSTER)
LEADER_DSN = ('host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres password=%s dbname=postgres '
              'target_session_attrs=read-write connect_timeout=2'
              % (PORTS[CLUSTER], PORTS[STANDBY], SECRETS['pg_superuser_password']))


def forget_target():
    subprocess.run(['pg_dropcluster', '--stop', '15', TARGET], capture_output=True, check=False)
    for path in (Path('/etc/postgresql/15') / TARGET, Path('/var/lib/postgresql/15') / TARGET):
        shutil.rmtree(path, ignore_errors=True)
    Path('/var/log/postgresql/postgresql-15-%s.log' % TARGET).unlink(missing_ok=True)


def wipe():
    wipe_members(list(PORTS))
    wipe_etcd(ETCD['name'])
    forget_target()
    STANZA_FILE.unlink(missing_ok=True)
    for log in Path('/var/log/pgbackrest').glob('%s-*.log' % CLUSTER):
        log.unlink()


def leader_conn():
    return psycopg.connect(LEADER_DSN, autocommit=True)


def member_conn(name):
    return PgInstance(name, PORTS[name]).connect()


def leader():
    with leader_conn() as conn:
        port = conn.info.port
    return next(name for name, p in PORTS.items() if p == port)


def all_streaming(ha):
    status = ha.run('ha_status', pg_controller='patroni')
    members = status.report['ha']['members'] if not status.failed else []
    return len(members) == 2 and all(m['state'] in ('running', 'streaming') for m in members)


def rest_leader(name):
    """Whether the member's REST API says it leads (GET /leader answers 200)."""
    return rest_get(REST[name], '/leader')[0] == 200


def commit_batch(batch):
    """Insert batch rows in one transaction on the leader; its commit time (track_commit_timestamp)."""
    with leader_conn() as conn:
        with conn.transaction():
            conn.execute('INSERT INTO items (batch) SELECT %s FROM generate_series(1, 100)', (batch,))
        return conn.execute('SELECT DISTINCT pg_xact_commit_timestamp(xmin) FROM items WHERE batch = %s',
                            (batch,)).fetchone()[0]


def batches(conn):
    return dict(conn.execute('SELECT batch, count(*) FROM items GROUP BY batch ORDER BY batch').fetchall())


@pytest.fixture(scope='module')
def ha(playbooks):
    wipe()
    repo = tempfile.mkdtemp(prefix='thb-repo-', dir='/tmp')
    os.chmod(repo, 0o750)
    shutil.chown(repo, 'postgres', 'postgres')
    run = playbooks(PgInstance(CLUSTER, PORTS[CLUSTER]))
    try:
        provision = run('provision', pg_port=PORTS[CLUSTER])
        assert not provision.failed, provision.raw
        with member_conn(CLUSTER) as conn:
            conn.execute('CREATE TABLE items (id bigserial PRIMARY KEY, batch int NOT NULL)')
        enable = run('enable_ha', secrets=SECRETS, **HA_VARS)
        assert not enable.failed, enable.raw
        setup = run('set_backup', pg_controller='patroni', pg_backup_repo_path=repo)
        assert not setup.failed, setup.raw
        yield SimpleNamespace(run=run, repo=repo, setup=setup, restore=playbooks(PgInstance(TARGET, TARGET_PORT)))
    finally:
        wipe()
        shutil.rmtree(repo, ignore_errors=True)


def test_set_backup_archives_from_every_member(ha):
    report = ha.setup.report
    assert report['backup']['type'] == 'full'  # the first full backup, taken from the leader
    assert [b['label'] for b in report['backup_info']['backups']] == [report['backup']['label']]
    assert report['backup_info']['settings']['archive_enabled'] is True
    stanza = STANZA_FILE.read_text()
    for name, port in PORTS.items():  # the stanza names every member: pgBackRest finds the primary
        assert 'path=/var/lib/postgresql/15/%s\n' % name in stanza and '-port=%d\n' % port in stanza
        with member_conn(name) as conn:  # Patroni's dynamic configuration: on the standby too
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                         "('archive_mode', 'archive_command', 'track_commit_timestamp')"))
        assert settings['archive_mode'] == 'on' and settings['track_commit_timestamp'] == 'on'
        assert settings['archive_command'] == 'pgbackrest --stanza=%s --pg1-path="$PWD" archive-push %%p' % CLUSTER
    again = ha.run('set_backup', pg_controller='patroni', pg_backup_repo_path=ha.repo)
    assert not again.failed, again.raw
    assert not [r['_task'] for r in again.results if r.get('changed') and r['_task'].startswith(('Set the', 'Restart'))]
    assert 'backup' not in again.report  # a stanza with a backup gets no second first one


def test_backups_and_pitr_follow_the_leader_after_a_switchover(ha):
    assert poll(lambda: all_streaming(ha), 120)
    before = leader()
    other = next(name for name in PORTS if name != before)
    first = commit_batch(1)
    switch = ha.run('switchover', pg_controller='patroni', pg_ha_candidate=other)
    assert not switch.failed, switch.raw
    assert leader() == other
    second = commit_batch(2)
    with leader_conn() as conn:  # the new leader archives into the same stanza
        archived = conn.execute('SELECT archived_count FROM pg_stat_archiver').fetchone()[0]
        conn.execute('SELECT pg_switch_wal()')
        assert poll(lambda: conn.execute('SELECT archived_count FROM pg_stat_archiver').fetchone()[0] > archived, 60)
    backup = ha.run('backup', pg_controller='patroni', pg_backup_type='incr')
    assert not backup.failed, backup.raw
    assert backup.report['backup']['type'] == 'incr'
    assert backup.report['instance']['cluster'] == other  # the report is the leader's
    assert commit_batch(3) > second
    assert first < second
    forget_target()
    restore = ha.restore('restore', pg_port=TARGET_PORT, pg_restore_source=CLUSTER, pg_restore_type='time',
                         pg_restore_time=second.isoformat(), pg_restore_inclusive=True,
                         pg_restore_source_port=PORTS[other], pg_instance_id=TARGET)
    assert not restore.failed, restore.raw
    with PgInstance(TARGET, TARGET_PORT).connect() as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is False
        restored = batches(conn)
    with leader_conn() as conn:
        now = batches(conn)
    assert restored == {k: v for k, v in now.items() if k <= 2}  # exactly what was committed by the target
    assert now[3] == 100 and 3 not in restored
    assert datetime.datetime.fromisoformat(restore.report['restore']['target_time']) == second


def test_backups_follow_the_leader_after_a_failover(ha):
    assert poll(lambda: all_streaming(ha), 120)
    old = leader()
    other = next(name for name in PORTS if name != old)
    commit_batch(4)
    for path in ('/run/patroni/15-%s.pid' % old, '/var/lib/postgresql/15/%s/postmaster.pid' % old):
        pid = pid_of(path)
        assert pid, path
        os.kill(pid, signal.SIGKILL)
    assert poll(lambda: rest_leader(other), 60), 'no failover to %s' % other
    try:
        backup = ha.run('backup', pg_controller='patroni', pg_backup_type='incr')
        assert not backup.failed, backup.raw
        assert backup.report['instance']['cluster'] == other
        info = backup.report['backup_info']
        assert info['backups'][-1]['label'] == backup.report['backup']['label']
        assert info['archiver']['failed_count'] == 0 and info['archiver']['archived_count'] > 0
    finally:
        start = ha.run('start', pg_controller='patroni')  # the old leader rejoins as a standby
        assert not start.failed, start.raw
    assert poll(lambda: all_streaming(ha), 120)
    with member_conn(old) as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is True


def test_restore_in_place_brings_every_member_back_to_the_target(ha):
    assert poll(lambda: all_streaming(ha), 120)
    with leader_conn() as conn:
        kept = batches(conn)
    target = commit_batch(10)
    commit_batch(11)  # after the target: gone from every member
    restore = ha.run('restore', pg_controller='patroni', pg_restore_source=CLUSTER, pg_restore_type='time',
                     pg_restore_time=target.isoformat(), pg_restore_inclusive=True)
    assert not restore.failed, restore.raw
    assert restore.report['restore']['timeline'] >= 2
    assert poll(lambda: all_streaming(ha), 120)
    assert rest_leader(CLUSTER)  # the restored member leads; the other was cloned from it
    expected = {**kept, 10: 100}
    for name in PORTS:
        with member_conn(name) as conn:
            assert poll(lambda: batches(conn) == expected, 60), (name, batches(conn))
    commit_batch(12)  # read-write, and archiving into the stanza again
    backup = ha.run('backup', pg_controller='patroni', pg_backup_type='incr')
    assert not backup.failed, backup.raw
    again = ha.run('restore', pg_controller='patroni', pg_restore_source=CLUSTER, pg_restore_type='time',
                   pg_restore_time=target.isoformat(), pg_restore_inclusive=True)
    assert not again.failed, again.raw
    assert not [r['_task'] for r in again.results if r.get('changed')], 'a repeated restore changed something'
