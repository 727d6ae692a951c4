# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The configuration reader of module_utils/postgres.py, on real files."""

from __future__ import annotations

import pytest

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
