#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: database
short_description: Create or drop a database of a PostgreSQL instance
description:
  - Ensures that a database of one instance of the Debian multi-instance layout is present, with the
    given owner, or absent.
  - The encoding and locale of an existing database cannot change; the module fails when they differ
    from the requested ones.
options:
  name:
    description:
      - Name of the database, kept exactly as given (quoted as an identifier).
    type: str
    required: true
  state:
    description:
      - V(present) creates the database when missing and sets its owner.
      - V(absent) terminates the sessions connected to the database and drops it
        (C(DROP DATABASE ... WITH (FORCE)) on PostgreSQL 13 and later).
    type: str
    default: present
    choices: [present, absent]
  if_exists:
    description:
      - What O(state=present) does when the database already exists.
      - V(update) brings it to the requested owner and connect restriction (idempotent).
      - V(fail) fails with the message C(The database already exists) and changes nothing.
    type: str
    default: update
    choices: [update, fail]
  if_absent:
    description:
      - What O(state=absent) does when the database does not exist.
      - V(ignore) succeeds without change; V(fail) fails with the message C(The database does not exist).
    type: str
    default: ignore
    choices: [ignore, fail]
  owner:
    description:
      - Role owning the database; it must exist. An existing database owned by another role is given
        to this one (C(ALTER DATABASE ... OWNER TO)).
      - When omitted, a new database is owned by O(login_user) and the owner of an existing one is kept.
    type: str
  encoding:
    description:
      - Character encoding of a new database.
    type: str
    default: UTF8
  locale:
    description:
      - Locale (C(LC_COLLATE) and C(LC_CTYPE)) of a new database. Defaults to that of O(template).
    type: str
  lc_collate:
    description:
      - Collation order (C(LC_COLLATE)) of a new database. Defaults to that of O(template).
    type: str
  lc_ctype:
    description:
      - Character classification (C(LC_CTYPE)) of a new database. Defaults to that of O(template).
    type: str
  template:
    description:
      - Template of a new database.
    type: str
    default: template0
  restrict_connect:
    description:
      - When V(true), only the owner (and roles granted C(CONNECT) explicitly, and superusers) may
        connect. C(PUBLIC) loses the C(CONNECT) privilege on the database and the owner is granted it
        if it lacks it. So the credentials of one database's owner cannot log into the other databases
        of the instance, which PostgreSQL allows by default.
      - V(false) leaves the privileges of the database untouched.
      - Applies to O(state=present) only.
    type: bool
    default: true
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
  - C(CREATE DATABASE) and C(DROP DATABASE) cannot run in a transaction; the module uses an
    autocommit connection.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Create the initial database of instance 15/tenant1, owned by its administrator
  dbaas.postgresql.database:
    cluster: tenant1
    name: app
    owner: tenant_admin

- name: Create a database with a given locale
  dbaas.postgresql.database:
    cluster: tenant1
    name: reports
    owner: tenant_admin
    locale: C.UTF-8

- name: Drop it, disconnecting its sessions
  dbaas.postgresql.database:
    cluster: tenant1
    name: reports
    state: absent
'''

RETURN = r'''
name:
  description: Name of the database.
  returned: always
  type: str
  sample: app
state:
  description: Whether the database is V(present) or V(absent) afterwards (in check mode, would be).
  returned: always
  type: str
  sample: present
owner:
  description: Owner of the database.
  returned: when O(state=present)
  type: str
  sample: tenant_admin
encoding:
  description: Character encoding of the database.
  returned: when O(state=present)
  type: str
  sample: UTF8
size_bytes:
  description: Size of the database; null in check mode when the database does not exist yet, 0 when absent.
  returned: always
  type: int
  sample: 7717379
queries:
  description: Statements run (or, in check mode, that would run), as composed before binding.
  returned: always
  type: list
  elements: str
  sample:
    - CREATE DATABASE "app" OWNER "tenant_admin" TEMPLATE "template0" ENCODING 'UTF8'
    - REVOKE CONNECT ON DATABASE "app" FROM PUBLIC
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
    sql,
)

