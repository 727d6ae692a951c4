# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""restore.yml and verify_backup.yml on real instances, as a user sees them.

A source instance (provision.yml, then set_backup.yml into a repository of this test module) gets
rows in batches, one transaction each, whose exact commit times are read back with
pg_xact_commit_timestamp(xmin) (track_commit_timestamp=on). Restores into a target instance must
hold exactly the batches committed at or before the target (a batch committed exactly at the target
is in with inclusive, out with exclusive); a restore by backup label exactly those of the backup;
latest all of them. Instances trs* use ports 57150-57199, scratch instances of verification
57200-57249; everything made is dropped at the end, also on failure.

Each test passes alone and in any order. The source (fixture source) is shared; a test that commits a
batch on it records it in source.commits, and what a restore to the end must hold is every batch
recorded. The target instance is shared too: every test that checks what a restore put in it restores
with pg_restore_force (so that it restores whatever the target held), the test of a repeated request
makes the restore it repeats, and the tests that need the target only running get it from the fixture
target. The backups a test takes on the source are removed at its end.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from tests.collection.conftest import PG_BIN, PG_VERSION, SOCKET_DIR, PgInstance, sh

SOURCE, SOURCE_PORT = 'trssrc', 57150
TARGET, TARGET_PORT = 'trsdst', 57151
TARGET_ID = 'restore-target-1'
SCRATCH = 'verify-' + SOURCE
SCRATCH_PORT = 57200
ROWS_PER_BATCH = 25
STANZA_FILE = Path('/etc/pgbackrest/conf.d') / (SOURCE + '.conf')
RECOVERY_NAMES = ('restore_command', 'recovery_target')
TIMINGS = {}


def forget(cluster):
    """Drop an instance whatever made it (pg_dropcluster leaves files it does not know)."""
    sh('pg_dropcluster', '--stop', PG_VERSION, cluster, check=False)
    shutil.rmtree(Path('/etc/postgresql') / PG_VERSION / cluster, ignore_errors=True)
    shutil.rmtree(Path('/var/lib/postgresql') / PG_VERSION / cluster, ignore_errors=True)
    Path('/var/log/postgresql/postgresql-%s-%s.log' % (PG_VERSION, cluster)).unlink(missing_ok=True)


def clusters():
    """Instance names pg_lsclusters lists."""
    return [line.split()[1] for line in sh('pg_lsclusters', '--no-header').stdout.splitlines() if line.strip()]


def as_postgres(*argv):
    return sh('runuser', '-u', 'postgres', '--', *argv, check=False)


def batches(inst):
    """{batch: rows} of table items of database app of the instance."""
    with inst.connect('app') as conn:
        return dict(conn.execute('SELECT batch, count(*) FROM items GROUP BY batch ORDER BY batch').fetchall())


def expected(*numbers):
    return {n: ROWS_PER_BATCH for n in numbers}


def user_table_counts(inst):
    """(databases, tables, rows) over the databases that are not templates: what verification counts."""
    tables = rows = 0
    with inst.connect() as conn:
        names = [r[0] for r in conn.execute('SELECT datname FROM pg_database WHERE NOT datistemplate '
                                            'AND datallowconn').fetchall()]
    for name in names:
        with inst.connect(name) as conn:
            found = conn.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                                 "AND c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog', "
                                 "'information_schema') AND n.nspname !~ '^pg_toast'").fetchall()
            for (table,) in found:
                tables += 1
                rows += conn.execute('SELECT count(*) FROM %s' % table).fetchone()[0]
    return len(names), tables, rows


def auto_conf_settings(inst):
    text = (inst.data_dir / 'postgresql.auto.conf').read_text()
    return [line.split('=')[0].strip() for line in text.splitlines() if '=' in line and not line.startswith('#')]


@pytest.fixture(scope='module')
def repo():
    """A temporary pgBackRest repository owned by postgres."""
    path = tempfile.mkdtemp(prefix='trs-repo-', dir='/tmp')
    os.chmod(path, 0o750)
    shutil.chown(path, 'postgres', 'postgres')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def play(playbooks):
    """play(cluster, name, **extra_vars): run playbooks/<name>.yml for instance 15/<cluster>, timed."""
    def run(cluster, name, **extra):
        started = time.monotonic()
        result = playbooks(SimpleNamespace(version=PG_VERSION, cluster=cluster))(name, **extra)
        result.seconds = time.monotonic() - started
        return result
    return run


