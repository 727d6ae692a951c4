# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The tenant admins' role-management path: schema pgdbaas and its SECURITY DEFINER functions.

A tenant admin never has CREATEROLE before PostgreSQL 16, where CREATEROLE may grant any
non-superuser role (pg_execute_server_program included: COPY ... FROM PROGRAM runs as the
postgres OS user). It manages roles with the functions of schema pgdbaas instead, on every
version:

    pgdbaas.create_role(name, password, login => true, createdb => false)
    pgdbaas.drop_role(name)
    pgdbaas.set_role_password(name, password)
    pgdbaas.grant_role(role, member)
    pgdbaas.revoke_role(role, member)

They are owned by the NOLOGIN service role pgdbaas_role_manager (CREATEROLE CREATEDB, no member
ever), run with search_path = pg_catalog, pg_temp, quote identifiers with format('%I') and values
with format('%L'), and only members of pgdbaas_tenant_admin may execute them (revoked from PUBLIC).
The rules are those of PostgreSQL 16's CREATEROLE, tightened:

- the session user must be a tenant admin (member of pgdbaas_tenant_admin);
- a new role's name must not start with pg_ or pgdbaas_ (any case) nor be postgres, public or
  none; it is created NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS and granted to the
  session user WITH ADMIN OPTION;
- the other functions act only on roles the session user holds ADMIN OPTION on (those it created
  with create_role), never on a protected role: a reserved name as above, a superuser, replication
  or bypassrls role, or a role that is a member of a predefined pg_* role (pg_database_owner
  aside), a pgdbaas_* role or a superuser; grant_role and revoke_role also refuse a protected
  member, the session user itself aside.

Plain SQL text and one function to install it, shared by the modules role_manager and admin.
"""

from __future__ import annotations

from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import sql

SCHEMA = 'pgdbaas'
MANAGER = 'pgdbaas_role_manager'
TENANT_ADMINS = 'pgdbaas_tenant_admin'
SEARCH_PATH = 'search_path=pg_catalog, pg_temp'
DATABASES = ('postgres', 'template1')

# Predefined roles whose members read or write the server's files or run programs as its OS user.
FILE_AND_PROGRAM_ROLES = ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')

_ATTRIBUTES = dict(
    manager="NOLOGIN NOSUPERUSER NOINHERIT CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS",
    tenant="NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
)
_ROLE_FLAGS = dict(
    manager=dict(rolcanlogin=False, rolsuper=False, rolinherit=False, rolcreatedb=True, rolcreaterole=True,
                 rolreplication=False, rolbypassrls=False),
    tenant=dict(rolcanlogin=False, rolsuper=False, rolcreatedb=False, rolcreaterole=False,
                rolreplication=False, rolbypassrls=False),
)

# (name, arguments as pg_get_function_arguments prints them, whether tenant admins execute it, body)
# Helpers (not executable by tenant admins) run as the owner, from inside the public functions.
_CALLER = r"""
BEGIN
  IF NOT pg_has_role(session_user, 'pgdbaas_tenant_admin', 'MEMBER') THEN
    RAISE EXCEPTION 'pgdbaas: role % is not a tenant admin', session_user USING ERRCODE = '42501';
  END IF;
END
"""

_RESERVED = r"""
BEGIN
  RETURN role_name IS NULL OR role_name = '' OR octet_length(role_name) > 63
      OR starts_with(lower(role_name), 'pg_') OR starts_with(lower(role_name), 'pgdbaas_')
      OR lower(role_name) IN ('postgres', 'public', 'none');
END
"""

_PROTECTED = r"""
DECLARE
  r record;
  holders text;
BEGIN
  IF pgdbaas.reserved_name(role_name) THEN
    RETURN format('role %I is reserved', role_name);
  END IF;
  SELECT oid, rolsuper, rolreplication, rolbypassrls INTO r FROM pg_roles WHERE rolname = role_name;
  IF NOT FOUND THEN
    RETURN format('role %I does not exist', role_name);
  END IF;
  IF r.rolsuper OR r.rolreplication OR r.rolbypassrls THEN
    RETURN format('role %I is a superuser, replication or bypassrls role', role_name);
  END IF;
  SELECT string_agg(quote_ident(g.rolname), ', ' ORDER BY g.rolname) INTO holders
  FROM pg_roles g
  WHERE g.oid <> r.oid AND g.rolname <> 'pg_database_owner'
    AND (starts_with(g.rolname, 'pg_') OR starts_with(lower(g.rolname), 'pgdbaas_') OR g.rolsuper)
    AND pg_has_role(r.oid, g.oid, 'MEMBER');
  IF holders IS NOT NULL THEN
    RETURN format('role %I is a member of %s', role_name, holders);
  END IF;
  RETURN NULL;
