# pgdbaas: `make run` starts the API with the embedded defaults, `make test` runs every test.
# Both install what they need on a fresh Debian 12 machine (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PACKAGES := postgresql-15 postgresql-client-15 postgresql-common postgresql-contrib \
	locales sudo git rsync python3-apt pgbackrest
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test deps venv collection lint sanity molecule pytest bench clean

deps: .stamps/apt venv collection

.stamps/apt:
	@mkdir -p .stamps
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); fi
	@touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

# The checkout is the collection dbaas.postgresql: link it where ansible looks for collections.
collection:
	@mkdir -p ansible_collections/dbaas
	@ln -sfn ../.. ansible_collections/dbaas/postgresql

# Embedded defaults: SQLite in ./var, inventories/local, a first admin (admin / 123456, as in the
# DBaaS seed's curl examples: set PGDBAAS_ADMIN_PASSWORD for anything but a trial) and the agent
# facade's default instance "agent".
run: deps
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

clean:
	rm -rf .stamps ansible_collections