@pytest.fixture(scope='module')
def source(play, repo):
    """The source instance with batches 1-2 in its first full backup and batches 3-5 after it."""
    for name in (SOURCE, TARGET, SCRATCH):
        forget(name)
    STANZA_FILE.unlink(missing_ok=True)
    inst = PgInstance(SOURCE, SOURCE_PORT)
    state = SimpleNamespace(inst=inst, commits={}, repo=repo)

    def commit_batch(number):
        with inst.connect('app') as conn:
            with conn.transaction():
                conn.execute('INSERT INTO items (batch, note) SELECT %s, md5(g::text) '
                             'FROM generate_series(1, %s) g', (number, ROWS_PER_BATCH))
            state.commits[number] = conn.execute('SELECT DISTINCT pg_xact_commit_timestamp(xmin) FROM items '
                                                 'WHERE batch = %s', (number,)).fetchall()
        assert len(state.commits[number]) == 1  # one transaction
        state.commits[number] = state.commits[number][0][0]

    state.commit_batch = commit_batch
    try:
        run = play(SOURCE, 'provision', pg_port=SOURCE_PORT)
        assert not run.failed, run.msg
        with inst.connect() as conn:
            conn.execute('CREATE DATABASE app')
        with inst.connect('app') as conn:
            conn.execute('CREATE TABLE items (id bigserial PRIMARY KEY, batch int NOT NULL, note text)')
        # set_backup.yml turns track_commit_timestamp on with archiving (a restart): batches after it.
        run = play(SOURCE, 'set_backup', pg_backup_repo_path=repo, pg_backup_initial_full=False)
        assert not run.failed, run.msg
        commit_batch(1)
        commit_batch(2)
        state.at_backup = user_table_counts(inst)
        run = play(SOURCE, 'backup', pg_backup_type='full')
        assert not run.failed, run.msg
        state.first_backup = run.report['backup']['label']
        for number in (3, 4, 5):
            commit_batch(number)
        yield state
    finally:
        for name in (SOURCE, TARGET, SCRATCH):
            forget(name)
        STANZA_FILE.unlink(missing_ok=True)
        for log in glob.glob('/var/log/pgbackrest/%s-*.log' % SOURCE):
            os.unlink(log)
        print('\ntimings (s): playbook, module phases')
        for name, (seconds, phases) in TIMINGS.items():
            print('  %s: %.1f %s' % (name, seconds, phases))


def remove_backup(label):
    """pgbackrest expire --set=<label> on the source's stanza: the repository as before the test."""
    removed = as_postgres('pgbackrest', '--stanza=%s' % SOURCE, '--set=%s' % label, 'expire')
    assert removed.returncode == 0, removed.stdout + removed.stderr


def all_batches(source):
    """What a restore to the end of the source's WAL holds: every batch committed so far."""
    return expected(*source.commits)


def record(timing, run, task):
    """Keep how long the playbook and the module's phases took (printed at the end of the module)."""
    found = [r for r in run.results if r['_task'] == task]
    TIMINGS[timing] = (round(run.seconds, 1), found[-1].get('timings') if found else None)


def restore(play, source, timing=None, **extra):
    extra.setdefault('pg_instance_id', TARGET_ID)
    run = play(TARGET, 'restore', pg_port=TARGET_PORT, pg_restore_source=SOURCE, **extra)
    if timing:
        record(timing, run, 'Restore the backup into the instance')
    return run


@pytest.fixture
def target(play, source):
    """The target instance, running, made for TARGET_ID: restored from the first backup when it is missing or
    when a failed restore left it stopped."""
    inst = PgInstance(TARGET, TARGET_PORT)
    if TARGET not in clusters() or not inst.running():
        run = restore(play, source, pg_restore_type='backup', pg_restore_backup_label=source.first_backup,
                      pg_restore_force=True)
        assert not run.failed, run.msg
    assert inst.running()
    return inst


