#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: user
short_description: Create, update or drop a login role scoped to one database of a PostgreSQL instance
description:
  - Manages a C(LOGIN) role of one instance of the Debian multi-instance layout that works with
    B(one) database (a credential of the pgdbaas API).
  - A role the module creates is C(LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS).
  - With O(database), it gets in that database C(CONNECT) and C(TEMPORARY) on the database,
    C(USAGE) and C(CREATE) on schema C(public), C(SELECT), C(INSERT), C(UPDATE), C(DELETE) on all
    tables (views, materialized views and foreign tables included) and C(USAGE), C(SELECT) on all
    sequences of C(public), and the same on the tables and sequences the database owner creates
    there later (C(ALTER DEFAULT PRIVILEGES FOR ROLE <database owner> IN SCHEMA public)). It is
    refused by the other databases of the instance as long as they do not grant C(CONNECT) to
    C(PUBLIC) (databases created by M(dbaas.postgresql.database) do not; C(postgres) and C(template1)
    do, unless that was revoked).
  - Only missing privileges are granted, so a second run changes nothing.
  - The password is hashed with SCRAM-SHA-256 on the managed host by libpq and only the hash is sent,
    so the clear text password never reaches the server, its logs or C(pg_stat_activity).
  - B(Dropping a role) (O(state=absent)) first forbids it to log in (C(NOLOGIN)) and ends its open
    sessions, then, when O(reassign_to) is given, runs C(REASSIGN OWNED BY <name> TO <reassign_to>)
    in O(database) (which also hands over the databases the role owns), then
    C(DROP OWNED BY <name>) in every database that is not a template where the role still owns
    objects or holds privileges (found in C(pg_shdepend)), which B(drops the objects it owns there)
    and revokes its privileges and default privileges, and finally C(DROP ROLE).
options:
  name:
    description:
      - Name of the role, kept exactly as given (quoted as an identifier).
    type: str
    required: true
  password:
    description:
      - Password of the role. Required with O(state=present); must not be empty.
    type: str
  database:
    description:
      - With O(state=present), the one database the role may connect to and work in; it must exist.
        The privileges listed above are granted there.
      - When omitted, an existing role only gets its password (and C(LOGIN)); no privilege is
        granted or changed (what resetting a password needs). A role that does not exist yet is
        then created with no privilege of its own (only those of C(PUBLIC)).
      - With O(state=absent), the database in which the objects of the role are reassigned
        (required with O(reassign_to)).
    type: str
  state:
    description:
      - V(present) creates or updates the role; V(absent) drops it as described above (nothing
        happens when it does not exist).
    type: str
    default: present
    choices: [present, absent]
  if_exists:
    description:
      - What O(state=present) does when the role already exists.
      - V(update) sets the password when it differs from the stored one (checked against the stored
        SCRAM secret; a non-ASCII password is always set and reported as changed), adds C(LOGIN)
        if missing and grants the missing privileges. The other attributes of an existing role are
        kept (a tenant administrator named here keeps what M(dbaas.postgresql.admin) gave it).
      - V(fail) fails with the message C(The user already exists) and changes nothing.
      - A superuser role is never managed by this module.
    type: str
    default: update
    choices: [fail, update]
  if_absent:
    description:
      - What O(state=present) does when the role does not exist.
      - V(create) creates it; V(fail) fails with the message C(User '<name>' does not exist) and changes
        nothing (for password resets).
    type: str
    default: create
    choices: [create, fail]
  terminate_sessions:
    description:
      - When the password of an existing role changes, end the sessions the role has open
        (waiting up to 5 seconds for each to exit), so the old password no longer gives access
        anywhere.
    type: bool
    default: false
  reassign_to:
    description:
      - With O(state=absent), the role that receives the objects of the dropped role in O(database)
        (C(REASSIGN OWNED)). It must exist.
    type: str
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
notes:
  - Default privileges apply to tables and sequences the database owner creates in C(public). Objects
    other roles create (this role may create its own, having C(CREATE) on C(public)) are not covered.
  - The role creation and the grants run in one transaction, in a connection to O(database).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: A credential for database app of instance 15/tenant1
  dbaas.postgresql.user:
    cluster: tenant1
    name: app_rw
    password: "{{ app_rw_password }}"
    database: app

- name: Give it a new password and end the sessions opened with the old one
  dbaas.postgresql.user:
    cluster: tenant1
    name: app_rw
    password: "{{ new_password }}"
    if_absent: fail
    terminate_sessions: true

- name: Drop it; the objects it created in app go to the database owner
  dbaas.postgresql.user:
    cluster: tenant1
    name: app_rw
    state: absent
    database: app
    reassign_to: app_owner
'''

RETURN = r'''
name:
  description: Name of the role.
  returned: always
  type: str
  sample: app_rw
database:
  description: Value of O(database) (null when not given).
  returned: always
  type: str
  sample: app
state:
  description: V(present) or V(absent), as requested (in check mode, what would be).
  returned: always
  type: str
  sample: present
