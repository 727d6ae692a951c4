#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: admin
short_description: Create the administrator role of a tenant's PostgreSQL instance
description:
  - Creates a C(LOGIN) role that manages the databases and roles of the instance
    (C(create_admin) of the pgdbaas API).
  - The role gets C(CREATEDB), membership in the predefined roles C(pg_read_all_data),
    C(pg_write_all_data), C(pg_monitor) and C(pg_signal_backend) (those the server version has) and in
    the group C(pgdbaas_tenant_admin), and C(CONNECT) on the database C(postgres). From PostgreSQL 16 on
    it also gets C(CREATEROLE); before 16 it gets C(NOCREATEROLE).
  - It is B(not) a superuser, on purpose, and never reaches the operating system. The DBaaS keeps
    superuser for itself, because a superuser, or a member of C(pg_execute_server_program),
    C(pg_read_server_files) or C(pg_write_server_files), reads and writes any file of the server and
    runs programs as the C(postgres) OS user (C(COPY ... FROM PROGRAM), C(pg_read_file), untrusted
    languages), so a tenant with it would control the host, the other instances on it and the
    service's own access. The predefined roles it gets give no file or program access; it cannot
    create functions in untrusted languages (C(c), C(internal), C(plpython3u), ...), which need a
    superuser.
  - Before PostgreSQL 16, C(CREATEROLE) may grant any non-superuser role, C(pg_execute_server_program)
    included, and alter or drop any non-superuser role, the service's included; so there the admin has
    no C(CREATEROLE) and manages roles with the functions of schema C(pgdbaas) that
    M(dbaas.postgresql.role_manager) installs (this module installs them in C(postgres) when missing),
    C(pgdbaas.create_role(name, password, login => true, createdb => false)), C(pgdbaas.drop_role(name)),
    C(pgdbaas.set_role_password(name, password)), C(pgdbaas.grant_role(role, member)) and
    C(pgdbaas.revoke_role(role, member)). A role made with C(create_role) is granted to the admin
    C(WITH ADMIN OPTION), so the admin can make it own databases and objects, grant it, and drop it or
    set its password with these functions; they refuse C(pg_*), C(pgdbaas_*), C(postgres), superuser,
    replication and bypassrls roles and members of C(pg_*) or service roles, and act only on roles the
    admin holds C(ADMIN OPTION) on.
  - From PostgreSQL 16 on, C(CREATEROLE) only administers the roles the admin created (it is granted
    them C(WITH ADMIN OPTION)) and cannot grant a predefined role it does not hold C(ADMIN OPTION) on,
    so there the admin may also use C(CREATE ROLE), C(ALTER ROLE), C(DROP ROLE) and C(GRANT) directly;
    the functions work the same on every version.
  - It is granted C(CONNECT) on the maintenance database C(postgres) by name, since the
    C(dbaas.postgresql.install) role takes C(CONNECT) on C(postgres) and C(template1) away from
    C(PUBLIC) (a per-database credential is refused there).
  - With O(if_exists=update), an existing admin is made consistent with the above, which on an instance
    made before these rules removes C(CREATEROLE) before PostgreSQL 16 and revokes any membership in
    C(pg_execute_server_program), C(pg_read_server_files), C(pg_write_server_files),
    C(pgdbaas_role_manager) or a superuser role held by the admin or by a role it is a member of.
  - The password is hashed with SCRAM-SHA-256 on the managed host by libpq
    (C(PQencryptPasswordConn), as psql's C(\password) does) and only the hash is sent, so the clear
    text password never reaches the server, its logs or C(pg_stat_activity).
options:
  user:
    description:
      - Name of the role, kept exactly as given (quoted as an identifier).
    type: str
    required: true
  password:
    description:
      - Password of the role. Must not be empty.
    type: str
    required: true
  if_exists:
    description:
      - What to do when the role already exists.
      - V(fail) fails with the message C(The user already exists) and changes nothing.
      - V(update) sets the password and ensures the attributes and memberships above (and revokes the
        forbidden ones, see the description). The password
        counts as changed only when it differs from the stored one (checked against the stored
        SCRAM secret; a non-ASCII password, or one the login user cannot read, is always set
        and reported as changed).
      - A superuser role is never managed by this module.
    type: str
    default: fail
    choices: [fail, update]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
attributes:
  check_mode:
    description: Reports what would change and the statements that would run; changes nothing.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Create the administrator of instance 15/tenant1
  dbaas.postgresql.admin:
    cluster: tenant1
    user: tenant_admin
    password: "{{ admin_password }}"

- name: Rotate its password
  dbaas.postgresql.admin:
    cluster: tenant1
    user: tenant_admin
    password: "{{ new_admin_password }}"
    if_exists: update
'''

RETURN = r'''
user:
  description: Name of the role.
  returned: always
  type: str
  sample: tenant_admin
created:
  description: Whether the role was created.
  returned: always
  type: bool
  sample: true
updated:
  description: Whether an existing role was changed (password, attributes or memberships).
  returned: always
  type: bool
  sample: false
password_changed:
  description: Whether the password was set to a new value.
  returned: always
  type: bool
  sample: true
queries:
  description: Statements run (or, in check mode, that would run), the password hash shown as C('********').
  returned: always
  type: list
  elements: str
  sample:
    - CREATE ROLE "tenant_admin" WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '********'
    - GRANT "pg_read_all_data", "pg_write_all_data", "pg_monitor", "pg_signal_backend", "pgdbaas_tenant_admin" TO "tenant_admin"
    - GRANT CONNECT ON DATABASE "postgres" TO "tenant_admin"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    alter_password,
    check_object_name,
    check_password,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
    scram_secret_matches,
    set_password,
    sql,
    stored_secret,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.role_manager import (
    FILE_AND_PROGRAM_ROLES,
    MANAGER,
    TENANT_ADMINS,
    ensure_functions,
    ensure_roles,
)

ADMIN_ROLES = ('pg_read_all_data', 'pg_write_all_data', 'pg_monitor', 'pg_signal_backend')
EXISTS_MESSAGE = 'The user already exists'
# From PostgreSQL 16 on, CREATEROLE only administers the roles its holder created.
SAFE_CREATEROLE = 160000

MAINTENANCE_DB = 'postgres'

ROLE = """
SELECT rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
       EXISTS (SELECT 1 FROM pg_database d,
                      aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
               WHERE d.datname = %s AND a.grantee = r.oid AND a.privilege_type = 'CONNECT') AS can_connect,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid) AS member_of
FROM pg_roles r WHERE rolname = %s
"""

# Memberships that must go: a forbidden role (file and program access, the role manager, a
# superuser) granted to the admin or to any role the admin is a member of (it could SET ROLE to it).
FORBIDDEN = """
SELECT g.rolname AS role, m.rolname AS member, gr.rolname AS grantor
FROM pg_auth_members a
JOIN pg_roles g ON g.oid = a.roleid
JOIN pg_roles m ON m.oid = a.member
LEFT JOIN pg_roles gr ON gr.oid = a.grantor
WHERE (g.rolname = ANY(%(forbidden)s) OR g.rolsuper) AND NOT m.rolsuper
  AND (m.rolname = %(user)s OR pg_has_role(%(user)s, m.oid, 'MEMBER'))
ORDER BY 1, 2
"""
STILL_REACHED = """
SELECT string_agg(g.rolname, ', ' ORDER BY g.rolname) AS roles FROM pg_roles g
WHERE (g.rolname = ANY(%(forbidden)s) OR g.rolsuper) AND g.rolname <> %(user)s
  AND pg_has_role(%(user)s, g.oid, 'MEMBER')
"""


def create_role(createrole):
    attributes = sql.SQL('CREATEROLE' if createrole else 'NOCREATEROLE')

    def statement(ident, password):
        return sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER CREATEDB {} NOREPLICATION NOBYPASSRLS "
                       "PASSWORD {}").format(ident, attributes, password)
    return statement


