# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the dbaas.postgresql module tests.

Modules run for real, through ansible-playbook, against real PostgreSQL instances that the
fixtures create with pg_createcluster (names tmod*, ports 55400-55499 and 56700-56799) and drop
afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # import the collection as ansible_collections.dbaas.postgresql
    sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
CALLBACK_DIR = Path(__file__).resolve().parent / 'callback_plugins'
PG_VERSION = '15'
PG_BIN = Path('/usr/lib/postgresql') / PG_VERSION / 'bin'
SOCKET_DIR = '/var/run/postgresql'

# What the install role sets up: OS root and postgres log in as postgres over the socket.
HBA_FIRST_LINE = 'local   all   postgres   peer map=pgdbaas\n'
IDENT_LINES = 'pgdbaas root postgres\npgdbaas postgres postgres\n'
HBA_TCP_LINE = 'host    all   all   127.0.0.1/32   scram-sha-256\n'


class CommandFailed(subprocess.CalledProcessError):
    """A failed command whose message carries what it printed on stderr."""

    def __str__(self):
        return f"{super().__str__()}\n{self.stderr}"


def sh(*argv, check=True):
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and done.returncode:
        raise CommandFailed(done.returncode, argv, done.stdout, done.stderr)
    return done


class Result(dict):
    """The module's result; .raw is the whole ansible-playbook output it was read from."""

    raw = ''


