# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Major upgrades with pg_upgrade (playbooks/upgrade.yml, upgrade_rollback.yml, upgrade_cleanup.yml).

Sources are made by provision.yml on Debian's 15 (checksums, the marker, an admin), filled with a
table and its rows, an index, a view, a materialized view, a large object and a user who logs in
through a pg_hba entry of their own, with non-default parameters. 15 -> 16 (tree 16.14) with
--link, 15 -> 18 (tree 18.4) with copy; a pg_trgm source whose check fails; rollback, refused
rollbacks, clean-up, terminate. Instances tupg*, ports 57700-57739. Every test makes the state it
needs from what the host has (ensure_*), so each one passes alone and the file's order saves the
upgrades. Run under flock /tmp/pgdbaas-layouts.lock (the layouts of 16 and 18 are shared).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from tests.collection.conftest import SOCKET_DIR
from tests.engines import borrowed_layouts, forget_version_dir, tree

ADMIN, ADMIN_PASSWORD = 'tupgadmin', 'tupg-admin-pass-1'
USER, USER_PASSWORD = 'tupguser', 'tupg-user-pass-1'
# autovacuum off: its own transactions (an automatic ANALYZE of pg_statistic, which vacuumdb's
# analyze filled, within a minute or so of the upgrade) count as writes for the rollback, so with it
# on, whether "no writes since the upgrade" still holds when the rollback runs would be timing.
PARAMETERS = {'wal_level': 'logical', 'work_mem': '12MB', 'autovacuum': 'off'}
CUSTOM_HBA = {'type': 'host', 'database': 'app', 'user': USER, 'address': '127.0.0.1/32',
              'method': 'scram-sha-256'}
HBA = [{'type': 'local', 'database': 'all', 'user': 'all', 'method': 'scram-sha-256'},
       {'type': 'host', 'database': 'all', 'user': ADMIN, 'address': '127.0.0.1/32', 'method': 'scram-sha-256'},
       CUSTOM_HBA]
LINK = SimpleNamespace(cluster='tupglink', port=57700, old_port=57701, target='16', method='link')
COPY = SimpleNamespace(cluster='tupgcopy', port=57710, old_port=57711, target='18', method='copy')
TRGM = SimpleNamespace(cluster='tupgtrgm', port=57720)
CHECK = SimpleNamespace(cluster='tupgcheck', port=57730)
BACKUP = SimpleNamespace(cluster='tupgbackup', port=57735, old_port=57736, target='16', method='copy')
ALL = (LINK, COPY, TRGM, CHECK, BACKUP)
VERSIONS = ('15', '16', '18')


def conf_dir(version, cluster):
    return Path('/etc/postgresql') / version / cluster


def data_dir(version, cluster):
    return Path('/var/lib/postgresql') / version / cluster


def exists(version, cluster):
    return (conf_dir(version, cluster) / 'postgresql.conf').is_file()


def running(version, cluster):
    return subprocess.run(['runuser', '-u', 'postgres', '--', '/usr/lib/postgresql/%s/bin/pg_ctl' % version,
                           'status', '-D', str(data_dir(version, cluster))],
                          capture_output=True, check=False).returncode == 0


def forget(version, cluster):
    subprocess.run(['pg_dropcluster', '--stop', version, cluster], capture_output=True, check=False)
    shutil.rmtree(conf_dir(version, cluster), ignore_errors=True)
    shutil.rmtree(data_dir(version, cluster), ignore_errors=True)
    forget_version_dir(version)


def superuser(port, dbname='app'):
    return psycopg.connect(host=SOCKET_DIR, port=port, user='postgres', dbname=dbname, autocommit=True,
                           connect_timeout=5)


def login(port, user, password, dbname='app'):
    return psycopg.connect(host='127.0.0.1', port=port, user=user, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=5)


@pytest.fixture(scope='module', autouse=True)
def host_state():
    """Drops every tupg* instance, then removes the layouts of 16 and 18 these tests made."""
    with borrowed_layouts('16', '18'):
        yield
        for inst in ALL:
            for version in VERSIONS:
                forget(version, inst.cluster)
        Path('/etc/pgbackrest/conf.d/%s.conf' % BACKUP.cluster).unlink(missing_ok=True)
        for repo in Path('/var/tmp').glob('tupg-repo-*'):
            shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture
def play(playbooks):
    """play(inst, version, name, **extra_vars): run playbooks/<name>.yml for instance <version>/<inst.cluster>."""
    def run(inst, version, name, **extra):
        return playbooks(SimpleNamespace(version=version, cluster=inst.cluster))(name, **extra)
    return run


