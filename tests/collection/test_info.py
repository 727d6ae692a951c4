# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.info on a running, a stopped and a missing instance."""

from __future__ import annotations

import re

import pytest

CONF_PORT = 55420
PORT = 55421  # set in conf.d, which overrides postgresql.conf


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmodinfo', CONF_PORT, settings={'port': PORT})
    inst.port = PORT
    with inst.connect() as conn:
        conn.execute('CREATE ROLE app_owner LOGIN CREATEDB')
        conn.execute('CREATE DATABASE app OWNER app_owner')
    with inst.connect('app') as conn:
        conn.execute('CREATE EXTENSION pg_trgm')
    return inst


def test_running_instance(run_module, inst):
    inst.start()
    result = run_module('info', inst.args)
    assert result['changed'] is False
    assert result['exists'] is True
    assert result['state'] == 'started'
    assert result['version'] == '15' and result['cluster'] == 'tmodinfo'
    assert result['port'] == PORT
    assert re.fullmatch(r'15\.\d+', result['server_version'])
    assert result['data_directory'] == str(inst.data_dir)
    assert result['in_recovery'] is False
    # port is set twice (postgresql.conf, then conf.d): the last value is the running one.
    assert result['pending_restart'] is False and result['pending_restart_settings'] == []

    databases = {db['name']: db for db in result['databases']}
    assert set(databases) == {'postgres', 'app'}  # templates are not listed
    app = databases['app']
    assert app['owner'] == 'app_owner' and app['encoding'] == 'UTF8' and app['size_bytes'] > 0
    assert {'name': 'plpgsql', 'version': '1.0'} in app['extensions']
    assert 'pg_trgm' in [ext['name'] for ext in app['extensions']]
    assert 'pg_trgm' not in [ext['name'] for ext in databases['postgres']['extensions']]

    with inst.connect() as conn:
        total = conn.execute('SELECT sum(pg_database_size(oid)) FROM pg_database').fetchone()[0]
    assert result['size_bytes'] == total

    roles = {role['name']: role for role in result['roles']}
    assert roles['postgres'] == {'name': 'postgres', 'superuser': True, 'createdb': True, 'createrole': True,
                                 'login': True, 'replication': True}
    assert roles['app_owner'] == {'name': 'app_owner', 'superuser': False, 'createdb': True,
                                  'createrole': False, 'login': True, 'replication': False}
    assert not [name for name in roles if name.startswith('pg_')]


def test_stopped_instance(run_module, inst):
    inst.stop()
    try:
        result = run_module('info', inst.args)
        assert not result['failed']
        assert result['changed'] is False
        assert result['exists'] is True
        assert result['state'] == 'stopped'
        assert result['port'] == PORT
        assert result['data_directory'] == str(inst.data_dir)
        assert result['size_bytes'] > 0
        assert re.fullmatch(r'15\.\d+', result['server_version'])
        assert result['databases'] == [] and result['roles'] == []
        assert result['in_recovery'] is False
        assert result['pending_restart'] is False  # a stopped server applies its configuration when it starts
        assert not inst.running()  # info never starts anything
    finally:
        inst.start()


def test_port_option_overrides_configuration(run_module, inst):
    result = run_module('info', dict(inst.args, port=CONF_PORT))
    # Nothing listens on the configuration's own port: the override is used, so connecting fails.
    assert result['failed'] is True
    assert 'Unable to connect' in result['msg']


def test_missing_instance(run_module):
    result = run_module('info', {'cluster': 'tmodnosuch'})
    assert result['failed'] is True
    assert result['exists'] is False
    assert result['state'] == 'error'
