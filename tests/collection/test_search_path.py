# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules connect as the superuser postgres to databases a tenant writes to. What the tenant
defines in schema public (functions and operators that match a call better than the catalog's,
CVE-2018-1058) must never run in those sessions: it would run as the superuser.

The tenant's objects record current_user into a table of its own when they run, and behave like
the catalog's otherwise (what an attacker would do). A session with PostgreSQL's default
search_path is shown to run them first, so the test fails if the modules' sessions did too.
"""

from __future__ import annotations

import pytest
from psycopg import sql

PORT = 56710
TENANT, TENANT_PASSWORD, APP = 'tmodsp_tenant', 'tmodsp-Secret-1', 'tmodsp_app'

# What a tenant owning database APP (and so its schema public) can create. acldefault(text, oid) and
# <@ (text[], text[]) are better matches than the catalog's acldefault("char", oid) and
# <@ (anyarray, anyarray) for calls with an untyped literal or parameter; the others are the
# classic shapes (an exact match in public of a call that needs a cast in pg_catalog).
SHADOWS = r'''
CREATE TABLE public.fired (who name, what text);
GRANT INSERT ON public.fired TO PUBLIC;
CREATE FUNCTION public.acldefault(text, oid) RETURNS aclitem[] LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, 'acldefault(text, oid)');
     SELECT pg_catalog.acldefault($1::"char", $2) $$;
CREATE FUNCTION public.pg_has_role(text, oid, text) RETURNS boolean LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, 'pg_has_role(text, oid, text)');
     SELECT pg_catalog.pg_has_role($1::name, $2, $3) $$;
CREATE FUNCTION public.lower(name) RETURNS text LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, 'lower(name)');
     SELECT pg_catalog.lower($1::text) $$;
CREATE FUNCTION public.contained(text[], text[]) RETURNS boolean LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, '<@ (text[], text[])');
     SELECT $1 OPERATOR(pg_catalog.<@) $2 $$;
CREATE OPERATOR public.<@ (LEFTARG = text[], RIGHTARG = text[], FUNCTION = public.contained);
CREATE FUNCTION public.name_eq_text(name, text) RETURNS boolean LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, '= (name, text)');
     SELECT $1::text OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.name_eq_text);
CREATE FUNCTION public.char_eq_text("char", text) RETURNS boolean LANGUAGE sql AS
  $$ INSERT INTO public.fired VALUES (current_user, '= ("char", text)');
     SELECT $1::text OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR public.= (LEFTARG = "char", RIGHTARG = text, FUNCTION = public.char_eq_text);
'''


@pytest.fixture(scope='module')
def inst(make_instance):
    inst = make_instance('tmodsp', PORT)
    with inst.connect() as conn:
        conn.execute(sql.SQL('CREATE ROLE {} LOGIN PASSWORD {}').format(sql.Identifier(TENANT),
                                                                        sql.Literal(TENANT_PASSWORD)))
        conn.execute(sql.SQL('CREATE DATABASE {} OWNER {}').format(sql.Identifier(APP), sql.Identifier(TENANT)))
    with inst.login(TENANT, TENANT_PASSWORD, APP) as conn:
        conn.execute(SHADOWS)
    return inst


def fired(inst):
    with inst.connect(APP) as conn:
        return conn.execute('SELECT who, what FROM public.fired ORDER BY what').fetchall()


def test_a_default_session_runs_the_tenant_objects(inst):
    """The objects are live: a superuser session with the default search_path runs them."""
    try:
        with inst.connect(APP) as conn:
            assert conn.execute("SELECT acldefault('d', 10) IS NOT NULL").fetchone() == (True,)
            assert conn.execute("SELECT %s <@ ARRAY['a', 'b']", (['a'],)).fetchone() == (True,)
        assert fired(inst) == [('postgres', '<@ (text[], text[])'), ('postgres', 'acldefault(text, oid)')]
    finally:
        with inst.connect(APP) as conn:
            conn.execute('TRUNCATE public.fired')


def test_modules_never_run_the_tenant_objects(run_module, inst):
    results = {
        'info': run_module('info', inst.args),
        'user': run_module('user', dict(inst.args, name='tmodsp_rw', database=APP),
                           secrets={'password': 'tmodsp-Secret-2'}),
        'database': run_module('database', dict(inst.args, name=APP, owner=TENANT)),
        'extension listed': run_module('extension', dict(inst.args, database=APP, state='listed')),
        'extension present': run_module('extension', dict(inst.args, database=APP, name=['pg_trgm'])),
        'user absent': run_module('user', dict(inst.args, name='tmodsp_rw', state='absent')),
    }
    for what, result in results.items():
        assert not result.get('failed'), (what, result.get('msg'))
    assert results['user']['granted'] is True and results['user absent']['dropped'] is True
    assert [db['name'] for db in results['info']['databases']] == ['postgres', APP]
    assert fired(inst) == []


def test_extensions_are_created_in_a_named_schema(run_module, inst):
    """With search_path pinned to pg_catalog, CREATE EXTENSION names its schema: public by default,
    the schema option otherwise, the control file's when it fixes one (plpgsql: pg_catalog)."""
    with inst.login(TENANT, TENANT_PASSWORD, APP) as conn:
        conn.execute('CREATE SCHEMA ext')
    result = run_module('extension', dict(inst.args, database=APP, name=['hstore'], schema='ext'))
    assert result['queries'] == ['CREATE EXTENSION IF NOT EXISTS "hstore" WITH SCHEMA "ext" CASCADE'], result
    cascaded = run_module('extension', dict(inst.args, database=APP, name=['earthdistance']))
    assert cascaded['queries'] == ['CREATE EXTENSION IF NOT EXISTS "earthdistance" WITH SCHEMA "public" CASCADE']
    with inst.connect(APP) as conn:
        conn.execute('DROP EXTENSION plpgsql CASCADE')
    fixed = run_module('extension', dict(inst.args, database=APP, name=['plpgsql'], schema='ext'))
    assert fixed['queries'] == ['CREATE EXTENSION IF NOT EXISTS "plpgsql" WITH SCHEMA "pg_catalog" CASCADE']
    with inst.connect(APP) as conn:
        schemas = dict(conn.execute('SELECT e.extname, n.nspname FROM pg_extension e '
                                    'JOIN pg_namespace n ON n.oid = e.extnamespace').fetchall())
    assert schemas == {'pg_trgm': 'public', 'hstore': 'ext', 'cube': 'public', 'earthdistance': 'public',
                       'plpgsql': 'pg_catalog'}
    assert fired(inst) == []
