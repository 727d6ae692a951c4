# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An S3 repository for pgBackRest (pg_backup_repo_type=s3), end to end on this machine.

The S3 server is moto's (PyPI package moto) on https://127.0.0.1:57550, with a self-signed
certificate made here by openssl (pgBackRest's S3 client always speaks TLS:
pg_backup_s3_verify_tls=false). moto's WSGI application is served by uvicorn, not by moto_server:
werkzeug's server closes every TLS connection without a close_notify, which pgBackRest 2.45 takes
for a truncated response ("TLS error [1:167772454] unexpected eof while reading") and retries until
it fails; uvicorn keeps connections alive and closes them cleanly.

Requests must be signed: the fixture makes an IAM user with an access key and an s3:* policy,
creates the bucket, then turns moto's signature checks on (moto-api reset-auth), so pgBackRest only
gets in with the key and secret that set_backup.yml wrote to the stanza file. Those come in the
0600 vars file, as the API passes them, and must show in no ansible output nor pgBackRest log.

A source instance ts3src (pg_createcluster, then set_backup.yml into the bucket) gets rows before
and after a full backup (backup.yml); restore.yml (latest, after pgbackrest check of the running
source) makes the instance ts3dst from the bucket, which must then hold exactly the source's rows.
Ports 57500-57549 for instances, 57550 for the S3 server; everything made is dropped at the end,
also on failure, and the server is ended by its PID.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError

from ansible_collections.dbaas.postgresql.plugins.module_utils import pgbackrest
from tests.collection.conftest import PG_VERSION, PgInstance, sh

S3_HOST, S3_PORT = '127.0.0.1', 57550
ENDPOINT = 'https://%s:%d' % (S3_HOST, S3_PORT)
SOURCE, SOURCE_PORT = 'ts3src', 57500
TARGET, TARGET_PORT = 'ts3dst', 57501
TARGET_ID = 's3-restore-target-1'
BUCKET = 'pgdbaas-ts3'
REGION = 'us-east-1'
REPO_PATH = '/pgdbaas'
PREFIX = REPO_PATH.strip('/') + '/'
STANZA_FILE = Path('/etc/pgbackrest/conf.d') / (SOURCE + '.conf')
READY_TIMEOUT = 30
# moto's S3 (and IAM) over TLS, as moto_server serves them but with uvicorn (see above).
SERVER = """
import sys, uvicorn
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
uvicorn.run(DomainDispatcherApplication(create_backend_app), host=host, port=port, interface='wsgi',
            ssl_certfile=cert, ssl_keyfile=key, log_level='info')
"""
ROWS_PER_BATCH = 50


def forget(cluster):
    """Drop an instance whatever made it, with what the backup playbooks leave around it."""
    sh('pg_dropcluster', '--stop', PG_VERSION, cluster, check=False)
    shutil.rmtree(Path('/etc/postgresql') / PG_VERSION / cluster, ignore_errors=True)
    shutil.rmtree(Path('/var/lib/postgresql') / PG_VERSION / cluster, ignore_errors=True)
    Path('/var/log/postgresql/postgresql-%s-%s.log' % (PG_VERSION, cluster)).unlink(missing_ok=True)
    (Path('/etc/pgbackrest/conf.d') / ('%s.conf' % cluster)).unlink(missing_ok=True)
    Path('/tmp/pgbackrest/%s.stop' % cluster).unlink(missing_ok=True)


def pgbackrest_logs(stanza):
    return sorted(Path('/var/log/pgbackrest').glob('%s-*.log' % stanza))


def port_in_use(port):
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((S3_HOST, port)) == 0


def wait_ready(proc, cafile, log):
    """Poll the server (TLS, certificate checked) until it answers; fail at the deadline or when it exits."""
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + READY_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError('the S3 server exited (rc=%s):\n%s' % (proc.returncode, log.read_text()))
        try:
            with urllib.request.urlopen(ENDPOINT + '/moto-api/data.json', context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError as error:  # refused while it starts (URLError is an OSError)
            last = error
        time.sleep(0.1)
    raise AssertionError('the S3 server not ready after %ds (%s):\n%s' % (READY_TIMEOUT, last, log.read_text()))


def moto_api(path, body, cafile):
    request = urllib.request.Request(ENDPOINT + path, data=body.encode(), method='POST',
                                     headers={'Content-Type': 'text/plain'})  # else Flask reads a form
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(cafile)),
                                timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope='module')
