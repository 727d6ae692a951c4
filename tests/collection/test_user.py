# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.user: a login role scoped to one database, its privileges, password and drop."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

PORT = 55450
HOSTILE_USER = 'u"; drop table t; --'
HOSTILE_DB = "d'b\"; drop table t; --"


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmoduser', PORT)
    inst.create_sentinel()
    with inst.connect() as conn:
        for owner, database in (('own_a', 'db_a'), ('own_b', 'db_b')):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(owner),
                                                                            sql.Literal('Pass-' + owner)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                       sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    with inst.connect('db_a') as conn:
        conn.execute('SET ROLE own_a')
        conn.execute('CREATE TABLE before_user (id serial PRIMARY KEY, v text)')
    return inst


def user(run_module, inst, name, password=None, check=False, **args):
    secrets = {'password': password} if password is not None else None
    return run_module('user', dict(inst.args, name=name, **args), secrets=secrets, check=check)


def test_check_mode_creates_nothing(run_module, inst):
    result = user(run_module, inst, 'u_check', 'Check-pass-1', check=True, database='db_a')
    assert result['changed'] is True and result['created'] is True
    assert result['queries'][0] == ('CREATE ROLE "u_check" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                    "NOREPLICATION NOBYPASSRLS PASSWORD '********'")
    assert not inst.role_exists('u_check')


def test_user_works_in_its_database_only(run_module, inst):
    password = 'S3cret-user-1'
    result = user(run_module, inst, 'u1', password, database='db_a')
    assert result['changed'] is True, result.get('msg')
    assert result['created'] is True and result['password_changed'] is True and result['granted'] is True
    assert result['name'] == 'u1' and result['database'] == 'db_a'
    assert result['queries'][1:] == [
        'GRANT CONNECT, TEMPORARY ON DATABASE "db_a" TO "u1"',
        'GRANT USAGE, CREATE ON SCHEMA "public" TO "u1"',
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "public" TO "u1"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "own_a" IN SCHEMA "public" GRANT SELECT, INSERT, UPDATE, DELETE '
        'ON TABLES TO "u1"',
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "public" TO "u1"',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "own_a" IN SCHEMA "public" GRANT USAGE, SELECT ON SEQUENCES TO "u1"',
    ]
    assert password not in result.raw

    # Existing and future tables of the owner; its own tables; temporary tables.
    with inst.connect('db_a') as conn:
        conn.execute('SET ROLE own_a')
        conn.execute('CREATE TABLE after_user (id serial PRIMARY KEY, v text)')
    with inst.login('u1', password, 'db_a') as conn:
        conn.execute("INSERT INTO before_user (v) VALUES ('a')")
        conn.execute("INSERT INTO after_user (v) VALUES ('b')")
        conn.execute("UPDATE after_user SET v = 'c'")
        assert conn.execute('SELECT v FROM after_user').fetchall() == [('c',)]
        conn.execute('DELETE FROM before_user')
        conn.execute('CREATE TABLE own_table (id int)')
        conn.execute('CREATE TEMPORARY TABLE scratch (id int)')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('CREATE DATABASE not_allowed')
    with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
        inst.login('u1', password, 'db_b')

    with inst.connect() as conn:
        row = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'u1'").fetchone()
    assert row == (False, False, False)

    again = user(run_module, inst, 'u1', password, database='db_a')
    assert again['changed'] is False and again['queries'] == []
    assert again['created'] is False and again['password_changed'] is False


def test_existing_user_fails_with_if_exists_fail(run_module, inst):
    user(run_module, inst, 'u2', 'First-pass-2', database='db_a')
    result = user(run_module, inst, 'u2', 'Other-pass-2', database='db_a', if_exists='fail')
    assert result['failed'] is True
    assert result['msg'] == 'The user already exists'
    assert result['changed'] is False
    assert inst.can_login('u2', 'First-pass-2', 'db_a')
    assert not inst.can_login('u2', 'Other-pass-2', 'db_a')


def test_password_change_terminates_sessions(run_module, inst):
    user(run_module, inst, 'u3', 'Old-pass-3', database='db_a')
    session = inst.login('u3', 'Old-pass-3', 'db_a')
    try:
        result = user(run_module, inst, 'u3', 'New-pass-3', terminate_sessions=True, if_absent='fail')
        assert result['changed'] is True and result['password_changed'] is True
        assert result['terminated_sessions'] == 1
        assert result['queries'][0] == 'ALTER ROLE "u3" WITH PASSWORD \'********\''
        with pytest.raises(psycopg.OperationalError):  # ended before the module returned
            session.execute('SELECT 1')
    finally:
        session.close()
    assert not inst.can_login('u3', 'Old-pass-3', 'db_a')
    assert inst.can_login('u3', 'New-pass-3', 'db_a')


def test_missing_user_with_if_absent_fail(run_module, inst):
    result = user(run_module, inst, 'u_nobody', 'Pass-4', if_absent='fail')
    assert result['failed'] is True
    assert result['msg'] == "User 'u_nobody' does not exist"
    assert not inst.role_exists('u_nobody')


def test_superuser_is_refused(run_module, inst):
    result = user(run_module, inst, 'postgres', 'Takeover-5', database='db_a')
    assert result['failed'] is True and 'superuser' in result['msg']
    result = user(run_module, inst, 'postgres', state='absent')
    assert result['failed'] is True and 'superuser' in result['msg']
    assert inst.role_exists('postgres')


def test_drop_reassigns_then_drops_everywhere(run_module, inst):
    user(run_module, inst, 'u6', 'Pass-6', database='db_a')
    with inst.connect('db_b') as conn:  # privileges and an object in another database too
        conn.execute('GRANT CONNECT ON DATABASE db_b TO u6')
        conn.execute('CREATE TABLE b_owned (id int)')
        conn.execute('ALTER TABLE b_owned OWNER TO u6')
    with inst.login('u6', 'Pass-6', 'db_a') as conn:
        conn.execute('CREATE TABLE u6_table (id int)')
        conn.execute('INSERT INTO u6_table VALUES (1)')
    session = inst.login('u6', 'Pass-6', 'db_a')
    try:
        result = user(run_module, inst, 'u6', state='absent', database='db_a', reassign_to='own_a')
        assert result['changed'] is True, result.get('msg')
        assert result['dropped'] is True and result['terminated_sessions'] == 1
        assert result['drop_owned_databases'] == ['db_a', 'db_b']
        assert result['queries'] == ['ALTER ROLE "u6" WITH NOLOGIN',
                                     'SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity '
                                     'WHERE usename = %s AND pid <> pg_backend_pid()',
                                     'REASSIGN OWNED BY "u6" TO "own_a"', 'DROP OWNED BY "u6"',
                                     'DROP OWNED BY "u6"', 'DROP ROLE "u6"']
        with pytest.raises(psycopg.OperationalError):
            session.execute('SELECT 1')
    finally:
        session.close()
    assert not inst.role_exists('u6')
    assert not inst.can_login('u6', 'Pass-6', 'db_a')
    with inst.connect('db_a') as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'u6_table'").fetchone() == ('own_a',)
        assert conn.execute('SELECT * FROM u6_table').fetchall() == [(1,)]
    with inst.connect('db_b') as conn:  # not reassigned there: dropped
        assert conn.execute("SELECT to_regclass('b_owned')").fetchone() == (None,)

    again = user(run_module, inst, 'u6', state='absent', database='db_a', reassign_to='own_a')
    assert again['changed'] is False and again['queries'] == []


def test_drop_refuses_database_owner_without_reassign(run_module, inst):
    result = user(run_module, inst, 'own_b', state='absent')
    assert result['failed'] is True
    assert 'owns database(s) db_b' in result['msg']
    assert inst.role_exists('own_b') and inst.can_login('own_b', 'Pass-own_b', 'db_b')


def test_check_mode_drop_keeps_user(run_module, inst):
    user(run_module, inst, 'u7', 'Pass-7', database='db_a')
    result = user(run_module, inst, 'u7', state='absent', check=True)
    assert result['changed'] is True and result['dropped'] is True
    assert inst.can_login('u7', 'Pass-7', 'db_a')


def test_hostile_user_and_database_names(run_module, inst):
    with inst.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER own_a").format(sql.Identifier(HOSTILE_DB)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(HOSTILE_DB)))
    password = "Pa'ss\"; drop table t; --"
    result = user(run_module, inst, HOSTILE_USER, password, database=HOSTILE_DB)
    assert result['changed'] is True, result.get('msg')
    assert password not in result.raw
    assert inst.sentinel_exists()
    assert inst.can_login(HOSTILE_USER, password, HOSTILE_DB)
    assert not inst.can_login(HOSTILE_USER, password, 'db_a')
    dropped = user(run_module, inst, HOSTILE_USER, state='absent', database=HOSTILE_DB, reassign_to='own_a')
    assert dropped['changed'] is True, dropped.get('msg')
    assert not inst.role_exists(HOSTILE_USER)
    assert inst.sentinel_exists()
