# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Where PostgreSQL extensions come from on Debian: the extensions of the PostgreSQL source tree
(contrib and core, shipped by postgresql-<major>; the postgresql-contrib package depends on it),
and a curated catalog of well-known third-party extensions packaged by Debian, with what they
need (a library in shared_preload_libraries, settings); and the extensions a tenant is never
given (DENIED_EXTENSIONS).

Plain Python (no ansible import), so that the pgdbaas API imports it as
``from plugins.module_utils.extensions import DENIED_EXTENSIONS, denied_reason``.
"""

from __future__ import annotations

import os

# The target database of the operation, as the value of a setting.
DATABASE = object()

CONTRIB_PACKAGE = 'postgresql-contrib'

_UNTRUSTED = ('untrusted language: its functions run any code in the server as the postgres OS user '
              '(server files, programs)')


def _transform(language):
    return 'transform for the untrusted language %s' % language


# Extensions that give whoever uses them the server's file system, programs or network position,
# which a tenant admin (pg_read_all_data, pg_write_all_data, no superuser) must never get:
# dbaas.postgresql.extension refuses them (and any extension requiring one of them, as CREATE
# EXTENSION ... CASCADE would create it) unless allow_untrusted is true, an administrator's decision.
# Considered and allowed: lo (large objects: server-side lo_import/lo_export stay superuser-only),
# xml2 (PostgreSQL's xslt_process forbids file and network access), pg_cron (its job table has
# row-level security: a job runs as the role that scheduled it), pageinspect, pg_surgery,
# pg_walinspect and the other contrib modules whose functions are superuser-only by default.
_DENIED = {
    'plpython3u': _UNTRUSTED, 'plpythonu': _UNTRUSTED, 'plpython2u': _UNTRUSTED, 'plperlu': _UNTRUSTED,
    'pltclu': _UNTRUSTED, 'plsh': _UNTRUSTED, 'plr': _UNTRUSTED,
    'pljava': 'creates the untrusted language javau, whose functions run any code in the server',
    'bool_plperlu': _transform('plperlu'), 'hstore_plperlu': _transform('plperlu'),
    'jsonb_plperlu': _transform('plperlu'),
    'hstore_plpython3u': _transform('plpython3u'), 'jsonb_plpython3u': _transform('plpython3u'),
    'ltree_plpython3u': _transform('plpython3u'),
    'hstore_plpythonu': _transform('plpythonu'), 'jsonb_plpythonu': _transform('plpythonu'),
    'ltree_plpythonu': _transform('plpythonu'),
    'hstore_plpython2u': _transform('plpython2u'), 'jsonb_plpython2u': _transform('plpython2u'),
    'ltree_plpython2u': _transform('plpython2u'),
    'file_fdw': 'reads server files and the output of programs (COPY ... FROM PROGRAM) as the postgres OS user',
    'adminpack': 'reads, writes, renames and removes server files',
    'ogr_fdw': 'reads server files and network sources through GDAL, from the server host',
    'multicorn': 'runs foreign data wrappers written in Python inside the server',
    'orafce': ('its utl_file package reads and writes server files in the directories listed in table '
               'utl_file.utl_file_dir, which a member of pg_write_all_data (a tenant admin) can fill'),
    'http': ('makes HTTP requests from the server host (to the services on its loopback addresses, the '
             'pgdbaas API included, and to cloud metadata endpoints)'),
    'dblink': ('connects, from the server host, to PostgreSQL servers: the other instances of the host on '
               '127.0.0.1 and ::1 are reached past their allowed addresses (PostgreSQL requires a password '
               'from non-superusers, so peer, ident and trust entries are not usable)'),
    'postgres_fdw': ('connects, from the server host, to PostgreSQL servers: the other instances of the host on '
                     '127.0.0.1 and ::1 are reached past their allowed addresses (PostgreSQL requires a password '
                     'from non-superusers, so peer, ident and trust entries are not usable)'),
}

# Names of the extensions a tenant is never given (see _DENIED for why).
DENIED_EXTENSIONS = frozenset(_DENIED)


def denied_reason(name):
    """Why extension name is denied to tenants, or None when it is not."""
    return _DENIED.get(name)


def denied_requirement(name, requires):
    """(denied extension, reason) that creating name would create, or None.

    requires maps an extension name to the names it requires (any version); followed transitively.
    """
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in _DENIED:
            return current, _DENIED[current]
        todo.extend(requires.get(current, ()))
    return None


def denied_message(name, requires=None):
    """Message refusing extension name (or one it requires), or None when it is allowed."""
    found = denied_requirement(name, requires or {})
    if found is None:
        return None
    denied, reason = found
    if denied == name:
        return 'extension "%s" is denied: %s' % (name, reason)
    return 'extension "%s" is denied: it requires extension "%s" (%s)' % (name, denied, reason)


# Extensions of the PostgreSQL source tree (major versions 13 to 18).
CONTRIB = frozenset((
    'adminpack', 'amcheck', 'autoinc', 'bloom', 'btree_gin', 'btree_gist', 'citext', 'cube', 'dblink',
    'dict_int', 'dict_xsyn', 'earthdistance', 'file_fdw', 'fuzzystrmatch', 'hstore', 'insert_username',
    'intagg', 'intarray', 'isn', 'lo', 'ltree', 'moddatetime', 'old_snapshot', 'pageinspect',
    'pg_buffercache', 'pg_freespacemap', 'pg_logicalinspect', 'pg_prewarm', 'pg_stat_statements',
    'pg_surgery', 'pg_trgm', 'pg_visibility', 'pg_walinspect', 'pgcrypto', 'pgrowlocks', 'pgstattuple',
    'plpgsql', 'postgres_fdw', 'refint', 'seg', 'sslinfo', 'tablefunc', 'tcn', 'tsm_system_rows',
    'tsm_system_time', 'unaccent', 'uuid-ossp', 'xml2',
))

# Contrib extensions that only work with their library in shared_preload_libraries.
CONTRIB_PRELOAD = {'pg_stat_statements': 'pg_stat_statements'}

# Pages of the PostgreSQL documentation not named after the extension (see contrib_link).
_DOC_PAGES = {
    'autoinc': 'contrib-spi', 'insert_username': 'contrib-spi', 'moddatetime': 'contrib-spi',
    'refint': 'contrib-spi', 'old_snapshot': 'oldsnapshot', 'plperlu': 'plperl', 'plpython3u': 'plpython',
    'pltclu': 'pltcl', 'bool_plperl': 'plperl', 'bool_plperlu': 'plperl', 'hstore_plperl': 'hstore',
    'hstore_plperlu': 'hstore', 'hstore_plpython3u': 'hstore', 'jsonb_plperl': 'datatype-json',
    'jsonb_plperlu': 'datatype-json', 'jsonb_plpython3u': 'datatype-json', 'ltree_plpython3u': 'ltree',
}


def _language(package, comment):
    return dict(package=package, comment=comment, link=None)


# Third-party extensions packaged by Debian (and the procedural languages of the source tree, which
# Debian ships in their own packages). package: Debian package ({version}: major version);
# preload: library needed in shared_preload_libraries; settings: set with it (restart);
# link: project page (None: the PostgreSQL documentation); comment: shown when not installed.
CATALOG = {
    'pg_cron': dict(package='postgresql-{version}-cron', preload='pg_cron',
                    settings={'cron.database_name': DATABASE},
                    link='https://github.com/citusdata/pg_cron', comment='Job scheduler for PostgreSQL'),
    'pgaudit': dict(package='postgresql-{version}-pgaudit', preload='pgaudit',
                    link='https://www.pgaudit.org/', comment='provides auditing functionality'),
    'postgis': dict(package='postgresql-{version}-postgis-3', link='https://postgis.net/',
                    comment='PostGIS geometry and geography spatial types and functions'),
    'postgis_raster': dict(package='postgresql-{version}-postgis-3', link='https://postgis.net/',
                           comment='PostGIS raster types and functions'),
    'postgis_topology': dict(package='postgresql-{version}-postgis-3', link='https://postgis.net/',
                             comment='PostGIS topology spatial types and functions'),
    'pg_repack': dict(package='postgresql-{version}-repack', link='https://reorg.github.io/pg_repack/',
                      comment='Reorganize tables in PostgreSQL databases with minimal locks'),
    'hypopg': dict(package='postgresql-{version}-hypopg', link='https://github.com/HypoPG/hypopg',
                   comment='Hypothetical indexes for PostgreSQL'),
    'pg_partman': dict(package='postgresql-{version}-partman', link='https://github.com/pgpartman/pg_partman',
                       comment='Extension to manage partitioned tables by time or ID'),
    'vector': dict(package='postgresql-{version}-pgvector', link='https://github.com/pgvector/pgvector',
                   comment='vector data type and ivfflat and hnsw access methods'),
    'pg_wait_sampling': dict(package='postgresql-{version}-pg-wait-sampling', preload='pg_wait_sampling',
                             link='https://github.com/postgrespro/pg_wait_sampling',
                             comment='sampling based statistics of wait events'),
    'pg_qualstats': dict(package='postgresql-{version}-pg-qualstats', preload='pg_qualstats',
                         link='https://github.com/powa-team/pg_qualstats',
                         comment='An extension collecting statistics about quals'),
    'orafce': dict(package='postgresql-{version}-orafce', link='https://github.com/orafce/orafce',
                   comment='Functions and operators that emulate a subset of functions and packages '
                           'from the Oracle RDBMS'),
    'ip4r': dict(package='postgresql-{version}-ip4r', link='https://github.com/RhodiumToad/ip4r',
                 comment='IPv4/v6 and IPv4/v6 range index type for PostgreSQL'),
    'pgtap': dict(package='postgresql-{version}-pgtap', link='https://pgtap.org/',
                  comment='Unit testing for PostgreSQL'),
    'plpgsql_check': dict(package='postgresql-{version}-plpgsql-check',
                          link='https://github.com/okbob/plpgsql_check',
                          comment='extended check for plpgsql functions'),
    'rum': dict(package='postgresql-{version}-rum', link='https://github.com/postgrespro/rum',
                comment='RUM index access method'),
    'plperl': _language('postgresql-plperl-{version}', 'PL/Perl procedural language'),
    'plperlu': _language('postgresql-plperl-{version}', 'PL/PerlU untrusted procedural language'),
    'bool_plperl': _language('postgresql-plperl-{version}', 'transform between bool and plperl'),
    'hstore_plperl': _language('postgresql-plperl-{version}', 'transform between hstore and plperl'),
    'jsonb_plperl': _language('postgresql-plperl-{version}', 'transform between jsonb and plperl'),
    'plpython3u': _language('postgresql-plpython3-{version}', 'PL/Python3U untrusted procedural language'),
    'hstore_plpython3u': _language('postgresql-plpython3-{version}', 'transform between hstore and plpython3u'),
    'jsonb_plpython3u': _language('postgresql-plpython3-{version}', 'transform between jsonb and plpython3u'),
    'ltree_plpython3u': _language('postgresql-plpython3-{version}', 'transform between ltree and plpython3u'),
    'pltcl': _language('postgresql-pltcl-{version}', 'PL/Tcl procedural language'),
    'pltclu': _language('postgresql-pltcl-{version}', 'PL/TclU untrusted procedural language'),
}


def contrib_link(name, major):
    """Page of the PostgreSQL documentation about an extension of the source tree.

    The pages drop the underscores of pg_* names (pg_trgm -> pgtrgm.html) and use hyphens in the
    others (btree_gin -> btree-gin.html); a few share a page (_DOC_PAGES).
    """
    page = _DOC_PAGES.get(name)
    if page is None:
        page = name.replace('_', '') if name.startswith('pg_') else name.replace('_', '-')
    return 'https://www.postgresql.org/docs/%s/%s.html' % (major, page)


def describe(name, major):
    """What is known about extension name for PostgreSQL major, or None.

    dict(package, preload_library, settings, link, comment); package None when unknown.
    """
    entry = CATALOG.get(name)
    if entry is not None:
        return dict(package=entry['package'].format(version=major), preload_library=entry.get('preload'),
                    settings=entry.get('settings', {}), link=entry['link'] or contrib_link(name, major),
                    comment=entry['comment'])
    if name in CONTRIB:
        return dict(package=CONTRIB_PACKAGE, preload_library=CONTRIB_PRELOAD.get(name), settings={},
                    link=contrib_link(name, major), comment=None)
    return None


def parse_apt_policy(text):
    """{package: (installed, installable)} from the output of `apt-cache policy pkg...` (LANG=C)."""
    packages = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(':'):
            current = line[:-1]
            packages[current] = [False, False]
        elif current is not None:
            key, dummy, value = line.strip().partition(':')
            value = value.strip()
            if key == 'Installed':
                packages[current][0] = value not in ('', '(none)')
            elif key == 'Candidate':
                packages[current][1] = value not in ('', '(none)')
    return {name: tuple(state) for name, state in packages.items()}


def parse_dpkg_search(text):
    """{path: package} from the output of `dpkg-query -S path...` (first package of each line)."""
    owners = {}
    for line in text.splitlines():
        packages, sep, path = line.partition(': ')
        if sep and path.startswith('/'):
            owners[path.strip()] = packages.split(',')[0].strip()
    return owners


def split_list(value):
    """Entries of a list setting such as shared_preload_libraries ('a, "b"' -> ['a', 'b'])."""
    entries = []
    for entry in (value or '').split(','):
        entry = entry.strip()
        if len(entry) >= 2 and entry[0] == entry[-1] == '"':
            entry = entry[1:-1]
        if entry:
            entries.append(entry)
    return entries


def library_file(pkglibdir, library):
    """Path of the shared library the server loads for a shared_preload_libraries entry."""
    if library.startswith('$libdir/'):
        library = library[len('$libdir/'):]
    path = library if os.path.isabs(library) else os.path.join(pkglibdir, library)
    return path if path.endswith('.so') else path + '.so'
