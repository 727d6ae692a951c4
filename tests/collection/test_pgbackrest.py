# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups with pgBackRest (issue 9): the role dbaas.postgresql.pgbackrest, the modules pgbackrest_info,
pgbackrest_backup and pgbackrest_expire, and the playbooks set_backup, backup, backup_info,
remove_backups, delete_archive and unset_backup, run for real on instances named tbr* (ports
57100-57149) whose stanzas write to a repository directory of this test module.

Each test passes alone and in any order. The tests of tbrmain share it: the module fixture main makes
it and runs its first set_backup.yml (what the test of that first run asserts on); the fixture inst
brings it back to the state that run leaves (running, archiving to its stanza with this module's
settings, at least one full backup), running set_backup.yml again, or making the instance again
after terminate, only when a test changed that. Each test takes the backups it asserts on and
compares with what was there before. tbrbare is an instance without a stanza; the test that gives
it one deletes it again.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.dbaas.postgresql.plugins.module_utils import pgbackrest
from tests.collection.conftest import PG_VERSION, PgInstance

MAIN_PORT, BARE_PORT = 57100, 57101
DATA = Path(__file__).resolve().parent / 'data'
STANZA_DIR = Path('/etc/pgbackrest/conf.d')


def forget(inst):
    """Drop an instance of these tests with what the backup playbooks leave around it."""
    (inst.conf_dir / 'conf.d' / 'pgdbaas-archive.conf').unlink(missing_ok=True)
    (STANZA_DIR / ('%s.conf' % inst.cluster)).unlink(missing_ok=True)
    Path('/tmp/pgbackrest/%s.stop' % inst.cluster).unlink(missing_ok=True)
    inst.drop()
    shutil.rmtree(inst.conf_dir, ignore_errors=True)
    shutil.rmtree(inst.data_dir, ignore_errors=True)
    for log in Path('/var/log/pgbackrest').glob('%s-*.log' % inst.cluster):
        log.unlink()


@pytest.fixture(scope='module')
def repo():
    """A repository directory of this module, owned by postgres (under /tmp: postgres must reach it)."""
    path = Path(tempfile.mkdtemp(prefix='tbr-repo-', dir='/tmp'))
    owner = pwd.getpwnam('postgres')
    os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o750)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def make_tbr():
    """Factory of instances dropped at the end of the module, also on failure: make_tbr(cluster, port)."""
    created = []

    def make(cluster, port):
        assert cluster.startswith('tbr') and 57100 <= port <= 57149
        inst = PgInstance(cluster, port)
        created.append(inst)
        forget(inst)  # left over by an interrupted run
        inst.create()
        return inst

    yield make
    for inst in created:
        forget(inst)


def backup_dirs(repo, stanza):
    """Labels of the backup directories under backup/<stanza> of the repository."""
    root = repo / 'backup' / stanza
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                  and pgbackrest.LABEL_RE.match(p.name)) if root.is_dir() else []


@pytest.fixture(scope='module')
def main(make_tbr, playbooks, repo):
    """tbrmain, new, after its first set_backup.yml (this module's repository, archive_timeout 60).

    .first is that run, the postmaster pid before and after it and the backup directories right after
    it; .stanza_text and .archive_text the stanza file and conf.d/pgdbaas-archive.conf it wrote: the
    state the fixture inst brings tbrmain back to.
    """
    inst = make_tbr('tbrmain', MAIN_PORT)
    runner = playbooks(inst)

    def play(name, **extra):
        if name == 'set_backup':
            extra = dict(dict(pg_backup_repo_path=str(repo), pg_backup_archive_timeout=60), **extra)
        return runner(name, **extra)

    state = SimpleNamespace(inst=inst, play=play, repo=repo, stanza_text=None, archive_text=None)
    pid = inst.postmaster_pid()
    run = play('set_backup')
    state.first = SimpleNamespace(run=run, pid_before=pid, pid_after=inst.postmaster_pid() if inst.running() else None,
                                  backup_dirs=backup_dirs(repo, 'tbrmain'))
    if not run.failed:
        remember_settings(state)
    return state


def archive_conf(inst):
    return inst.conf_dir / 'conf.d' / 'pgdbaas-archive.conf'