def revoke_forbidden(module, db, user, result):
    """Revoke the forbidden memberships the admin reaches; fail if one is still reached."""
    params = dict(forbidden=list(FILE_AND_PROGRAM_ROLES) + [MANAGER], user=user)
    granted_by = db.conn.info.server_version >= SAFE_CREATEROLE  # grants are per grantor from 16 on
    for row in db.rows(FORBIDDEN, params):
        statement = sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(row['role']), sql.Identifier(row['member']))
        if granted_by and row['grantor']:
            statement = sql.SQL("{} GRANTED BY {}").format(statement, sql.Identifier(row['grantor']))
        db.run(statement)
    if not db.check_mode:
        still = db.row(STILL_REACHED, params)['roles']
        if still:
            module.fail_json(msg='Role %r is still a member of %s after revoking its memberships: '
                                 'fix that by hand' % (user, still), queries=db.queries, **result)


def manage(module, db):
    user, password = module.params['user'], module.params['password']
    ident = sql.Identifier(user)
    result = dict(user=user, created=False, updated=False, password_changed=False)
    createrole = db.conn.info.server_version >= SAFE_CREATEROLE

    role = db.row(ROLE, (MAINTENANCE_DB, user))
    if role is not None and module.params['if_exists'] == 'fail':
        module.fail_json(msg=EXISTS_MESSAGE, queries=db.queries, **result)
    if role is not None and role['rolsuper']:
        module.fail_json(msg='Refusing to manage %r: it is a superuser role' % user, queries=db.queries, **result)

    # The role-management functions the admin uses (and the group that may execute them).
    ensure_roles(db)
    ensure_functions(db)
    first = len(db.queries)

    rows = db.rows("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ADMIN_ROLES),))
    available = {row['rolname'] for row in rows}
    wanted_roles = [name for name in ADMIN_ROLES if name in available] + [TENANT_ADMINS]

    if role is None:
        set_password(db, create_role(createrole), user, password)
        missing_roles = wanted_roles
        result.update(created=True, password_changed=True)
    else:
        if not (role['rolcanlogin'] and role['rolcreatedb'] and role['rolcreaterole'] == createrole
                and not role['rolreplication'] and not role['rolbypassrls']):
            db.run(sql.SQL("ALTER ROLE {} WITH LOGIN CREATEDB {} NOREPLICATION NOBYPASSRLS").format(
                ident, sql.SQL('CREATEROLE' if createrole else 'NOCREATEROLE')))
        if not scram_secret_matches(stored_secret(db, user), password):
            set_password(db, alter_password, user, password)
            result['password_changed'] = True
        missing_roles = [name for name in wanted_roles if name not in role['member_of']]

    if missing_roles:
        db.run(sql.SQL("GRANT {} TO {}").format(sql.SQL(', ').join(map(sql.Identifier, missing_roles)), ident))
    if role is not None:
        revoke_forbidden(module, db, user, result)
    # The install role takes CONNECT on the maintenance databases away from PUBLIC, so that a
    # per-database credential is refused there: an admin gets it by name.
    if role is None or not role['can_connect']:
        db.run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(MAINTENANCE_DB), ident))
    result['updated'] = not result['created'] and len(db.queries) > first
    return result


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        user=dict(type='str', required=True),
        password=dict(type='str', required=True, no_log=True),
        if_exists=dict(type='str', default='fail', choices=['fail', 'update']),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    check_object_name(module, 'user', module.params['user'])
    check_password(module, module.params['password'])
    inst = instance_controller(module).instance

    with connect(module, inst) as conn:
        db = Executor(conn, module.check_mode)
        try:
            with conn.transaction():  # the role and its memberships, or nothing
                result = manage(module, db)
        except psycopg.Error as exc:
            module.fail_json(msg='Managing role %r failed: %s' % (module.params['user'], error_text(exc)),
                             queries=db.queries)
    module.exit_json(changed=bool(db.queries), queries=db.queries, **result)


if __name__ == '__main__':
    main()
