# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.database: create, owner, connect restriction, drop, hostile names."""

from __future__ import annotations

import psycopg
import pytest

PORT = 55440
HOSTILE = 'x"; drop table t; --'


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmoddb', PORT)
    inst.create_sentinel()
    for role in ('owner_a', 'owner_b', 'owner_c'):
        inst.create_role(role, 'Pass-' + role)
    return inst


def database(run_module, inst, name, check=False, **args):
    return run_module('database', dict(inst.args, name=name, **args), check=check)


def database_facts(inst, name):
    with inst.connect() as conn:
        return conn.execute('SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), '
                            "has_database_privilege('public', oid, 'CONNECT') "
                            'FROM pg_database WHERE datname = %s', (name,)).fetchone()


def test_check_mode_creates_nothing(run_module, inst):
    result = database(run_module, inst, 'db_check', check=True, owner='owner_a')
    assert result['changed'] is True
    assert result['queries'] == [
        'CREATE DATABASE "db_check" OWNER "owner_a" TEMPLATE "template0" ENCODING \'UTF8\'',
        'REVOKE CONNECT ON DATABASE "db_check" FROM PUBLIC',
    ]
    assert result['size_bytes'] is None
    assert not inst.database_exists('db_check')


def test_create_with_owner_restricts_connect(run_module, inst):
    result = database(run_module, inst, 'db_a', owner='owner_a')
    assert result['changed'] is True
    assert result['name'] == 'db_a' and result['state'] == 'present'
    assert result['owner'] == 'owner_a' and result['encoding'] == 'UTF8'
    assert result['size_bytes'] > 0
    assert database_facts(inst, 'db_a') == ('owner_a', 'UTF8', False)
    assert inst.can_login('owner_a', 'Pass-owner_a', 'db_a')
    assert not inst.can_login('owner_b', 'Pass-owner_b', 'db_a')

    again = database(run_module, inst, 'db_a', owner='owner_a')
    assert again['changed'] is False and again['queries'] == []


def test_owner_of_one_database_cannot_enter_another(run_module, inst):
    database(run_module, inst, 'db_b', owner='owner_b')
    assert inst.can_login('owner_b', 'Pass-owner_b', 'db_b')
    with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
        inst.login('owner_b', 'Pass-owner_b', 'db_a')
    with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
        inst.login('owner_a', 'Pass-owner_a', 'db_b')


def test_restrict_connect_false_leaves_privileges(run_module, inst):
    result = database(run_module, inst, 'db_open', owner='owner_a', restrict_connect=False)
    assert result['changed'] is True
    assert database_facts(inst, 'db_open') == ('owner_a', 'UTF8', True)
    assert inst.can_login('owner_b', 'Pass-owner_b', 'db_open')


def test_existing_database_gets_new_owner(run_module, inst):
    with inst.connect() as conn:
        conn.execute('CREATE DATABASE db_move OWNER owner_a')
        conn.execute('REVOKE CONNECT ON DATABASE db_move FROM PUBLIC')
    result = database(run_module, inst, 'db_move', owner='owner_c')
    assert result['changed'] is True
    assert result['queries'] == ['ALTER DATABASE "db_move" OWNER TO "owner_c"']
    assert result['owner'] == 'owner_c'
    assert database_facts(inst, 'db_move') == ('owner_c', 'UTF8', False)
    assert inst.can_login('owner_c', 'Pass-owner_c', 'db_move')
    assert not inst.can_login('owner_a', 'Pass-owner_a', 'db_move')


def test_existing_open_database_is_restricted(run_module, inst):
    with inst.connect() as conn:
        conn.execute('CREATE DATABASE db_legacy OWNER owner_c')
    result = database(run_module, inst, 'db_legacy', owner='owner_c')
    assert result['changed'] is True
    assert result['queries'] == ['REVOKE CONNECT ON DATABASE "db_legacy" FROM PUBLIC']
    assert database_facts(inst, 'db_legacy') == ('owner_c', 'UTF8', False)


def test_missing_owner_fails(run_module, inst):
    result = database(run_module, inst, 'db_orphan', owner='nobody_here')
    assert result['failed'] is True
    assert 'does not exist' in result['msg']
    assert not inst.database_exists('db_orphan')


def test_encoding_of_existing_database_cannot_change(run_module, inst):
    database(run_module, inst, 'db_latin', encoding='LATIN1', locale='C')
    assert database_facts(inst, 'db_latin')[1] == 'LATIN1'
    result = database(run_module, inst, 'db_latin', encoding='UTF8')
    assert result['failed'] is True
    assert 'cannot be changed' in result['msg']


def test_drop_terminates_sessions(run_module, inst):
    with inst.connect() as conn:
        conn.execute('CREATE DATABASE db_drop')
    session = inst.connect('db_drop')
    try:
        result = database(run_module, inst, 'db_drop', state='absent')
        assert result['changed'] is True
        assert result['queries'][-1] == 'DROP DATABASE "db_drop" WITH (FORCE)'
        assert not inst.database_exists('db_drop')
        with pytest.raises(psycopg.OperationalError):
            session.execute('SELECT 1')
    finally:
        session.close()
    again = database(run_module, inst, 'db_drop', state='absent')
    assert again['changed'] is False


def test_check_mode_drop_keeps_database(run_module, inst):
    with inst.connect() as conn:
        conn.execute('CREATE DATABASE db_keep')
    result = database(run_module, inst, 'db_keep', state='absent', check=True)
    assert result['changed'] is True
    assert inst.database_exists('db_keep')


def test_hostile_database_name_is_kept_literally(run_module, inst):
    result = database(run_module, inst, HOSTILE, owner='owner_a')
    assert result['changed'] is True, result.get('msg')
    assert inst.database_exists(HOSTILE)
    assert inst.sentinel_exists()
    assert inst.can_login('owner_a', 'Pass-owner_a', HOSTILE)
    dropped = database(run_module, inst, HOSTILE, state='absent')
    assert dropped['changed'] is True
    assert not inst.database_exists(HOSTILE)
    assert inst.sentinel_exists()