created:
  description: Whether the role was created.
  returned: always
  type: bool
  sample: true
password_changed:
  description: Whether the password was set to a new value (true for a new role).
  returned: always
  type: bool
  sample: true
granted:
  description: Whether privileges were granted in O(database).
  returned: always
  type: bool
  sample: true
dropped:
  description: Whether the role was dropped.
  returned: always
  type: bool
  sample: false
terminated_sessions:
  description: Number of sessions of the role that were ended (would be, in check mode).
  returned: always
  type: int
  sample: 0
drop_owned_databases:
  description: With O(state=absent), the databases in which C(DROP OWNED) ran.
  returned: always
  type: list
  elements: str
  sample: [app]
queries:
  description:
    - Statements run (or, in check mode, that would run), as composed before binding, the password
      hash shown as C('********').
  returned: always
  type: list
  elements: str
  sample:
    - CREATE ROLE "app_rw" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '********'
    - GRANT CONNECT, TEMPORARY ON DATABASE "app" TO "app_rw"
    - GRANT USAGE, CREATE ON SCHEMA "public" TO "app_rw"
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
    terminate_role_sessions,
)

EXISTS_MESSAGE = 'The user already exists'

ROLE = "SELECT oid, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %s"
# Privileges of the role (by name; none when it does not exist yet) on this database and schema public.
DATABASE_PRIVILEGES = """
SELECT d.datdba AS owner_oid, pg_get_userbyid(d.datdba) AS owner,
       ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)) AS privileges
FROM pg_database d WHERE d.datname = current_database()
"""
SCHEMA_PRIVILEGES = """
SELECT n.oid,
       ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)) AS privileges
FROM pg_namespace n WHERE n.nspname = 'public'
"""
# Relations of schema public lacking one of the privileges (the owner has all of them by default).
RELATIONS_LACKING = """
SELECT count(*) AS n FROM pg_class c
WHERE c.relnamespace = %(nsp)s AND c.relkind = ANY(%(kinds)s)
  AND NOT %(privileges)s <@ ARRAY(
      SELECT a.privilege_type FROM aclexplode(coalesce(c.relacl, acldefault(%(objtype)s, c.relowner))) a
      WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s))
"""
DEFAULT_PRIVILEGES = """
SELECT ARRAY(SELECT a.privilege_type FROM pg_default_acl d, aclexplode(d.defaclacl) a
             WHERE d.defaclrole = %(owner)s AND d.defaclnamespace = %(nsp)s AND d.defaclobjtype = %(objtype)s
               AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)) AS privileges
"""
# Databases where the role owns objects or holds privileges (default privileges included).
DEPENDENT_DATABASES = """
SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = %s AND NOT d.datistemplate AND d.datallowconn
ORDER BY 1
"""

TABLE_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE']
SEQUENCE_PRIVILEGES = ['USAGE', 'SELECT']
# (kinds of pg_class, acldefault type, pg_default_acl type, privileges, GRANT ... ON ALL <word>)
RELATION_GRANTS = (
    (['r', 'p', 'v', 'm', 'f'], 'r', 'r', TABLE_PRIVILEGES, 'TABLES'),
    (['S'], 's', 'S', SEQUENCE_PRIVILEGES, 'SEQUENCES'),
)


def create_role(ident, password):
    return sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                   "PASSWORD {}").format(ident, password)


def privilege_list(names):
    return sql.SQL(', ').join(sql.SQL(name) for name in names)


def grant(db, name, database):
    """Grant the missing privileges of the scoped user in the connected database; True when any."""
    before = len(db.queries)
    role, ident = dict(role=name), sql.Identifier(name)
    current = db.row(DATABASE_PRIVILEGES, role)
    missing = [p for p in ('CONNECT', 'TEMPORARY') if p not in current['privileges']]
    if missing:
        db.run(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(privilege_list(missing), sql.Identifier(database),
                                                               ident))
    schema = db.row(SCHEMA_PRIVILEGES, role)
    if schema is not None:
        public = sql.Identifier('public')
        missing = [p for p in ('USAGE', 'CREATE') if p not in schema['privileges']]
        if missing:
            db.run(sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(privilege_list(missing), public, ident))
        for kinds, objtype, default_type, privileges, word in RELATION_GRANTS:
            lacking = db.row(RELATIONS_LACKING, dict(role, nsp=schema['oid'], kinds=kinds, objtype=objtype,
                                                     privileges=privileges))['n']
            if lacking:
                db.run(sql.SQL("GRANT {} ON ALL {} IN SCHEMA {} TO {}").format(
                    privilege_list(privileges), sql.SQL(word), public, ident))
            if current['owner'] == name:  # its own future objects: nothing to grant
                continue
            defaults = db.row(DEFAULT_PRIVILEGES, dict(role, owner=current['owner_oid'], nsp=schema['oid'],
                                                       objtype=default_type))['privileges']
            if not set(privileges) <= set(defaults):
                db.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON {} TO {}").format(
                    sql.Identifier(current['owner']), public, privilege_list(privileges), sql.SQL(word), ident))
    return len(db.queries) > before


