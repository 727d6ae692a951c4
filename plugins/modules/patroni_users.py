#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: patroni_users
short_description: Make the database roles Patroni needs on an instance
description:
  - Before Patroni takes over an instance (role C(dbaas.postgresql.patroni)), gives its superuser a password
    and makes the replication role (C(LOGIN REPLICATION)) and the rewind role (C(LOGIN), C(EXECUTE) on
    C(pg_ls_dir), C(pg_stat_file) and C(pg_read_binary_file), what C(pg_rewind) needs of a non-superuser).
  - The rewind role is granted C(CONNECT) on the database C(postgres) by name, since the
    C(dbaas.postgresql.install) role takes C(CONNECT) away from C(PUBLIC); without it Patroni cannot check
    the new leader nor run C(pg_rewind), and a former leader never rejoins.
  - Idempotent; a password is set only when the stored SCRAM secret was not made from it; passwords are sent
    as SCRAM secrets computed on this host, never in clear text.
options:
  superuser:
    description: The superuser Patroni connects as.
    type: str
    default: postgres
  superuser_password:
    description: Its password.
    type: str
    required: true
  replication_user:
    description: The replication role.
    type: str
    default: pgdbaas_replicator
  replication_password:
    description: Its password.
    type: str
    required: true
  rewind_user:
    description: The rewind role.
    type: str
    default: pgdbaas_rewind
  rewind_password:
    description: Its password.
    type: str
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
attributes:
  check_mode:
    support: full
    description: Reports the statements it would run; runs none.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Runs on the leader (a replica is read-only).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Roles Patroni needs
  dbaas.postgresql.patroni_users:
    cluster: tenant1
    superuser_password: "{{ pg_superuser_password }}"
    replication_password: "{{ pg_replication_password }}"
    rewind_password: "{{ pg_rewind_password }}"
  no_log: true
'''

RETURN = r'''
queries:
  description: Statements run (passwords masked).
  returned: always
  type: list
  elements: str
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
    stored_secret,
)

REWIND_DATABASE = 'postgres'
REWIND_FUNCTIONS = (
    'pg_catalog.pg_ls_dir(text, boolean, boolean)',
    'pg_catalog.pg_stat_file(text, boolean)',
    'pg_catalog.pg_read_binary_file(text)',
    'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)',
)


def ensure_role(db, name, password, replication):
    sql = psycopg.sql
    row = db.row('SELECT rolcanlogin, rolreplication FROM pg_catalog.pg_roles WHERE rolname = %s', (name,))
    attrs = sql.SQL('LOGIN REPLICATION' if replication else 'LOGIN')
    if row is None:
        set_password(db, lambda ident, pw: sql.SQL('CREATE ROLE {} WITH {} PASSWORD {}').format(ident, attrs, pw),
                     name, password)
        return
    if not row['rolcanlogin'] or (replication and not row['rolreplication']):
        db.run(sql.SQL('ALTER ROLE {} WITH {}').format(sql.Identifier(name), attrs))
    if not scram_secret_matches(stored_secret(db, name), password):
        set_password(db, alter_password, name, password)


def manage(module, db):
    sql = psycopg.sql
    params = module.params
    if not scram_secret_matches(stored_secret(db, params['superuser']), params['superuser_password']):
        set_password(db, alter_password, params['superuser'], params['superuser_password'])
    ensure_role(db, params['replication_user'], params['replication_password'], True)
    ensure_role(db, params['rewind_user'], params['rewind_password'], False)
    exists = db.row('SELECT 1 AS ok FROM pg_catalog.pg_roles WHERE rolname = %s', (params['rewind_user'],))
    if not (exists and db.row('SELECT pg_catalog.has_database_privilege(%s, %s, %s) AS ok',
                              (params['rewind_user'], REWIND_DATABASE, 'CONNECT'))['ok']):
        db.run(sql.SQL('GRANT CONNECT ON DATABASE {} TO {}').format(sql.Identifier(REWIND_DATABASE),
                                                                    sql.Identifier(params['rewind_user'])))
    for function in REWIND_FUNCTIONS:
        if exists and db.row('SELECT pg_catalog.has_function_privilege(%s, %s, %s) AS ok',
                             (params['rewind_user'], function, 'EXECUTE'))['ok']:
            continue
        db.run(sql.SQL('GRANT EXECUTE ON FUNCTION {} TO {}').format(sql.SQL(function),
                                                                    sql.Identifier(params['rewind_user'])))


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        superuser=dict(type='str', default='postgres'),
        superuser_password=dict(type='str', required=True, no_log=True),
        replication_user=dict(type='str', default='pgdbaas_replicator'),
        replication_password=dict(type='str', required=True, no_log=True),
        rewind_user=dict(type='str', default='pgdbaas_rewind'),
        rewind_password=dict(type='str', required=True, no_log=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    for option in ('superuser', 'replication_user', 'rewind_user'):
        check_object_name(module, option, module.params[option])
    for option in ('superuser_password', 'replication_password', 'rewind_password'):
        check_password(module, module.params[option])
    inst = instance_controller(module).instance
    with connect(module, inst) as conn:
        db = Executor(conn, module.check_mode)
        try:
            with conn.transaction():
                manage(module, db)
        except psycopg.Error as exc:
            module.fail_json(msg='Making the roles of Patroni failed: %s' % error_text(exc), queries=db.queries)
    module.exit_json(changed=bool(db.queries), queries=db.queries)


if __name__ == '__main__':
    main()
