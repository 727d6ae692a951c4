# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.role_manager: schema pgdbaas and its functions in postgres and template1 (and so in
the databases created from template1), owned by the NOLOGIN service role, SECURITY DEFINER with a fixed
search_path, executable by tenant admins only; check mode, idempotence, tampering undone."""

from __future__ import annotations

import pytest

PORT = 55433
PUBLIC_FUNCTIONS = {'create_role', 'drop_role', 'set_role_password', 'grant_role', 'revoke_role'}
FUNCTIONS = """
SELECT p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner),
       has_function_privilege('pgdbaas_tenant_admin', p.oid, 'EXECUTE'),
       has_function_privilege('tmodrm_plain', p.oid, 'EXECUTE')
FROM pg_proc p WHERE p.pronamespace = 'pgdbaas'::regnamespace ORDER BY 1
"""


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmodrm', PORT)
    inst.create_role('tmodrm_plain', 'Plain-pass-1')
    return inst


def role_manager(run_module, inst, check=False):
    return run_module('role_manager', inst.args, check=check)


def functions(inst, dbname):
    with inst.connect(dbname) as conn:
        return {row[0]: row[1:] for row in conn.execute(FUNCTIONS)}


def test_check_mode_creates_nothing(run_module, inst):
    result = role_manager(run_module, inst, check=True)
    assert result['changed'] is True, result.get('msg')
    assert result['queries'][:2] == [
        'CREATE ROLE "pgdbaas_role_manager" WITH NOLOGIN NOSUPERUSER NOINHERIT CREATEDB CREATEROLE '
        'NOREPLICATION NOBYPASSRLS',
        'CREATE ROLE "pgdbaas_tenant_admin" WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        'NOBYPASSRLS']
    assert not inst.role_exists('pgdbaas_role_manager')
    with inst.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('pgdbaas')").fetchone() == (None,)


def test_install_then_nothing_to_do(run_module, inst):
    result = role_manager(run_module, inst)
    assert result['changed'] is True, result.get('msg')
    assert result['databases'] == ['postgres', 'template1']
    assert not any(q.startswith('DROP') for q in result['queries'])
    again = role_manager(run_module, inst)
    assert again['changed'] is False and again['queries'] == []

    with inst.connect() as conn:
        manager = conn.execute("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, "
                               "(SELECT count(*) FROM pg_auth_members WHERE roleid = r.oid) "
                               "FROM pg_roles r WHERE rolname = 'pgdbaas_role_manager'").fetchone()
        assert manager == (False, False, True, True, 0)
        assert conn.execute("SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'pgdbaas'").fetchone()[0] == \
            ['postgres=UC/postgres', 'pgdbaas_tenant_admin=U/postgres', 'pgdbaas_role_manager=U/postgres']
    for dbname in ('postgres', 'template1'):
        found = functions(inst, dbname)
        assert PUBLIC_FUNCTIONS <= set(found)
        for name, (definer, config, owner, admins, plain) in found.items():
            assert owner == 'pgdbaas_role_manager'
            assert config == ['search_path=pg_catalog, pg_temp']
            assert (definer, admins) == ((True, True) if name in PUBLIC_FUNCTIONS else (False, False)), name
            assert plain is False, name  # not PUBLIC


def test_databases_made_from_template1_have_the_functions(run_module, inst):
    role_manager(run_module, inst)
    with inst.connect() as conn:
        conn.execute('CREATE DATABASE tmodrm_db')
    assert functions(inst, 'tmodrm_db') == functions(inst, 'postgres')


def test_tampering_is_undone(run_module, inst):
    role_manager(run_module, inst)
    with inst.connect() as conn:
        conn.execute("CREATE OR REPLACE FUNCTION pgdbaas.grant_role(role text, member text) RETURNS void "
                     "LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE format('GRANT %I TO %I', role, member); "
                     "END $$")
        conn.execute('GRANT EXECUTE ON FUNCTION pgdbaas.drop_role(text) TO PUBLIC')
        conn.execute('GRANT CREATE ON SCHEMA pgdbaas TO tmodrm_plain')
        conn.execute('GRANT pgdbaas_role_manager TO tmodrm_plain')
        conn.execute('ALTER ROLE pgdbaas_role_manager LOGIN')
        conn.execute('CREATE FUNCTION pgdbaas.left_over() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$')
    result = role_manager(run_module, inst)
    assert result['changed'] is True, result.get('msg')
    assert 'REVOKE "pgdbaas_role_manager" FROM "tmodrm_plain"' in result['queries']
    assert 'DROP FUNCTION pgdbaas.left_over()' in result['queries']
    found = functions(inst, 'postgres')
    assert 'left_over' not in found
    assert found['grant_role'][:2] == (True, ['search_path=pg_catalog, pg_temp'])
    assert found['drop_role'][4] is False
    with inst.connect() as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'pgdbaas_role_manager'").fetchone() == \
            (False,)
        assert conn.execute("SELECT pg_has_role('tmodrm_plain', 'pgdbaas_role_manager', 'MEMBER'), "
                            "has_schema_privilege('tmodrm_plain', 'pgdbaas', 'CREATE')").fetchone() == (False, False)
        body = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = 'pgdbaas.grant_role(text, text)'::regprocedure")
        assert 'check_managed' in body.fetchone()[0]
    assert role_manager(run_module, inst)['changed'] is False
