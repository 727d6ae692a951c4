# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.admin: creation, login over TCP, if_exists, rotation, hostile names, secrecy."""

from __future__ import annotations

import pytest
from psycopg import sql

from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import scram_secret_matches

PORT = 55430
ADMIN_ROLES = {'pg_read_all_data', 'pg_write_all_data', 'pg_monitor', 'pg_signal_backend'}
HOSTILE = 'x"; drop table t; --'


@pytest.fixture(scope='module')
def inst(make_instance):
    # log_statement=all: the server log shows every statement the module sends.
    inst = make_instance('tmodadm', PORT, settings={'log_statement': 'all'})
    inst.create_sentinel()
    return inst


def admin(run_module, inst, user, password, check=False, **args):
    return run_module('admin', dict(inst.args, user=user, **args), secrets={'password': password}, check=check)


def role_facts(inst, name):
    with inst.connect() as conn:
        row = conn.execute('SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, '
                           'ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid '
                           '      WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = %s', (name,)).fetchone()
    return dict(zip(('superuser', 'createdb', 'createrole', 'login', 'member_of'), row)) if row else None


def make_admin_role(inst, name, password):
    """The role the module creates, made directly."""
    inst.create_role(name, password)
    with inst.connect() as conn:
        conn.execute(sql.SQL('ALTER ROLE {} CREATEDB CREATEROLE').format(sql.Identifier(name)))
        conn.execute(sql.SQL('GRANT {} TO {}').format(sql.SQL(', ').join(map(sql.Identifier, sorted(ADMIN_ROLES))),
                                                      sql.Identifier(name)))
        conn.execute(sql.SQL('GRANT CONNECT ON DATABASE postgres TO {}').format(sql.Identifier(name)))


def test_check_mode_creates_nothing(run_module, inst):
    result = admin(run_module, inst, 'adm_check', 'Check-pass-1', check=True)
    assert result['changed'] is True and result['created'] is True
    assert result['queries'][0].startswith('CREATE ROLE "adm_check"')
    assert not inst.role_exists('adm_check')


def test_create_admin_and_login(run_module, inst):
    log_offset = inst.log_file.stat().st_size
    password = 'S3cret-create-admin'
    result = admin(run_module, inst, 'adm1', password)
    assert result['changed'] is True
    assert result['created'] is True and result['updated'] is False
    assert result['user'] == 'adm1'
    assert result['queries'][0] == ('CREATE ROLE "adm1" WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE '
                                    "PASSWORD '********'")
    assert result['queries'][-1] == 'GRANT CONNECT ON DATABASE "postgres" TO "adm1"'
    facts = role_facts(inst, 'adm1')
    assert facts['superuser'] is False
    assert facts['createdb'] and facts['createrole'] and facts['login']
    assert set(facts['member_of']) == ADMIN_ROLES

    with inst.login('adm1', password) as conn:
        assert conn.execute('SELECT current_user').fetchone() == ('adm1',)
        # The administrator manages databases and roles.
        conn.execute('CREATE ROLE adm1_app LOGIN')
        conn.execute('GRANT adm1_app TO adm1')  # PostgreSQL 15: owner changes need membership
        conn.execute('CREATE DATABASE adm1_db OWNER adm1_app')
        conn.execute('DROP DATABASE adm1_db')
        conn.execute('DROP ROLE adm1_app')

    # The password is in neither the module's result nor the server log; the stored secret is SCRAM.
    assert password not in result.raw
    assert password not in inst.log_file.read_bytes()[log_offset:].decode(errors='replace')
    with inst.connect() as conn:
        secret = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'adm1'").fetchone()[0]
    assert secret.startswith('SCRAM-SHA-256$')


def test_existing_user_fails_and_keeps_password(run_module, inst):
    inst.create_role('adm2', 'First-pass-2')
    result = admin(run_module, inst, 'adm2', 'Other-pass-2')
    assert result['failed'] is True
    assert result['msg'] == 'The user already exists'
    assert result['changed'] is False
    assert inst.can_login('adm2', 'First-pass-2')
    assert not inst.can_login('adm2', 'Other-pass-2')


