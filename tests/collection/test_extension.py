# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.extension and the playbooks list_extensions and install_extension; the extensions
denied to tenants (untrusted languages, file, program and network access) unless allow_untrusted.

The module never restarts the instance: an extension whose library must be preloaded is configured
and reported pending_restart; the playbook restarts once (dbaas.postgresql.service) and creates it.

The pg_cron test installs the Debian package postgresql-15-cron through the playbook (apt, from
Debian's repository) when it is missing, and removes it again at the end in that case.
"""

from __future__ import annotations

import subprocess

import pytest
from psycopg import sql

PORT = 55452
CRON_PACKAGE = 'postgresql-15-cron'
AUDIT_PACKAGE = 'postgresql-15-pgaudit'
HYPOPG_PACKAGE = 'postgresql-15-hypopg'
HOSTILE_DB = 'ext"; drop table t; --'


def package_installed(name):
    proc = subprocess.run(['dpkg-query', '-W', '-f', '${db:Status-Status}', name], capture_output=True, text=True,
                          check=False)
    return proc.returncode == 0 and proc.stdout.strip() == 'installed'


@pytest.fixture(scope='module')
def cron_package():
    """Removes postgresql-15-cron at the end when the tests installed it (torn down after the instance)."""
    before = package_installed(CRON_PACKAGE)
    yield before
    if not before and package_installed(CRON_PACKAGE):
        subprocess.run(['apt-get', 'remove', '-y', '-q', CRON_PACKAGE], capture_output=True, check=True,
                       env={'DEBIAN_FRONTEND': 'noninteractive', 'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'})


@pytest.fixture(scope='module')
def inst(cron_package, make_instance):
    inst = make_instance('tmodext', PORT)
    inst.create_sentinel()
    with inst.connect() as conn:
        for name in ('app', 'app2', HOSTILE_DB):
            conn.execute(sql.SQL('CREATE DATABASE {}').format(sql.Identifier(name)))
    return inst


@pytest.fixture(scope='module')
def play(playbooks, inst):
    return playbooks(inst)


def extension(run_module, inst, check=False, **args):
    return run_module('extension', dict(inst.args, **args), check=check)


def started_at(inst):
    with inst.connect() as conn:
        return conn.execute('SELECT pg_postmaster_start_time()').fetchone()[0]


def setting(inst, name, dbname='postgres'):
    with inst.connect(dbname) as conn:
        return conn.execute('SELECT current_setting(%s, true)', (name,)).fetchone()[0]


def configured(inst, name):
    """The value the configuration files (postgresql.auto.conf included) give name, read by the server now."""
    with inst.connect() as conn:
        row = conn.execute('SELECT setting FROM pg_file_settings WHERE name = %s ORDER BY seqno DESC LIMIT 1',
                           (name,)).fetchone()
    return row[0] if row else None


def starts_logged(inst, offset):
    """How many times the instance started (its log says it is ready) after offset bytes of its log."""
    with open(inst.log_file, 'rb') as log:
        log.seek(offset)
        return log.read().decode('utf-8', 'replace').count('database system is ready to accept connections')


def installed(inst, dbname, name):
    with inst.connect(dbname) as conn:
        row = conn.execute('SELECT extversion FROM pg_extension WHERE extname = %s', (name,)).fetchone()
    return row[0] if row else None


def test_list_extensions(play, inst):
    run = play('list_extensions', pg_database='app')
    assert not run.failed, run.msg
    assert run.changed == 0
    found = {e['name']: e for e in run.report['extensions_available']}
    assert found['pg_trgm'] == dict(
        name='pg_trgm', available=True, installable=True, default_version=found['pg_trgm']['default_version'],
        installed_version=None, comment=found['pg_trgm']['comment'], preload_library=None,
        requires_restart=False, package='postgresql-contrib', package_installed=True,
        link='https://www.postgresql.org/docs/15/pgtrgm.html', reason=None)
    assert found['plpgsql']['installed_version'] == '1.0'
    assert found['pg_stat_statements']['preload_library'] == 'pg_stat_statements'
    assert found['pg_stat_statements']['requires_restart'] is True
    for name, package, library in (('pg_cron', CRON_PACKAGE, 'pg_cron'), ('pgaudit', AUDIT_PACKAGE, 'pgaudit'),
                                   ('postgis', 'postgresql-15-postgis-3', None),
                                   ('pg_repack', 'postgresql-15-repack', None)):
        assert found[name]['package'] == package and found[name]['preload_library'] == library
        assert found[name]['installable'] is True and found[name]['link'].startswith('https://')
    assert found['pg_cron']['requires_restart'] is True
    assert all(e['installable'] for e in found.values())


def test_check_mode_preload_changes_nothing(run_module, inst):
    before = started_at(inst)
    result = extension(run_module, inst, check=True, database='app', name=['pg_stat_statements'])
    assert result['changed'] is True and result['pending_restart'] is True, result.get('msg')
    assert result['queries'] == ["ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"]
    assert result['extensions'][0]['state'] == 'pending_restart'
    assert started_at(inst) == before
    assert configured(inst, 'shared_preload_libraries') is None
    assert installed(inst, 'app', 'pg_stat_statements') is None


def test_preload_extension_waits_for_a_restart(run_module, inst):
    """The library is configured, the extension waits; the others of the call are created; no restart."""
    before = started_at(inst)
    result = extension(run_module, inst, database='app', name=['pg_stat_statements', 'citext'])
    assert result['changed'] is True and result['pending_restart'] is True, result.get('msg')
    assert result['queries'] == ["ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
                                 'CREATE EXTENSION IF NOT EXISTS "citext" WITH SCHEMA "public" CASCADE']
    waiting, created = result['extensions']
    assert (waiting['name'], waiting['state'], waiting['created'], waiting['pending_restart']) == (
        'pg_stat_statements', 'pending_restart', False, True)
    assert (created['name'], created['state'], created['created'], created['pending_restart']) == (
        'citext', 'present', True, False)
    assert started_at(inst) == before
    assert configured(inst, 'shared_preload_libraries') == 'pg_stat_statements'
    assert setting(inst, 'shared_preload_libraries') == ''
    assert installed(inst, 'app', 'pg_stat_statements') is None and installed(inst, 'app', 'citext')

    info = run_module('info', inst.args)
    assert info['pending_restart'] is True and info['pending_restart_settings'] == ['shared_preload_libraries']
    again = extension(run_module, inst, database='app', name=['pg_stat_statements', 'citext'])
    assert again['changed'] is False and again['queries'] == [] and again['pending_restart'] is True
    assert started_at(inst) == before


def test_contrib_extensions_install_without_restart(play, inst):
    """pg_stat_statements still waits for a restart: the playbook restarts only for what it installs."""
    before = started_at(inst)
    run = play('install_extension', pg_database='app',
               pg_extensions=[{'name': 'pg_trgm'}, {'name': 'hstore', 'version': '1.7'}])
    assert not run.failed, run.msg
    results = {e['name']: e for e in run.report['extensions']}
    assert results['pg_trgm']['created'] is True and results['pg_trgm']['restarted'] is False
    assert results['hstore']['version'] == '1.7' and results['hstore']['restarted'] is False
    assert run.task('Install the packages of the extensions')['_status'] == 'skipped'
    assert run.task('Restart the instance once, to load the libraries the extensions need')['_status'] == 'skipped'
    assert run.report['instance']['pending_restart_settings'] == ['shared_preload_libraries']
    assert started_at(inst) == before
    assert installed(inst, 'app', 'pg_trgm') and installed(inst, 'app', 'hstore') == '1.7'
    with inst.connect('app') as conn:
        assert conn.execute("SELECT similarity('postgres', 'postgis') > 0").fetchone() == (True,)

    again = play('install_extension', pg_database='app',
                 pg_extensions=[{'name': 'pg_trgm'}, {'name': 'hstore', 'version': '1.7'}])
    assert not again.failed and again.changed == 0


def test_update_to_version_and_drop(run_module, inst):
    result = extension(run_module, inst, database='app', name=['hstore'], extension_version='1.8')
    assert result['changed'] is True, result.get('msg')
    assert result['queries'] == ['ALTER EXTENSION "hstore" UPDATE TO \'1.8\'']
    assert result['extensions'][0]['updated'] is True and result['extensions'][0]['previous_version'] == '1.7'
    assert installed(inst, 'app', 'hstore') == '1.8'
    missing = extension(run_module, inst, database='app', name=['hstore'], extension_version='0.1')
    assert missing['failed'] is True and 'has no version 0.1' in missing['msg']

    dropped = extension(run_module, inst, database='app', name=['hstore'], state='absent')
    assert dropped['changed'] is True and dropped['queries'] == ['DROP EXTENSION "hstore"']
    assert installed(inst, 'app', 'hstore') is None
    again = extension(run_module, inst, database='app', name=['hstore'], state='absent')
    assert again['changed'] is False


def test_unknown_extension_changes_nothing(play, inst):
    audit_before = package_installed(AUDIT_PACKAGE)
    before = started_at(inst)
    run = play('install_extension', pg_database='app', pg_extensions=[{'name': 'pgaudit'}, {'name': 'nosuchext'}])
    assert run.failed
    assert run.msg == 'extension "nosuchext" is not available: no PostgreSQL package provides it'
    assert run.changed == 0
    assert package_installed(AUDIT_PACKAGE) == audit_before
    assert started_at(inst) == before
    assert installed(inst, 'app', 'pgaudit') is None and installed(inst, 'app', 'nosuchext') is None


def test_preload_extensions_are_usable_after_one_restart(play, inst, cron_package):
    """pg_cron (its package installed by the playbook when missing) and pg_stat_statements (configured by
    an earlier test, not loaded) wait in two module calls; the instance restarts once for both."""
    before, log_offset = started_at(inst), inst.log_file.stat().st_size
    extensions = [{'name': 'pg_cron'}, {'name': 'pg_stat_statements', 'version': '1.10'}]
    run = play('install_extension', pg_database='app', pg_extensions=extensions)
    assert not run.failed, run.msg
    assert package_installed(CRON_PACKAGE)
    apt = run.task('Install the packages of the extensions')
    assert apt['_status'] == ('skipped' if cron_package else 'ok') and apt.get('changed') is not cron_package
    results = {e['name']: e for e in run.report['extensions']}
    assert sorted(results) == ['pg_cron', 'pg_stat_statements']
    for name, version in (('pg_cron', None), ('pg_stat_statements', '1.10')):
        result = results[name]
        assert (result['state'], result['created'], result['restarted'], result['pending_restart']) == (
            'present', True, True, False), result
        assert result['preload_library'] == name and (version is None or result['version'] == version)
    assert run.task('Restart the instance once, to load the libraries the extensions need')['changed'] is True
    assert started_at(inst) > before
    assert starts_logged(inst, log_offset) == 1
    assert run.report['instance']['pending_restart'] is False
    # The libraries already configured are kept; pg_cron runs its jobs in database app.
    assert setting(inst, 'shared_preload_libraries') == 'pg_stat_statements, pg_cron'
    assert setting(inst, 'cron.database_name') == 'app'
    with inst.connect('app') as conn:
        job = conn.execute("SELECT cron.schedule('tmod-job', '*/5 * * * *', 'SELECT 1')").fetchone()[0]
        assert conn.execute('SELECT schedule FROM cron.job WHERE jobid = %s', (job,)).fetchone() == ('*/5 * * * *',)
        assert conn.execute('SELECT count(*) >= 0 FROM pg_stat_statements').fetchone() == (True,)

    after = started_at(inst)
    again = play('install_extension', pg_database='app', pg_extensions=extensions)
    assert not again.failed and again.changed == 0, again.msg
    assert again.task('Install the packages of the extensions')['_status'] == 'skipped'
    assert again.task('Restart the instance once, to load the libraries the extensions need')['_status'] == 'skipped'
    assert [e['restarted'] for e in again.report['extensions']] == [False, False]
    assert started_at(inst) == after


def test_pg_cron_stays_in_its_database(run_module, inst):
    before = started_at(inst)
    result = extension(run_module, inst, database='app2', name=['pg_cron'])
    assert result['failed'] is True
    assert 'is created in database "app"' in result['msg']
    assert started_at(inst) == before and setting(inst, 'cron.database_name') == 'app'
    assert installed(inst, 'app2', 'pg_cron') is None


# No test installs hypopg (the API tests install pgaudit, the playbook tests pg_cron), so its
# package stays missing whatever ran before; the guard is for machines where someone installed it.
@pytest.mark.skipif(package_installed(HYPOPG_PACKAGE), reason='needs postgresql-15-hypopg not installed')
def test_missing_package_fails_clearly(run_module, inst):
    result = extension(run_module, inst, database='app', name=['hypopg'])
    assert result['failed'] is True
    assert result['msg'] == ('extension "hypopg" is not available on instance 15/tmodext: '
                             'install package postgresql-15-hypopg first')


def test_hostile_database_name(run_module, inst):
    result = extension(run_module, inst, database=HOSTILE_DB, name=['pg_trgm'])
    assert result['changed'] is True, result.get('msg')
    assert installed(inst, HOSTILE_DB, 'pg_trgm')
    assert inst.sentinel_exists()
    bad = extension(run_module, inst, database='app', name=['pg_trgm"; drop table t; --'])
    assert bad['failed'] is True and 'is not valid' in bad['msg']
    assert inst.sentinel_exists()


DENIED_CONTRIB = ('file_fdw', 'adminpack', 'dblink', 'postgres_fdw')  # installed with the server


def test_denied_extensions_are_not_listed_as_installable(play, run_module, inst):
    listed = extension(run_module, inst, database='app', name=['plpython3u', 'hstore_plpython3u', 'plperlu',
                                                               'pltclu', *DENIED_CONTRIB, 'lo'], state='listed')
    found = {e['name']: e for e in listed['extensions']}
    for name in ('plpython3u', 'hstore_plpython3u', 'plperlu', 'pltclu', *DENIED_CONTRIB):
        assert found[name]['installable'] is False, name
        assert found[name]['reason'].startswith('extension "%s" is denied: ' % name), found[name]['reason']
    assert found['lo']['installable'] is True and found['lo']['reason'] is None
    assert 'untrusted language' in found['plpython3u']['reason']
    assert 'other instances of the host' in found['dblink']['reason']

    run = play('list_extensions', pg_database='app')
    assert not run.failed, run.msg
    names = {e['name'] for e in run.report['extensions_available']}
    assert 'lo' in names and not names & {'plpython3u', 'plperlu', 'pltclu', *DENIED_CONTRIB}

    allowed = extension(run_module, inst, database='app', name=list(DENIED_CONTRIB), state='listed',
                        allow_untrusted=True)
    assert all(e['installable'] and e['reason'] is None for e in allowed['extensions'])


@pytest.mark.parametrize('name', DENIED_CONTRIB)
def test_denied_extension_is_refused_before_anything_changes(run_module, inst, name):
    before = started_at(inst)
    result = extension(run_module, inst, database='app', name=['pg_trgm', name])
    assert result['failed'] is True and result['changed'] is False
    assert result['msg'].startswith('extension "%s" is denied: ' % name)
    assert result['queries'] == []
    assert installed(inst, 'app', name) is None and started_at(inst) == before


def test_install_extension_playbook_refuses_untrusted_languages(play, run_module, inst):
    package = 'postgresql-plpython3-15'
    was_installed = package_installed(package)
    # The listing refuses first, so the playbook never installs the language's package.
    listed = extension(run_module, inst, database='app', name=['plpython3u'], state='listed')
    assert listed['extensions'][0]['installable'] is False
    run = play('install_extension', pg_database='app', pg_extensions=[{'name': 'plpython3u'}])
    assert run.failed and run.changed == 0
    assert run.msg.startswith('extension "plpython3u" is denied: untrusted language')
    assert 'Install the packages of the extensions' not in [r['_task'] for r in run.results]
    assert package_installed(package) == was_installed
    assert installed(inst, 'app', 'plpython3u') is None


def test_allow_untrusted_is_an_explicit_choice(play, inst):
    run = play('install_extension', pg_database='app2', pg_extensions=[{'name': 'file_fdw'}],
               pg_extensions_allow_untrusted=True)
    assert not run.failed, run.msg
    assert run.report['extensions'][0]['created'] is True
    assert installed(inst, 'app2', 'file_fdw')
    refused = play('install_extension', pg_database='app2', pg_extensions=[{'name': 'dblink'}])
    assert refused.failed and refused.msg.startswith('extension "dblink" is denied')
    assert installed(inst, 'app2', 'dblink') is None
