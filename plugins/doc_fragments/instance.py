# -*- coding: utf-8 -*-
# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Options shared by the dbaas.postgresql modules."""

    # Locating one instance of the Debian multi-instance layout.
    DOCUMENTATION = r'''
options:
  version:
    description:
      - Major PostgreSQL version of the instance, as used in the Debian layout
        C(/etc/postgresql/<version>/<cluster>).
    type: str
    default: '15'
  cluster:
    description:
      - Name of the instance (Debian cluster name).
      - Must match C(^[a-z0-9][a-z0-9_-]{0,62}$).
    type: str
    required: true
  port:
    description:
      - TCP port of the instance, which also names its unix socket.
      - When omitted, the port is read from the instance configuration
        (C(postgresql.conf), then the files of its C(include)/C(include_dir) directives
        such as C(conf.d/*.conf), then C(postgresql.auto.conf); the last value wins),
        falling back to C(5432).
    type: int
  controller:
    description:
      - The instance controller that locates the instance and acts on its server
        (C(plugins/module_utils/instance.py), which also tells how a Patroni controller slots in).
      - V(debian) is the Debian multi-instance layout of C(postgresql-common) (C(pg_createcluster)), with its
        configuration in C(/etc/postgresql/<version>/<cluster>/), data in the directory named by
        C(data_directory) (normally C(/var/lib/postgresql/<version>/<cluster>)), servers run with
        C(pg_ctl) as the instance owner, or with C(systemctl) on C(postgresql@<version>-<cluster>) under systemd.
      - V(patroni) is a member of a Patroni cluster (role C(dbaas.postgresql.patroni)); its configuration
        C(/etc/patroni/<version>-<cluster>.yml) (O(patroni.config_file)) gives the data directory, the
        configuration directory and the port; the run state is the member's REST API (C(GET /patroni),
        V(started) when its state is C(running)); restart and reload are C(POST /restart) and C(POST /reload);
        start and stop act on the member's Patroni daemon (C(patroni@<version>-<cluster>) under systemd, else
        start-stop-daemon with pid file C(/run/patroni/<version>-<cluster>.pid)), whose postmaster follows it.
      - The playbooks set it from C(pg_controller) (default V(debian)) for every module of the action
        group C(dbaas.postgresql.instance).
    type: str
    default: debian
    choices: [debian, patroni]
  patroni:
    description:
      - How to reach the Patroni member when O(controller=patroni); ignored otherwise.
    type: dict
    suboptions:
      url:
        description:
          - URL of the member's REST API.
          - Default is read from the member's configuration (C(restapi.connect_address), else
            C(restapi.listen)), falling back to C(http://127.0.0.1:8008).
        type: str
      user:
        description: REST API user; default C(restapi.authentication.username) of the member's configuration.
        type: str
      password:
        description: REST API password; default C(restapi.authentication.password) of the member's configuration.
        type: str
      ca_file:
        description: CA file to verify an C(https) REST API.
        type: path
      config_file:
        description: The member's Patroni configuration; default C(/etc/patroni/<version>-<cluster>.yml).
        type: path
'''

    # Connecting to the instance as a database role.
    STANZA = r'''
options:
  stanza:
    description:
      - The pgBackRest stanza, when it is not named like the instance O(cluster).
      - A Patroni cluster has one stanza, named after the cluster (its scope), listing every member of this
        host; the playbooks run the module on the member that leads now, found at run time, with
        O(stanza) the cluster's name.
    type: str
'''

    LOGIN = r'''
options:
  login_user:
    description:
      - Database role to connect as.
      - The pgdbaas install role maps the OS users C(root) and C(postgres) to the C(postgres)
        role over the unix socket (C(pg_hba.conf) first line C(local all postgres peer map=pgdbaas),
        C(pg_ident.conf) entries C(pgdbaas root postgres) and C(pgdbaas postgres postgres)),
        so a module running as root connects without a password.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Not needed with the peer authentication described in O(login_user).
    type: str
  login_unix_socket:
    description:
      - Directory of the unix socket to connect through.
      - When omitted, the first entry of the instance's C(unix_socket_directories) setting is used,
        falling back to C(/var/run/postgresql).
    type: str
  connect_timeout:
    description:
      - Seconds to wait for a connection to be established.
    type: int
    default: 10
requirements:
  - psycopg >= 3.1
notes:
  - Every connection the module opens resolves names in the catalog only (C(search_path) is
    C(pg_catalog, pg_temp)), so that functions and operators a tenant creates in its schemas never
    run in the module's superuser sessions.
'''

    # The modules acting on a whole Patroni cluster (patroni_info, patroni_switchover, patroni_member):
    # module_utils/patroni.py cluster_argument_spec(); each module documents its own timeout.
    PATRONI_CLUSTER = r'''
options:
  version:
    description: PostgreSQL major version of the members.
    type: str
    default: '15'
  cluster:
    description: The Patroni cluster (C(scope)), the pgdbaas instance name.
    type: str
    required: true
  patroni:
    description: How to reach the REST API; by default from the local members' configuration.
    type: dict
    suboptions:
      url:
        description: URL of one member's REST API.
        type: str
      user:
        description: REST API user.
        type: str
      password:
        description: REST API password.
        type: str
      ca_file:
        description: CA file of an C(https) REST API.
        type: path
'''