DATABASE = """
SELECT pg_get_userbyid(datdba) AS owner, encoding, pg_encoding_to_char(encoding) AS encoding_name,
       datcollate AS lc_collate, datctype AS lc_ctype, pg_database_size(oid) AS size_bytes
FROM pg_database WHERE datname = %s
"""
CONNECT_GRANTEES = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = %s AND a.privilege_type = 'CONNECT'
"""
LOCALE_CLAUSES = (('locale', sql.SQL("LOCALE {}")), ('lc_collate', sql.SQL("LC_COLLATE {}")),
                  ('lc_ctype', sql.SQL("LC_CTYPE {}"))) if sql else ()
EXISTS_MESSAGE = 'The database already exists'
ABSENT_MESSAGE = 'The database does not exist'
TERMINATE = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE datname = %s AND pid <> pg_backend_pid()")


def same_locale(a, b):
    """Locale names equal up to the spelling of the codeset (en_US.UTF-8 = en_US.utf8)."""
    def norm(name):
        return name.lower().replace('-', '')
    return norm(a) == norm(b)


def check_unchangeable(module, db, current):
    """Fail when an existing database differs in what PostgreSQL cannot change."""
    params = module.params
    wanted = db.row("SELECT pg_char_to_encoding(%s) AS encoding", (params['encoding'],))['encoding']
    problems = []
    if wanted != current['encoding']:
        problems.append('encoding %s (requested %s)' % (current['encoding_name'], params['encoding']))
    for option, column in (('locale', 'lc_collate'), ('locale', 'lc_ctype'),
                           ('lc_collate', 'lc_collate'), ('lc_ctype', 'lc_ctype')):
        if params[option] and not same_locale(params[option], current[column]):
            problems.append('%s %s (requested %s)' % (column, current[column], params[option]))
    if problems:
        module.fail_json(msg='Database %r exists with %s; these cannot be changed'
                         % (params['name'], ', '.join(problems)), queries=db.queries)


def create(module, db, ident):
    params = module.params
    parts = [sql.SQL("CREATE DATABASE {}").format(ident)]
    if params['owner']:
        parts.append(sql.SQL("OWNER {}").format(sql.Identifier(params['owner'])))
    parts.append(sql.SQL("TEMPLATE {}").format(sql.Identifier(params['template'])))
    parts.append(sql.SQL("ENCODING {}").format(sql.Literal(params['encoding'])))
    for option, clause in LOCALE_CLAUSES:
        if params[option]:
            parts.append(clause.format(sql.Literal(params[option])))
    db.run(sql.SQL(' ').join(parts))


def restrict_connect(db, ident, owner, grantees):
    """Leave CONNECT to the owner only; grantees: current CONNECT grantees ('PUBLIC' included)."""
    if 'PUBLIC' in grantees:
        db.run(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(ident))
    if owner not in grantees:
        db.run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident, sql.Identifier(owner)))


def present(module, db):
    params = module.params
    name, owner = params['name'], params['owner']
    ident = sql.Identifier(name)
    current = db.row(DATABASE, (name,))
    if current is not None and params['if_exists'] == 'fail':
        module.fail_json(msg=EXISTS_MESSAGE, queries=db.queries)
    if owner and db.row("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)) is None:
        module.fail_json(msg='Role %r (owner) does not exist' % owner, queries=db.queries)
    if current is None:
        create(module, db, ident)
        new_owner = owner or db.row("SELECT current_user AS name")['name']
        # A new database has the default privileges: CONNECT for PUBLIC and the owner.
        grantees = {'PUBLIC', new_owner}
    else:
        check_unchangeable(module, db, current)
        new_owner = owner or current['owner']
        grantees = {row['grantee'] for row in db.rows(CONNECT_GRANTEES, (name,))}
        if new_owner != current['owner']:
            db.run(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(new_owner)))
            # The privileges of the old owner pass to the new one.
            if current['owner'] in grantees:
                grantees = (grantees - {current['owner']}) | {new_owner}

    if params['restrict_connect']:
        restrict_connect(db, ident, new_owner, grantees)

    final = db.row(DATABASE, (name,))
    if final is None:  # check mode, not created
        return dict(owner=new_owner, encoding=params['encoding'], size_bytes=None)
    return dict(owner=new_owner, encoding=final['encoding_name'], size_bytes=final['size_bytes'])


def absent(module, db):
    name = module.params['name']
    exists = db.row("SELECT 1 FROM pg_database WHERE datname = %s", (name,)) is not None
    if not exists and module.params['if_absent'] == 'fail':
        module.fail_json(msg=ABSENT_MESSAGE, queries=db.queries)
    if exists:
        db.run(TERMINATE, (name,))
        force = sql.SQL(" WITH (FORCE)") if db.conn.info.server_version >= 130000 else sql.SQL("")
        db.run(sql.SQL("DROP DATABASE {}{}").format(sql.Identifier(name), force))
    return dict(size_bytes=0)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        if_exists=dict(type='str', default='update', choices=['update', 'fail']),
        if_absent=dict(type='str', default='ignore', choices=['ignore', 'fail']),
        owner=dict(type='str'),
        encoding=dict(type='str', default='UTF8'),
        locale=dict(type='str'),
        lc_collate=dict(type='str'),
        lc_ctype=dict(type='str'),
        template=dict(type='str', default='template0'),
        restrict_connect=dict(type='bool', default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('locale', 'lc_collate'), ('locale', 'lc_ctype')])
    ensure_psycopg(module)
    for option in ('name', 'owner', 'template'):
        check_object_name(module, option, module.params[option])
    inst = instance_controller(module).instance
    state = module.params['state']

    with connect(module, inst) as conn:
        db = Executor(conn, module.check_mode)
        try:
            result = present(module, db) if state == 'present' else absent(module, db)
        except psycopg.Error as exc:
            module.fail_json(msg='Managing database %r failed: %s' % (module.params['name'], error_text(exc)),
                             queries=db.queries)
    module.exit_json(changed=bool(db.queries), name=module.params['name'], state=state,
                     queries=db.queries, **result)


if __name__ == '__main__':
    main()
