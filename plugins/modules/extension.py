#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: extension
short_description: List, create or drop the extensions of a database of a PostgreSQL instance
description:
  - V(listed) reports the extensions a database of one instance of the Debian multi-instance layout
    can have - those whose files are installed (C(pg_available_extensions)) and those of a curated
    catalog of well-known third-party extensions packaged by Debian (C(pg_cron), C(pgaudit),
    C(postgis), C(pg_repack), C(hypopg), C(pg_partman), C(vector), C(pg_wait_sampling), ...) whose
    package apt can install - with the Debian package providing each, whether it needs a library
    in C(shared_preload_libraries), and a documentation link.
  - V(present) creates the extensions in O(database). The module does not install packages; an
    extension whose files are not installed makes it fail (install the package first, e.g. with
    M(ansible.builtin.apt); RV(extensions[].package) of V(listed) names it).
  - An extension that needs a library in C(shared_preload_libraries) (C(pg_cron), C(pgaudit),
    C(pg_stat_statements), ...) gets it added to the configured list, keeping the existing entries
    (C(ALTER SYSTEM SET shared_preload_libraries)); C(pg_cron) also gets C(cron.database_name) set to
    O(database) (the one database of the instance where it runs its jobs).
  - The module never restarts the instance. When the running server has not loaded such a library, or
    runs with another value of such a setting, the extension is not created yet - its library loads
    only when the server starts - and is reported with RV(extensions[].state=pending_restart); the
    module then returns RV(pending_restart=true). Restart the instance once for all of them with
    M(dbaas.postgresql.service) (O(dbaas.postgresql.service#module:state=restarted)) and run this module
    again with the same options, which creates them (what the playbook C(install_extension.yml) does).
  - Then C(CREATE EXTENSION IF NOT EXISTS ... WITH SCHEMA ... CASCADE) (which creates the extensions it
    requires), with C(VERSION) when O(extension_version) is given; an extension installed at another
    version than O(extension_version) is updated (C(ALTER EXTENSION ... UPDATE TO)). The schema is the one
    the extension's control file fixes (C(plpgsql), C(pg_cron) - C(pg_catalog)), else O(schema); the
    statement always names it, since the module's sessions resolve names in C(pg_catalog) only.
  - V(absent) drops the extensions (C(DROP EXTENSION)); their libraries stay in
    C(shared_preload_libraries).
  - Extensions that would give a tenant the server's files, programs or network position are denied
    unless O(allow_untrusted=true) - the untrusted languages (C(plpython3u), C(plperlu), C(pltclu),
    C(plpythonu), C(plpython2u), C(plsh), C(plr), C(pljava)) and their transforms (C(hstore_plpython3u),
    C(jsonb_plperlu), ...), C(file_fdw), C(adminpack), C(ogr_fdw), C(multicorn), C(orafce) (its
    C(utl_file) package), C(http), C(dblink) and C(postgres_fdw) - and so is any extension requiring one
    of them (C(CASCADE) would create it). The list, with the reason of each, is C(DENIED_EXTENSIONS) of
    C(plugins/module_utils/extensions.py). V(present) fails before changing anything; V(listed) reports
    them as not installable, with the reason.
  - C(dblink) and C(postgres_fdw) are denied because they connect from the server host. PostgreSQL makes a
    non-superuser give a password the remote server asks for (so the C(peer) line for C(postgres) on the
    unix socket is not usable), but the other instances of the host are reached on 127.0.0.1 and ::1, past
    the addresses they allow.
options:
  database:
    description:
      - Database whose extensions are listed, created or dropped.
    type: str
    default: postgres
  name:
    description:
      - Names of the extensions.
      - With O(state=listed), the extensions to report on (each is reported, known or not); when
        omitted, every extension available or installable.
      - Required with O(state=present) and O(state=absent).
    type: list
    elements: str
  extension_version:
    description:
      - Version to create, or to update an installed extension to. Only with a single O(name) and
        O(state=present); it must be one of the versions the installed files provide.
      - When omitted, a new extension gets its default version and an installed one is left as it is.
      - (O(version) is the major version of the instance, as in the other modules.)
    type: str
  state:
    description:
      - V(listed) only reads (never changes anything); V(present) and V(absent) are described above.
      - When omitted, V(present) when O(name) is given, V(listed) otherwise.
    type: str
    choices: [present, absent, listed]
  schema:
    description:
      - With O(state=present), the schema a new extension is created in (it must exist), unless the
        extension's control file fixes its schema, which is then used. The extensions C(CASCADE) creates
        go there too (or to the schema their control file fixes).
    type: str
    default: public
  cascade:
    description:
      - With O(state=absent), also drop the objects that depend on the extensions (C(DROP EXTENSION
        ... CASCADE)). Without it, an extension other objects depend on is not dropped (the module fails).
    type: bool
    default: false
  allow_untrusted:
    description:
      - Create (V(present)) or report as installable (V(listed)) the denied extensions described above.
      - An administrator's decision for an instance whose users may all act as the C(postgres) OS user;
        never for a tenant.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dbaas.postgresql.instance
  - dbaas.postgresql.instance.login
attributes:
  check_mode:
    description: Reports what would change, the statements that would run and whether a restart would be pending.
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Whether a catalog package can be installed and whether a package is installed is read with one
    C(apt-cache policy) call for all the packages of interest; the owner of other installed extensions
    with one C(dpkg-query -S) call. Without these programs the catalog extensions that are not
    installed are left out.
  - Run as root, or as an OS user that O(login_user) may log in as (the library files are checked on the host).
author:
  - pgdbaas contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: What can database app of instance 15/tenant1 have?
  dbaas.postgresql.extension:
    cluster: tenant1
    database: app
    state: listed
  register: available

- name: Report on two extensions only
  dbaas.postgresql.extension:
    cluster: tenant1
    database: app
    name: [pg_cron, nosuchext]
    state: listed
  register: wanted

- name: Install the package of pg_cron
  ansible.builtin.apt:
    name: postgresql-15-cron
    update_cache: true
    cache_valid_time: 3600

- name: Create pg_trgm in app; configure the preloading of pg_cron (created after the restart)
  dbaas.postgresql.extension:
    cluster: tenant1
    database: app
    name: [pg_cron, pg_trgm]
  register: created

- name: Restart the instance to load pg_cron
  dbaas.postgresql.service:
    cluster: tenant1
    state: restarted
  when: created.pending_restart

- name: Create pg_cron
  dbaas.postgresql.extension:
    cluster: tenant1
    database: app
    name: [pg_cron, pg_trgm]
  when: created.pending_restart

- name: Update hstore to a given version
  dbaas.postgresql.extension:
    cluster: tenant1
    database: app
    name: [hstore]
    extension_version: '1.8'
'''

RETURN = r'''
extensions:
  description:
    - With O(state=listed), the extensions (sorted by name, or in the order of O(name)).
    - Otherwise the result for each extension of O(name).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the extension.
      type: str
    available:
      description: (listed) Whether its files are installed (it is in C(pg_available_extensions)).
      type: bool
    installable:
      description: (listed) Whether it is available or its package can be installed with apt.
      type: bool
    default_version:
      description: (listed) Version C(CREATE EXTENSION) installs; null when not available.
      type: str
    installed_version:
      description: (listed) Version created in O(database); null when not created there.
      type: str
    comment:
      description: (listed) Description of the extension.
      type: str
    preload_library:
      description: Library it needs in C(shared_preload_libraries), or null.
      type: str
    requires_restart:
      description:
        - (listed) Whether creating it needs a restart of the instance first, because the running server has
          not loaded its C(preload_library).
      type: bool
    package:
      description:
        - (listed) Debian package providing it (C(postgresql-<major>-cron), ...), C(postgresql-contrib) for the
          extensions of the PostgreSQL source tree, null when unknown.
      type: str
    package_installed:
      description: (listed) Whether that package is installed.
      type: bool
    link:
      description:
        - (listed) Documentation - C(https://www.postgresql.org/docs/<major>/<page>.html) for the extensions of
          the source tree, the project page of the others; null when unknown.
      type: str
    reason:
      description:
        - '(listed) When not installable, why, e.g. C(extension "nosuchext" is not available: no PostgreSQL package
          provides it); null otherwise.'
      type: str
    database:
      description: (present, absent) The database.
      type: str
    state:
      description:
        - (present, absent) State of the extension afterwards (in check mode, would be).
        - V(pending_restart) when it waits for a restart of the instance (see RV(pending_restart)).
      type: str
      choices: [present, absent, pending_restart]
    schema:
      description: (present) Schema it is created in (null when not created).
      type: str
    version:
      description: (present, absent) Version created afterwards (null when absent or, in check mode, not created yet).
      type: str
    previous_version:
      description: (present, absent) Version created before (null when absent).
      type: str
    created:
      description: (present) Whether it was created.
      type: bool
    updated:
      description: (present) Whether it was updated to O(extension_version).
      type: bool
    dropped:
      description: (absent) Whether it was dropped.
      type: bool
    pending_restart:
      description: (present) Whether it waits for a restart of the instance to load its C(preload_library).
      type: bool
  sample:
    - name: pg_cron
      available: true
      installable: true
      default_version: '1.4-1'
      installed_version: null
      comment: Job scheduler for PostgreSQL
      preload_library: pg_cron
      requires_restart: true
      package: postgresql-15-cron
      package_installed: true
      link: https://github.com/citusdata/pg_cron
      reason: null
state:
  description: The state acted on (V(listed) when O(state) and O(name) were omitted).
  returned: always
  type: str
  sample: listed
database:
  description: The database.
  returned: always
  type: str
  sample: app
pending_restart:
  description:
    - Whether extensions of O(name) wait for a restart of the instance (RV(extensions[].state=pending_restart)).
      Restart it with M(dbaas.postgresql.service) and run the module again.
  returned: always
  type: bool
  sample: false
queries:
  description: Statements run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
  sample:
    - ALTER SYSTEM SET shared_preload_libraries = 'pg_cron'
    - ALTER SYSTEM SET "cron"."database_name" = 'app'
    - CREATE EXTENSION IF NOT EXISTS "pg_trgm" WITH SCHEMA "public" CASCADE
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbaas.postgresql.plugins.module_utils.extensions import (
    CATALOG,
    DATABASE,
    denied_message,
    describe,
    library_file,
    parse_apt_policy,
    parse_dpkg_search,
    split_list,
)
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

AVAILABLE = """
SELECT a.name, a.default_version, a.installed_version, a.comment
FROM pg_available_extensions a ORDER BY a.name
"""
INSTALLED = """
SELECT e.extversion AS version, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s
"""
# The schema the control file fixes for the version CREATE EXTENSION installs (null: relocatable).
CONTROL_SCHEMA = """
SELECT v.schema FROM pg_available_extension_versions v JOIN pg_available_extensions a ON a.name = v.name
WHERE v.name = %(name)s AND v.version = coalesce(%(version)s, a.default_version)
"""
REQUIRES = "SELECT name, requires FROM pg_available_extension_versions WHERE requires IS NOT NULL"
NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$')


def server_dir(db, inst, name, fallback):
    """SHAREDIR or PKGLIBDIR of the server (pg_config view, superusers only), else the Debian path."""
    try:
        row = db.row("SELECT setting FROM pg_config WHERE name = %s", (name,))
    except psycopg.errors.InsufficientPrivilege:
        row = None
    return row['setting'] if row else fallback


def apt_policy(module, packages):
    """{package: (installed, installable)} with one apt-cache policy call; {} without apt-cache."""
    apt_cache = module.get_bin_path('apt-cache')
    if not apt_cache or not packages:
        return {}
    dummy, out, dummy = module.run_command([apt_cache, 'policy'] + sorted(packages),
                                           environ_update=dict(LANG='C', LC_ALL='C'))
    return parse_apt_policy(out)


def dpkg_owners(module, paths):
    """{path: package} with one dpkg-query -S call; {} without dpkg-query."""
    dpkg_query = module.get_bin_path('dpkg-query')
    if not dpkg_query or not paths:
        return {}
    dummy, out, dummy = module.run_command([dpkg_query, '-S'] + sorted(paths),
                                           environ_update=dict(LANG='C', LC_ALL='C'))
    return parse_dpkg_search(out)


def unavailable_reason(name, package, policy):
    if package is None:
        return 'extension "%s" is not available: no PostgreSQL package provides it' % name
    if package not in policy:
        return ('extension "%s" is not available: its package %s is not known to apt (apt-cache policy)'
                % (name, package))
    return 'extension "%s" is not available: apt cannot install its package %s (no candidate)' % (name, package)


def requirements(db):
    """{extension: set of the extensions any of its versions requires}."""
    requires = {}
    for row in db.rows(REQUIRES):
        requires.setdefault(row['name'], set()).update(row['requires'])
    return requires


def refusal(module, db, name, requires=None):
    """Why name may not be created (denied, or requiring a denied extension), or None."""
    if module.params['allow_untrusted']:
        return None
    return denied_message(name, requirements(db) if requires is None else requires)


def listed(module, inst, db):
    major = inst.version
    names = module.params['name']
    available = {row['name']: row for row in db.rows(AVAILABLE)}
    running = split_list(db.row("SELECT current_setting('shared_preload_libraries') AS v")['v'])
    if names is None:
        names = sorted(set(available) | set(CATALOG))
    known = {name: describe(name, major) for name in names}

    # Owners of the installed extensions neither in the catalog nor in the source tree.
    others = [name for name in names if name in available and known[name] is None]
    sharedir = server_dir(db, inst, 'SHAREDIR', os.path.join('/usr/share/postgresql', major))
    controls = {name: os.path.join(sharedir, 'extension', name + '.control') for name in others}
    owners = dpkg_owners(module, list(controls.values()))
    packages = {name: owners.get(controls[name]) for name in others}
    packages.update((name, info['package']) for name, info in known.items() if info)
    policy = apt_policy(module, {p for p in packages.values() if p})

    requires = requirements(db)
    extensions = []
    for name in names:
        row, info, package = available.get(name), known[name] or {}, packages.get(name)
        installed, candidate = policy.get(package, (False, False))
        denied = refusal(module, db, name, requires)
        installable = (row is not None or candidate) and denied is None
        if not installable and module.params['name'] is None:
            continue  # the full list shows what can be had
        preload = info.get('preload_library')
        extensions.append(dict(
            name=name, available=row is not None, installable=installable,
            default_version=row['default_version'] if row else None,
            installed_version=row['installed_version'] if row else None,
            comment=row['comment'] if row else info.get('comment'),
            preload_library=preload, requires_restart=bool(preload) and preload not in running,
            package=package, package_installed=installed, link=info.get('link'),
            reason=None if installable else denied or unavailable_reason(name, package, policy)))
    return dict(extensions=extensions)


def plan_preload(module, inst, db, names):
    """ALTER SYSTEM statements the extensions need, and which of them wait for a restart.

    Returns (statements, waiting) where waiting is the set of names whose library (or setting) the
    running server has not loaded: they can be created only once it restarted.
    """
    database = module.params['database']
    pkglibdir = server_dir(db, inst, 'PKGLIBDIR', os.path.join(os.path.dirname(inst.bindir), 'lib'))
    configured = split_list(inst.settings.get('shared_preload_libraries', ''))
    running = split_list(db.row("SELECT current_setting('shared_preload_libraries') AS v")['v'])
    merged = list(configured)
    settings = {}
    waiting = set()
    for name in names:
        info = describe(name, inst.version) or {}
        library = info.get('preload_library')
        if not library:
            continue
        if not os.path.isfile(library_file(pkglibdir, library)):
            module.fail_json(msg='extension "%s" needs library %s in shared_preload_libraries, which is not '
                             'installed (%s)' % (name, library, library_file(pkglibdir, library)))
        if library not in merged:
            merged.append(library)
        if library not in running:
            waiting.add(name)
        for setting, value in info.get('settings', {}).items():
            value = database if value is DATABASE else value
            check_single_database(module, inst, db, name, setting, value)
            settings[setting] = value
            current = db.row("SELECT current_setting(%s, true) AS v", (setting,))['v']
            if current != value:
                waiting.add(name)

    statements = []  # (statement, setting it needs defined in the session)
    if merged != configured:
        statements.append((sql.SQL("ALTER SYSTEM SET shared_preload_libraries = {}").format(
            sql.SQL(', ').join(map(sql.Literal, merged))), None))
    for setting, value in sorted(settings.items()):
        if inst.settings.get(setting.lower()) != value:
            statements.append((sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(*setting.split('.')),
                                                                          sql.Literal(value)), (setting, value)))
    return statements, waiting


def check_single_database(module, inst, db, name, setting, value):
    """An extension running in one database per instance (pg_cron) cannot move while created elsewhere."""
    current = db.row("SELECT current_setting(%s, true) AS v", (setting,))['v']
    if not current or current == value:
        return
    if db.row("SELECT 1 FROM pg_database WHERE datname = %s AND datallowconn", (current,)) is None:
        return
    with connect(module, inst, current) as conn:
        if Executor(conn).row(INSTALLED, (name,)) is not None:
            module.fail_json(msg='extension "%s" runs in one database per instance (%s) and is created in '
                             'database "%s": drop it there first' % (name, setting, current))


def present(module, inst, db, queries, result):
    params = module.params
    names, version = params['name'], params['extension_version']
    # Everything is checked before anything changes.
    requires = requirements(db)
    for name in names:
        denied = refusal(module, db, name, requires)
        if denied:
            module.fail_json(msg=denied, queries=queries, **result)
    available = {row['name']: row for row in db.rows(AVAILABLE)}
    for name in names:
        if name not in available:
            info = describe(name, inst.version)
            package = info['package'] if info else None
            module.fail_json(msg='extension "%s" is not available on instance %s: %s' % (
                name, inst.name, 'install package %s first' % package if package
                else 'no PostgreSQL package provides it'), queries=queries, **result)
    if version and db.row("SELECT 1 FROM pg_available_extension_versions WHERE name = %s AND version = %s",
                          (names[0], version)) is None:
        module.fail_json(msg='extension "%s" has no version %s on instance %s' % (names[0], version, inst.name),
                         queries=queries, **result)
    statements, waiting = plan_preload(module, inst, db, names)

    for statement, placeholder in statements:
        if placeholder:
            # Before PostgreSQL 17, ALTER SYSTEM only accepts a setting of a library the server has
            # not loaded yet (cron.database_name) once the session defines it as a placeholder.
            db.row("SELECT set_config(%s, %s, false)", placeholder)
        db.run(statement)
    result['pending_restart'] = bool(waiting)

    extensions = []
    for name in names:
        row = db.row(INSTALLED, (name,))
        before = row['version'] if row else None
        ident = sql.Identifier(name)
        entry = dict(name=name, database=params['database'], state='present', schema=row and row['schema'],
                     previous_version=before, version=before, created=False, updated=False,
                     pending_restart=name in waiting,
                     preload_library=(describe(name, inst.version) or {}).get('preload_library'))
        extensions.append(entry)
        if name in waiting:  # its library loads when the server starts: created after the restart
            entry['state'] = 'pending_restart'
            continue
        if before is None:
            control = db.row(CONTROL_SCHEMA, dict(name=name, version=version))
            schema = (control and control['schema']) or params['schema']
            statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(ident, sql.Identifier(schema))
            if version:
                statement += sql.SQL(" VERSION {}").format(sql.Literal(version))
            db.run(statement + sql.SQL(" CASCADE"))
            entry['created'] = True
        elif version and before != version:
            db.run(sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(ident, sql.Literal(version)))
            entry['updated'] = True
        row = db.row(INSTALLED, (name,))
        entry.update(version=row['version'] if row else None, schema=row['schema'] if row else None)
    result['extensions'] = extensions


def absent(module, db):
    params = module.params
    extensions = []
    for name in params['name']:
        row = db.row(INSTALLED, (name,))
        entry = dict(name=name, database=params['database'], state='absent', previous_version=row and row['version'],
                     version=None, dropped=False)
        if row is not None:
            statement = sql.SQL("DROP EXTENSION {}").format(sql.Identifier(name))
            db.run(statement + sql.SQL(" CASCADE") if params['cascade'] else statement)
            entry['dropped'] = True
        extensions.append(entry)
    return dict(extensions=extensions)


def main():
    argument_spec = instance_argument_spec()
    argument_spec.update(login_argument_spec())
    argument_spec.update(
        database=dict(type='str', default='postgres'),
        name=dict(type='list', elements='str'),
        extension_version=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent', 'listed']),
        schema=dict(type='str', default='public'),
        cascade=dict(type='bool', default=False),
        allow_untrusted=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_psycopg(module)
    params = module.params
    state = params['state'] or ('present' if params['name'] else 'listed')
    check_object_name(module, 'database', params['database'])
    check_object_name(module, 'schema', params['schema'])
    for name in params['name'] or []:
        if not NAME_RE.match(name):
            module.fail_json(msg='extension name %r is not valid' % name)
    if state != 'listed' and not params['name']:
        module.fail_json(msg='name is required with state=%s' % state)
    if params['extension_version'] is not None and (state != 'present' or len(params['name']) != 1):
        module.fail_json(msg='extension_version needs state=present and a single name')
    inst = instance_controller(module).instance

    queries = []
    result = dict(changed=False, state=state, database=params['database'], pending_restart=False, extensions=[])
    conn = connect(module, inst, params['database'])
    db = Executor(conn, module.check_mode, queries)
    try:
        if state == 'listed':
            result.update(listed(module, inst, db))
        elif state == 'present':
            present(module, inst, db, queries, result)
        else:
            result.update(absent(module, db))
    except psycopg.Error as exc:
        module.fail_json(msg='Managing extensions of database %r failed: %s' % (params['database'], error_text(exc)),
                         queries=queries, **result)
    finally:
        db.conn.close()
    result['changed'] = bool(queries)
    module.exit_json(queries=queries, **result)


if __name__ == '__main__':
    main()
