# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbaas.postgresql.service: every transition, with the state checked independently afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

PORT = 55410
SOCKET_DIR = '/var/run/postgresql'


@pytest.fixture(scope='module')
def inst(make_instance):
    return make_instance('tmodsvc', PORT)


def service(run_module, inst, state, check=False):
    return run_module('service', dict(inst.args, state=state), check=check)


def accepts_connections(inst):
    try:
        with inst.connect() as conn:
            return conn.execute('SELECT 1').fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def session_setting(inst, name):
    with inst.connect() as conn:
        return conn.execute('SELECT current_setting(%s)', (name,)).fetchone()[0]


def test_start_stopped_instance(run_module, inst):
    inst.stop()
    result = service(run_module, inst, 'started')
    assert result['changed'] is True
    assert result['state'] == 'started'
    assert result['accepting_connections'] is True
    assert result['port'] == PORT
    assert inst.running() and accepts_connections(inst)


def test_start_started_instance_is_unchanged(run_module, inst):
    inst.start()
    pid = inst.postmaster_pid()
    result = service(run_module, inst, 'started')
    assert result['changed'] is False
    assert result['state'] == 'started'
    assert result['commands'] == []
    assert inst.postmaster_pid() == pid


def test_check_mode_stop_does_nothing(run_module, inst):
    inst.start()
    pid = inst.postmaster_pid()
    result = service(run_module, inst, 'stopped', check=True)
    assert result['changed'] is True
    assert result['state'] == 'started'
    assert inst.running() and inst.postmaster_pid() == pid


def test_restart_running_instance(run_module, inst):
    inst.start()
    pid = inst.postmaster_pid()
    result = service(run_module, inst, 'restarted')
    assert result['changed'] is True
    assert result['state'] == 'started'
    assert inst.running() and accepts_connections(inst)
    assert inst.postmaster_pid() != pid
    assert '-m fast' in result['commands'][0]


def test_pg_ctlcluster_manages_instance_after_module_restart(run_module, inst):
    service(run_module, inst, 'restarted')
    subprocess.run(['pg_ctlcluster', inst.version, inst.cluster, 'restart'], check=True, capture_output=True)
    status = subprocess.run(['pg_lsclusters', '--no-header', inst.version, inst.cluster],
                            check=True, capture_output=True, text=True).stdout.split()
    assert status[3] == 'online'
    assert accepts_connections(inst)


def test_reload_running_instance(run_module, inst):
    inst.start()
    pid = inst.postmaster_pid()
    inst.write_conf('tmod-reload.conf', {'work_mem': '7MB'})
    try:
        result = service(run_module, inst, 'reloaded')
        assert result['changed'] is True
        assert result['state'] == 'started'
        assert inst.postmaster_pid() == pid
        # The postmaster rereads its configuration when signalled, asynchronously: watch new
        # sessions until one sees the new value (no sleep; bounded by a deadline).
        deadline = time.monotonic() + 10
        while session_setting(inst, 'work_mem') != '7MB':
            assert time.monotonic() < deadline, 'configuration was not reloaded'
    finally:
        (inst.conf_dir / 'conf.d' / 'tmod-reload.conf').unlink()


def test_reload_reports_the_settings_a_restart_applies(run_module, inst):
    inst.start()
    pid = inst.postmaster_pid()
    inst.write_conf('tmod-pending.conf', {'max_connections': '37', 'work_mem': '9MB'})
    try:
        reloaded = service(run_module, inst, 'reloaded')
        assert reloaded['pending_restart'] is True and reloaded['pending_restart_settings'] == ['max_connections']
        assert inst.postmaster_pid() == pid and session_setting(inst, 'max_connections') == '100'
        restarted = service(run_module, inst, 'restarted')
        assert restarted['pending_restart'] is False and restarted['pending_restart_settings'] == []
        assert inst.postmaster_pid() != pid and session_setting(inst, 'max_connections') == '37'
    finally:
        (inst.conf_dir / 'conf.d' / 'tmod-pending.conf').unlink()
        inst.stop()
        inst.start()
    assert service(run_module, inst, 'started')['pending_restart'] is False


def test_stop_running_instance(run_module, inst):
    inst.start()
    result = service(run_module, inst, 'stopped')
    assert result['changed'] is True
    assert result['state'] == 'stopped'
    assert result['accepting_connections'] is False
    assert result['pending_restart'] is False and result['pending_restart_settings'] == []
    assert not inst.running() and not accepts_connections(inst)


def test_stop_stopped_instance_is_unchanged(run_module, inst):
    inst.stop()
    result = service(run_module, inst, 'stopped')
    assert result['changed'] is False
    assert result['state'] == 'stopped'


def test_reload_stopped_instance_is_unchanged(run_module, inst):
    inst.stop()
    result = service(run_module, inst, 'reloaded')
    assert result['changed'] is False
    assert result['state'] == 'stopped'
    assert not inst.running()


def test_check_mode_start_does_nothing(run_module, inst):
    inst.stop()
    result = service(run_module, inst, 'started', check=True)
    assert result['changed'] is True
    assert result['state'] == 'stopped'
    assert not inst.running()


def test_restart_stopped_instance_starts_it(run_module, inst):
    inst.stop()
    result = service(run_module, inst, 'restarted')
    assert result['changed'] is True
    assert result['state'] == 'started'
    assert inst.running() and accepts_connections(inst)


def test_failed_start_reports_error_with_log(run_module, inst):
    inst.stop()
    inst.write_conf('tmod-broken.conf', {'shared_buffers': 'lots'})
    try:
        result = service(run_module, inst, 'started')
    finally:
        (inst.conf_dir / 'conf.d' / 'tmod-broken.conf').unlink()
    assert result['failed'] is True
    assert result['state'] == 'error'
    assert 'invalid value for parameter "shared_buffers"' in result['msg']
    assert not inst.running()


def test_missing_instance_is_an_error(run_module):
    result = run_module('service', {'cluster': 'tmodnosuch', 'state': 'started'})
    assert result['failed'] is True
    assert result['state'] == 'error'
    assert 'does not exist' in result['msg']


@pytest.mark.parametrize('cluster', ['../main', 'Upper'])
def test_invalid_cluster_name_is_rejected(run_module, cluster):
    result = run_module('service', {'cluster': cluster, 'state': 'started'})
    assert result['failed'] is True
    assert 'cluster must match' in result['msg']


def test_start_creates_missing_socket_directory(run_module, inst):
    # Without systemd nothing recreates /run/postgresql after a reboot: the module does.
    socket_dir = Path(SOCKET_DIR) / 'tmodsvc-sockets'
    shutil.rmtree(socket_dir, ignore_errors=True)
    inst.stop()
    inst.write_conf('tmod-socket.conf', {'unix_socket_directories': str(socket_dir)})
    try:
        result = service(run_module, inst, 'started')
        assert result['state'] == 'started' and result['accepting_connections'] is True
        assert (socket_dir / ('.s.PGSQL.%d' % PORT)).is_socket()
        assert socket_dir.owner() == 'postgres' and socket_dir.stat().st_mode & 0o7777 == 0o2775
    finally:
        inst.stop()
        (inst.conf_dir / 'conf.d' / 'tmod-socket.conf').unlink()
        shutil.rmtree(socket_dir, ignore_errors=True)
    inst.start()
