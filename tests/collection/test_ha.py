# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""High availability with Patroni and etcd: the playbooks on one shared cluster of real processes.

One module-scoped cluster (instance tha1 made by provision.yml, holding rows, converted by
enable_ha.yml with standby tha1-m1 and synchronous mode; etcd member tha-etcd): PostgreSQL on
58000-58001, Patroni's REST API on 58040-58041, etcd on 58070-58071 (loopback). Every test finds
the leader at run time, so each passes alone too. Processes are ended by PID (pid files,
postmaster.pid), never by name; teardown removes every member, the etcd member and its data.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from tests.collection.conftest import PgInstance
from tests.patroni_processes import Writer, member_paths, pid_of, poll, rest_get, wipe_etcd, wipe_members

CLUSTER = 'tha1'
STANDBY = 'tha1-m1'
PORTS = {CLUSTER: 58000, STANDBY: 58001}
REST = {CLUSTER: 58040, STANDBY: 58041}
ETCD = dict(name='tha-etcd', client=58070, peer=58071)
TTL, LOOP_WAIT = 10, 2
SECRETS = dict(pg_superuser_password='tha-su-secret', pg_replication_password='tha-repl-secret',
               pg_rewind_password='tha-rewind-secret', pg_ha_rest_password='tha-rest-secret')
HA_VARS = dict(pg_port=PORTS[CLUSTER], pg_ha_standby_ports=[PORTS[STANDBY]],
               pg_ha_rest_ports=[REST[CLUSTER], REST[STANDBY]], pg_ha_etcd_name=ETCD['name'],
               pg_ha_etcd_client_port=ETCD['client'], pg_ha_etcd_peer_port=ETCD['peer'],
               pg_ha_synchronous_mode=True, pg_ha_ttl=TTL, pg_ha_loop_wait=LOOP_WAIT, pg_ha_retry_timeout=4)
ROWS = 2000
WRITER_DSN = ('host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres password=%s dbname=postgres '
              'target_session_attrs=read-write connect_timeout=2'
              % (PORTS[CLUSTER], PORTS[STANDBY], SECRETS['pg_superuser_password']))


def rest(member, path):
    """(status, body) of GET path on the member's REST API; (None, None) when it does not answer."""
    return rest_get(REST[member], path)


def cluster_view():
    for member in REST:
        status, body = rest(member, '/cluster')
        if status == 200:
            return body
    return None


def leader():
    view = cluster_view()
    for member in (view or {}).get('members', []):
        if member['role'] in ('leader', 'master'):
            return member['name']
    return None


def member_running(name, role=None):
    view = cluster_view() or {}
    for member in view.get('members', []):
        if member['name'] == name and member['state'] in ('running', 'streaming'):
            return role is None or member['role'] in role
    return False


def wipe():
    """End what this file may have left (by PID) and remove every member and the etcd member."""
    wipe_members(list(PORTS))
    wipe_etcd(ETCD['name'])


def leader_conn(dbname='postgres'):
    return psycopg.connect(WRITER_DSN, autocommit=True, dbname=dbname)


def lost(writer):
    with leader_conn() as conn:
        present = {row[0] for row in conn.execute('SELECT id FROM %s' % writer.table)}
    return sorted(set(writer.acked) - present)


@pytest.fixture(scope='module')
def ha(playbooks):
    wipe()
    inst = PgInstance(CLUSTER, PORTS[CLUSTER])
    run = playbooks(inst)
    try:
        provision = run('provision', pg_port=PORTS[CLUSTER])
        assert not provision.failed, provision.raw
        with inst.connect() as conn:
            conn.execute('CREATE TABLE rows_before (id int PRIMARY KEY, v text)')
            conn.execute("INSERT INTO rows_before SELECT g, md5(g::text) FROM generate_series(1, %d) g" % ROWS)
        started = time.monotonic()
        enable = run('enable_ha', secrets=SECRETS, **HA_VARS)
        enable.seconds = time.monotonic() - started
        print('\nenable_ha: %.1f s' % enable.seconds)
        assert not enable.failed, enable.raw
        yield dict(run=run, inst=inst, enable=enable)
    finally:
        wipe()


