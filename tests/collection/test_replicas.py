# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read replicas: create_replica.yml, replica_status.yml, promote_replica.yml, reset_replica.yml and
terminate.yml's slot clean-up, on real PostgreSQL 15 instances (names trr*, ports 58100-58149).

The origin (fixture origin) is shared by the module; every replica a test makes is terminated by it, and
the fixture drops whatever trr* instance is left. Each test passes alone. Waiting for a row to appear is a
poll with a deadline, never a sleep standing for synchronisation.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from tests.collection.conftest import PG_VERSION, PgInstance, sh

ORIGIN = 'trr-origin'
ORIGIN_PORT = 58100
PASSWORD = 'trr-Repl1cation-s3cret'
SECRETS = {'pg_replication_password': PASSWORD}


def forget(cluster):
    sh('pg_dropcluster', '--stop', PG_VERSION, cluster, check=False)
    for root in ('/etc/postgresql', '/var/lib/postgresql'):
        path = Path(root) / PG_VERSION / cluster
        if path.exists():
            sh('rm', '-rf', str(path))


def trr_clusters():
    root = Path('/etc/postgresql') / PG_VERSION
    return [p.name for p in root.glob('trr*')] if root.exists() else []


@pytest.fixture(scope='module')
def play(playbooks):
    def run(cluster, name, secrets=None, **extra):
        version = extra.pop('pg_version', PG_VERSION)
        return playbooks(SimpleNamespace(version=version, cluster=cluster))(name, secrets=secrets, **extra)
    return run


@pytest.fixture(scope='module')
def origin():
    for cluster in trr_clusters():
        forget(cluster)
    inst = PgInstance(ORIGIN, ORIGIN_PORT)
    inst.create()
    with inst.connect() as conn:
        conn.execute('CREATE TABLE items (id int PRIMARY KEY, note text)')
        conn.execute("INSERT INTO items SELECT g, 'before' FROM generate_series(1, 1000) g")
    yield inst
    for cluster in trr_clusters():
        forget(cluster)


def rows(inst, query='SELECT count(*) FROM items'):
    with inst.connect() as conn:
        return conn.execute(query).fetchone()[0]


def write(inst, row_id, note):
    with inst.connect() as conn:
        conn.execute('INSERT INTO items VALUES (%s, %s)', (row_id, note))


