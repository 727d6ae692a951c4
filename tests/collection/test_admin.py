# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.admin: creation, login over TCP, if_exists, rotation, hostile names, secrecy; on
PostgreSQL 15 the admin has no CREATEROLE and never reaches the OS (file and program access), and
manages its roles with the functions of schema pgdbaas."""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg import sql

from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import scram_secret_matches

PORT = 55430
ADMIN_ROLES = {'pg_read_all_data', 'pg_write_all_data', 'pg_monitor', 'pg_signal_backend', 'pgdbaas_tenant_admin'}
FILE_AND_PROGRAM_ROLES = ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')
HOSTILE = 'x"; drop table t; --'
# How PostgreSQL words a refusal of a role change (it varies with the statement).
DENIED = re.compile('permission denied|must be superuser|admin option|must have')


@pytest.fixture(scope='module')
def inst(make_instance, run_module):
    # log_statement=all: the server log shows every statement the module sends.
    inst = make_instance('tmodadm', PORT, settings={'log_statement': 'all'})
    inst.create_sentinel()
    # What the install role does: the role-management functions in postgres and template1.
    result = run_module('role_manager', inst.args)
    assert result['changed'] is True, result.get('msg')
    return inst


def admin(run_module, inst, user, password, check=False, **args):
    return run_module('admin', dict(inst.args, user=user, **args), secrets={'password': password}, check=check)


def role_facts(inst, name):
    with inst.connect() as conn:
        row = conn.execute('SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, '
                           'ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid '
                           '      WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = %s', (name,)).fetchone()
    return dict(zip(('superuser', 'createdb', 'createrole', 'login', 'member_of'), row)) if row else None


def make_admin_role(inst, name, password, createrole=False):
    """The role the module creates, made directly (createrole: as the module made it before PostgreSQL 15
    admins lost CREATEROLE)."""
    inst.create_role(name, password)
    with inst.connect() as conn:
        conn.execute(sql.SQL('ALTER ROLE {} CREATEDB {}').format(
            sql.Identifier(name), sql.SQL('CREATEROLE' if createrole else 'NOCREATEROLE')))
        conn.execute(sql.SQL('GRANT {} TO {}').format(sql.SQL(', ').join(map(sql.Identifier, sorted(ADMIN_ROLES))),
                                                      sql.Identifier(name)))
        conn.execute(sql.SQL('GRANT CONNECT ON DATABASE postgres TO {}').format(sql.Identifier(name)))


def refused(conn, statement, *params):
    """The error message of a statement the server must refuse."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params or None)
    return str(info.value)


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
    assert result['queries'] == [
        'CREATE ROLE "adm1" WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        "PASSWORD '********'",
        'GRANT "pg_read_all_data", "pg_write_all_data", "pg_monitor", "pg_signal_backend", "pgdbaas_tenant_admin" '
        'TO "adm1"',
        'GRANT CONNECT ON DATABASE "postgres" TO "adm1"']
    facts = role_facts(inst, 'adm1')
    assert facts['superuser'] is False and facts['createrole'] is False
    assert facts['createdb'] and facts['login']
    assert set(facts['member_of']) == ADMIN_ROLES

    with inst.login('adm1', password) as conn:
        assert conn.execute('SELECT current_user').fetchone() == ('adm1',)
        # The administrator manages databases, and roles through the functions of schema pgdbaas.
        conn.execute("SELECT pgdbaas.create_role('adm1_app', NULL, login => false)")
        conn.execute('CREATE DATABASE adm1_db OWNER adm1_app')  # it holds adm1_app WITH ADMIN OPTION
        conn.execute('DROP DATABASE adm1_db')
        conn.execute("SELECT pgdbaas.drop_role('adm1_app')")

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
    assert result['queries'] == ['ALTER ROLE "adm5" WITH LOGIN CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                                 'GRANT "pg_monitor" TO "adm5"']
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


# -- PostgreSQL 15: the admin never reaches the OS and manages roles through schema pgdbaas ----------

def test_admin_cannot_reach_the_operating_system(run_module, inst):
    result = admin(run_module, inst, 'adm_esc', 'Escape-pass-1')
    assert result['changed'] is True, result.get('msg')
    with inst.connect() as su:
        su_pid = su.execute('SELECT pg_backend_pid()').fetchone()[0]
        with inst.login('adm_esc', 'Escape-pass-1') as conn:
            # No role that reads or writes the server's files or runs its programs, no service role.
            for role in FILE_AND_PROGRAM_ROLES + ('pgdbaas_role_manager', 'pgdbaas_tenant_admin', 'postgres'):
                assert DENIED.search(refused(
                    conn, sql.SQL('GRANT {} TO adm_esc').format(sql.Identifier(role))))
                if role != 'pgdbaas_tenant_admin':  # its one group: EXECUTE on the functions only
                    assert DENIED.search(refused(conn, sql.SQL('SET ROLE {}').format(sql.Identifier(role))))
            assert 'permission denied to create role' in refused(conn, 'CREATE ROLE adm_esc_side')
            for attribute in ('SUPERUSER', 'CREATEROLE', 'REPLICATION', 'BYPASSRLS'):
                assert DENIED.search(refused(conn, 'ALTER ROLE adm_esc ' + attribute))
            for role in ('pgdbaas_role_manager', 'postgres'):
                assert DENIED.search(refused(conn, sql.SQL("ALTER ROLE {} PASSWORD 'x'").format(
                    sql.Identifier(role))))
                assert DENIED.search(refused(conn, sql.SQL('DROP ROLE {}').format(sql.Identifier(role))))
            # Programs and files of the server.
            assert 'pg_execute_server_program' in refused(conn, "COPY (SELECT 1) TO PROGRAM 'id'")
            assert 'pg_execute_server_program' in refused(conn, "COPY pg_catalog.pg_am FROM PROGRAM 'id'")
            assert 'pg_write_server_files' in refused(conn, "COPY (SELECT 1) TO '/tmp/tmodadm-escape'")
            assert 'pg_read_server_files' in refused(conn, "COPY pg_catalog.pg_am FROM '/etc/hostname'")
            for call in ("pg_read_file('/etc/hostname')", "pg_read_binary_file('/etc/hostname')", "pg_ls_dir('/')",
                         "lo_import('/etc/hostname')", "lo_export(1, '/tmp/tmodadm-escape')"):
                assert 'permission denied for function' in refused(conn, 'SELECT ' + call)
            # Catalogs stay read-only (pg_write_all_data does not cover them).
            assert 'permission denied' in refused(
                conn, "UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = 'adm_esc'")
            # pg_signal_backend does not reach superuser sessions (the DBaaS's own).
            assert 'superuser' in refused(conn, 'SELECT pg_terminate_backend(%s)', su_pid)
            conn.execute('CREATE DATABASE adm_esc_db')
        assert su.execute('SELECT 1').fetchone() == (1,)

    # Untrusted languages and extensions, in a database the admin owns (it may create objects there).
    with inst.login('adm_esc', 'Escape-pass-1', 'adm_esc_db') as conn:
        for language, body in (('c', "'/lib/x86_64-linux-gnu/libc.so.6', 'getpid'"), ('internal', "'int4in'")):
            assert 'permission denied for language ' + language in refused(
                conn, 'CREATE FUNCTION escape() RETURNS int LANGUAGE %s AS %s' % (language, body))
        for extension in ('file_fdw', 'adminpack'):
            assert 'permission denied to create extension' in refused(conn, 'CREATE EXTENSION ' + extension)
        conn.execute("SELECT pgdbaas.create_role('adm_esc_r', NULL)")
        # Holding ADMIN OPTION on a role of its own gives no way to a predefined one.
        for role in FILE_AND_PROGRAM_ROLES:
            assert 'must have admin option' in refused(conn, sql.SQL('GRANT {} TO adm_esc_r').format(
                sql.Identifier(role)))
    with inst.connect() as conn:
        reached = conn.execute("SELECT g.rolname FROM pg_roles g WHERE pg_has_role('adm_esc', g.oid, 'MEMBER') "
                               "AND (g.rolname = ANY(%s) OR g.rolsuper OR g.rolname = 'pgdbaas_role_manager')",
                               (list(FILE_AND_PROGRAM_ROLES),)).fetchall()
        assert reached == []
        conn.execute('DROP DATABASE adm_esc_db')
        conn.execute('DROP ROLE adm_esc_r')


def test_role_functions_manage_login_roles(run_module, inst):
    admin(run_module, inst, 'adm_fn', 'Fn-pass-1')
    with inst.login('adm_fn', 'Fn-pass-1') as conn:
        # A SCRAM secret made on the client: the clear text reaches neither the server nor its log.
        secret = conn.pgconn.encrypt_password(b'App-pass-1', b'fn_app', b'scram-sha-256').decode()
        conn.execute('SELECT pgdbaas.create_role(%s, %s)', ('fn_app', secret))
        conn.execute("SELECT pgdbaas.create_role('fn_group', NULL, login => false, createdb => true)")
        conn.execute("SELECT pgdbaas.grant_role('fn_group', 'fn_app')")
        conn.execute('CREATE DATABASE fn_db OWNER fn_app')
        conn.execute('CREATE DATABASE fn_group_db OWNER fn_group')
    assert 'App-pass-1' not in inst.log_file.read_text(errors='replace')
    assert inst.can_login('fn_app', 'App-pass-1', 'fn_db')
    facts = role_facts(inst, 'fn_app')
    assert (facts['superuser'], facts['createrole'], facts['createdb'], facts['login']) == (False, False, False, True)
    assert facts['member_of'] == ['fn_group']
    assert role_facts(inst, 'fn_group')['createdb'] is True and role_facts(inst, 'fn_group')['login'] is False
    with inst.connect() as conn:
        assert conn.execute("SELECT r.rolname, a.admin_option FROM pg_auth_members a "
                            "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
                            "WHERE m.rolname = 'adm_fn' AND r.rolname LIKE 'fn\\_%' ORDER BY 1").fetchall() == \
            [('fn_app', True), ('fn_group', True)]

    with inst.login('adm_fn', 'Fn-pass-1') as conn:
        conn.execute("SELECT pgdbaas.set_role_password('fn_app', 'App-pass-2')")
        conn.execute("SELECT pgdbaas.revoke_role('fn_group', 'fn_app')")
        conn.execute('DROP DATABASE fn_db')
        assert 'depend' in refused(conn, "SELECT pgdbaas.drop_role('fn_group')")  # owns fn_group_db
    assert inst.can_login('fn_app', 'App-pass-2') and not inst.can_login('fn_app', 'App-pass-1')
    assert role_facts(inst, 'fn_app')['member_of'] == []
    with inst.login('adm_fn', 'Fn-pass-1') as conn:
        conn.execute('DROP DATABASE fn_group_db')
        conn.execute("SELECT pgdbaas.drop_role('fn_app')")
        conn.execute("SELECT pgdbaas.drop_role('fn_group')")
        conn.execute('SELECT pgdbaas.create_role(%s, NULL)', ('fn' + HOSTILE,))  # kept literally
    assert not inst.role_exists('fn_app') and not inst.role_exists('fn_group')
    assert inst.role_exists('fn' + HOSTILE) and inst.sentinel_exists()


@pytest.fixture(scope='module')
def refusing(run_module, inst):
    """An admin with a role of its own (ref_r), a role it did not create (ref_other), another admin."""
    for name in ('adm_ref', 'adm_ref2'):
        admin(run_module, inst, name, 'Ref-pass-1')
    inst.create_role('ref_other', 'Other-pass-1')
    with inst.login('adm_ref', 'Ref-pass-1') as conn:
        conn.execute("SELECT pgdbaas.create_role('ref_r', 'R-pass-1')")
    return inst


@pytest.mark.parametrize('call', [
    "pgdbaas.create_role('pg_evil', 'x')",
    "pgdbaas.create_role('pgdbaas_evil', 'x')",
    "pgdbaas.create_role('PgDbAaS_Evil', 'x')",
    "pgdbaas.create_role('postgres', 'x')",
    "pgdbaas.create_role('public', 'x')",
    "pgdbaas.create_role('" + 'a' * 64 + "', 'x')",
    "pgdbaas.grant_role('pg_execute_server_program', 'adm_ref')",
    "pgdbaas.grant_role('pg_execute_server_program', 'ref_r')",
    "pgdbaas.grant_role('pg_read_server_files', 'ref_r')",
    "pgdbaas.grant_role('pg_write_server_files', 'ref_r')",
    "pgdbaas.grant_role('pgdbaas_role_manager', 'ref_r')",
    "pgdbaas.grant_role('pgdbaas_tenant_admin', 'ref_r')",
    "pgdbaas.grant_role('postgres', 'ref_r')",
    "pgdbaas.grant_role('ref_r', 'pg_execute_server_program')",
    "pgdbaas.grant_role('ref_r', 'postgres')",
    "pgdbaas.grant_role('ref_r', 'adm_ref2')",
    "pgdbaas.grant_role('ref_other', 'adm_ref')",
    "pgdbaas.set_role_password('postgres', 'x')",
    "pgdbaas.set_role_password('pgdbaas_role_manager', 'x')",
    "pgdbaas.set_role_password('adm_ref2', 'x')",
    "pgdbaas.set_role_password('ref_other', 'x')",
    "pgdbaas.drop_role('pgdbaas_role_manager')",
    "pgdbaas.drop_role('pgdbaas_tenant_admin')",
    "pgdbaas.drop_role('pg_monitor')",
    "pgdbaas.drop_role('adm_ref2')",
    "pgdbaas.drop_role('ref_other')",
    "pgdbaas.revoke_role('pg_read_all_data', 'adm_ref')",
    "pgdbaas.revoke_role('pgdbaas_tenant_admin', 'adm_ref2')",
])
def test_role_functions_refuse_service_and_foreign_roles(refusing, call):
    inst = refusing
    with inst.connect() as conn:
        before = conn.execute("SELECT array_agg((r.rolname, r.rolpassword, r.rolcanlogin, m.roleid::regrole::text) "
                              "ORDER BY r.rolname, m.roleid::regrole::text) FROM pg_authid r "
                              "LEFT JOIN pg_auth_members m ON m.member = r.oid").fetchone()[0]
    with inst.login('adm_ref', 'Ref-pass-1') as conn:
        message = refused(conn, 'SELECT ' + call)
    assert 'pgdbaas:' in message, message
    with inst.connect() as conn:
        after = conn.execute("SELECT array_agg((r.rolname, r.rolpassword, r.rolcanlogin, m.roleid::regrole::text) "
                             "ORDER BY r.rolname, m.roleid::regrole::text) FROM pg_authid r "
                             "LEFT JOIN pg_auth_members m ON m.member = r.oid").fetchone()[0]
    assert after == before


def test_role_functions_are_for_tenant_admins_only(refusing):
    inst = refusing
    # A role the admin made cannot call them (EXECUTE is for pgdbaas_tenant_admin only, not PUBLIC).
    with inst.login('ref_r', 'R-pass-1') as conn:
        assert 'permission denied' in refused(conn, "SELECT pgdbaas.create_role('ref_r2', 'x')")
    with inst.login('ref_other', 'Other-pass-1') as conn:
        assert 'permission denied' in refused(conn, "SELECT pgdbaas.set_role_password('ref_r', 'x')")
    assert not inst.role_exists('ref_r2')
    # Nor the internal helpers, not even an admin.
    with inst.login('adm_ref', 'Ref-pass-1') as conn:
        assert 'permission denied' in refused(conn, "SELECT pgdbaas.protected_reason('postgres')")


def test_update_removes_createrole_and_escalations(run_module, inst):
    """An admin made before these rules (CREATEROLE on 15) that used it to reach the OS."""
    make_admin_role(inst, 'adm_old', 'Old-pass-1', createrole=True)
    with inst.login('adm_old', 'Old-pass-1') as conn:
        conn.execute('GRANT pg_execute_server_program TO adm_old')  # what CREATEROLE allowed on 15
        conn.execute('CREATE ROLE adm_old_side')
        conn.execute('GRANT pg_read_server_files TO adm_old_side')
        conn.execute('GRANT adm_old_side TO adm_old')
        conn.execute("COPY (SELECT 1) TO PROGRAM 'cat >/dev/null'")

    result = admin(run_module, inst, 'adm_old', 'Old-pass-1', if_exists='update')
    assert result['changed'] is True and result['updated'] is True, result.get('msg')
    assert result['queries'] == [
        'ALTER ROLE "adm_old" WITH LOGIN CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
        'REVOKE "pg_execute_server_program" FROM "adm_old"',
        'REVOKE "pg_read_server_files" FROM "adm_old_side"']
    assert role_facts(inst, 'adm_old')['createrole'] is False
    with inst.login('adm_old', 'Old-pass-1') as conn:
        assert 'pg_execute_server_program' in refused(conn, "COPY (SELECT 1) TO PROGRAM 'cat >/dev/null'")
        assert 'pg_read_server_files' in refused(conn, "COPY pg_catalog.pg_am FROM '/etc/hostname'")
        assert 'permission denied to create role' in refused(conn, 'CREATE ROLE adm_old_more')
        assert 'must have admin option' in refused(conn, 'GRANT pg_execute_server_program TO adm_old')
    again = admin(run_module, inst, 'adm_old', 'Old-pass-1', if_exists='update')
    assert again['changed'] is False and again['queries'] == []
