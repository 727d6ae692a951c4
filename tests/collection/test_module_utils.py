# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure helpers of module_utils (the configuration reader, extensions, etcd key ranges, stanza names), on real files or none."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.dbaas.postgresql.plugins.module_utils.extensions import (
    contrib_link,
    describe,
    library_file,
    parse_apt_policy,
    parse_dpkg_search,
    split_list,
)
from ansible_collections.dbaas.postgresql.plugins.module_utils.patroni import etcd_ranges
from ansible_collections.dbaas.postgresql.plugins.module_utils.pgbackrest import stanza_of
from ansible_collections.dbaas.postgresql.plugins.module_utils.postgres import parse_conf


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_dir_overrides_in_file_order(tmp_path):
    conf = write(tmp_path / 'postgresql.conf', (
        "# comment = 1\n"
        "Port = 5432\t\t# trailing comment\n"
        "unix_socket_directories = '/run/a, /run/b'\n"
        "cluster_name = 'it''s \\\\ here'\n"
        "include_if_exists = 'missing.conf'\n"
        "include_dir = 'conf.d'\n"
        "shared_buffers = 1GB\n"))
    write(tmp_path / 'conf.d' / '01-port.conf', "port = 6000\nshared_buffers = '2GB'\n")
    write(tmp_path / 'conf.d' / '02-port.conf', "port 6001\n")
    write(tmp_path / 'conf.d' / 'ignored.txt', "port = 1\n")
    settings = parse_conf(conf)
    assert settings['port'] == '6001'  # conf.d is read where include_dir appears, sorted, last wins
    assert settings['shared_buffers'] == '1GB'  # set again after the include_dir line
    assert settings['unix_socket_directories'] == '/run/a, /run/b'
    assert settings['cluster_name'] == "it's \\ here"
    assert 'comment' not in settings


def test_include_is_relative_to_including_file(tmp_path):
    conf = write(tmp_path / 'main' / 'postgresql.conf', "include = '../extra/port.conf'\n")
    write(tmp_path / 'extra' / 'port.conf', "port = 7000\n")
    assert parse_conf(conf)['port'] == '7000'


def test_missing_include_is_an_error(tmp_path):
    conf = write(tmp_path / 'postgresql.conf', "include = 'nowhere.conf'\n")
    with pytest.raises(OSError):
        parse_conf(conf)


def test_apt_policy_output_is_parsed():
    text = ('postgresql-15-cron:\n  Installed: (none)\n  Candidate: 1.4.2-2+b1\n  Version table:\n'
            '     1.4.2-2+b1 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n'
            'postgresql-contrib:\n  Installed: 15+248+deb12u1\n  Candidate: 15+248+deb12u1\n'
            'postgresql-15-gone:\n  Installed: (none)\n  Candidate: (none)\n')
    assert parse_apt_policy(text) == {'postgresql-15-cron': (False, True), 'postgresql-contrib': (True, True),
                                      'postgresql-15-gone': (False, False)}


def test_dpkg_search_output_is_parsed():
    text = ('postgresql-15-ip4r: /usr/share/postgresql/15/extension/ip4r.control\n'
            'a, b: /usr/share/postgresql/15/extension/shared.control\n'
            'dpkg-query: no path found matching pattern /nowhere.control\n')
    assert parse_dpkg_search(text) == {'/usr/share/postgresql/15/extension/ip4r.control': 'postgresql-15-ip4r',
                                       '/usr/share/postgresql/15/extension/shared.control': 'a'}


def test_extension_descriptions():
    assert split_list(' pg_stat_statements, "pg_cron" ,,') == ['pg_stat_statements', 'pg_cron']
    assert library_file('/usr/lib/postgresql/15/lib', '$libdir/pg_cron') == '/usr/lib/postgresql/15/lib/pg_cron.so'
    assert library_file('/lib', '/opt/x.so') == '/opt/x.so'
    names = ('pg_trgm', 'pg_stat_statements', 'btree_gin', 'hstore', 'uuid-ossp', 'moddatetime')
    links = {name: contrib_link(name, '15') for name in names}
    assert links == {'pg_trgm': 'https://www.postgresql.org/docs/15/pgtrgm.html',
                     'pg_stat_statements': 'https://www.postgresql.org/docs/15/pgstatstatements.html',
                     'btree_gin': 'https://www.postgresql.org/docs/15/btree-gin.html',
                     'hstore': 'https://www.postgresql.org/docs/15/hstore.html',
                     'uuid-ossp': 'https://www.postgresql.org/docs/15/uuid-ossp.html',
                     'moddatetime': 'https://www.postgresql.org/docs/15/contrib-spi.html'}
    cron = describe('pg_cron', '16')
    assert cron['package'] == 'postgresql-16-cron' and cron['preload_library'] == 'pg_cron'
    assert describe('pg_stat_statements', '15')['package'] == 'postgresql-contrib'
    assert describe('pg_stat_statements', '15')['preload_library'] == 'pg_stat_statements'
    assert describe('nosuchext', '15') is None