def fill(port):
    """The data every upgrade must carry over, in database app."""
    with superuser(port) as conn:
        conn.execute('CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)')
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 5000) g")
        conn.execute('CREATE INDEX items_name ON items (name)')
        conn.execute('CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 100')
        conn.execute('CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(price) AS total FROM items')
        conn.execute("SELECT lo_from_bytea(424242, 'a large object payload'::bytea)")
        conn.execute("CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, USER_PASSWORD))
        conn.execute('GRANT CONNECT ON DATABASE app TO %s' % USER)
        conn.execute('GRANT SELECT ON items, cheap, totals TO %s' % USER)
        conn.execute('GRANT SELECT ON LARGE OBJECT 424242 TO %s' % USER)


def contents(port):
    """What fill() made, read by the user over TCP (its own pg_hba entry): equal before and after."""
    with login(port, USER, USER_PASSWORD) as conn:
        return dict(
            rows=conn.execute('SELECT count(*), sum(price)::text FROM items').fetchone(),
            by_index=conn.execute("SELECT id FROM items WHERE name = 'item 4321'").fetchone(),
            view=conn.execute('SELECT count(*) FROM cheap').fetchone(),
            matview=conn.execute('SELECT n, total::text FROM totals').fetchone(),
            large_object=bytes(conn.execute('SELECT lo_get(424242)').fetchone()[0]),
            index=conn.execute("SELECT indexrelid::regclass::text FROM pg_index "
                               "WHERE indrelid = 'items'::regclass ORDER BY 1").fetchall(),
        )


EXPECTED = dict(rows=(5000, '18753750.0'), by_index=(4321,), view=(66,), matview=(5000, '18753750.0'),
                large_object=b'a large object payload', index=[('items_name',), ('items_pkey',)])


def provision(play, inst, extensions=False):
    """A fresh 15 source made by provision.yml, filled."""
    for version in VERSIONS:
        forget(version, inst.cluster)
    run = play(inst, '15', 'provision', pg_port=inst.port, pg_database='app', pg_parameters=PARAMETERS,
               pg_hba_entries=HBA, secrets={'pg_admin_user': ADMIN, 'pg_admin_password': ADMIN_PASSWORD})
    assert not run.failed, run.msg
    fill(inst.port)
    if extensions:
        with superuser(inst.port) as conn:
            conn.execute('CREATE EXTENSION pg_trgm')
    assert contents(inst.port) == EXPECTED


def upgrade_vars(inst):
    return dict(pg_upgrade_version=inst.target, pg_upgrade_install_method='binaries',
                pg_upgrade_binaries_source=str(tree('0.6.0', inst.target)), pg_upgrade_method=inst.method,
                pg_upgrade_old_port=inst.old_port)


def ensure_upgraded(play, inst):
    """inst upgraded from 15 to inst.target with its old instance kept: (run of upgrade.yml, whether it upgraded)."""
    record = conf_dir(inst.target, inst.cluster) / 'pgdbaas-upgraded-from'
    if not record.is_file() or not exists('15', inst.cluster):
        if not (exists('15', inst.cluster) and running('15', inst.cluster)
                and not exists(inst.target, inst.cluster)):
            provision(play, inst)
        run = play(inst, '15', 'upgrade', **upgrade_vars(inst))
        assert not run.failed, run.msg
        return run, True
    run = play(inst, '15', 'upgrade', **upgrade_vars(inst))
    assert not run.failed, run.msg
    return run, False


def check_upgraded(inst, run, old_major='15'):
    report = run.report
    instance, upgrade = report['instance'], report['upgrade']
    new_server = instance['server_version']
    assert instance['version'] == inst.target and instance['state'] == 'started'
    assert new_server.startswith(inst.target + '.')
    assert instance['port'] == inst.port
    assert instance['data_directory'] == str(data_dir(inst.target, inst.cluster))
    assert upgrade['from_version'].startswith(old_major + '.') and upgrade['to_version'] == new_server
    assert upgrade['method'] == inst.method and upgrade['checked'] is True and upgrade['analyzed'] is True
    assert upgrade['old_data_directory'] == str(data_dir(old_major, inst.cluster))
    assert upgrade['new_data_directory'] == str(data_dir(inst.target, inst.cluster))
    assert upgrade['old_port'] == inst.old_port
    assert upgrade['extensions_updated'] == []
    assert upgrade['attribute_options_removed'] >= 3  # pg_attver of this host's 15.20 on items' columns at least
    # The data, the user's login through its own pg_hba entry, the parameters, the checksums.
    assert contents(inst.port) == EXPECTED
    with superuser(inst.port) as conn:
        settings = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                                     "('wal_level', 'work_mem', 'data_checksums', 'server_version_num')").fetchall())
    assert settings['wal_level'] == 'logical' and settings['work_mem'] == '12288kB'
    assert settings['data_checksums'] == 'on'
    assert settings['server_version_num'].startswith(inst.target)
    hba = (conf_dir(inst.target, inst.cluster) / 'pg_hba.conf').read_text().split('\n')
    assert 'host app %s 127.0.0.1/32 scram-sha-256' % USER in hba
    assert (conf_dir(inst.target, inst.cluster) / 'pgdbaas-instance').read_text().strip() == inst.cluster
    # The old instance is kept, stopped, not started automatically, on another port.
    assert exists(old_major, inst.cluster) and not running(old_major, inst.cluster)
    assert (conf_dir(old_major, inst.cluster) / 'start.conf').read_text().strip().endswith('manual')
    old_conf = (conf_dir(old_major, inst.cluster) / 'postgresql.conf').read_text()
    assert 'port = %d' % inst.old_port in old_conf
    record = json.loads((conf_dir(inst.target, inst.cluster) / 'pgdbaas-upgraded-from').read_text())
    assert record['from_major'] == old_major and record['method'] == inst.method
    assert record['old_data_directory'] == upgrade['old_data_directory'] and record['old_port'] == inst.old_port
    assert record['lsn'] and '/' in record['lsn']


