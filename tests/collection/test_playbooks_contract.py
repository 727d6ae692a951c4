# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The playbook contract: the shared variables (pg_cluster, pg_version, ...) are role defaults of
dbaas.postgresql.contract, so the host variables of an inventory choose each host's instance
(extra-vars still win), and every module of a play gets them through module_defaults. provision.yml
applies a changed setting with a reload and restarts only for a setting the server reports pending
a restart."""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from tests.collection.conftest import REPO, PgInstance
from tests.collection.test_playbooks_lifecycle import forget

MEMBERS = {'member-a': ('tmodctra', 56720), 'member-b': ('tmodctrb', 56721)}


def playbook(name):
    return REPO / 'playbooks' / (name + '.yml')


def inventory(path, **host_vars):
    """An inventory of the hosts of MEMBERS (all this machine), each with host_vars[host] as variables."""
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    hosts = {host: dict(local, **host_vars.get(host, {})) for host in MEMBERS}
    path.write_text(yaml.safe_dump({'all': {'children': {'pgdbaas_hosts': {'hosts': hosts}}}}))
    return path


@pytest.fixture(scope='module')
def members(run_module):
    """The instance of each member, provisioned by provision.yml."""
    instances = {}
    for host, (cluster, port) in MEMBERS.items():
        forget(cluster)
        run = run_module.run(playbook('provision'), dict(pg_hosts='localhost', pg_cluster=cluster, pg_port=port,
                                                         pg_sizing='1cpu1gb'), inventory=run_module.inventory)
        assert not run.failed, run.msg
        instances[host] = PgInstance(cluster, port)
    yield instances
    for cluster, dummy in MEMBERS.values():
        forget(cluster)


def test_each_host_acts_on_the_instance_its_inventory_names(run_module, members, tmp_path):
    hosts = inventory(tmp_path / 'members.yml', **{host: {'pg_cluster': cluster, 'pg_port': port}
                                                   for host, (cluster, port) in MEMBERS.items()})
    pids = {host: inst.postmaster_pid() for host, inst in members.items()}
    run = run_module.run(playbook('restart'), inventory=hosts)
    assert not run.failed, run.msg
    for host, (cluster, port) in MEMBERS.items():
        reported = run.hosts[host]['instance']
        assert (reported['cluster'], reported['port'], reported['state']) == (cluster, port, 'started')
        assert members[host].postmaster_pid() != pids[host], host
    restarts = [r for r in run.results if r['_task'] == 'Restart the instance (starts it when stopped)']
    assert sorted((r['_host'], r['cluster'], r['changed']) for r in restarts) == [
        ('member-a', 'tmodctra', True), ('member-b', 'tmodctrb', True)]


def test_host_variables_win_over_the_role_defaults_and_extra_vars_over_both(run_module, members, tmp_path):
    hosts = inventory(tmp_path / 'versions.yml', **{'member-a': {'pg_cluster': 'tmodctra'},
                                                    'member-b': {'pg_cluster': 'tmodctrb', 'pg_version': '16'}})
    run = run_module.run(playbook('status'), inventory=hosts)
    assert not run.failed, run.msg
    a, b = run.hosts['member-a']['instance'], run.hosts['member-b']['instance']
    assert (a['version'], a['cluster'], a['exists'], a['state']) == ('15', 'tmodctra', True, 'started')
    # The host's pg_version reached the module: there is no instance 16/tmodctrb.
    assert (b['version'], b['cluster'], b['exists']) == ('16', 'tmodctrb', False)

    forced = run_module.run(playbook('status'), {'pg_cluster': 'tmodctrb', 'pg_version': '15'}, inventory=hosts)
    assert not forced.failed, forced.msg
    assert [forced.hosts[host]['instance']['cluster'] for host in MEMBERS] == ['tmodctrb', 'tmodctrb']
    assert all(forced.hosts[host]['instance']['exists'] for host in MEMBERS)


def handler(run, name):
    """Status of the install role's handler called name (None when it was not notified)."""
    found = [r for r in run.results if r['_task'] == name]
    return found[-1]['_status'] if found else None


def session_setting(inst, name):
    with inst.connect() as conn:
        return conn.execute('SELECT current_setting(%s)', (name,)).fetchone()[0]


def test_provision_reloads_a_changed_setting_and_restarts_only_when_one_needs_it(run_module, members):
    inst = members['member-a']
    base = dict(pg_hosts='localhost', pg_cluster=inst.cluster, pg_port=inst.port, pg_sizing='1cpu1gb')

    def provision(**changes):
        run = run_module.run(playbook('provision'), dict(base, **changes), inventory=run_module.inventory)
        assert not run.failed, run.msg
        return run

    pid = inst.postmaster_pid()
    reloaded = provision(pg_timezone='Europe/Paris')
    assert handler(reloaded, 'Reload PostgreSQL instance') == 'ok'
    assert handler(reloaded, 'Restart PostgreSQL instance when a setting needs it') == 'skipped'
    assert inst.postmaster_pid() == pid
    # The postmaster rereads its configuration when signalled, asynchronously: watch new sessions
    # until one sees the new value (no sleep; bounded by a deadline).
    deadline = time.monotonic() + 10
    while session_setting(inst, 'TimeZone') != 'Europe/Paris':
        assert time.monotonic() < deadline, 'the new timezone was not applied'
    assert reloaded.report['instance']['pending_restart'] is False

    restarted = provision(pg_timezone='Europe/Paris', pg_parameters={'max_connections': 60})
    assert handler(restarted, 'Reload PostgreSQL instance') == 'ok'
    assert handler(restarted, 'Restart PostgreSQL instance when a setting needs it') == 'ok'
    assert inst.postmaster_pid() != pid
    assert session_setting(inst, 'max_connections') == '60'
    assert restarted.report['instance']['pending_restart'] is False

    pid = inst.postmaster_pid()
    again = provision(pg_timezone='Europe/Paris', pg_parameters={'max_connections': 60})
    assert again.changed == 0 and handler(again, 'Reload PostgreSQL instance') is None
    assert inst.postmaster_pid() == pid