def test_denied_extensions_import_without_ansible():
    """The API imports the deny list as plugins.module_utils.extensions, where ansible may be absent."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    code = ("import sys; sys.modules['ansible'] = None; sys.path.insert(0, %r)\n"
            "from plugins.module_utils.extensions import DENIED_EXTENSIONS, denied_reason\n"
            "print(sorted(DENIED_EXTENSIONS)); print(denied_reason('plpython3u'))" % str(repo))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    for name in ('plpython3u', 'plperlu', 'pltclu', 'plpythonu', 'plpython2u', 'file_fdw', 'adminpack', 'dblink',
                 'postgres_fdw', 'hstore_plpython3u', 'jsonb_plperlu'):
        assert repr(name) in out.splitlines()[0]
    assert 'untrusted language' in out.splitlines()[1]


def test_denied_extensions_and_their_dependents():
    from ansible_collections.dbaas.postgresql.plugins.module_utils.extensions import (
        DENIED_EXTENSIONS,
        denied_message,
    )
    assert isinstance(DENIED_EXTENSIONS, frozenset)
    for allowed in ('lo', 'pg_trgm', 'hstore', 'plpgsql', 'plperl', 'pltcl', 'pg_cron', 'xml2', 'pgcrypto'):
        assert allowed not in DENIED_EXTENSIONS and denied_message(allowed) is None
    assert denied_message('plpython3u').startswith('extension "plpython3u" is denied: untrusted language')
    # Followed through what each extension requires (CREATE EXTENSION ... CASCADE would create it).
    requires = {'myext': {'helper'}, 'helper': {'hstore', 'plperlu'}, 'loop': {'loop'}}
    assert denied_message('myext', requires).startswith(
        'extension "myext" is denied: it requires extension "plperlu" (untrusted language')
    assert denied_message('loop', requires) is None


def test_etcd_ranges_cover_a_prefix_but_the_kept_keys():
    assert etcd_ranges('/pgdbaas/t1/') == [(b'/pgdbaas/t1/', b'/pgdbaas/t10')]
    ranges = etcd_ranges('/pgdbaas/t1/', keep=['/pgdbaas/t1/config'])
    assert ranges == [(b'/pgdbaas/t1/', b'/pgdbaas/t1/config'), (b'/pgdbaas/t1/config\x00', b'/pgdbaas/t10')]

    def covered(key):
        return any(start <= key.encode() < end for start, end in ranges)
    for key in ('/pgdbaas/t1/leader', '/pgdbaas/t1/members/t1-m1', '/pgdbaas/t1/initialize', '/pgdbaas/t1/configx',
                '/pgdbaas/t1/a', '/pgdbaas/t1/zz'):
        assert covered(key), key
    for key in ('/pgdbaas/t1/config', '/pgdbaas/t10/leader', '/pgdbaas/t1', '/pgdbaas/t2/leader'):
        assert not covered(key), key


@pytest.mark.parametrize('given, expected', [(None, 'tenant1'), ('', 'tenant1'), ('scope-1', 'scope-1')])
def test_stanza_of_defaults_to_the_instance(given, expected):
    module = SimpleNamespace(params={'stanza': given}, fail_json=pytest.fail)
    assert stanza_of(module, SimpleNamespace(cluster='tenant1')) == expected


def test_stanza_of_refuses_a_name_that_is_not_one():

    class Failed(Exception):
        pass

    def fail_json(msg):
        raise Failed(msg)
    module = SimpleNamespace(params={'stanza': 'x --repo1-path=/tmp'}, fail_json=fail_json)
    with pytest.raises(Failed, match='stanza must be'):
        stanza_of(module, SimpleNamespace(cluster='tenant1'))