def test_update_rotates_password(run_module, inst):
    make_admin_role(inst, 'adm3', 'Old-pass-3')
    result = admin(run_module, inst, 'adm3', 'New-pass-3', if_exists='update')
    assert result['changed'] is True
    assert result['created'] is False and result['updated'] is True and result['password_changed'] is True
    assert result['queries'] == ['ALTER ROLE "adm3" WITH PASSWORD \'********\'']
    assert 'New-pass-3' not in result.raw
    assert inst.can_login('adm3', 'New-pass-3')
    assert not inst.can_login('adm3', 'Old-pass-3')


def test_update_with_same_password_is_unchanged(run_module, inst):
    admin(run_module, inst, 'adm4', 'Same-pass-4')
    result = admin(run_module, inst, 'adm4', 'Same-pass-4', if_exists='update')
    assert result['changed'] is False and result['updated'] is False
    assert result['queries'] == []
    assert inst.can_login('adm4', 'Same-pass-4')


def test_update_restores_attributes_and_memberships(run_module, inst):
    make_admin_role(inst, 'adm5', 'Pass-5')
    with inst.connect() as conn:
        conn.execute('ALTER ROLE adm5 NOCREATEDB')
        conn.execute('REVOKE pg_monitor FROM adm5')
    result = admin(run_module, inst, 'adm5', 'Pass-5', if_exists='update')
    assert result['changed'] is True and result['password_changed'] is False
    assert result['queries'] == ['ALTER ROLE "adm5" WITH LOGIN CREATEDB CREATEROLE', 'GRANT "pg_monitor" TO "adm5"']
    facts = role_facts(inst, 'adm5')
    assert facts['createdb'] is True
    assert set(facts['member_of']) == ADMIN_ROLES


def test_check_mode_update_keeps_password(run_module, inst):
    make_admin_role(inst, 'adm6', 'Kept-pass-6')
    result = admin(run_module, inst, 'adm6', 'Next-pass-6', check=True, if_exists='update')
    assert result['changed'] is True
    assert inst.can_login('adm6', 'Kept-pass-6')
    assert not inst.can_login('adm6', 'Next-pass-6')


def test_superuser_is_never_managed(run_module, inst):
    result = admin(run_module, inst, 'postgres', 'Takeover-1', if_exists='update')
    assert result['failed'] is True
    assert 'superuser' in result['msg']
    with inst.connect() as conn:
        assert conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone() == (None,)


@pytest.mark.parametrize('name', [HOSTILE, "50%off'; --"])
def test_hostile_user_name_is_kept_literally(run_module, inst, name):
    result = admin(run_module, inst, name, 'Hostile-pass-7')
    assert result['changed'] is True, result.get('msg')
    assert inst.role_exists(name)
    assert inst.sentinel_exists()
    assert inst.can_login(name, 'Hostile-pass-7')


def test_too_long_user_name_is_rejected(run_module, inst):
    result = admin(run_module, inst, 'a' * 64, 'Long-pass-8')
    assert result['failed'] is True
    assert not inst.role_exists('a' * 63)


def test_scram_check_matches_server_made_secrets(inst):
    with inst.connect() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("CREATE ROLE scram_probe PASSWORD 'Probe-pass-9'")
        conn.execute("CREATE ROLE scram_probe_utf8 PASSWORD 'Pässwörd'")
        secret, utf8_secret = [row[0] for row in conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname IN ('scram_probe', 'scram_probe_utf8') "
            "ORDER BY rolname")]
    assert scram_secret_matches(secret, 'Probe-pass-9')
    assert not scram_secret_matches(secret, 'Probe-pass-0')
    assert not scram_secret_matches(None, 'Probe-pass-9')
    assert not scram_secret_matches('md5' + '0' * 32, 'Probe-pass-9')
    assert not scram_secret_matches(utf8_secret, 'Pässwörd')  # non-ASCII: undecided, reported as changed
