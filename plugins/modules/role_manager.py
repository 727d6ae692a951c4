#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: role_manager
short_description: Install the functions tenant admins manage their roles with (schema pgdbaas)
description:
  - A tenant admin (M(dbaas.postgresql.admin)) has no C(CREATEROLE) before PostgreSQL 16, because
    there C(CREATEROLE) may grant any non-superuser role, C(pg_execute_server_program) included, whose
    C(COPY ... FROM PROGRAM) runs programs as the C(postgres) OS user. It manages roles with the
    functions of schema C(pgdbaas) instead, on every version (from 16 on it may also use
    C(CREATE ROLE), which then only administers the roles it created).
  - 'This module ensures, idempotently: the service role C(pgdbaas_role_manager) (C(NOLOGIN CREATEROLE
    CREATEDB NOINHERIT), never a member of anything it is given: any member is revoked); the group
    C(pgdbaas_tenant_admin) (C(NOLOGIN), no privilege but C(EXECUTE) on the functions below; tenant
    admins are its members); and in each of O(databases) the schema C(pgdbaas) (owned by the login
    superuser; C(USAGE) for those two roles only) with these functions, owned by
    C(pgdbaas_role_manager), C(SECURITY DEFINER), C(SET search_path = pg_catalog, pg_temp), C(EXECUTE)
    revoked from C(PUBLIC) and granted to C(pgdbaas_tenant_admin):'
  - C(pgdbaas.create_role(name text, password text, login boolean DEFAULT true, createdb boolean DEFAULT
    false)) creates the role C(NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS) and grants it to the
    caller (the session user) C(WITH ADMIN OPTION), so that the caller can make it own objects and
    databases and grant it further. C(name) must be 1-63 bytes and must not start with C(pg_) or
    C(pgdbaas_) (in any case) nor be C(postgres), C(public) or C(none). The password may be a SCRAM-SHA-256
    secret (as psql's C(\password) or libpq's C(PQencryptPasswordConn) make), so that the clear text
    reaches neither the server nor its logs; C(NULL) sets none.
  - C(pgdbaas.drop_role(name text)), C(pgdbaas.set_role_password(name text, password text)),
    C(pgdbaas.grant_role(role text, member text)) (C(GRANT role TO member)) and
    C(pgdbaas.revoke_role(role text, member text)) act only on a role the caller holds C(ADMIN OPTION) on
    (those it created with C(create_role)), never on a protected role - a reserved name as above, a
    superuser, replication or bypassrls role, or a role that is a member of a predefined C(pg_*) role
    (C(pg_database_owner) aside), of a C(pgdbaas_*) role or of a superuser; the member of C(grant_role)
    and C(revoke_role) is either the caller or a role that is not protected.
  - Every function fails with SQLSTATE C(42501) (or C(42939) for a reserved name) and a message starting
    with C(pgdbaas:) when it refuses, and only a member of C(pgdbaas_tenant_admin) (checked on the session
    user) may call them.
  - The functions live in the database C(postgres) (where every tenant admin may connect) and in
    C(template1), so that the databases created from C(template1) afterwards have them too; as roles
    are shared by the whole instance, calling them in any of these databases has the same effect.
options:
  databases:
    description:
      - Databases to install schema C(pgdbaas) and its functions in.
    type: list
    elements: str
    default: [postgres, template1]
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
  - O(login_user) must be a superuser (the default C(postgres) is).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Install the role-management functions of instance 15/tenant1
  dbaas.postgresql.role_manager:
    cluster: tenant1

# What a tenant admin then runs, connected to database postgres:
#   SELECT pgdbaas.create_role('app_owner', 'SCRAM-SHA-256$4096:...');
#   CREATE DATABASE app OWNER app_owner;
#   SELECT pgdbaas.create_role('app_ro', 's3cret', login => true);
#   SELECT pgdbaas.grant_role('app_ro', 'app_owner');
#   SELECT pgdbaas.set_role_password('app_ro', 'n3w-s3cret');
#   SELECT pgdbaas.drop_role('app_ro');
'''

RETURN = r'''
databases:
  description: The databases the functions were checked in.
  returned: always
  type: list
  elements: str
  sample: [postgres, template1]
queries:
  description: Statements run (or, in check mode, that would run); function bodies are not shown.
  returned: always
  type: list
  elements: str
  sample:
    - CREATE ROLE "pgdbaas_role_manager" WITH NOLOGIN NOSUPERUSER NOINHERIT CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS
    - CREATE SCHEMA "pgdbaas"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    check_object_name,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.role_manager import ensure_functions, ensure_roles


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(databases=dict(type='list', elements='str', default=['postgres', 'template1']))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    databases = module.params['databases']
    for name in databases:
        check_object_name(module, 'databases', name)
    inst = instance_controller(module).instance

    queries = []
    for index, dbname in enumerate(databases):
        with connect(module, inst, dbname) as conn:
            db = Executor(conn, module.check_mode, queries)
            try:
                with conn.transaction():
                    if index == 0:  # roles belong to the instance, not to a database
                        ensure_roles(db)
                    ensure_functions(db)
            except psycopg.Error as exc:
                module.fail_json(msg='Installing the role-management functions in database %r failed: %s'
                                 % (dbname, error_text(exc)), queries=queries, **inst.facts())
    module.exit_json(changed=bool(queries), databases=databases, queries=queries, **inst.facts())


if __name__ == '__main__':
    main()