def s3(tmp_path_factory):
    """moto's S3 server over TLS with a bucket, signed requests only; its credentials."""
    workdir = tmp_path_factory.mktemp('s3')
    cert, key, log = workdir / 'cert.pem', workdir / 'key.pem', workdir / 'moto.log'
    sh('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=%s' % S3_HOST,
       '-addext', 'subjectAltName=IP:%s' % S3_HOST, '-keyout', str(key), '-out', str(cert))
    assert not port_in_use(S3_PORT), 'port %d is taken: a server left over? (ss -ltnp)' % S3_PORT
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, '-W', 'ignore::DeprecationWarning', '-c', SERVER,
                                 S3_HOST, str(S3_PORT), str(cert), str(key)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ready(proc, cert, log)
        boot = dict(endpoint_url=ENDPOINT, region_name=REGION, verify=str(cert),
                    aws_access_key_id='boot', aws_secret_access_key='boot')
        iam = boto3.client('iam', **boot)
        iam.create_user(UserName='pgbackrest')
        iam.put_user_policy(UserName='pgbackrest', PolicyName='s3', PolicyDocument=json.dumps({
            'Version': '2012-10-17',
            'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))
        access = iam.create_access_key(UserName='pgbackrest')['AccessKey']
        client = boto3.client('s3', **dict(boot, aws_access_key_id=access['AccessKeyId'],
                                           aws_secret_access_key=access['SecretAccessKey']))
        client.create_bucket(Bucket=BUCKET)
        # From now on every request must carry a valid signature of an IAM user's key.
        moto_api('/moto-api/reset-auth', '0', cert)
        with pytest.raises(ClientError):
            boto3.client('s3', **boot).list_objects_v2(Bucket=BUCKET)
        yield SimpleNamespace(client=client, key=access['AccessKeyId'], secret=access['SecretAccessKey'],
                              proc=proc, log=log)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def s3_vars(s3):
    """(extra vars, secrets) of set_backup.yml for the bucket; the key and secret go in the vars file."""
    return (dict(pg_backup_repo_type='s3', pg_backup_repo_path=REPO_PATH, pg_backup_s3_bucket=BUCKET,
                 pg_backup_s3_endpoint='%s:%d' % (S3_HOST, S3_PORT), pg_backup_s3_region=REGION,
                 pg_backup_s3_uri_style='path', pg_backup_s3_verify_tls=False),
            dict(pg_backup_s3_key=s3.key, pg_backup_s3_key_secret=s3.secret))


def rows(inst):
    with inst.connect() as conn:
        return conn.execute('SELECT id, batch, note FROM items ORDER BY id').fetchall()


@pytest.fixture(scope='module')
def source(s3, playbooks):
    """ts3src backed up into the bucket: batch 1 in its full backup, batch 2 after it."""
    state = SimpleNamespace(inst=PgInstance(SOURCE, SOURCE_PORT), runs={}, timings={})

    def play(cluster, name, secrets=None, **extra):
        started = time.monotonic()
        run = playbooks(SimpleNamespace(version=PG_VERSION, cluster=cluster))(name, secrets=secrets, **extra)
        state.timings['%s %s' % (name, cluster)] = round(time.monotonic() - started, 1)
        state.runs['%s %s' % (name, cluster)] = run
        assert not run.failed, '%s: %s\n%s' % (name, run.msg, s3.log.read_text()[-3000:])
        return run

    def commit_batch(number):
        with state.inst.connect() as conn:
            conn.execute('INSERT INTO items (batch, note) SELECT %s, md5(%s || g::text) '
                         'FROM generate_series(1, %s) g', (number, number, ROWS_PER_BATCH))

    state.play = play
    for name in (SOURCE, TARGET):
        forget(name)
    try:
        state.inst.create()  # pg_createcluster, as test_pgbackrest does: provision.yml costs ~20 s more
        with state.inst.connect() as conn:
            conn.execute('CREATE TABLE items (id bigserial PRIMARY KEY, batch int NOT NULL, note text)')
        extra, secrets = s3_vars(s3)
        state.set_backup = play(SOURCE, 'set_backup', secrets=secrets, pg_backup_initial_full=False, **extra)
        commit_batch(1)
        state.backup = play(SOURCE, 'backup', pg_backup_type='full')
        commit_batch(2)
        yield state
    finally:
        for name in (SOURCE, TARGET):
            forget(name)
        for log in pgbackrest_logs(SOURCE):
            log.unlink()
        print('\ntimings (s): %s' % state.timings)


def test_stanza_file_holds_the_s3_settings_and_only_postgres_reads_it(source, s3):
    info = STANZA_FILE.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert pwd.getpwuid(info.st_uid).pw_name == 'postgres'
    options = pgbackrest.read_stanza_options(SOURCE)
    assert {name: options.get(name) for name in (
        'repo1-type', 'repo1-path', 'repo1-s3-bucket', 'repo1-s3-endpoint', 'repo1-s3-region',
        'repo1-s3-uri-style', 'repo1-storage-verify-tls', 'repo1-s3-key', 'repo1-s3-key-secret')} == {
        'repo1-type': 's3', 'repo1-path': REPO_PATH, 'repo1-s3-bucket': BUCKET,
        'repo1-s3-endpoint': '%s:%d' % (S3_HOST, S3_PORT), 'repo1-s3-region': REGION,
        'repo1-s3-uri-style': 'path', 'repo1-storage-verify-tls': 'n',
        'repo1-s3-key': s3.key, 'repo1-s3-key-secret': s3.secret}
    report = source.set_backup.report['backup_info']
    assert report['exists'] and report['repository'] == {'type': 's3', 'path': REPO_PATH}
    # Nothing went to a directory of this host.
    assert not (Path(pgbackrest.DEFAULT_REPO_PATH) / 'backup' / SOURCE).exists()


def test_the_backup_and_the_wal_are_objects_of_the_bucket(source, s3):
    label = source.backup.report['backup']['label']
    assert pgbackrest.LABEL_RE.match(label) and source.backup.report['backup']['type'] == 'full'
    keys = []
    for page in s3.client.get_paginator('list_objects_v2').paginate(Bucket=BUCKET):
        keys += [item['Key'] for item in page.get('Contents', [])]
    backup_dir = PREFIX + 'backup/%s/' % SOURCE
    archive_dir = PREFIX + 'archive/%s/' % SOURCE
    assert keys and all(key.startswith((backup_dir, archive_dir)) for key in keys), keys
    for name in ('backup.info', 'backup.info.copy', label + '/backup.manifest', label + '/backup.manifest.copy'):
        assert backup_dir + name in keys, keys
    assert [key for key in keys if key.startswith(backup_dir + label + '/pg_data/')], keys
    assert archive_dir + 'archive.info' in keys
    wal = [key for key in keys if key.startswith(archive_dir + '%s-1/' % PG_VERSION) and key.endswith('.zst')]
    assert wal, keys
    manifest = s3.client.get_object(Bucket=BUCKET, Key=backup_dir + label + '/backup.manifest')['Body'].read()
    assert b'[backup]' in manifest and label.encode() in manifest
    # The backup as pgBackRest lists it, through the stanza file (and so the bucket).
    assert [b['label'] for b in source.backup.report['backup_info']['backups']] == [label]


def test_restore_latest_from_the_bucket_into_a_new_instance(source):
    expected = rows(source.inst)
    assert len(expected) == 2 * ROWS_PER_BATCH  # batch 2 only in the WAL after the backup
    run = source.play(TARGET, 'restore', pg_port=TARGET_PORT, pg_instance_id=TARGET_ID,
                      pg_restore_source=SOURCE, pg_restore_type='latest', pg_restore_source_port=SOURCE_PORT)
    assert run.report['restore']['type'] == 'latest'
    target = PgInstance(TARGET, TARGET_PORT)
    assert target.running()
    assert rows(target) == expected
    with target.connect() as conn:
        assert conn.execute('SELECT pg_is_in_recovery()').fetchone()[0] is False


def test_the_s3_credentials_show_in_no_output(source, s3):
    assert {'set_backup ' + SOURCE, 'backup ' + SOURCE} <= set(source.runs)
    for name, run in source.runs.items():
        for secret in (s3.secret, s3.key):
            assert secret not in run.raw, '%s shows an S3 credential' % name
    logs = pgbackrest_logs(SOURCE)
    assert logs
    for log in logs:
        text = log.read_text(errors='replace')
        assert s3.secret not in text and s3.key not in text, log
