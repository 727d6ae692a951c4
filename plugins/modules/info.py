#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: info
short_description: Report the state, size, databases and roles of one PostgreSQL instance
description:
  - Read-only. Reports the run state of one instance of the Debian multi-instance layout and, when
    it runs, its server version, databases (with their extensions) and roles.
  - A stopped instance is reported from its configuration and data directory without failing.
  - The module fails only when the instance does not exist (RV(exists=false), RV(state=error)) or
    when a running instance refuses the connection.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
attributes:
  check_mode:
    description: The module never changes anything and runs in check mode too.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Listing extensions connects to every database that is not a template and allows connections.
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Describe instance 15/tenant1
  dbaas.postgresql.info:
    cluster: tenant1
  register: tenant1

- name: Show its databases
  ansible.builtin.debug:
    msg: "{{ tenant1.databases | map(attribute='name') }}"
'''

RETURN = r'''
exists:
  description: Whether the instance exists.
  returned: always
  type: bool
  sample: true
state:
  description: Run state of the instance, V(error) when it does not exist.
  returned: always
  type: str
  choices: [started, stopped, error]
  sample: started
version:
  description: Major version of the instance.
  returned: always
  type: str
  sample: '15'
cluster:
  description: Name of the instance.
  returned: always
  type: str
  sample: tenant1
server_version:
  description:
    - Version of the running server, or of the installed server binary when the instance is stopped.
  returned: when the instance exists
  type: str
  sample: '15.18'
port:
  description: Port of the instance.
  returned: when the instance exists
  type: int
  sample: 5433
data_directory:
  description: Data directory (from the server when it runs, else from the configuration).
  returned: when the instance exists
  type: str
  sample: /var/lib/postgresql/15/tenant1
size_bytes:
  description:
    - Sum of the sizes of all databases, templates included, when the instance runs.
    - Size of the files under the data directory (WAL included) when it is stopped.
  returned: when the instance exists
  type: int
  sample: 31487491
in_recovery:
  description:
    - Whether the server is in recovery (a standby). When stopped, whether a C(standby.signal) or
      C(recovery.signal) file would make it start in recovery.
  returned: when the instance exists
  type: bool
  sample: false
pending_restart:
  description:
    - Whether settings of the running server wait for a restart (written to its configuration files or
      with C(ALTER SYSTEM), applied only when it starts; what RDS calls pending-reboot). Restart with
      M(dbaas.postgresql.service). False when the instance is stopped.
  returned: when the instance exists
  type: bool
  sample: false
pending_restart_settings:
  description: Names of those settings (empty when the instance is stopped).
  returned: when the instance exists
  type: list
  elements: str
  sample: [shared_preload_libraries]
databases:
  description: Databases that are not templates (empty when the instance is stopped).
  returned: when the instance exists
  type: list
  elements: dict
  contains:
    name:
      description: Database name.
      type: str
    owner:
      description: Owning role.
      type: str
    encoding:
      description: Character encoding.
      type: str
    size_bytes:
      description: Size of the database.
      type: int
    extensions:
      description:
        - Installed extensions, each with C(name) and C(version).
        - Empty for databases that do not allow connections.
      type: list
      elements: dict
  sample: [{name: app, owner: app_owner, encoding: UTF8, size_bytes: 7717379,
            extensions: [{name: plpgsql, version: '1.0'}]}]
roles:
  description: Roles, without the predefined C(pg_*) roles (empty when the instance is stopped).
  returned: when the instance exists
  type: list
  elements: dict
  contains:
    name:
      description: Role name.
      type: str
    superuser:
      description: Whether the role is a superuser.
      type: bool
    createdb:
      description: Whether the role may create databases.
      type: bool
    createrole:
      description: Whether the role may create roles.
      type: bool
    login:
      description: Whether the role may log in.
      type: bool
    replication:
      description: Whether the role may start replication.
      type: bool
  sample: [{name: postgres, superuser: true, createdb: true, createrole: true, login: true, replication: true}]
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.instance import (
    instance_argument_spec,
    instance_controller,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import (
    Executor,
    connect,
    ensure_psycopg,
    error_text,
    login_argument_spec,
    psycopg,
)

DATABASES = """
SELECT d.datname AS name, pg_get_userbyid(d.datdba) AS owner,
       pg_encoding_to_char(d.encoding) AS encoding, pg_database_size(d.oid) AS size_bytes,
       d.datistemplate AS is_template, d.datallowconn AS allow_connections
FROM pg_database d ORDER BY d.datname
"""
ROLES = """
SELECT rolname AS name, rolsuper AS superuser, rolcreatedb AS createdb, rolcreaterole AS createrole,
       rolcanlogin AS login, rolreplication AS replication
FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname
"""
EXTENSIONS = "SELECT extname AS name, extversion AS version FROM pg_extension ORDER BY extname"


def version_text(version_num):
    """'15.18' from server_version_num 150018 (PostgreSQL 10 and later)."""
    return '%d.%d' % (version_num // 10000, version_num % 10000)


def directory_size(path):
    total = 0
    for root, dummy, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def binary_version(module, inst):
    """Version of the installed server binary, e.g. '15.18', or None."""
    postgres = os.path.join(inst.bindir, 'postgres')
    if not os.path.exists(postgres):
        return None
    rc, out, dummy = module.run_command([postgres, '--version'])
    words = out.split()
    return words[2] if rc == 0 and len(words) > 2 else None


def running_facts(module, ctl):
    inst = ctl.instance
    with connect(module, inst) as conn:
        db = Executor(conn)
        server = db.row("SELECT current_setting('server_version_num')::int AS num, "
                        "current_setting('data_directory') AS data_directory, "
                        "pg_is_in_recovery() AS in_recovery")
        all_databases = db.rows(DATABASES)
        roles = db.rows(ROLES)
        pending = ctl.pending_restart(db)
    databases = []
    for row in all_databases:
        if row['is_template']:
            continue
        extensions = []
        if row['allow_connections']:
            with connect(module, inst, row['name']) as dbconn:
                extensions = Executor(dbconn).rows(EXTENSIONS)
        databases.append(dict(name=row['name'], owner=row['owner'], encoding=row['encoding'],
                              size_bytes=row['size_bytes'], extensions=extensions))
    return dict(server_version=version_text(server['num']), data_directory=server['data_directory'],
                in_recovery=server['in_recovery'], size_bytes=sum(r['size_bytes'] for r in all_databases),
                databases=databases, roles=roles, pending_restart=bool(pending), pending_restart_settings=pending)


def stopped_facts(module, inst):
    datadir = inst.data_directory
    return dict(server_version=binary_version(module, inst), data_directory=datadir,
                in_recovery=any(os.path.exists(os.path.join(datadir, name))
                                for name in ('standby.signal', 'recovery.signal')),
                size_bytes=directory_size(datadir), databases=[], roles=[], pending_restart=False,
                pending_restart_settings=[])


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    ctl = instance_controller(module)
    inst = ctl.instance
    state = ctl.status()
    result = dict(changed=False, exists=True, state=state, **inst.facts())
    try:
        result.update(running_facts(module, ctl) if state == 'started' else stopped_facts(module, inst))
    except psycopg.Error as exc:
        module.fail_json(msg='Reading instance %s failed: %s' % (inst.name, error_text(exc)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