def remember_settings(main):
    """The files of the first successful set_backup.yml: running it again must write the same."""
    if main.stanza_text is not None:
        return
    main.stanza_text = (STANZA_DIR / 'tbrmain.conf').read_text()
    main.archive_text = archive_conf(main.inst).read_text()


def in_known_state(main, settings, archiving):
    inst = main.inst
    stanza = STANZA_DIR / 'tbrmain.conf'
    if main.stanza_text is None or not inst.running() or not stanza.exists():
        return False
    if settings and stanza.read_text() != main.stanza_text:
        return False
    if archiving and not (archive_conf(inst).exists() and archive_conf(inst).read_text() == main.archive_text):
        return False
    return any(name.endswith('F') for name in backup_dirs(main.repo, 'tbrmain'))


def ready(main, settings=True, archiving=True):
    """tbrmain running with its stanza and at least one full backup; with settings, the stanza file of this
    module's set_backup.yml (e.g. not the count retention of the retention test); with archiving, its archive
    settings (not turned off by unset_backup.yml). Made again after terminate.yml; set_backup.yml runs again only
    when something differs."""
    inst = main.inst
    if not (inst.conf_dir / 'postgresql.conf').exists():  # terminated: a new instance, a new stanza
        forget(inst)
        for part in ('backup', 'archive'):
            shutil.rmtree(main.repo / part / 'tbrmain', ignore_errors=True)
        inst.create()
    inst.start()
    if not in_known_state(main, settings, archiving):
        run = main.play('set_backup')
        assert not run.failed, run.msg
        remember_settings(main)
        assert in_known_state(main, settings, archiving)
    return inst


@pytest.fixture
def inst(main):
    """tbrmain as its first set_backup.yml leaves it (see ready)."""
    return ready(main)


@pytest.fixture
def play(main):
    """play(name, **extra_vars) for tbrmain; set_backup gets this module's repository."""
    return main.play


@pytest.fixture(scope='module')
def bare(make_tbr):
    """tbrbare, an instance without a stanza (the test that gives it one deletes it again)."""
    return make_tbr('tbrbare', BARE_PORT)


def sql(inst, query, params=None):
    with inst.connect() as conn:
        return conn.execute(query, params).fetchone()


def labels(info):
    return [b['label'] for b in info['backups']]


def repo_info(stanza):
    """The stanza as pgBackRest itself lists it (info --output=json, run as postgres), parsed."""
    out = subprocess.run(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--stanza=%s' % stanza, 'info',
                          '--output=json'], capture_output=True, text=True, check=True, cwd='/',
                         stdin=subprocess.DEVNULL).stdout
    return pgbackrest.parse_backup_info(stanza, out)


def take_backup(stanza, backup_type):
    """A backup taken with pgbackrest itself (as postgres), without expiry."""
    taken = subprocess.run(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--stanza=%s' % stanza,
                            '--type=%s' % backup_type, '--no-expire-auto', 'backup'], capture_output=True, text=True,
                           cwd='/', stdin=subprocess.DEVNULL, check=False)
    assert taken.returncode == 0, taken.stdout + taken.stderr


def archive_files(repo, stanza):
    """WAL segment files in the archive of stanza (not the .backup and .history files)."""
    root = repo / 'archive' / stanza
    return sorted(p.name for p in root.rglob('*') if p.is_file() and len(p.name.split('-')[0]) == 24
                  and '.' not in p.name.split('-')[0])


