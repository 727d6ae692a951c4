# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Patroni members of this host: their configuration files, their daemons, their REST API.

Layout (role dbaas.postgresql.patroni, Debian's conventions of the patroni package):

- a member's configuration is ``/etc/patroni/<version>-<member>.yml`` (0600, postgres), the file
  Debian's unit ``patroni@<version>-<member>`` reads; ``scope`` is the cluster (the pgdbaas
  instance name ``pg_cluster``), ``name`` the member: the original instance keeps its name, the
  standbys are ``<cluster>-m<k>``; each member is a Debian-layout directory
  ``/etc/postgresql/<version>/<member>/`` (Patroni's config_dir) with its data directory;
- without systemd the daemon runs under start-stop-daemon as the instance owner, pid file
  ``/run/patroni/<version>-<member>.pid``, its output (Patroni's log and PostgreSQL's stderr) in
  ``/var/log/postgresql/patroni-<version>-<member>.log``; with systemd, unit ``patroni@<version>-<member>``.

The REST client speaks Patroni 3.0's API (GET /patroni, /cluster, /leader, /config; POST
/switchover, /failover, /restart, /reload, /reinitialize; PATCH /config).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import pwd
import time
import urllib.error

from ansible.module_utils.urls import open_url

try:
    import yaml
except ImportError:  # pragma: no cover - ansible always brings PyYAML
    yaml = None

PATRONI_CONF_ROOT = '/etc/patroni'
PATRONI_RUN_DIR = '/run/patroni'
PATRONI_LOG_ROOT = '/var/log/postgresql'
PATRONI_BIN = '/usr/bin/patroni'
DEFAULT_URL = 'http://127.0.0.1:8008'
LEADER_ROLES = ('leader', 'master', 'primary', 'standby_leader')
NAMESPACE = '/pgdbaas/'


class PatroniError(Exception):
    """A REST call that failed: status is the HTTP status (None when the member did not answer)."""

    def __init__(self, msg, status=None, body=None):
        super().__init__(msg)
        self.status = status
        self.body = body


DEFAULT_SOCKET_DIR = '/var/run/postgresql'


def config_path(version, member):
    return os.path.join(PATRONI_CONF_ROOT, '%s-%s.yml' % (version, member))


def pid_path(version, member):
    return os.path.join(PATRONI_RUN_DIR, '%s-%s.pid' % (version, member))


def log_path(version, member):
    return os.path.join(PATRONI_LOG_ROOT, 'patroni-%s-%s.log' % (version, member))


def load_config(path):
    """The member's Patroni configuration (dict); OSError when unreadable, ValueError when not YAML."""
    with open(path) as handle:
        text = handle.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError('%s is not YAML: %s' % (path, exc)) from None
    if not isinstance(data, dict):
        raise ValueError('%s is not a Patroni configuration' % path)
    return data


def local_members(version, scope):
    """Members of cluster scope configured on this host: [(name, path, config)], sorted by name."""
    found = []
    for path in sorted(glob.glob(os.path.join(PATRONI_CONF_ROOT, '%s-*.yml' % version))):
        try:
            cfg = load_config(path)
        except (OSError, ValueError):
            continue
        if str(cfg.get('scope')) == scope and cfg.get('name'):
            found.append((str(cfg['name']), path, cfg))
    return found


def rest_url(cfg):
    """URL of the member's REST API from its configuration (connect_address, else listen)."""
    restapi = cfg.get('restapi') or {}
    address = restapi.get('connect_address') or restapi.get('listen')
    if not address:
        return DEFAULT_URL
    host, dummy, port = str(address).rpartition(':')
    if host in ('', '0.0.0.0', '::', '*'):
        host = '127.0.0.1'
    scheme = 'https' if restapi.get('certfile') else 'http'
    return '%s://%s:%s' % (scheme, host, port)


def rest_auth(cfg):
    auth = (cfg.get('restapi') or {}).get('authentication') or {}
    return auth.get('username'), auth.get('password')


def dcs_endpoint(cfg):
    """First etcd3 host of the configuration, as http://host:port."""
    etcd = cfg.get('etcd3') or cfg.get('etcd') or {}
    hosts = etcd.get('hosts') or ([etcd['host']] if etcd.get('host') else [])
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(',') if h.strip()]
    if not hosts:
        return None
    host = hosts[0]
    return host if '://' in host else '%s://%s' % (etcd.get('protocol', 'http'), host)