def wait_for(predicate, timeout=30, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except psycopg.Error:
            pass
        time.sleep(0.1)
    raise AssertionError('%s not reached within %ss' % (what, timeout))


def has_row(inst, row_id):
    return rows(inst, 'SELECT count(*) FROM items WHERE id = %d' % row_id) == 1


def slots(origin):
    with origin.connect() as conn:
        return [r[0] for r in conn.execute('SELECT slot_name FROM pg_replication_slots ORDER BY 1')]


def create(play, name, port, **extra):
    return play(name, 'create_replica', secrets=SECRETS, pg_port=port, pg_origin_cluster=ORIGIN, **extra)


def report(run):
    return run.report


def terminate(play, name):
    run = play(name, 'terminate', pg_terminate_confirm=name, pg_origin_cluster=ORIGIN)
    assert not run.failed, run.msg
    return run


@pytest.fixture
def replica(play, origin):
    """A new replica trr-r<n> (port 5810<n>) made by create_replica.yml; terminated afterwards."""
    made = []

    def make(n):
        name, port = 'trr-r%d' % n, 58100 + n
        run = create(play, name, port)
        assert not run.failed, run.msg
        made.append(name)
        return PgInstance(name, port), run
    yield make
    for name in made:
        terminate(play, name)


def test_replica_holds_the_rows_follows_writes_and_reports_streaming(play, origin, replica):
    inst, run = replica(1)
    replica_result = report(run)['replica']
    assert replica_result['action'] == 'cloned'
    assert replica_result['replica_state'] in ('streaming', 'catchup')
    assert rows(inst) == rows(origin)
    write(origin, 100001, 'after')
    wait_for(lambda: has_row(inst, 100001), what='the new row on the replica')
    with inst.connect() as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO items VALUES (-1, 'x')")
    # The password is nowhere world-readable: only in the 0600 passfile.
    passfile = inst.conf_dir / 'pgdbaas-replication.pgpass'
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in (inst.conf_dir / 'conf.d' / 'pgdbaas-replica.conf').read_text()
    assert PASSWORD not in run.raw

    wait_for(lambda: report(play(inst.cluster, 'replica_status', pg_origin_cluster=ORIGIN))['replica']
             ['replica_state'] == 'streaming', what='streaming')
    status = play(inst.cluster, 'replica_status', pg_origin_cluster=ORIGIN)
    assert not status.failed and not status.changed
    seen = report(status)['replica']
    assert seen['replica_state'] == 'streaming'
    assert 'trr_r1' in seen['replica_state_detail']
    assert isinstance(seen['lag_bytes'], int) and seen['lag_bytes'] >= 0
    assert seen['lag_seconds'] is not None and seen['synced_at']
    assert seen['origin_slot']['active'] is True

    again = create(play, inst.cluster, inst.port)
    assert not again.failed, again.msg
    assert not again.changed, again.raw
    assert report(again)['replica']['action'] == 'none'


def test_promote_accepts_writes_and_never_follows_again(play, origin, replica):
    inst, dummy = replica(2)
    run = play(inst.cluster, 'promote_replica', pg_origin_cluster=ORIGIN)
    assert not run.failed, run.msg
    assert report(run)['replica']['replica_state'] == 'promoted'
    assert 'trr_r2' not in slots(origin)
    write(inst, 200001, 'on the promoted replica')
    assert has_row(inst, 200001)
    write(origin, 200002, 'on the origin after the promotion')
    marker = 300000 + int(time.time())
    write(inst, marker, 'later on the replica')  # a write after the origin's: the replica replays nothing of it
    assert has_row(inst, marker) and not has_row(inst, 200002)
    with inst.connect() as conn:
        assert not conn.execute('SELECT pg_is_in_recovery()').fetchone()[0]
        assert conn.execute('SELECT count(*) FROM pg_stat_wal_receiver').fetchone()[0] == 0
    assert not (inst.conf_dir / 'conf.d' / 'pgdbaas-replica.conf').exists()
    again = play(inst.cluster, 'promote_replica', pg_origin_cluster=ORIGIN)
    assert not again.failed and not again.changed, again.raw


def test_reset_after_promote_and_diverge_follows_again(play, origin, replica):
    inst, dummy = replica(3)
    assert not play(inst.cluster, 'promote_replica', pg_origin_cluster=ORIGIN).failed
    write(inst, 400001, 'diverged')
    run = play(inst.cluster, 'reset_replica', secrets=SECRETS, pg_origin_cluster=ORIGIN)
    assert not run.failed, run.msg
    assert report(run)['replica']['action'] == 'resynced'
    assert not has_row(inst, 400001)
    write(origin, 400002, 'after the reset')
    wait_for(lambda: has_row(inst, 400002), what='the new row on the reset replica')
    assert 'trr_r3' in slots(origin)


def test_create_over_an_existing_instance_is_refused(play, origin):
    other = PgInstance('trr-taken', 58140)
    other.create()
    try:
        before = sorted(p.name for p in other.conf_dir.iterdir())
        run = create(play, other.cluster, other.port)
        assert run.failed and 'already exists' in run.msg
        assert sorted(p.name for p in other.conf_dir.iterdir()) == before
        assert 'trr_taken' not in slots(origin)
        assert other.running()
    finally:
        other.drop()


def test_create_refuses_another_major(play, origin):
    run = play('trr-major', 'create_replica', secrets=SECRETS, pg_port=58141, pg_origin_cluster=ORIGIN,
               pg_version='16', pg_origin_version='15')
    assert run.failed and 'runs PostgreSQL 15, not 16' in run.msg
    assert not Path('/etc/postgresql/16/trr-major').exists()


def test_terminate_drops_the_slot_on_the_origin(play, origin):
    run = create(play, 'trr-r4', 58104)
    assert not run.failed, run.msg
    assert 'trr_r4' in slots(origin)
    terminate(play, 'trr-r4')
    assert 'trr_r4' not in slots(origin)
    assert not Path('/etc/postgresql/15/trr-r4').exists()


def test_multi_host_origin_follows_the_member_that_accepts_writes(play, origin, replica):
    """pg_origin_members: a member that is down first (a failed leader), the origin second."""
    run = create(play, 'trr-r5', 58105, pg_origin_members=[{'host': '127.0.0.1', 'port': 58149},
                                                           {'host': '127.0.0.1', 'port': ORIGIN_PORT}])
    assert not run.failed, run.msg
    try:
        inst = PgInstance('trr-r5', 58105)
        conf = (inst.conf_dir / 'conf.d' / 'pgdbaas-replica.conf').read_text()
        assert "host=''127.0.0.1,127.0.0.1''" in conf and "port=''58149,58100''" in conf
        assert "target_session_attrs=''read-write''" in conf
        write(origin, 500001, 'multi-host')
        wait_for(lambda: has_row(inst, 500001), what='the new row on the multi-host replica')
    finally:
        terminate(play, 'trr-r5')