def test_enable_ha_keeps_every_row_on_the_standby(ha):
    report = ha['enable'].report
    assert report['ha']['leader'] == CLUSTER
    members = {m['name']: m for m in report['ha']['members']}
    assert sorted(members) == [CLUSTER, STANDBY]
    assert members[STANDBY]['role'] in ('replica', 'sync_standby')
    assert report['ha']['synchronous_mode'] is True
    assert report['instance']['state'] == 'started'
    standby = PgInstance(STANDBY, PORTS[STANDBY])
    assert poll(lambda: member_running(STANDBY, ('sync_standby',)), 30)
    with standby.connect() as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is True
        assert conn.execute('SELECT count(*), sum(id) FROM rows_before').fetchone() == (ROWS, ROWS * (ROWS + 1) // 2)
    # Patroni took the data directory over: same system identifier on both, Debian start left to Patroni.
    assert Path('/etc/postgresql/15/%s/start.conf' % CLUSTER).read_text().strip() == 'manual'
    assert Path('/etc/postgresql/15/%s/postgresql.base.conf' % CLUSTER).exists()
    assert oct(Path('/etc/patroni/15-%s.yml' % CLUSTER).stat().st_mode & 0o777) == '0o600'
    assert SECRETS['pg_replication_password'] not in ha['enable'].raw


def test_ha_status_and_the_existing_modules_on_a_member(ha, run_module):
    status = ha['run']('ha_status', pg_controller='patroni')
    assert not status.failed, status.raw
    assert status.changed == 0
    assert status.report['ha']['leader'] == leader()
    info = run_module('info', dict(version='15', cluster=STANDBY, controller='patroni'))
    assert info['state'] == 'started' and info['port'] == PORTS[STANDBY]
    assert info['in_recovery'] is True


def test_restart_through_patroni_keeps_the_leader(ha):
    before = leader()
    pids = {n: pid_of('/var/lib/postgresql/15/%s/postmaster.pid' % n) for n in PORTS}
    run = ha['run']('restart', pg_controller='patroni')
    assert not run.failed, run.raw
    done = [r for r in run.results if r['_task'].startswith('Bring the members')][-1]
    order = [item['item'] for item in done['results']]
    assert order[-1] == before and sorted(order) == sorted(PORTS)  # the leader last
    assert leader() == before
    for name, pid in pids.items():
        assert pid_of('/var/lib/postgresql/15/%s/postmaster.pid' % name) not in (None, pid)


def test_switchover_under_writes_loses_nothing(ha):
    with leader_conn() as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS w_switch (id int PRIMARY KEY)')
    assert poll(lambda: all(member_running(n) for n in PORTS) and leader(), 60)
    before = leader()
    # Synchronous mode: Patroni switches over only to the synchronous standby (a restart may have just ended).
    assert poll(lambda: member_running([n for n in PORTS if n != before][0], ('sync_standby',)), 60)
    writer = Writer(WRITER_DSN, 'w_switch')
    writer.start()
    try:
        assert poll(lambda: len(writer.acked) > 20, 30)
        started = time.monotonic()
        run = ha['run']('switchover', pg_controller='patroni')
        assert not run.failed, run.raw
        assert poll(lambda: writer.times and writer.times[-1] > time.monotonic() - 0.5 and leader() != before, 30)
        acked_after = len(writer.acked)
        assert poll(lambda: len(writer.acked) > acked_after + 20, 30)
    finally:
        writer.stop()
    report = run.report['switchover']
    assert report['previous_leader'] == before and report['leader'] != before and report['changed'] is True
    gap = writer.gap(started)
    print('\nswitchover: write gap %.2f s, %d acknowledged writes, %d errors, Patroni %.2f s'
          % (gap, len(writer.acked), writer.errors, report['seconds']))
    assert lost(writer) == []
    assert leader() == report['leader']
    again = ha['run']('switchover', pg_controller='patroni', pg_ha_candidate=report['leader'])
    assert not again.failed and again.report['switchover']['changed'] is False


def test_kill_leader_fails_over_and_it_rejoins(ha):
    assert poll(lambda: all(member_running(n) for n in PORTS) and leader(), 120)
    with leader_conn() as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS w_fail (id int PRIMARY KEY)')
    assert poll(lambda: member_running([n for n in PORTS if n != leader()][0], ('sync_standby',)), 60)
    old = leader()
    other = [n for n in PORTS if n != old][0]
    patroni_pid = pid_of('/run/patroni/15-%s.pid' % old)
    postmaster_pid = pid_of('/var/lib/postgresql/15/%s/postmaster.pid' % old)
    assert patroni_pid and postmaster_pid
    writer = Writer(WRITER_DSN, 'w_fail')
    writer.start()
    assert poll(lambda: len(writer.acked) > 20, 30)
    killed = time.monotonic()
    os.kill(patroni_pid, signal.SIGKILL)
    os.kill(postmaster_pid, signal.SIGKILL)
    budget = TTL + LOOP_WAIT + 10
    assert poll(lambda: rest(other, '/leader')[0] == 200, budget), 'no leader %d s after the kill' % budget
    leads = time.monotonic() - killed
    acked = len(writer.acked)
    assert poll(lambda: len(writer.acked) > acked, 30)
    first_write = next(t for t in writer.times if t > killed)
    writer.stop()
    print('\nfailover: %s leads %.2f s after kill -9, first write %.2f s after it'
          % (other, leads, first_write - killed))
    assert lost(writer) == []
    status = ha['run']('ha_status', pg_controller='patroni')
    assert status.report['ha']['leader'] == other
    assert {m['name']: m['state'] for m in status.report['ha']['members']}.get(old) in (None, 'stopped')
    # The old leader comes back through start.yml and follows the new one.
    start = ha['run']('start', pg_controller='patroni')
    assert not start.failed, start.raw
    assert poll(lambda: member_running(old, ('replica', 'sync_standby')), 120)
    with PgInstance(old, PORTS[old]).connect() as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is True
    leader_tli = rest(other, '/patroni')[1]['timeline']

    def follows_new_timeline():
        with PgInstance(old, PORTS[old]).connect() as conn:
            row = conn.execute('SELECT received_tli FROM pg_stat_wal_receiver').fetchone()
        return row is not None and row[0] == leader_tli

    assert poll(follows_new_timeline, 60)
    log = Path('/var/log/postgresql/patroni-15-%s.log' % old).read_text(errors='replace')
    print('old leader %s rejoined on timeline %d%s' % (old, leader_tli, ' (pg_rewind ran)' if 'pg_rewind exit code=0' in log else ''))


def test_a_member_that_is_down_answers_clearly(ha, run_module):
    assert poll(lambda: all(member_running(n) for n in PORTS) and leader(), 120)
    standby = [n for n in PORTS if n != leader()][0]
    stopped = run_module('service', dict(version='15', cluster=standby, controller='patroni', state='stopped'))
    assert stopped['changed'] is True and stopped['state'] == 'stopped'
    assert pid_of('/run/patroni/15-%s.pid' % standby) is None
    try:
        reinit = ha['run']('reinit_member', pg_controller='patroni', pg_ha_member=standby)
        assert reinit.failed
        assert 'is down' in reinit.msg and standby in reinit.msg
        switch = ha['run']('switchover', pg_controller='patroni', pg_ha_candidate=standby)
        assert switch.failed and 'cannot take over: it is down' in switch.msg
        own_leader = ha['run']('reinit_member', pg_controller='patroni', pg_ha_member=leader())
        assert own_leader.failed and 'never reinitialized' in own_leader.msg
    finally:
        started = run_module('service', dict(version='15', cluster=standby, controller='patroni', state='started'))
    assert started['state'] == 'started'


def test_reinit_member_clones_the_standby_again(ha):
    assert poll(lambda: all(member_running(n) for n in PORTS) and leader(), 120)
    standby = [n for n in PORTS if n != leader()][0]
    run = ha['run']('reinit_member', pg_controller='patroni', pg_ha_member=standby)
    assert not run.failed, run.raw
    assert run.report['reinit']['member']['name'] == standby
    with PgInstance(standby, PORTS[standby]).connect() as conn:
        assert conn.execute('SELECT count(*) FROM rows_before').fetchone()[0] == ROWS


def test_terminate_removes_the_whole_cluster(ha):
    run = ha['run']('terminate', pg_controller='patroni', pg_terminate_confirm=CLUSTER)
    assert not run.failed, run.raw
    for name in PORTS:
        assert pid_of('/run/patroni/15-%s.pid' % name) is None
        for path in member_paths(name):
            assert not path.exists(), path
    prefix = ('/pgdbaas/%s/' % CLUSTER).encode()
    body = json.dumps({'key': base64.b64encode(prefix).decode(), 'count_only': True,
                       'range_end': base64.b64encode(prefix[:-1] + b'0').decode()})
    req = urllib.request.Request('http://127.0.0.1:%d/v3/kv/range' % ETCD['client'], data=body.encode(),
                                 method='POST')
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert int(json.loads(resp.read()).get('count', 0)) == 0  # no key under /pgdbaas/tha1/
    assert run.report['instance']['exists'] is False
