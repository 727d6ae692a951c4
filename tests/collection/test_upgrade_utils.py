# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of module_utils/upgrade.py: pg_upgrade's reason, the record, configuration edits."""

from __future__ import annotations

from ansible_collections.dbaas.postgresql.plugins.module_utils.upgrade import (
    controldata_fields,
    failure_message,
    lsn_value,
    output_reason,
    point_stanza,
    read_record,
    set_port,
    upgrade_port,
    write_record,
)

CHECK_OUTPUT = """Performing Consistency Checks on Old Live Server
------------------------------------------------
Checking cluster versions                                     ok
Checking for presence of required libraries                   fatal

Your installation references loadable libraries that are missing from the
new installation.  You can add these libraries to the new installation,
or remove the functions using them from the old installation.  A list of
problem libraries is in the file:
    /x/pg_upgrade_output.d/20261203T054000.000/loadable_libraries.txt
Failure, exiting
"""


def test_the_reason_starts_at_the_failed_check_and_the_report_files_are_read(tmp_path):
    reason = output_reason(CHECK_OUTPUT)
    assert reason.startswith('Checking for presence of required libraries')
    assert 'Checking cluster versions' not in reason and reason.endswith('Failure, exiting')
    report = tmp_path / 'data' / 'pg_upgrade_output.d' / '20261203T054000.000'
    report.mkdir(parents=True)
    (report / 'loadable_libraries.txt').write_text('could not load library "$libdir/pg_trgm": ERROR\n'
                                                   'In database: app\n')
    (report / 'log').mkdir()
    (report / 'log' / 'pg_upgrade_server.log').write_text('line 1\nline 2\n')
    msg = failure_message('pg_upgrade --check failed', CHECK_OUTPUT, '', [str(tmp_path)], server_logs=True)
    assert msg.startswith('pg_upgrade --check failed: Checking for presence of required libraries')
    assert 'loadable_libraries.txt:\ncould not load library "$libdir/pg_trgm"' in msg and 'In database: app' in msg
    assert 'last lines of pg_upgrade_server.log:\nline 1\nline 2' in msg


def test_without_a_fatal_line_the_last_lines_are_the_reason():
    assert output_reason('a\nb\n\n', 'c') == 'a\nb\nc'


def test_the_record_round_trips(tmp_path):
    assert read_record(str(tmp_path)) is None
    write_record(str(tmp_path), {'from_major': '15', 'lsn': '0/3000028'})
    assert read_record(str(tmp_path)) == {'from_major': '15', 'lsn': '0/3000028'}
    (tmp_path / 'pgdbaas-upgraded-from').write_text('[1]')
    assert read_record(str(tmp_path)) is None


def test_lsn_and_controldata():
    assert lsn_value('0/3000028') == 0x3000028 and lsn_value('1/0') == 1 << 32
    assert lsn_value('') is None and lsn_value('nope') is None
    fields = controldata_fields('Database cluster state:               shut down\n'
                                'Latest checkpoint location:           0/1A2B3C8\n')
    assert fields == {'Database cluster state': 'shut down', 'Latest checkpoint location': '0/1A2B3C8'}


def test_set_port_changes_the_active_line_only(tmp_path):
    conf = tmp_path / 'postgresql.conf'
    conf.write_text("#port = 5432\nport = 57700\t\t\t\t# (change requires restart)\nmax_connections = 100\n")
    assert set_port(str(conf), 57701) is True
    assert conf.read_text().splitlines()[:2] == ['#port = 5432', 'port = 57701\t\t\t\t# (change requires restart)']
    assert set_port(str(conf), 57701) is False
    bare = tmp_path / 'bare.conf'
    bare.write_text('max_connections = 100\n')
    assert set_port(str(bare), 6000) is True and 'port = 6000' in bare.read_text()


def test_point_stanza_rewrites_its_section_only(tmp_path):
    conf = tmp_path / 's.conf'
    conf.write_text('[other]\npg1-path=/keep\n[s]\npg1-path=/var/lib/postgresql/15/s\npg1-port=5432\nrepo1-path=/r\n')
    assert point_stanza(str(conf), 's', '/var/lib/postgresql/16/s', 5433) is True
    assert conf.read_text() == ('[other]\npg1-path=/keep\n[s]\npg1-path=/var/lib/postgresql/16/s\npg1-port=5433\n'
                                'repo1-path=/r\n')
    assert point_stanza(str(conf), 's', '/var/lib/postgresql/16/s', 5433) is False


def test_the_upgrade_port_is_never_the_instance_port():
    assert upgrade_port(5432) == 50432 and upgrade_port(50432) == 50433