END
"""

_MANAGED = r"""
DECLARE
  reason text := pgdbaas.protected_reason(role_name);
BEGIN
  IF reason IS NULL AND NOT pg_has_role(session_user, role_name, 'MEMBER WITH ADMIN OPTION') THEN
    reason := format('role %I is not administered by %I (only roles made with pgdbaas.create_role are)',
                     role_name, session_user);
  END IF;
  IF reason IS NOT NULL THEN
    RAISE EXCEPTION 'pgdbaas: %', reason USING ERRCODE = '42501';
  END IF;
END
"""

_MEMBER = r"""
DECLARE
  reason text;
BEGIN
  IF role_name = session_user THEN
    RETURN;
  END IF;
  reason := pgdbaas.protected_reason(role_name);
  IF reason IS NOT NULL THEN
    RAISE EXCEPTION 'pgdbaas: %', reason USING ERRCODE = '42501';
  END IF;
END
"""

_CREATE = r"""
BEGIN
  PERFORM pgdbaas.check_caller();
  IF pgdbaas.reserved_name(name) THEN
    RAISE EXCEPTION 'pgdbaas: role name % is reserved (1-63 bytes, not pg_*, pgdbaas_*, postgres, public, none)',
      quote_nullable(name) USING ERRCODE = '42939';
  END IF;
  EXECUTE format('CREATE ROLE %I WITH %s NOSUPERUSER %s NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
                 name, CASE WHEN coalesce(login, true) THEN 'LOGIN' ELSE 'NOLOGIN' END,
                 CASE WHEN coalesce(createdb, false) THEN 'CREATEDB' ELSE 'NOCREATEDB' END, password);
  EXECUTE format('GRANT %I TO %I WITH ADMIN OPTION', name, session_user);
END
"""

_DROP = r"""
BEGIN
  PERFORM pgdbaas.check_caller();
  PERFORM pgdbaas.check_managed(name);
  EXECUTE format('DROP ROLE %I', name);
END
"""

_PASSWORD = r"""
BEGIN
  PERFORM pgdbaas.check_caller();
  PERFORM pgdbaas.check_managed(name);
  EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', name, password);
END
"""

_GRANT = r"""
BEGIN
  PERFORM pgdbaas.check_caller();
  PERFORM pgdbaas.check_managed(role);
  PERFORM pgdbaas.check_member(member);
  EXECUTE format('GRANT %I TO %I', role, member);
END
"""

_REVOKE = r"""
BEGIN
  PERFORM pgdbaas.check_caller();
  PERFORM pgdbaas.check_managed(role);
  PERFORM pgdbaas.check_member(member);
  EXECUTE format('REVOKE %I FROM %I', role, member);
END
"""

FUNCTIONS = (
    # name, arguments, returns, executable by tenant admins, SECURITY DEFINER, body
    ('check_caller', '', 'void', False, False, _CALLER),
    ('reserved_name', 'role_name text', 'boolean', False, False, _RESERVED),
    ('protected_reason', 'role_name text', 'text', False, False, _PROTECTED),
    ('check_managed', 'role_name text', 'void', False, False, _MANAGED),
    ('check_member', 'role_name text', 'void', False, False, _MEMBER),
    ('create_role', 'name text, password text, login boolean DEFAULT true, createdb boolean DEFAULT false',
     'void', True, True, _CREATE),
    ('drop_role', 'name text', 'void', True, True, _DROP),
    ('set_role_password', 'name text, password text', 'void', True, True, _PASSWORD),
    ('grant_role', 'role text, member text', 'void', True, True, _GRANT),
    ('revoke_role', 'role text, member text', 'void', True, True, _REVOKE),
)

_ROLES = """
SELECT rolname, rolcanlogin, rolsuper, rolinherit, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
       ARRAY(SELECT m.rolname::text FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member
             WHERE a.roleid = r.oid ORDER BY 1) AS members
FROM pg_roles r WHERE rolname = ANY(%s)
"""

_SCHEMA = """
SELECT n.nspname, o.rolsuper AS owner_is_superuser,
       ARRAY(SELECT coalesce(g.rolname, 'PUBLIC') || ':' || a.privilege_type
             FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
             LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.grantee <> n.nspowner ORDER BY 1) AS grants
FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner WHERE n.nspname = %s
"""

_FUNCS = """
SELECT p.oid::regprocedure::text AS signature, p.proname, pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS returns, p.prosrc, p.prosecdef, p.proconfig,
       l.lanname, pg_get_userbyid(p.proowner) AS owner,
       ARRAY(SELECT coalesce(g.rolname, 'PUBLIC') || ':' || a.privilege_type
             FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
             LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.grantee <> p.proowner ORDER BY 1) AS grants
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname = %s
"""


def identity_arguments(arguments):
    """The arguments that identify a function (DEFAULT clauses dropped), for ALTER and GRANT."""
    return ', '.join(arg.split(' DEFAULT ')[0] for arg in arguments.split(', ')) if arguments else ''


def ensure_roles(db):
    """The service role pgdbaas_role_manager (no member ever) and the group pgdbaas_tenant_admin."""
    found = {row['rolname']: row for row in db.rows(_ROLES, ([MANAGER, TENANT_ADMINS],))}
    for name, kind in ((MANAGER, 'manager'), (TENANT_ADMINS, 'tenant')):
        row = found.get(name)
        attributes = sql.SQL(_ATTRIBUTES[kind])
        if row is None:
            db.run(sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), attributes))
            continue
        if any(row[flag] != value for flag, value in _ROLE_FLAGS[kind].items()):
            db.run(sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(name), attributes))
        if kind == 'manager':
            for member in row['members']:
                db.run(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(name), sql.Identifier(member)))


def _create_function(db, name, arguments, returns, definer, body, replace):
    statement = sql.SQL("CREATE {replace}FUNCTION {schema}.{name}({arguments}) RETURNS {returns} "
                        "LANGUAGE plpgsql {security} SET search_path = pg_catalog, pg_temp AS {body}")
    parts = dict(replace=sql.SQL('OR REPLACE ' if replace else ''), schema=sql.Identifier(SCHEMA),
                 name=sql.Identifier(name), arguments=sql.SQL(arguments), returns=sql.SQL(returns),
                 security=sql.SQL('SECURITY DEFINER' if definer else 'SECURITY INVOKER'))
    db.run(statement.format(body=sql.Literal(body), **parts),
           shown=statement.format(body=sql.Literal('<body of %d characters>' % len(body)), **parts))


def ensure_functions(db):
    """Schema pgdbaas and its functions in the database of db (see the module docstring)."""
    schema = db.row(_SCHEMA, (SCHEMA,))
    ident = sql.Identifier(SCHEMA)
    if schema is None:
        db.run(sql.SQL("CREATE SCHEMA {}").format(ident))
        grants = []
    else:
        if not schema['owner_is_superuser']:
            db.run(sql.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(ident))
        grants = schema['grants']
    wanted = ['%s:USAGE' % TENANT_ADMINS, '%s:USAGE' % MANAGER]
    if sorted(grants) != sorted(wanted):
        db.run(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ident))
        for grantee in sorted({grant.split(':')[0] for grant in grants} - {'PUBLIC'}):
            db.run(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(ident, sql.Identifier(grantee)))
        db.run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(ident, sql.Identifier(TENANT_ADMINS),
                                                                    sql.Identifier(MANAGER)))

    existing = {} if schema is None else {row['proname']: row for row in db.rows(_FUNCS, (SCHEMA,))}
    wanted_names = {spec[0] for spec in FUNCTIONS}
    for row in existing.values():  # left by an older version of this module
        if row['proname'] not in wanted_names:
            db.run(sql.SQL("DROP FUNCTION {}").format(sql.SQL(row['signature'])))
    for name, arguments, returns, public, definer, body in FUNCTIONS:
        row = existing.get(name)
        if row is not None and (row['arguments'] != arguments or row['returns'] != returns
                                or row['lanname'] != 'plpgsql'):
            db.run(sql.SQL("DROP FUNCTION {}").format(sql.SQL(row['signature'])))
            row = None
        if row is None or row['prosrc'] != body or row['prosecdef'] != definer \
                or (row['proconfig'] or []) != [SEARCH_PATH]:
            _create_function(db, name, arguments, returns, definer, body, replace=row is not None)
        function = sql.SQL("{}.{}({})").format(ident, sql.Identifier(name), sql.SQL(identity_arguments(arguments)))
        if row is None or row['owner'] != MANAGER:
            db.run(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(function, sql.Identifier(MANAGER)))
        grants = [] if row is None else row['grants']
        wanted = ['%s:EXECUTE' % TENANT_ADMINS] if public else []
        if row is None or sorted(grants) != wanted:
            db.run(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function))
            for grantee in sorted({grant.split(':')[0] for grant in grants} - {'PUBLIC', TENANT_ADMINS}):
                db.run(sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(function, sql.Identifier(grantee)))
            if public:
                db.run(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, sql.Identifier(TENANT_ADMINS)))
