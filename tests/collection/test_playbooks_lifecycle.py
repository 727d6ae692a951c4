# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""provision.yml and terminate.yml never take over an instance they did not make: the install role
writes the id an instance is made for (pg_instance_id) to a marker file and refuses, before changing
anything, an existing instance (configuration or data directory) whose marker is missing or names
another id, unless pg_adopt imports it; terminate.yml refuses such an instance likewise."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.collection.conftest import PG_VERSION, PgInstance, sh

HAND_PORT, PROV_PORT, LEFT_PORT = 55460, 55461, 55462


def marker(cluster):
    return Path('/etc/postgresql') / PG_VERSION / cluster / 'pgdbaas-instance'


def forget(cluster):
    """Drop an instance the playbooks made (pg_dropcluster leaves conf.d/pgdbaas.conf and the marker)."""
    sh('pg_dropcluster', '--stop', PG_VERSION, cluster, check=False)
    shutil.rmtree(Path('/etc/postgresql') / PG_VERSION / cluster, ignore_errors=True)
    shutil.rmtree(Path('/var/lib/postgresql') / PG_VERSION / cluster, ignore_errors=True)


@pytest.fixture
def play(playbooks):
    """play(cluster, name, **extra_vars): run playbooks/<name>.yml for instance 15/<cluster>."""
    return lambda cluster, name, **extra: playbooks(SimpleNamespace(version=PG_VERSION, cluster=cluster))(
        name, **extra)


@pytest.fixture
def hand_made(make_instance):
    """An instance made by hand (pg_createcluster), with a table of its own."""
    inst = make_instance('tmodhand', HAND_PORT)
    inst.create_sentinel()
    yield inst
    forget('tmodhand')


def snapshot(inst):
    """What provisioning must not touch: its configuration files and its data."""
    files = {p.name: p.read_bytes() for p in sorted(inst.conf_dir.rglob('*')) if p.is_file()}
    with inst.connect() as conn:
        roles = conn.execute('SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles').fetchone()[0]
    return files, roles, inst.postmaster_pid()


def test_provision_refuses_an_instance_made_by_hand(play, hand_made):
    before = snapshot(hand_made)
    run = play('tmodhand', 'provision', pg_port=HAND_PORT, pg_admin_user='intruder',
               secrets={'pg_admin_password': 'Intruder-pass-1'})
    assert run.failed
    assert run.msg.startswith("Refusing to provision instance 15/tmodhand for id 'tmodhand': "
                              '/etc/postgresql/15/tmodhand already exists and has no '
                              '/etc/postgresql/15/tmodhand/pgdbaas-instance marker'), run.msg
    assert 'pg_adopt=true' in run.msg
    assert run.changed == 0
    assert snapshot(hand_made) == before  # same files, no new role, not restarted
    assert hand_made.sentinel_exists() and not marker('tmodhand').exists()


def test_provision_refuses_a_left_over_data_directory(play):
    """pg_createcluster would adopt a data directory whose configuration is gone."""
    left = PgInstance('tmodleft', LEFT_PORT)
    try:
        left.create()
        left.create_sentinel()
        left.stop()
        shutil.rmtree(left.conf_dir)
        run = play('tmodleft', 'provision', pg_port=LEFT_PORT)
        assert run.failed and run.changed == 0
        assert run.msg.startswith("Refusing to provision instance 15/tmodleft for id 'tmodleft': "
                                  '/var/lib/postgresql/15/tmodleft already exists'), run.msg
        assert not left.conf_dir.exists() and (left.data_dir / 'PG_VERSION').exists()
    finally:
        forget('tmodleft')


def test_own_instance_is_reprovisioned_and_terminated_by_its_id_only(play):
    forget('tmodprov')
    try:
        run = play('tmodprov', 'provision', pg_port=PROV_PORT, pg_instance_id='cluster-0001')
        assert not run.failed, run.msg
        assert run.report['instance']['state'] == 'started'
        mark = marker('tmodprov')
        assert mark.read_text() == 'cluster-0001\n'
        info = mark.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)

        again = play('tmodprov', 'provision', pg_port=PROV_PORT, pg_instance_id='cluster-0001')
        assert not again.failed and again.changed == 0, again.msg

        other = play('tmodprov', 'provision', pg_port=PROV_PORT, pg_instance_id='cluster-0002')
        assert other.failed and other.changed == 0
        assert "was made for id cluster-0001" in other.msg
        for instance_id in ('cluster-0002', None):  # None: the default, pg_cluster
            extra = {'pg_instance_id': instance_id} if instance_id else {}
            refused = play('tmodprov', 'terminate', pg_terminate_confirm='tmodprov', **extra)
            assert refused.failed and refused.changed == 0
            assert refused.msg.startswith("Refusing to terminate instance 15/tmodprov for id '%s': it was made "
                                          'for id cluster-0001' % (instance_id or 'tmodprov')), refused.msg
        assert mark.read_text() == 'cluster-0001\n'
        assert PgInstance('tmodprov', PROV_PORT).running()

        gone = play('tmodprov', 'terminate', pg_terminate_confirm='tmodprov', pg_instance_id='cluster-0001')
        assert not gone.failed, gone.msg
        assert gone.report['instance']['exists'] is False
        assert not mark.parent.exists() and not (Path('/var/lib/postgresql') / PG_VERSION / 'tmodprov').exists()
    finally:
        forget('tmodprov')


def test_terminate_refuses_an_instance_made_by_hand(play, hand_made):
    run = play('tmodhand', 'terminate', pg_terminate_confirm='tmodhand')
    assert run.failed and run.changed == 0
    assert run.msg == ("Refusing to terminate instance 15/tmodhand for id 'tmodhand': it has no "
                       '/etc/postgresql/15/tmodhand/pgdbaas-instance marker (not made by pgdbaas). '
                       'Nothing was changed.')
    assert hand_made.running() and hand_made.sentinel_exists()


def test_adopt_imports_an_instance_made_by_hand(play, hand_made):
    wrong_port = play('tmodhand', 'provision', pg_port=HAND_PORT + 10, pg_adopt=True, pg_instance_id='imported-1')
    assert wrong_port.failed and wrong_port.changed == 0
    assert 'listens on port %d, not %d' % (HAND_PORT, HAND_PORT + 10) in wrong_port.msg
    assert not marker('tmodhand').exists()

    run = play('tmodhand', 'provision', pg_port=HAND_PORT, pg_adopt=True, pg_instance_id='imported-1',
               pg_admin_user='imported_admin', secrets={'pg_admin_password': 'Imported-pass-1'})
    assert not run.failed, run.msg
    assert marker('tmodhand').read_text() == 'imported-1\n'
    assert hand_made.sentinel_exists()  # imported with its data
    assert hand_made.can_login('imported_admin', 'Imported-pass-1')
    assert (hand_made.conf_dir / 'conf.d' / 'pgdbaas.conf').exists()

    again = play('tmodhand', 'provision', pg_port=HAND_PORT, pg_instance_id='imported-1',
                 pg_admin_user='imported_admin', secrets={'pg_admin_password': 'Imported-pass-1'})
    assert not again.failed and again.changed == 0, again.msg
    gone = play('tmodhand', 'terminate', pg_terminate_confirm='tmodhand', pg_instance_id='imported-1')
    assert not gone.failed, gone.msg
    assert not hand_made.conf_dir.exists() and not os.path.exists(hand_made.data_dir)