def wait_archived(inst, segment, deadline=30):
    """Poll pg_stat_archiver until segment (or a later one) is archived."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        last = sql(inst, 'SELECT last_archived_wal FROM pg_stat_archiver')[0]
        if last and last[:24] >= segment:
            return last
        time.sleep(0.2)
    raise AssertionError('WAL %s not archived within %d s (pg_stat_archiver: %s)'
                         % (segment, deadline, sql(inst, 'SELECT * FROM pg_stat_archiver')))


def switch_wal(inst, rows=1000):
    """Write rows, switch to a new WAL file and wait until the one written is archived; returns its name."""
    with inst.connect() as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS rows_t (id int, at timestamptz DEFAULT now())')
        conn.execute('INSERT INTO rows_t (id) SELECT generate_series(1, %s)', (rows,))
        segment = conn.execute('SELECT pg_walfile_name(pg_switch_wal())').fetchone()[0]
    wait_archived(inst, segment)
    return segment


# --------------------------------------------------------------------------------------------
# Pure parsing

def test_parse_backup_info_of_captured_json():
    """info --output=json of pgBackRest 2.45 (a stanza with a full, diff and incr backup, then a full)."""
    data = json.loads((DATA / 'pgbackrest_info.json').read_text())
    options = {'repo1-path': '/srv/repo', 'repo1-retention-full-type': 'time', 'repo1-retention-full': '7'}
    row = dict(archived_count=9, last_archived_wal='00000001000000000000000E', failed_count=0,
               last_archived_time=datetime(2026, 12, 2, 20, 38, 1, 123, tzinfo=timezone.utc),
               last_failed_wal=None, last_failed_time=None)
    info = pgbackrest.parse_backup_info('tbrprobe', data, archiver=row, options=options,
                                        instance_settings={'archive_mode': 'on', 'archive_timeout': '1h',
                                                           'archive_command': 'pgbackrest --stanza=tbrprobe archive-push %p'})
    assert info['stanza'] == 'tbrprobe' and info['exists'] is True
    assert info['status'] == {'code': 0, 'message': 'ok'}
    assert info['repository'] == {'type': 'posix', 'path': '/srv/repo'}
    assert [(b['type'], b['prior']) for b in info['backups']] == [
        ('full', None), ('diff', '20261202-193819F'), ('incr', '20261202-193819F_20261202-193822D'),
        ('full', None)]
    first = info['backups'][0]
    assert first == {
        'label': '20261202-193819F', 'type': 'full', 'prior': None,
        'start_at': '2026-12-02T19:38:19+00:00', 'stop_at': '2026-12-02T19:38:21+00:00',
        'start_epoch': 1796240299, 'stop_epoch': 1796240301, 'lsn_start': '0/5000028', 'lsn_stop': '0/5000138',
        'wal_start': '000000010000000000000005', 'wal_stop': '000000010000000000000005',
        'size_bytes': 23185774, 'delta_bytes': 23185774, 'repo_size_bytes': 2815106, 'repo_delta_bytes': 2815106,
        'database_version': '15', 'error': False}
    assert info['archive'] == {'min_wal': '000000010000000000000005', 'max_wal': '00000001000000000000000E'}
    assert info['archiver']['last_archived_time'] == '2026-12-02T20:38:01+00:00'
    assert info['archiver']['failed_count'] == 0
    assert info['settings'] == {'archive_enabled': True, 'archive_timeout': 3600, 'retention_days': 7,
                                'retention_full_count': None}
    assert pgbackrest.dependents(info['backups'], ['20261202-193819F_20261202-193822D']) == [
        '20261202-193819F_20261202-193822D', '20261202-193819F_20261202-193824I']

    missing = pgbackrest.parse_backup_info('other', data)  # another stanza's output
    assert missing['exists'] is False and missing['backups'] == [] and missing['archive'] is None
    assert missing['status']['code'] == 1 and missing['archiver'] is None
    assert missing['settings']['archive_enabled'] is False


def test_expire_output_and_timestamps():
    text = ('P00 INFO: [DRY-RUN] repo1: expire full backup set 20261202-193819F, 20261202-193819F_20261202-193822D\n'
            'P00 INFO: [DRY-RUN] repo1: remove expired backup 20261202-193819F_20261202-193822D\n'
            'P00 INFO: [DRY-RUN] repo1: remove expired backup 20261202-193819F\n'
            'P00 INFO: [DRY-RUN] repo1: 15-1 remove archive, start = 000000010000000000000005, '
            'stop = 00000001000000000000000D\n')
    assert pgbackrest.parse_expire_output(text) == (
        ['20261202-193819F_20261202-193822D', '20261202-193819F'],
        [{'archive_id': '15-1', 'start': '000000010000000000000005', 'stop': '00000001000000000000000D'}])
    assert pgbackrest.format_timestamp(0) == '1970-01-01T00:00:00+00:00'
    assert pgbackrest.format_timestamp(None) is None
    assert pgbackrest.warnings_of('WARN: no prior backup exists, diff backup has been changed to full') == [
        'no prior backup exists, diff backup has been changed to full']
    assert pgbackrest.stanza_config_path('t1') == '/etc/pgbackrest/conf.d/t1.conf'


# --------------------------------------------------------------------------------------------
# An instance without a stanza

def test_info_without_stanza_reports_no_backups(bare, run_module, playbooks):
    result = run_module('pgbackrest_info', bare.args)
    assert not result.get('failed'), result.raw
    info = result['backup_info']
    assert info['exists'] is False and info['backups'] == [] and info['status']['code'] == 1
    assert info['archive'] is None and info['archiver']['failed_count'] == 0
    assert info['settings']['archive_enabled'] is False
    run = playbooks(bare)('backup_info')
    assert not run.failed and run.changed == 0, run.msg
    assert run.report['backup_info']['backups'] == [] and run.report['instance']['state'] == 'started'
    refused = run_module('pgbackrest_backup', bare.args)
    assert refused.get('failed') and 'has no backup configuration' in refused['msg']


def test_set_backup_without_initial_full_then_delete_the_repository(bare, playbooks, repo):
    assert bare.running()
    play = playbooks(bare)
    try:
        run = play('set_backup', pg_backup_repo_path=str(repo), pg_backup_initial_full=False,
                   pg_backup_archive_enabled=False)
        assert not run.failed, run.msg
        info = run.report['backup_info']
        assert info['exists'] and info['backups'] == [] and 'backup' not in run.report
        assert info['status']['code'] == 2  # no valid backups
        assert info['settings'] == {'archive_enabled': False, 'archive_timeout': 0, 'retention_days': 7,
                                    'retention_full_count': None}
        assert sql(bare, "SELECT current_setting('archive_mode')") == ('on',)
        gone = play('unset_backup', pg_backup_delete_repository=True)
        assert not gone.failed, gone.msg
        assert gone.report['backup_info']['exists'] is False
        assert not (STANZA_DIR / 'tbrbare.conf').exists() and not (repo / 'backup' / 'tbrbare').exists()
        assert sql(bare, "SELECT current_setting('archive_mode')") == ('off',)
    finally:  # tbrbare is an instance without a stanza again, also when this test failed half way
        if (STANZA_DIR / 'tbrbare.conf').exists() or archive_conf(bare).exists():
            cleanup = play('unset_backup', pg_backup_delete_repository=True)
            assert not cleanup.failed, cleanup.msg


# --------------------------------------------------------------------------------------------
# tbrmain: its backups, from set_backup to terminate

def test_set_backup_turns_archiving_on_and_takes_a_full_backup(main, inst, repo):
    first = main.first  # the first set_backup.yml of tbrmain, on the new instance (fixture main)
    run = first.run
    assert not run.failed, run.msg
    assert run.report['instance']['state'] == 'started'
    assert first.pid_after != first.pid_before  # restarted once, for archive_mode
    info = run.report['backup_info']
    assert info['exists'] and info['status'] == {'code': 0, 'message': 'ok'}
    assert info['repository'] == {'type': 'posix', 'path': str(repo)}
    assert [b['type'] for b in info['backups']] == ['full']
    full = info['backups'][0]
    assert run.report['backup'] == full
    assert full['size_bytes'] > 0 and full['repo_size_bytes'] > 0 and full['error'] is False
    assert full['database_version'] == PG_VERSION and full['stop_at'].endswith('+00:00')
    assert info['settings'] == {'archive_enabled': True, 'archive_timeout': 60, 'retention_days': 7,
                                'retention_full_count': None}
    assert info['archiver']['archived_count'] > 0 and info['archiver']['failed_count'] == 0
    assert first.backup_dirs == [full['label']]  # repo/backup/tbrmain/<label>, right after the run

    assert sql(inst, "SELECT current_setting('archive_mode'), current_setting('archive_command'), "
                     "current_setting('archive_timeout'), current_setting('track_commit_timestamp')") == (
        'on', 'pgbackrest --stanza=tbrmain archive-push %p', '1min', 'on')
    conf = STANZA_DIR / 'tbrmain.conf'
    mode = conf.stat()
    assert (pwd.getpwuid(mode.st_uid).pw_name, stat.S_IMODE(mode.st_mode)) == ('postgres', 0o640)
    assert '[tbrmain]\n' in conf.read_text() and 'repo1-path=%s\n' % repo in conf.read_text()


def test_second_set_backup_changes_nothing(inst, play):
    before = labels(repo_info('tbrmain'))
    pid = inst.postmaster_pid()
    run = play('set_backup')
    assert not run.failed, run.msg
    assert run.changed == 0, [r['_task'] for r in run.results if r.get('changed')]
    assert 'backup' not in run.report and labels(run.report['backup_info']) == before
    assert inst.postmaster_pid() == pid


def test_wal_reaches_the_repository(inst, run_module, repo):
    before = repo_info('tbrmain')
    segment = switch_wal(inst, rows=5000)
    assert segment in ' '.join(archive_files(repo, 'tbrmain'))
    after = repo_info('tbrmain')
    assert after['archive']['max_wal'] >= segment > before['archive']['max_wal']
    # pgbackrest check (the role's) switches the WAL and waits for it too
    checked = run_module('pgbackrest_info', dict(inst.args, check=True))
    assert checked['checked'] is True and checked['changed'] is False
    assert checked['backup_info']['archive']['max_wal'] > after['archive']['max_wal']
    assert checked['backup_info']['archiver']['last_archived_wal'][:24] >= segment
    assert checked['backup_info']['archiver']['failed_count'] == 0


def test_backup_takes_diff_and_incr_on_their_prior(inst, play):
    before = repo_info('tbrmain')['backups']
    full = [b for b in before if b['type'] == 'full'][-1]  # a diff's prior: the newest full backup
    with inst.connect() as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS rows_t (id int, at timestamptz DEFAULT now())')
        conn.execute('INSERT INTO rows_t (id) SELECT generate_series(1, 20000)')
    diff = play('backup', pg_backup_type='diff')
    assert not diff.failed, diff.msg
    assert (diff.report['backup']['type'], diff.report['backup']['prior']) == ('diff', full['label'])
    assert diff.report['backup']['delta_bytes'] < diff.report['backup']['size_bytes']
    assert diff.report['removed'] == []
    incr = play('backup', pg_backup_type='incr')
    assert not incr.failed, incr.msg
    assert (incr.report['backup']['type'], incr.report['backup']['prior']) == ('incr', diff.report['backup']['label'])
    assert labels(incr.report['backup_info']) == [b['label'] for b in before] + [
        diff.report['backup']['label'], incr.report['backup']['label']]


def test_check_mode_of_backup_changes_nothing(inst, run_module):
    before = labels(repo_info('tbrmain'))
    result = run_module('pgbackrest_backup', dict(inst.args, type='full'), check=True)
    assert not result.get('failed'), result.raw
    assert result['changed'] is True and result['backup'] is None
    assert not any(' backup' in c and '--type' in c for c in result['commands'])
    assert labels(repo_info('tbrmain')) == before


def test_remove_backups_removes_a_named_backup_and_refuses_an_unknown_label(inst, play):
    diff = play('backup', pg_backup_type='diff')
    assert not diff.failed, diff.msg
    before = labels(diff.report['backup_info'])
    label = diff.report['backup']['label']
    assert before[-1] == label  # the newest: nothing depends on it
    fulls = [b['label'] for b in diff.report['backup_info']['backups'] if b['type'] == 'full']
    for bad, reason in (([label, '20000101-000000F'], 'Unknown backup label(s) of stanza tbrmain: 20000101-000000F'),
                        (fulls, 'would remove every full backup'),
                        (['latest'], 'Not backup labels: latest')):
        refused = play('remove_backups', pg_backup_labels=bad)
        assert refused.failed and reason in refused.msg, refused.msg
        assert 'Nothing was removed' in refused.msg
        assert labels(repo_info('tbrmain')) == before
    run = play('remove_backups', pg_backup_labels=[label])
    assert not run.failed, run.msg
    assert run.report['removed'] == [label] and labels(run.report['backup_info']) == before[:-1]


def test_delete_archive_shrinks_the_archive(inst, play, repo):
    for dummy in range(3):
        switch_wal(inst)
    newest = play('backup', pg_backup_type='incr')
    assert not newest.failed, newest.msg
    before = archive_files(repo, 'tbrmain')
    backups = newest.report['backup_info']['backups']
    run = play('delete_archive')
    assert not run.failed, run.msg
    after = archive_files(repo, 'tbrmain')
    assert len(after) < len(before) and set(after) < set(before)
    assert run.report['removed_archive'] and run.report['backup_info']['backups'] == backups
    for backup in backups:  # every backup keeps the WAL it needs to be consistent
        assert any(name.startswith(backup['wal_start']) for name in after)
        assert any(name.startswith(backup['wal_stop']) for name in after)
    again = play('delete_archive')
    assert not again.failed and again.changed == 0 and again.report['removed_archive'] == []


def test_retention_expires_the_oldest_full(inst, play, run_module):
    """Leaves count retention in the stanza file and only the newest full backup (fixture inst undoes the first)."""
    existing = labels(repo_info('tbrmain'))
    take_backup('tbrmain', 'diff')
    take_backup('tbrmain', 'incr')
    chain = labels(repo_info('tbrmain'))  # what existed, and a diff and an incr on the newest full
    assert chain[:-2] == existing and chain[0].endswith('F')
    assert chain[-2].endswith('D') and chain[-1].endswith('I') and chain[-1].startswith(chain[-2].split('_')[0])
    second = run_module('pgbackrest_backup', dict(inst.args, type='full'))  # the module alone does not expire
    assert second['changed'] and second['backup']['type'] == 'full', second.raw
    second = second['backup']['label']
    # Time retention (7 days) removes nothing: every full backup is younger.
    planned = run_module('pgbackrest_expire', inst.args, check=True)
    assert not planned.get('failed') and planned['removed'] == [] and not planned['changed'], planned.raw
    assert any('--dry-run' in command for command in planned['commands'])
    # Count retention of one full: the set_backup run rewrites the stanza file only (no restart) ...
    pid = inst.postmaster_pid()
    counted = play('set_backup', pg_backup_retention_full_count=1)
    assert not counted.failed and counted.changed == 1, counted.msg
    assert counted.report['backup_info']['settings']['retention_full_count'] == 1
    assert counted.report['backup_info']['settings']['retention_days'] is None
    assert inst.postmaster_pid() == pid
    # ... check mode tells what would go (the older fulls with their diff and incr), removes nothing ...
    planned = run_module('pgbackrest_expire', inst.args, check=True)
    assert planned['changed'] and planned['removed'] == chain, planned.raw
    assert labels(repo_info('tbrmain')) == chain + [second]
    # ... and backup.yml's expiry after its full backup leaves only the newest full.
    run = play('backup', pg_backup_type='full')
    assert not run.failed, run.msg
    assert run.report['removed'] == chain + [second]
    assert labels(run.report['backup_info']) == [run.report['backup']['label']]
    assert labels(repo_info('tbrmain')) == [run.report['backup']['label']]
    assert run.report['backup_info']['archive']['min_wal'] >= run.report['backup']['wal_start']


@pytest.fixture
def archiving(main):
    """tbrmain archiving to its stanza, with backups, whatever its retention."""
    return ready(main, settings=False)


def test_unset_backup_turns_archiving_off_and_keeps_the_backups(archiving, play):
    inst = archiving
    before = labels(repo_info('tbrmain'))
    assert before
    assert sql(inst, "SELECT current_setting('archive_mode')") == ('on',)
    run = play('unset_backup')
    assert not run.failed, run.msg
    assert sql(inst, "SELECT current_setting('archive_mode')") == ('off',)
    assert not archive_conf(inst).exists()
    info = run.report['backup_info']
    assert labels(info) == before and info['exists'] and info['settings']['archive_enabled'] is False
    assert (STANZA_DIR / 'tbrmain.conf').exists()
    again = play('unset_backup')
    assert not again.failed and again.changed == 0, again.msg


@pytest.fixture
def with_backups(main):
    """tbrmain with its stanza and backups, archiving or not (fixture inst makes it again after terminate)."""
    return ready(main, settings=False, archiving=False)


def test_terminate_deletes_the_stanza(with_backups, play, repo):
    inst = with_backups
    (inst.conf_dir / 'pgdbaas-instance').write_text('tbrmain\n')
    assert (repo / 'backup' / 'tbrmain').is_dir()
    run = play('terminate', pg_terminate_confirm='tbrmain')
    assert not run.failed, run.msg
    assert run.report['instance']['exists'] is False
    assert not (STANZA_DIR / 'tbrmain.conf').exists()
    assert not (repo / 'backup' / 'tbrmain').exists() and not (repo / 'archive' / 'tbrmain').exists()
    assert not Path('/tmp/pgbackrest/tbrmain.stop').exists()
