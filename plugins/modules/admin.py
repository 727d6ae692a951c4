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
  - The role gets C(CREATEDB) and C(CREATEROLE) and membership in the predefined roles
    C(pg_read_all_data), C(pg_write_all_data), C(pg_monitor) and C(pg_signal_backend)
    (those the server version has). It is B(not) a superuser, on purpose. The DBaaS keeps
    superuser for itself, because a superuser can read and write any file of the server and run programs
    as the C(postgres) OS user (C(COPY ... FROM PROGRAM), C(pg_read_server_files), untrusted
    languages), so a tenant with superuser would control the host, the other instances on it and
    the service's own access. With these rights the administrator creates databases and roles,
    reads and writes all data, watches and cancels sessions, but cannot escape the database server.
  - It is granted C(CONNECT) on the maintenance database C(postgres) by name, since the
    C(dbaas.postgresql.install) role takes C(CONNECT) on C(postgres) and C(template1) away from
    C(PUBLIC) (a per-database credential is refused there).
  - Since PostgreSQL 16 a C(CREATEROLE) role administers only the roles it created (or was granted
    C(ADMIN OPTION) on); on earlier versions it may alter any non-superuser role. Making another role
    the owner of a database or object needs membership in that role (the administrator can
    C(GRANT) it to itself before PostgreSQL 16; from 16 on it is granted the roles it creates).
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
      - V(update) sets the password and ensures the attributes and memberships above. The password
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
    - CREATE ROLE "tenant_admin" WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE PASSWORD '********'
    - GRANT "pg_read_all_data", "pg_write_all_data", "pg_monitor", "pg_signal_backend" TO "tenant_admin"
    - GRANT CONNECT ON DATABASE "postgres" TO "tenant_admin"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    alter_password,
    check_object_name,
    check_password,
    connect,
    ensure_psycopg,
    error_text,
    instance_argument_spec,
    locate_instance,
    login_argument_spec,
    psycopg,
    scram_secret_matches,
    set_password,
    sql,
    stored_secret,
)

ADMIN_ROLES = ('pg_read_all_data', 'pg_write_all_data', 'pg_monitor', 'pg_signal_backend')
EXISTS_MESSAGE = 'The user already exists'

MAINTENANCE_DB = 'postgres'

ROLE = """
SELECT rolsuper, rolcanlogin AND rolcreatedb AND rolcreaterole AS has_attributes,
       EXISTS (SELECT 1 FROM pg_database d,
                      aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
               WHERE d.datname = %s AND a.grantee = r.oid AND a.privilege_type = 'CONNECT') AS can_connect,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid) AS member_of
FROM pg_roles r WHERE rolname = %s
"""


def create_role(ident, password):
    return sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE PASSWORD {}").format(ident, password)


def manage(module, db):
    user, password = module.params['user'], module.params['password']
    ident = sql.Identifier(user)
    result = dict(user=user, created=False, updated=False, password_changed=False)

    rows = db.rows("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ADMIN_ROLES),))
    available = {row['rolname'] for row in rows}
    wanted_roles = [name for name in ADMIN_ROLES if name in available]
    role = db.row(ROLE, (MAINTENANCE_DB, user))

    if role is None:
        set_password(db, create_role, user, password)
        missing_roles = wanted_roles
        result.update(created=True, password_changed=True)
    elif module.params['if_exists'] == 'fail':
        module.fail_json(msg=EXISTS_MESSAGE, queries=db.queries, **result)
    elif role['rolsuper']:
        module.fail_json(msg='Refusing to manage %r: it is a superuser role' % user, queries=db.queries, **result)
    else:
        if not role['has_attributes']:
            db.run(sql.SQL("ALTER ROLE {} WITH LOGIN CREATEDB CREATEROLE").format(ident))
        if not scram_secret_matches(stored_secret(db, user), password):
            set_password(db, alter_password, user, password)
            result['password_changed'] = True
        missing_roles = [name for name in wanted_roles if name not in role['member_of']]

    if missing_roles:
        db.run(sql.SQL("GRANT {} TO {}").format(sql.SQL(', ').join(map(sql.Identifier, missing_roles)), ident))
    # The install role takes CONNECT on the maintenance databases away from PUBLIC, so that a
    # per-database credential is refused there: an admin gets it by name.
    if role is None or not role['can_connect']:
        db.run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(MAINTENANCE_DB), ident))
    result['updated'] = not result['created'] and bool(db.queries)
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
    inst = locate_instance(module)

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