def present(module, inst, queries, result):
    params = module.params
    name, password, database = params['name'], params['password'], params['database']
    with connect(module, inst, database or 'postgres') as conn:
        db = Executor(conn, module.check_mode, queries)
        with conn.transaction():  # the role and its privileges, or nothing
            role = db.row(ROLE, (name,))
            if role is None:
                if params['if_absent'] == 'fail':
                    module.fail_json(msg='User %r does not exist' % name, queries=queries, **result)
                set_password(db, create_role, name, password)
                result.update(created=True, password_changed=True)
            elif params['if_exists'] == 'fail':
                module.fail_json(msg=EXISTS_MESSAGE, queries=queries, **result)
            elif role['rolsuper']:
                module.fail_json(msg='Refusing to manage %r: it is a superuser role' % name, queries=queries,
                                 **result)
            else:
                if not role['rolcanlogin']:
                    db.run(sql.SQL("ALTER ROLE {} WITH LOGIN").format(sql.Identifier(name)))
                if not scram_secret_matches(stored_secret(db, name), password):
                    set_password(db, alter_password, name, password)
                    result['password_changed'] = True
            if database:
                result['granted'] = grant(db, name, database)
        if result['password_changed'] and not result['created'] and params['terminate_sessions']:
            result['terminated_sessions'] = terminate_role_sessions(db, name)


def absent(module, inst, queries, result):
    params = module.params
    name, database, reassign_to = params['name'], params['database'], params['reassign_to']
    ident = sql.Identifier(name)
    with connect(module, inst) as conn:
        db = Executor(conn, module.check_mode, queries)
        role = db.row(ROLE, (name,))
        if role is None:
            return
        if role['rolsuper']:
            module.fail_json(msg='Refusing to drop %r: it is a superuser role' % name, queries=queries, **result)
        if reassign_to and db.row("SELECT 1 FROM pg_roles WHERE rolname = %s", (reassign_to,)) is None:
            module.fail_json(msg='Role %r (reassign_to) does not exist' % reassign_to, queries=queries, **result)
        if database and db.row("SELECT 1 FROM pg_database WHERE datname = %s", (database,)) is None:
            module.fail_json(msg='Database %r does not exist' % database, queries=queries, **result)
        owned = [row['datname'] for row in db.rows("SELECT datname FROM pg_database WHERE datdba = %s ORDER BY 1",
                                                   (role['oid'],))]
        if owned and not reassign_to:
            module.fail_json(msg='Role %r owns database(s) %s: drop them first, or give reassign_to'
                             % (name, ', '.join(owned)), queries=queries, **result)
        targets = [row['datname'] for row in db.rows(DEPENDENT_DATABASES, (role['oid'],))]

        if role['rolcanlogin']:
            db.run(sql.SQL("ALTER ROLE {} WITH NOLOGIN").format(ident))
        result['terminated_sessions'] = terminate_role_sessions(db, name)
        if reassign_to:
            targets = [database] + [t for t in targets if t != database]
        for target in targets:
            with connect(module, inst, target) as target_conn:
                target_db = Executor(target_conn, module.check_mode, queries)
                with target_conn.transaction():
                    if reassign_to and target == database:
                        new_owner = sql.Identifier(reassign_to)
                        target_db.run(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, new_owner))
                    target_db.run(sql.SQL("DROP OWNED BY {}").format(ident))
            result['drop_owned_databases'].append(target)
        db.run(sql.SQL("DROP ROLE {}").format(ident))
        result['dropped'] = True


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        name=dict(type='str', required=True),
        password=dict(type='str', no_log=True),
        database=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        if_exists=dict(type='str', default='update', choices=['fail', 'update']),
        if_absent=dict(type='str', default='create', choices=['create', 'fail']),
        terminate_sessions=dict(type='bool', default=False),
        reassign_to=dict(type='str'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('state', 'present', ['password'])],
                           required_by={'reassign_to': 'database'})
    ensure_psycopg(module)
    params = module.params
    for option in ('name', 'database', 'reassign_to'):
        check_object_name(module, option, params[option])
    if params['state'] == 'present':
        check_password(module, params['password'])
    inst = instance_controller(module).instance

    queries = []
    result = dict(name=params['name'], database=params['database'], state=params['state'], created=False,
                  password_changed=False, granted=False, dropped=False, terminated_sessions=0,
                  drop_owned_databases=[])
    try:
        if params['state'] == 'present':
            present(module, inst, queries, result)
        else:
            absent(module, inst, queries, result)
    except psycopg.Error as exc:
        module.fail_json(msg='Managing user %r failed: %s' % (params['name'], error_text(exc)),
                         queries=queries, **result)
    module.exit_json(changed=bool(queries), queries=queries, **result)


if __name__ == '__main__':
    main()