def write_secret_vars(path, data):
    """A vars file only its owner can read (what the API hands ansible-runner for secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as out:
        json.dump(data, out)


class PlaybookRun:
    """One ansible-playbook run: task results, per-host stats, the pgdbaas report, the whole output."""

    def __init__(self, rc, data, raw):
        self.rc = rc
        self.results = data.get('results', [])
        self.stats = data.get('stats', {}).get('localhost', {})
        self.hosts = data.get('custom', {}).get('_run', {}).get('pgdbaas', {}).get('hosts', {})
        self.report = self.hosts.get('localhost', {})
        self.raw = raw

    @property
    def failed(self):
        return self.rc != 0

    @property
    def changed(self):
        """Number of tasks that changed something (ansible's recap)."""
        return self.stats.get('changed', 0)

    @property
    def msg(self):
        """Message of the failed task."""
        failures = [r for r in self.results if r['_status'] == 'failed']
        return failures[-1].get('msg') if failures else None

    def task(self, name):
        """Result of the task named name (the last run of it)."""
        found = [r for r in self.results if r['_task'] == name]
        assert found, 'no task %r in %s' % (name, [r['_task'] for r in self.results])
        return found[-1]


class AnsibleRunner:
    """Runs ansible-playbook with the tmod_results callback, which writes what happened to a file.

    Secrets go through a 0600 vars file (-e @file), deleted after the run, never on the command line.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.count = 0
        self.inventory = workdir / 'inventory.ini'
        self.inventory.write_text('localhost ansible_connection=local ansible_python_interpreter=%s\n'
                                  % sys.executable)

    def run(self, playbook, extra_vars=None, secrets=None, inventory=None):
        """Run a playbook file; returns a PlaybookRun."""
        self.count += 1
        argv = [str(BIN / 'ansible-playbook'), '-i', str(inventory or self.inventory), str(playbook)]
        if extra_vars:
            argv += ['-e', json.dumps(extra_vars)]
        varsfile = self.workdir / ('vars%d.json' % self.count)
        if secrets:
            write_secret_vars(varsfile, secrets)
            argv += ['-e', '@%s' % varsfile]
        results_file = self.workdir / ('results%d.json' % self.count)
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR), ANSIBLE_CALLBACKS_ENABLED='tmod_results',
                   TMOD_RESULTS_FILE=str(results_file), ANSIBLE_RETRY_FILES_ENABLED='0',
                   ANSIBLE_LOCALHOST_WARNING='0')
        try:
            proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL, check=False)
        finally:
            varsfile.unlink(missing_ok=True)
        try:
            raw = results_file.read_text()
            data = json.loads(raw)
        except (OSError, ValueError):
            raise AssertionError('ansible-playbook gave no result (rc=%d):\n%s\n%s'
                                 % (proc.returncode, proc.stdout, proc.stderr)) from None
        return PlaybookRun(proc.returncode, data, raw + proc.stdout + proc.stderr)

    def __call__(self, module, args, secrets=None, check=False):
        """Run dbaas.postgresql.<module> with args as the one task of a generated playbook.

        secrets: module options passed through the 0600 vars file. Returns the module's result.
        """
        task_args = dict(args)
        extra_vars = {}
        for key, value in (secrets or {}).items():
            extra_vars['tmod_secret_' + key] = value
            task_args[key] = '{{ tmod_secret_%s }}' % key
        playbook = self.workdir / ('play%d.yml' % (self.count + 1))
        playbook.write_text(json.dumps([{
            'hosts': 'localhost', 'gather_facts': False,
            'tasks': [{'name': 'module', 'dbaas.postgresql.' + module: task_args, 'check_mode': check}],
        }]))
        run = self.run(playbook, secrets=extra_vars)
        if not run.results:
            raise AssertionError('ansible-playbook ran no task (rc=%d):\n%s' % (run.rc, run.raw))
        result = Result(run.results[0])
        result.raw = run.raw
        return result


@pytest.fixture(scope='module')
def run_module(tmp_path_factory):
    return AnsibleRunner(tmp_path_factory.mktemp('ansible'))


@pytest.fixture(scope='module')
def playbooks(run_module):
    """playbooks(inst) -> a PlaybookRunner for that instance."""
    return lambda inst: PlaybookRunner(run_module, inst)


class PlaybookRunner:
    """Runs the collection's playbooks (playbooks/<name>.yml) on this machine, as the API does."""

    def __init__(self, runner, inst):
        self.runner = runner
        self.inst = inst

    def __call__(self, name, secrets=None, **extra_vars):
        """Run playbooks/<name>.yml for the instance with extra_vars; secrets in a 0600 vars file."""
        extra_vars = dict(pg_hosts='localhost', pg_version=self.inst.version, pg_cluster=self.inst.cluster,
                          **extra_vars)
        return self.runner.run(REPO / 'playbooks' / (name + '.yml'), extra_vars, secrets,
                               inventory=self.runner.inventory)


class PgInstance:
    """A real instance of the Debian layout, created for the tests."""

    def __init__(self, cluster, port):
        self.version = PG_VERSION
        self.cluster = cluster
        self.port = port
        self.conf_dir = Path('/etc/postgresql') / PG_VERSION / cluster
        self.data_dir = Path('/var/lib/postgresql') / PG_VERSION / cluster
        self.log_file = Path('/var/log/postgresql') / ('postgresql-%s-%s.log' % (PG_VERSION, cluster))

    @property
    def args(self):
        """Module arguments naming this instance."""
        return {'version': self.version, 'cluster': self.cluster}

    def create(self, settings=None):
        if self.conf_dir.exists():  # left over by an interrupted run of these tests
            self.drop()
        elif self.data_dir.exists():  # ... or a data directory whose configuration it removed
            shutil.rmtree(self.data_dir)
        sh('pg_createcluster', PG_VERSION, self.cluster, '-p', str(self.port))
        hba = self.conf_dir / 'pg_hba.conf'
        lines = [line for line in hba.read_text().splitlines(keepends=True)
                 if not line.split()[:3] == ['local', 'all', 'postgres']]
        if HBA_TCP_LINE.split() not in [line.split() for line in lines]:
            lines.append(HBA_TCP_LINE)
        hba.write_text(HBA_FIRST_LINE + ''.join(lines))
        with open(self.conf_dir / 'pg_ident.conf', 'a') as ident:
            ident.write(IDENT_LINES)
        if settings:
            self.write_conf('tmod.conf', settings)
        self.start()

    def write_conf(self, name, settings):
        """Write conf.d/<name> (read after postgresql.conf)."""
        text = ''.join("%s = '%s'\n" % (key, str(value).replace("'", "''")) for key, value in settings.items())
        (self.conf_dir / 'conf.d' / name).write_text(text)

    def drop(self):
        for extra in (self.conf_dir / 'conf.d').glob('tmod*.conf'):  # else pg_dropcluster keeps the directory
            extra.unlink()
        sh('pg_dropcluster', '--stop', PG_VERSION, self.cluster, check=False)

    def start(self):
        if not self.running():
            sh('pg_ctlcluster', PG_VERSION, self.cluster, 'start')

    def stop(self):
        if self.running():
            sh('pg_ctlcluster', PG_VERSION, self.cluster, 'stop')

    def running(self):
        """Independent check: pg_ctl status, run as postgres."""
        return sh('runuser', '-u', 'postgres', '--', str(PG_BIN / 'pg_ctl'), 'status',
                  '-D', str(self.data_dir), check=False).returncode == 0

    def postmaster_pid(self):
        return int((self.data_dir / 'postmaster.pid').read_text().split()[0])

    def connect(self, dbname='postgres'):
        """Superuser connection over the socket (root is mapped to postgres)."""
        return psycopg.connect(host=SOCKET_DIR, port=self.port, user='postgres', dbname=dbname,
                               autocommit=True, connect_timeout=5)

    def login(self, user, password, dbname='postgres'):
        """Password login over TCP 127.0.0.1 (scram-sha-256)."""
        return psycopg.connect(host='127.0.0.1', port=self.port, user=user, password=password,
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def can_login(self, user, password, dbname='postgres'):
        try:
            with self.login(user, password, dbname):
                return True
        except psycopg.OperationalError:
            return False

    def role_exists(self, name):
        with self.connect() as conn:
            return conn.execute('SELECT 1 FROM pg_roles WHERE rolname = %s', (name,)).fetchone() is not None

    def database_exists(self, name):
        with self.connect() as conn:
            return conn.execute('SELECT 1 FROM pg_database WHERE datname = %s', (name,)).fetchone() is not None

    def create_sentinel(self):
        """Table t in database postgres, which an injected 'drop table t' would remove."""
        with self.connect() as conn:
            conn.execute('CREATE TABLE IF NOT EXISTS t (id int)')

    def sentinel_exists(self):
        with self.connect() as conn:
            return conn.execute("SELECT to_regclass('public.t') IS NOT NULL").fetchone()[0]

    def create_role(self, name, password):
        with self.connect() as conn:
            conn.execute(sql.SQL('CREATE ROLE {} LOGIN PASSWORD {}').format(sql.Identifier(name),
                                                                            sql.Literal(password)))


@pytest.fixture(scope='module')
def make_instance():
    """Factory of instances dropped at the end of the test module: make_instance(cluster, port)."""
    created = []

    def make(cluster, port, settings=None):
        assert cluster.startswith('tmod') and (55400 <= port <= 55499 or 56700 <= port <= 56799)
        inst = PgInstance(cluster, port)
        created.append(inst)
        inst.create(settings)
        return inst

    yield make
    for inst in created:
        inst.drop()
