# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Playbooks create_database, destroy_database, create_user, reset_password and drop_user, run with
ansible-playbook exactly as the API runs them (secrets in a 0600 vars file)."""

from __future__ import annotations

import psycopg
import pytest

PORT = 55451
HOSTILE_DB = "shop'; drop table t; --"
HOSTILE_USER = 'x"; drop table t; --'


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmodpb', PORT)
    inst.create_sentinel()
    return inst


@pytest.fixture(scope='module')
def play(playbooks, inst):
    return playbooks(inst)


def role_count(inst):
    with inst.connect() as conn:
        return conn.execute('SELECT count(*) FROM pg_roles').fetchone()[0]


def test_create_database_with_new_owner(play, inst):
    run = play('create_database', pg_database='app', pg_database_owner='app_owner',
               secrets={'pg_database_owner_password': 'Owner-pass-1'})
    assert not run.failed, run.msg
    database = run.report['database']
    assert database['name'] == 'app' and database['owner'] == 'app_owner' and database['state'] == 'present'
    assert 'app' in [d['name'] for d in run.report['instance']['databases']]
    assert 'Owner-pass-1' not in run.raw
    with inst.login('app_owner', 'Owner-pass-1', 'app') as conn:
        conn.execute('CREATE TABLE items (id serial PRIMARY KEY, name text)')
        conn.execute('CREATE TEMPORARY TABLE scratch (id int)')

    again = play('create_database', pg_database='app', pg_database_owner='app_owner',
                 secrets={'pg_database_owner_password': 'Owner-pass-1'})
    assert not again.failed and again.changed == 0


def test_create_existing_database_with_fail_changes_nothing(play, inst):
    roles = role_count(inst)
    for owner, secrets in (('app_owner', {'pg_database_owner_password': 'Changed-pass-2'}),
                           ('someone_else', {'pg_database_owner_password': 'Other-pass-2'}),
                           ('app_owner', None)):
        run = play('create_database', pg_database='app', pg_database_owner=owner, pg_database_if_exists='fail',
                   secrets=secrets)
        assert run.failed
        assert run.msg == 'The database already exists'
        assert run.changed == 0
    assert role_count(inst) == roles
    assert inst.can_login('app_owner', 'Owner-pass-1', 'app')  # password untouched


def test_create_user_in_its_database_only(play, inst):
    play('create_database', pg_database='other', pg_database_owner='other_owner',
         secrets={'pg_database_owner_password': 'Other-owner-3'})
    run = play('create_user', pg_user='app_rw', pg_user_database='app', secrets={'pg_user_password': 'Rw-pass-3'})
    assert not run.failed, run.msg
    assert run.report['user']['name'] == 'app_rw' and run.report['user']['created'] is True
    assert 'Rw-pass-3' not in run.raw
    with inst.login('app_rw', 'Rw-pass-3', 'app') as conn:
        conn.execute("INSERT INTO items (name) VALUES ('one')")  # the owner's table and sequence
        assert conn.execute('SELECT name FROM items').fetchall() == [('one',)]
    with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
        inst.login('app_rw', 'Rw-pass-3', 'other')
    with pytest.raises(psycopg.OperationalError, match='permission denied for database'):
        inst.login('other_owner', 'Other-owner-3', 'app')
    assert inst.can_login('other_owner', 'Other-owner-3', 'other')

    again = play('create_user', pg_user='app_rw', pg_user_database='app', secrets={'pg_user_password': 'Rw-pass-3'})
    assert not again.failed and again.changed == 0
    exists = play('create_user', pg_user='app_rw', pg_user_database='app', pg_user_if_exists='fail',
                  secrets={'pg_user_password': 'Rw-pass-x'})
    assert exists.failed and exists.msg == 'The user already exists'
    assert inst.can_login('app_rw', 'Rw-pass-3', 'app')


def test_reset_password_ends_old_sessions(play, inst):
    session = inst.login('app_rw', 'Rw-pass-3', 'app')
    try:
        run = play('reset_password', pg_users=['app_rw'], pg_terminate_sessions=True,
                   secrets={'pg_user_passwords': {'app_rw': 'Rw-pass-4'}})
        assert not run.failed, run.msg
        assert run.report['password_changed'] == {'app_rw': True}
        assert run.report['terminated_sessions'] == {'app_rw': 1}
        with pytest.raises(psycopg.OperationalError):
            session.execute('SELECT 1')
    finally:
        session.close()
    assert 'Rw-pass-4' not in run.raw
    assert not inst.can_login('app_rw', 'Rw-pass-3', 'app')
    assert inst.can_login('app_rw', 'Rw-pass-4', 'app')

    again = play('reset_password', pg_users=['app_rw'], secrets={'pg_user_passwords': {'app_rw': 'Rw-pass-4'}})
    assert not again.failed and again.changed == 0


def test_reset_password_of_missing_user_changes_nothing(play, inst):
    run = play('reset_password', pg_users=['app_rw', 'ghost'],
               secrets={'pg_user_passwords': {'app_rw': 'Rw-pass-5', 'ghost': 'Ghost-pass-5'}})
    assert run.failed
    assert run.msg == "User 'ghost' does not exist"
    assert run.changed == 0
    assert inst.can_login('app_rw', 'Rw-pass-4', 'app')
    assert not inst.role_exists('ghost')


def test_drop_user_reassigns_its_objects(play, inst):
    with inst.login('app_rw', 'Rw-pass-4', 'app') as conn:
        conn.execute('CREATE TABLE rw_notes (id int)')
    run = play('drop_user', pg_user='app_rw', pg_user_database='app', pg_user_reassign_to='app_owner')
    assert not run.failed, run.msg
    assert run.report['user']['dropped'] is True
    assert not inst.role_exists('app_rw')
    assert not inst.can_login('app_rw', 'Rw-pass-4', 'app')
    with inst.connect('app') as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'rw_notes'").fetchone() == \
            ('app_owner',)
    again = play('drop_user', pg_user='app_rw', pg_user_database='app', pg_user_reassign_to='app_owner')
    assert not again.failed and again.changed == 0


def test_destroy_database_ends_sessions_and_drops_users(play, inst):
    play('create_user', pg_user='other_rw', pg_user_database='other', secrets={'pg_user_password': 'Other-rw-6'})
    session = inst.login('other_rw', 'Other-rw-6', 'other')
    try:
        run = play('destroy_database', pg_database='other', pg_database_users=['other_rw', 'other_owner'])
        assert not run.failed, run.msg
        assert run.report['database']['state'] == 'absent'
        assert run.report['users'] == {'other_rw': True, 'other_owner': True}
        with pytest.raises(psycopg.OperationalError):
            session.execute('SELECT 1')
    finally:
        session.close()
    assert not inst.database_exists('other')
    assert not inst.role_exists('other_rw') and not inst.role_exists('other_owner')

    again = play('destroy_database', pg_database='other', pg_database_users=['other_rw', 'other_owner'])
    assert not again.failed and again.changed == 0
    absent = play('destroy_database', pg_database='other', pg_database_if_absent='fail')
    assert absent.failed and absent.msg == 'The database does not exist'


def test_hostile_names_through_the_playbooks(play, inst):
    password = "P'w\"; drop table t; --"
    run = play('create_database', pg_database=HOSTILE_DB, pg_database_owner=HOSTILE_USER,
               secrets={'pg_database_owner_password': password})
    assert not run.failed, run.msg
    assert inst.sentinel_exists()
    assert inst.can_login(HOSTILE_USER, password, HOSTILE_DB)
    assert not inst.can_login(HOSTILE_USER, password, 'app')
    assert password not in run.raw
    run = play('destroy_database', pg_database=HOSTILE_DB, pg_database_users=[HOSTILE_USER])
    assert not run.failed, run.msg
    assert not inst.database_exists(HOSTILE_DB) and not inst.role_exists(HOSTILE_USER)
    assert inst.sentinel_exists()