def check_ordinary(inst):
    """Read-write, no recovery settings, and it restarts."""
    assert inst.running()
    assert not [n for n in auto_conf_settings(inst) if n.startswith(RECOVERY_NAMES)], auto_conf_settings(inst)
    assert not (inst.data_dir / 'recovery.signal').exists() and not (inst.data_dir / 'standby.signal').exists()
    with inst.connect('app') as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is False
        conn.execute('CREATE TABLE IF NOT EXISTS written_after_restore (id int)')
        pending = conn.execute('SELECT array_agg(name) FROM pg_settings WHERE pending_restart').fetchone()[0]
        assert pending is None
    pid = inst.postmaster_pid()
    sh('pg_ctlcluster', PG_VERSION, inst.cluster, 'restart')
    assert inst.running() and inst.postmaster_pid() != pid
    with inst.connect('app') as conn:
        assert conn.execute("SELECT to_regclass('written_after_restore') IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize('case', ['exclusive', 'inclusive', 'between'])
def test_restore_to_a_time(play, source, case):
    commits = source.commits
    target, inclusive, holds = {
        'exclusive': (commits[4], False, expected(1, 2, 3)),   # batch 4 committed exactly at the target: out
        'inclusive': (commits[4], True, expected(1, 2, 3, 4)),  # ... and in
        'between': (commits[4] + (commits[5] - commits[4]) / 2, False, expected(1, 2, 3, 4)),
    }[case]
    creates = TARGET not in clusters()
    run = restore(play, source, timing='restore to a time (%s%s)' % (case, ', target made' if creates else ''),
                  pg_restore_type='time', pg_restore_time=target.isoformat(), pg_restore_inclusive=inclusive,
                  pg_restore_source_port=SOURCE_PORT, pg_restore_force=True)
    assert not run.failed, run.msg
    inst = PgInstance(TARGET, TARGET_PORT)
    assert batches(inst) == holds
    report = run.report['restore']
    assert report['type'] == 'time' and report['inclusive'] is inclusive and report['source_stanza'] == SOURCE
    assert datetime.datetime.fromisoformat(report['target_time']) == target
    assert report['backup_label'] == source.first_backup
    assert report['promoted_at'] and report['timeline'] >= 2
    assert ('before commit' if case == 'exclusive' else 'stopping') in report['recovery_stop']
    assert run.report['instance']['state'] == 'started' and run.report['instance']['in_recovery'] is False
    assert (inst.conf_dir / 'pgdbaas-instance').read_text() == TARGET_ID + '\n'
    check_ordinary(inst)


def test_repeating_a_restore_changes_nothing(play, source):
    between = source.commits[4] + (source.commits[5] - source.commits[4]) / 2
    request = dict(pg_restore_type='time', pg_restore_time=between.isoformat(), pg_restore_inclusive=False,
                   pg_restore_source_port=SOURCE_PORT)
    first = restore(play, source, **request)  # nothing to do when the target holds this restore already
    assert not first.failed, first.msg
    inst = PgInstance(TARGET, TARGET_PORT)
    assert batches(inst) == expected(1, 2, 3, 4)
    with inst.connect('app') as conn:
        conn.execute('INSERT INTO items (batch) VALUES (99)')  # written after the restore: must survive
    pid = inst.postmaster_pid()
    run = restore(play, source, timing='repeated restore (unchanged)', **request)
    assert not run.failed, run.msg
    assert run.changed == 0
    assert inst.postmaster_pid() == pid
    assert batches(inst) == {**expected(1, 2, 3, 4), 99: 1}
    assert run.report['restore']['target_time'] == between.isoformat()


def test_restore_by_backup_label(play, source):
    run = restore(play, source, timing='restore by backup label', pg_restore_type='backup',
                  pg_restore_backup_label=source.first_backup, pg_restore_force=True)
    assert not run.failed, run.msg
    inst = PgInstance(TARGET, TARGET_PORT)
    assert batches(inst) == expected(1, 2)
    assert run.report['restore']['backup_label'] == source.first_backup
    assert run.report['restore']['target_time'] is None
    check_ordinary(inst)


def test_restore_latest_after_check_of_the_running_source(play, source):
    source.commit_batch(6)  # in the current WAL segment of the source, archived by pgbackrest check only
    run = restore(play, source, timing='restore latest (with check)', pg_restore_type='latest',
                  pg_restore_source_port=SOURCE_PORT, pg_restore_force=True)
    assert not run.failed, run.msg
    assert run.report['restore']['type'] == 'latest'
    inst = PgInstance(TARGET, TARGET_PORT)
    assert batches(inst) == all_batches(source)
    check_ordinary(inst)


def test_check_mode_touches_nothing(run_module, source, target):
    inst = target
    pid = inst.postmaster_pid()
    held = batches(inst)
    # A restore no other test makes, so the target never holds it already (it would hold batches 1-3).
    moment = source.commits[3] + (source.commits[4] - source.commits[3]) / 2
    result = run_module('pgbackrest_restore', dict(inst.args, instance_id=TARGET_ID, source_stanza=SOURCE,
                                                  type='time', target_time=moment.isoformat()), check=True)
    assert result['changed'] is True and not result.get('failed'), result
    assert result['restore']['promoted_at'] is None
    assert inst.postmaster_pid() == pid and batches(inst) == held


def test_restore_refuses_an_instance_made_for_another_id(play, source, target):
    inst = target
    pid = inst.postmaster_pid()
    held = batches(inst)
    conf = {p: p.read_bytes() for p in inst.conf_dir.rglob('*') if p.is_file()}
    run = restore(play, source, pg_instance_id='another-id', pg_restore_type='backup',
                  pg_restore_backup_label=source.first_backup)
    assert run.failed and run.changed == 0
    assert run.msg == ("Refusing to restore into instance 15/%s for id 'another-id': it was made for id %s. "
                       'Nothing was changed.' % (TARGET, TARGET_ID)), run.msg
    assert inst.postmaster_pid() == pid
    assert batches(inst) == held
    assert {p: p.read_bytes() for p in inst.conf_dir.rglob('*') if p.is_file()} == conf


def test_a_target_after_the_last_archived_wal_fails_and_leaves_the_target_stopped(play, source):
    source.commit_batch(7)
    after = source.commits[7] + datetime.timedelta(seconds=1)  # no transaction after it was archived
    src = source.inst
    sh('pg_ctlcluster', PG_VERSION, SOURCE, 'stop')
    try:
        run = restore(play, source, timing='failing restore (target not reached)', pg_restore_type='time',
                      pg_restore_time=after.isoformat())
    finally:
        sh('pg_ctlcluster', PG_VERSION, SOURCE, 'start')
    assert run.failed
    assert ('Restore of instance 15/%s from stanza %s failed: FATAL: recovery ended before configured recovery '
            'target was reached' % (TARGET, SOURCE)) in run.msg, run.msg
    assert run.msg.endswith('The instance is left stopped.')
    failed = run.task('Restore the backup into the instance')
    assert failed['reasons'] == ['FATAL: recovery ended before configured recovery target was reached']
    assert not PgInstance(TARGET, TARGET_PORT).running()
    assert src.running()


def test_verify_a_good_backup(play, source):
    run = play(SOURCE, 'verify_backup', pg_verify_backup_label=source.first_backup, pg_verify_port=SCRATCH_PORT)
    record('verify (good backup)', run, 'Verify the backup in a scratch instance')
    assert not run.failed, run.msg
    verification = run.report['verification']
    assert verification['verified'] is True and verification['problems'] == []
    assert verification['label'] == source.first_backup
    assert (verification['databases'], verification['tables'], verification['rows']) == source.at_backup
    assert {d['name']: d['rows'] for d in verification['per_database']}['app'] == 2 * ROWS_PER_BATCH
    assert datetime.datetime.fromisoformat(verification['checked_at']).tzinfo is not None
    assert SCRATCH not in clusters()
    assert not (Path('/etc/postgresql') / PG_VERSION / SCRATCH).exists()
    assert not (Path('/var/lib/postgresql') / PG_VERSION / SCRATCH).exists()
    assert not os.path.exists(os.path.join(SOCKET_DIR, '.s.PGSQL.%d' % SCRATCH_PORT))


def source_labels():
    """Labels of the source's backups, as pgbackrest info lists them."""
    info = as_postgres('pgbackrest', '--stanza=%s' % SOURCE, '--output=json', 'info')
    assert info.returncode == 0, info.stderr
    return [backup['label'] for backup in json.loads(info.stdout)[0]['backup']]


def take_full_backup():
    """A full backup of the source taken with pgbackrest itself: (its label, pgbackrest's output)."""
    before = source_labels()
    taken = as_postgres('pgbackrest', '--stanza=%s' % SOURCE, '--type=full', 'backup')
    assert taken.returncode == 0, taken.stderr
    new = [label for label in source_labels() if label not in before]
    assert len(new) == 1, new
    return new[0], taken.stdout + taken.stderr


def test_verify_catches_a_page_corrupted_on_the_source(play, source):
    """A page damaged on the source's disk is backed up as it is (pgBackRest warns, and the file's checksum in
    the backup is that of the damaged file, so the restore succeeds): pg_amcheck and the row count find it."""
    src = source.inst
    label = None
    with src.connect() as conn:
        conn.execute('CREATE DATABASE damaged')
    try:
        try:
            with src.connect('damaged') as conn:
                conn.execute('CREATE TABLE junk AS SELECT g AS id, md5(g::text) AS note '
                             'FROM generate_series(1, 2000) g')
                relpath = conn.execute("SELECT pg_relation_filepath('junk')").fetchone()[0]
            sh('pg_ctlcluster', PG_VERSION, SOURCE, 'stop')  # the page is on disk, not only in shared buffers
            try:
                path = src.data_dir / relpath
                data = bytearray(path.read_bytes())
                at = 8192 + 4000  # inside the tuples of the second page
                data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
                path.write_bytes(bytes(data))
            finally:
                sh('pg_ctlcluster', PG_VERSION, SOURCE, 'start')
            label, output = take_full_backup()
            assert 'invalid page checksum' in output
        finally:
            with src.connect() as conn:
                conn.execute('DROP DATABASE IF EXISTS damaged')

        run = play(SOURCE, 'verify_backup', pg_verify_backup_label=label, pg_verify_port=SCRATCH_PORT + 2)
        record('verify (page corrupted on the source)', run, 'Verify the backup in a scratch instance')
        assert run.failed
        verification = run.report['verification']
        assert verification['verified'] is False, verification
        problems = '\n'.join(verification['problems'])
        assert problems.startswith('pg_amcheck found problems'), problems
        assert 'junk' in problems and 'checksum' in problems, problems
        assert any(p.startswith('reading table damaged.public.junk failed: ')
                   for p in verification['problems']), problems
        assert {d['name'] for d in verification['per_database']} >= {'app', 'damaged', 'postgres'}
        assert SCRATCH not in clusters()
    finally:
        if label:
            remove_backup(label)


def test_verify_catches_a_corrupted_backup(play, source):
    src = source.inst
    label, dummy = take_full_backup()
    try:
        with src.connect('app') as conn:
            relpath = conn.execute("SELECT pg_relation_filepath('items')").fetchone()[0]
        stored = glob.glob('%s/backup/%s/%s/pg_data/%s*' % (source.repo, SOURCE, label, relpath))
        stored = [p for p in stored if os.path.basename(p).split('.')[0] == os.path.basename(relpath)]
        assert len(stored) == 1, stored  # base/<db>/<relfilenode>, compressed or not (.zst, .gz, .lz4)
        data = bytearray(Path(stored[0]).read_bytes())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        Path(stored[0]).write_bytes(bytes(data))

        run = play(SOURCE, 'verify_backup', pg_verify_backup_label=label, pg_verify_port=SCRATCH_PORT + 1)
        record('verify (corrupted backup)', run, 'Verify the backup in a scratch instance')
        assert run.failed
        verification = run.report['verification']  # reported before the play fails
        assert verification['verified'] is False and verification['label'] == label
        assert verification['problems'] and 'restore' in verification['problems'][0], verification['problems']
        assert run.msg.startswith('Backup %s of instance 15/%s is not verified: ' % (label, SOURCE)), run.msg
        assert SCRATCH not in clusters()
        assert not (Path('/etc/postgresql') / PG_VERSION / SCRATCH).exists()
        assert as_postgres(str(PG_BIN / 'pg_isready'), '-h', SOCKET_DIR, '-p',
                           str(SCRATCH_PORT + 1)).returncode != 0
        with psycopg.connect(host=SOCKET_DIR, port=SOURCE_PORT, user='postgres', dbname='app') as conn:
            rows = conn.execute('SELECT count(*) FROM items').fetchone()[0]
        assert rows == len(source.commits) * ROWS_PER_BATCH  # source intact: every batch committed
    finally:
        remove_backup(label)