def test_link_upgrade_15_to_16(play):
    run, upgraded = ensure_upgraded(play, LINK)
    check_upgraded(LINK, run)
    if upgraded:
        assert run.changed > 0


def test_a_second_upgrade_changes_nothing(play):
    ensure_upgraded(play, LINK)
    pid = (data_dir('16', LINK.cluster) / 'postmaster.pid').read_text().split()[0]
    run = play(LINK, '15', 'upgrade', **upgrade_vars(LINK))
    assert not run.failed, run.msg
    assert run.changed == 0
    check_upgraded(LINK, run)
    assert (data_dir('16', LINK.cluster) / 'postmaster.pid').read_text().split()[0] == pid


def test_link_rollback_is_refused(play):
    ensure_upgraded(play, LINK)
    run = play(LINK, '16', 'upgrade_rollback')
    assert run.failed
    assert 'pg_upgrade --link' in run.msg and 'cannot be used safely' in run.msg
    assert running('16', LINK.cluster) and not running('15', LINK.cluster)
    assert contents(LINK.port) == EXPECTED


def test_cleanup_removes_the_old_instance(play):
    ensure_upgraded(play, LINK)
    run = play(LINK, '16', 'upgrade_cleanup')
    assert not run.failed, run.msg
    assert run.report['cleanup']['removed'] is True
    assert run.report['instance']['version'] == '16' and run.report['instance']['state'] == 'started'
    assert not conf_dir('15', LINK.cluster).exists() and not data_dir('15', LINK.cluster).exists()
    assert not (conf_dir('16', LINK.cluster) / 'pgdbaas-upgraded-from').exists()
    # Hard links (--link): the new instance keeps its files.
    assert contents(LINK.port) == EXPECTED
    again = play(LINK, '16', 'upgrade_cleanup')
    assert not again.failed and again.changed == 0 and again.report['cleanup']['removed'] is False


def test_copy_upgrade_15_to_18(play):
    run, upgraded = ensure_upgraded(play, COPY)
    check_upgraded(COPY, run)


def test_copy_rollback(play):
    ensure_upgraded(play, COPY)
    run = play(COPY, '18', 'upgrade_rollback')
    assert not run.failed, run.msg
    instance = run.report['instance']
    assert instance['version'] == '15' and instance['state'] == 'started' and instance['port'] == COPY.port
    assert instance['server_version'].startswith('15.')
    assert run.report['rollback']['to_version'] == instance['server_version']
    assert run.report['rollback']['from_version'].startswith('18.')
    assert not exists('18', COPY.cluster) and not conf_dir('18', COPY.cluster).exists()
    assert not data_dir('18', COPY.cluster).exists()
    assert 'auto' in (conf_dir('15', COPY.cluster) / 'start.conf').read_text()
    assert contents(COPY.port) == EXPECTED
    with superuser(COPY.port) as conn:
        assert conn.execute('SHOW server_version_num').fetchone()[0].startswith('15')


def test_rollback_is_refused_after_writes(play):
    ensure_upgraded(play, COPY)
    with superuser(COPY.port) as conn:
        conn.execute("INSERT INTO items VALUES (5001, 'after the upgrade', 1)")
    run = play(COPY, '18', 'upgrade_rollback')
    assert run.failed
    assert 'has taken writes since the upgrade' in run.msg and 'Nothing was changed' in run.msg
    assert running('18', COPY.cluster) and not running('15', COPY.cluster)
    with superuser(COPY.port) as conn:
        assert conn.execute('SELECT count(*) FROM items').fetchone()[0] == 5001
        conn.execute('DELETE FROM items WHERE id = 5001')