class PatroniClient:
    """Patroni's REST API of one member."""

    def __init__(self, url=DEFAULT_URL, user=None, password=None, ca_file=None, timeout=10):
        self.url = url.rstrip('/')
        self.user = user
        self.password = password
        self.ca_file = ca_file
        self.timeout = timeout

    def request(self, method, path, body=None, timeout=None):
        """(status, decoded body) of the call; PatroniError when the member does not answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {'Accept': 'application/json'}
        if data is not None:
            headers['Content-Type'] = 'application/json'
        if self.user:
            token = base64.b64encode(('%s:%s' % (self.user, self.password or '')).encode()).decode()
            headers['Authorization'] = 'Basic ' + token
        try:
            with open_url(self.url + path, data=data, headers=headers, method=method,
                          timeout=timeout or self.timeout, ca_path=self.ca_file) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, 'reason', exc)
            raise PatroniError('Patroni REST API at %s does not answer (%s %s): %s'
                               % (self.url, method, path, reason)) from None

    def get(self, path):
        status, body = self.request('GET', path)
        return status, body

    def patroni(self):
        """GET /patroni (the member's state), even when it answers 503 (not running)."""
        return self.get('/patroni')[1]

    def cluster(self):
        status, body = self.get('/cluster')
        if status != 200 or not isinstance(body, dict):
            raise PatroniError('GET /cluster of %s answered %s: %s' % (self.url, status, body), status, body)
        return body

    def is_leader(self):
        return self.get('/leader')[0] == 200

    def config(self):
        status, body = self.get('/config')
        if status != 200:
            raise PatroniError('GET /config of %s answered %s: %s' % (self.url, status, body), status, body)
        return body

    def post(self, path, body=None, ok=(200, 202), timeout=None):
        status, answer = self.request('POST', path, body if body is not None else {}, timeout=timeout)
        if status not in ok:
            raise PatroniError('POST %s to %s answered %s: %s' % (path, self.url, status, _text(answer)),
                               status, answer)
        return answer

    def patch_config(self, changes):
        status, answer = self.request('PATCH', '/config', changes)
        if status != 200:
            raise PatroniError('PATCH /config of %s answered %s: %s' % (self.url, status, _text(answer)),
                               status, answer)
        return answer


def _decode(raw):
    text = raw.decode('utf-8', errors='replace')
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _text(body):
    return body if isinstance(body, str) else json.dumps(body)


def leader_of(cluster):
    """Name of the leader in a GET /cluster answer, or None."""
    for member in cluster.get('members', []):
        if member.get('role') in LEADER_ROLES:
            return member.get('name')
    return None


def lag_bytes(value):
    """Patroni's lag: bytes (int), or None for 'unknown'."""
    return value if isinstance(value, int) else None


def wait_for(predicate, timeout, interval=0.25):
    """Poll predicate() until it returns a true value (returned) or timeout seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def owner_of(cfg):
    """pwd entry of the OS user owning the member's data directory (postgres when it is absent)."""
    data_dir = (cfg.get('postgresql') or {}).get('data_dir')
    try:
        return pwd.getpwuid(os.stat(data_dir).st_uid)
    except (OSError, KeyError, TypeError):
        return pwd.getpwnam('postgres')


def daemon_pid(version, member):
    """PID of the member's Patroni daemon (pid file, process alive), or None."""
    try:
        with open(pid_path(version, member)) as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def daemon_argv(action, version, member, cfg, path):
    """start-stop-daemon command line starting or stopping the member's Patroni (no systemd)."""
    pidfile = pid_path(version, member)
    if action == 'start':
        owner = owner_of(cfg)
        return ['start-stop-daemon', '--start', '--quiet', '--oknodo', '--background', '--make-pidfile',
                '--pidfile', pidfile, '--chuid', owner.pw_name, '--chdir', owner.pw_dir or '/',
                '--output', log_path(version, member), '--exec', PATRONI_BIN, '--', path]
    return ['start-stop-daemon', '--stop', '--quiet', '--oknodo', '--pidfile', pidfile,
            '--retry', 'TERM/60/KILL/5', '--remove-pidfile']


def prepare_daemon_files(version, member, cfg):
    """Run directory (root) and log file (the owner's) the daemon needs."""
    owner = owner_of(cfg)
    os.makedirs(PATRONI_RUN_DIR, mode=0o755, exist_ok=True)
    log = log_path(version, member)
    if not os.path.exists(log):
        os.makedirs(os.path.dirname(log), exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(fd)
        if os.geteuid() == 0:
            os.chown(log, owner.pw_uid, owner.pw_gid)


def etcd_ranges(prefix, keep=()):
    """[(key, range_end)] (bytes) covering every key under prefix except the keys of keep (full names)."""
    key = prefix.encode()
    end = key[:-1] + bytes([key[-1] + 1])
    ranges, start = [], key
    for kept in sorted(k.encode() for k in keep):
        if start < kept:
            ranges.append((start, kept))
        start = kept + b'\x00'  # the key right after the kept one
    ranges.append((start, end))
    return ranges


def _etcd_post(endpoint, api, body, timeout):
    with open_url(endpoint.rstrip('/') + api, data=json.dumps(body).encode(), method='POST', timeout=timeout,
                  headers={'Content-Type': 'application/json'}) as resp:
        return json.loads(resp.read().decode() or '{}')


def _range_body(key, range_end, **extra):
    return dict(key=base64.b64encode(key).decode(), range_end=base64.b64encode(range_end).decode(), **extra)


def etcd_delete_prefix(endpoint, prefix, timeout=10, keep=()):
    """Delete every key under prefix (but those of keep) through etcd's v3 JSON gateway; the number deleted."""
    deleted = 0
    for key, range_end in etcd_ranges(prefix, keep):
        last_error = None
        for api in ('/v3/kv/deleterange', '/v3beta/kv/deleterange'):
            try:
                deleted += int(_etcd_post(endpoint, api, _range_body(key, range_end), timeout).get('deleted', 0))
                last_error = None
                break
            except urllib.error.HTTPError as exc:
                last_error = exc
                if exc.code != 404:
                    break
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_error = exc
                break
        if last_error is not None:
            raise PatroniError('Deleting %s from etcd at %s failed: %s' % (prefix, endpoint, last_error))
    return deleted


def etcd_count_prefix(endpoint, prefix, timeout=10, keep=()):
    """Number of keys under prefix, but those of keep (etcd v3 JSON gateway)."""
    try:
        return sum(int(_etcd_post(endpoint, '/v3/kv/range', _range_body(key, range_end, count_only=True),
                                  timeout).get('count', 0))
                   for key, range_end in etcd_ranges(prefix, keep))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PatroniError('Reading %s from etcd at %s failed: %s' % (prefix, endpoint, exc)) from None


def cluster_argument_spec():
    """Options of the modules acting on a whole Patroni cluster (patroni_info, patroni_switchover, patroni_member)."""
    return dict(
        version=dict(type='str', default='15'),
        cluster=dict(type='str', required=True),
        patroni=dict(type='dict', options=dict(
            url=dict(type='str'),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            ca_file=dict(type='path'),
        )),
        timeout=dict(type='int', default=60),
    )


class Cluster:
    """One Patroni cluster seen from this host: its local members and a REST client that answers."""

    def __init__(self, version, scope, options=None):
        options = options or {}
        self.version = version
        self.scope = scope
        self.local = local_members(version, scope)
        self.errors = []
        self.client = None
        self.user = options.get('user')
        self.password = options.get('password')
        self.ca_file = options.get('ca_file')
        if self.local and not self.user:
            self.user, self.password = rest_auth(self.local[0][2])
        urls = [options['url']] if options.get('url') else [rest_url(cfg) for dummy, dummy, cfg in self.local]
        for url in urls:
            client = self.make_client(url)
            try:
                client.cluster()
            except PatroniError as exc:
                self.errors.append(str(exc))
                continue
            self.client = client
            break

    def make_client(self, url):
        return PatroniClient(url=url, user=self.user, password=self.password, ca_file=self.ca_file)

    @property
    def reachable(self):
        return self.client is not None

    def local_files(self):
        """Files of each member of this host: {name: {data_dir, config_dir, config_file, pgpass, log_file}}."""
        files = {}
        for name, path, cfg in self.local:
            pg = cfg.get('postgresql') or {}
            files[name] = dict(data_dir=pg.get('data_dir'), config_dir=pg.get('config_dir') or pg.get('data_dir'),
                               config_file=path, pgpass=pg.get('pgpass'), log_file=log_path(self.version, name))
        return files

    def local_instances(self):
        """Where each member of this host keeps and serves its PostgreSQL, from its configuration:
        {name: {data_directory, port, socket_dir}} (what a pgBackRest stanza names)."""
        instances = {}
        for name, dummy, cfg in self.local:
            pg = cfg.get('postgresql') or {}
            port = str(pg.get('listen', '')).rpartition(':')[2]
            sockets = str((pg.get('parameters') or {}).get('unix_socket_directories') or DEFAULT_SOCKET_DIR)
            instances[name] = dict(data_directory=pg.get('data_dir'), port=int(port) if port.isdigit() else None,
                                   socket_dir=sockets.split(',', maxsplit=1)[0].strip() or DEFAULT_SOCKET_DIR)
        return instances

    def describe(self):
        """The cluster as GET /cluster tells, members enriched with GET /patroni of each (dict)."""
        described = self._describe()
        described['local_files'] = self.local_files()
        described['local_instances'] = self.local_instances()
        return described

    def _describe(self):
        local_names = [name for name, dummy, dummy in self.local]
        if self.client is None:
            members = [dict(name=name, role=None, state='stopped', host=None, port=None, api_url=rest_url(cfg),
                            lag_bytes=None, timeline=None, local=True, reachable=False)
                       for name, dummy, cfg in self.local]
            return dict(scope=self.scope, reachable=False, leader=None, paused=None, members=members,
                        local_members=local_names, errors=self.errors)
        cluster = self.client.cluster()
        members = []
        for member in cluster.get('members', []):
            entry = dict(name=member.get('name'), role=_role(member.get('role')), state=member.get('state'),
                         host=member.get('host'), port=member.get('port'), api_url=member.get('api_url'),
                         lag_bytes=lag_bytes(member.get('lag')), timeline=member.get('timeline'),
                         local=member.get('name') in local_names, reachable=False)
            if entry['role'] == 'leader':
                entry['lag_bytes'] = 0
            if member.get('api_url'):
                try:
                    state = self.make_client(member['api_url'].rsplit('/patroni', 1)[0]).patroni()
                except PatroniError:
                    state = None
                if isinstance(state, dict):
                    entry['reachable'] = True
                    entry['timeline'] = state.get('timeline', entry['timeline'])
                    entry['pending_restart'] = bool(state.get('pending_restart'))
                    entry['server_version'] = state.get('server_version')
            members.append(entry)
        known = [m['name'] for m in members]
        for name, dummy, cfg in self.local:  # a stopped member has no key in the DCS
            if name not in known:
                members.append(dict(name=name, role=None, state='stopped', host=None, port=None,
                                    api_url=rest_url(cfg), lag_bytes=None, timeline=None, local=True,
                                    reachable=False))
        config = {}
        try:
            config = self.client.config()
        except PatroniError:
            pass
        return dict(scope=self.scope, reachable=True, leader=leader_of(cluster), paused=bool(cluster.get('pause')),
                    members=sorted(members, key=lambda m: m['name']), local_members=local_names,
                    synchronous_mode=bool(config.get('synchronous_mode')),
                    ttl=config.get('ttl'), loop_wait=config.get('loop_wait'),
                    maximum_lag_on_failover=config.get('maximum_lag_on_failover'), errors=[])

    def member_client(self, member):
        """Client of a member (an entry of describe()['members'])."""
        return self.make_client(member['api_url'].rsplit('/patroni', 1)[0])


def _role(role):
    """Patroni 3.0 says master in places; pgdbaas says leader."""
    return 'leader' if role in ('master', 'primary', 'leader') else role


def best_candidate(members, exclude=None, synchronous=False):
    """The running replica with the least lag (a synchronous standby first; in synchronous mode only a
    synchronous standby, the one Patroni accepts), or None."""
    roles = ('sync_standby',) if synchronous else ('replica', 'sync_standby')
    found = [m for m in members if m['name'] != exclude and m['role'] in roles
             and m['state'] in ('running', 'streaming') and m.get('reachable')]
    found.sort(key=lambda m: (m['role'] != 'sync_standby',
                              m['lag_bytes'] if m['lag_bytes'] is not None else 1 << 62, m['name']))
    return found[0] if found else None