def test_terminate_removes_the_kept_old_instance(play):
    ensure_upgraded(play, COPY)
    run = play(COPY, '18', 'terminate', pg_terminate_confirm=COPY.cluster)
    assert not run.failed, run.msg
    assert run.report['instance']['exists'] is False
    for version in ('15', '18'):
        assert not conf_dir(version, COPY.cluster).exists() and not data_dir(version, COPY.cluster).exists()


def test_a_failing_check_leaves_the_source_running(play):
    provision(play, TRGM, extensions=True)
    pid = (data_dir('15', TRGM.cluster) / 'postmaster.pid').read_text().split()[0]
    run = play(TRGM, '15', 'upgrade', **upgrade_vars(SimpleNamespace(target='16', method='link', old_port=57721)))
    assert run.failed
    assert run.task('Upgrade the instance')['_status'] == 'failed'
    assert 'pg_upgrade --check of instance 15/%s' % TRGM.cluster in run.msg
    assert 'loadable libraries' in run.msg and 'loadable_libraries.txt' in run.msg and 'pg_trgm' in run.msg
    assert 'Nothing was changed' in run.msg
    assert (data_dir('15', TRGM.cluster) / 'postmaster.pid').read_text().split()[0] == pid
    assert contents(TRGM.port) == EXPECTED
    assert not conf_dir('16', TRGM.cluster).exists() and not data_dir('16', TRGM.cluster).exists()
    assert not list(Path('/var/lib/postgresql/pgdbaas-upgrade').glob('*%s*' % TRGM.cluster))


def test_check_only_and_refusals(play):
    provision(play, CHECK)
    extra = upgrade_vars(SimpleNamespace(target='16', method='copy', old_port=57731))
    run = play(CHECK, '15', 'upgrade', pg_upgrade_check_only=True, **extra)
    assert not run.failed, run.msg
    assert run.report['upgrade']['checked'] is True and run.report['upgrade']['to_version'] is None
    assert run.report['instance']['version'] == '15' and run.report['instance']['port'] == CHECK.port
    assert run.task('Upgrade the instance')['changed'] is False
    assert not conf_dir('16', CHECK.cluster).exists() and running('15', CHECK.cluster)
    # Not greater; another id; a stopped source: refused before anything changes.
    run = play(CHECK, '15', 'upgrade', **dict(extra, pg_upgrade_version='15'))
    assert run.failed and 'greater than pg_version' in run.msg
    run = play(CHECK, '15', 'upgrade', pg_instance_id='someone-else', **extra)
    assert run.failed and "for id 'someone-else'" in run.msg and 'Nothing was changed' in run.msg
    subprocess.run(['pg_ctlcluster', '15', CHECK.cluster, 'stop'], check=True)
    run = play(CHECK, '15', 'upgrade', **extra)
    assert run.failed and 'it is not running' in run.msg
    assert not conf_dir('16', CHECK.cluster).exists()


def test_backups_this_pgbackrest_cannot_take_refuse_the_upgrade(play):
    """With backups set, the target must be one pgBackRest knows (its stanza is upgraded): this host's 2.45
    does not know 16 (control version 1300): refused by the check, the source untouched and running."""
    repo = Path(tempfile.mkdtemp(prefix='tupg-repo-', dir='/var/tmp'))
    shutil.chown(repo, 'postgres', 'postgres')
    provision(play, BACKUP)
    run = play(BACKUP, '15', 'set_backup', pg_backup_repo_path=str(repo), pg_backup_archive_timeout=60)
    assert not run.failed, run.msg
    pid = (data_dir('15', BACKUP.cluster) / 'postmaster.pid').read_text().split()[0]
    stanza = Path('/etc/pgbackrest/conf.d/%s.conf' % BACKUP.cluster).read_text()
    run = play(BACKUP, '15', 'upgrade', **upgrade_vars(BACKUP))
    assert run.failed
    assert 'it has backups (pgBackRest stanza %s)' % BACKUP.cluster in run.msg
    assert 'cannot back up PostgreSQL 16' in run.msg and 'unexpected control version' in run.msg
    assert 'Nothing was changed' in run.msg
    assert (data_dir('15', BACKUP.cluster) / 'postmaster.pid').read_text().split()[0] == pid
    assert Path('/etc/pgbackrest/conf.d/%s.conf' % BACKUP.cluster).read_text() == stanza
    assert not conf_dir('16', BACKUP.cluster).exists() and not data_dir('16', BACKUP.cluster).exists()
    assert contents(BACKUP.port) == EXPECTED
    gone = play(BACKUP, '15', 'terminate', pg_terminate_confirm=BACKUP.cluster)
    assert not gone.failed, gone.msg
