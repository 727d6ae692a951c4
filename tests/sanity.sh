#!/usr/bin/env bash
# `ansible-test sanity` on a copy of the collection (`make sanity`); fails on any finding.
#
# ansible-test must run from a directory named ansible_collections/<namespace>/<name>, so the
# collection's files (what galaxy.yml's build_ignore keeps: no .venv, .ci, api, bench, the API's
# tests, nor the ansible_collections link) are copied to $(mktemp -d)/ansible_collections/
# dbaas/postgresql. No git metadata is needed: without it ansible-test tests every file.
#
# Every sanity test that needs Python packages runs in its own virtual environment under
# ~/.ansible/test/venv (kept between runs; the first run takes about a minute), whose
# requirements pip installs from PyPI. To create those environments ansible-test first fetches a
# pip bootstrap script (get-pip.py) from ci-files.testing.ansible.com, which this machine cannot
# reach; we put a stand-in at the cache path ansible-test reads first: it installs the same pip
# version with pip itself, run from that version's wheel (downloaded from PyPI).
#
# All 24 tests of ansible-core 2.19 run; none is skipped. pslint has nothing to check (no
# PowerShell). The test of shell scripts needs the program shellcheck (apt package of that
# name): without it ansible-test only warns. It checks no script of ours anyway, because
# tests/*.sh are not copied.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
python=3.11

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/dbaas/postgresql"
mkdir -p "$dest"
rsync -a \
    --exclude=/.git/ --exclude=/.venv --exclude=/ansible_collections/ --exclude=/.ci/ \
    --exclude=/api/ --exclude=/bench/ --exclude=/.stamps/ --exclude=/.ansible/ --exclude=/var/ \
    --include=/tests/ --include='/tests/sanity/***' --include='/tests/unit/***' \
    --include='/tests/integration/***' --exclude='/tests/*' \
    --exclude=__pycache__/ --exclude=.pytest_cache/ --exclude='*.pyc' \
    ./ "$dest/"

# The pip bootstrap stand-in (see above), for the pip version this ansible-test pins.
pip_version=$(python -c 'import types; from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$python"'"))["pip"])')
cache="$HOME/.ansible/test/cache"
bootstrap="$cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$bootstrap" ]; then
    mkdir -p "$cache"
    pip download --quiet --disable-pip-version-check --no-deps --dest "$cache" "pip==$pip_version"
    wheel=$(ls "$cache"/pip-"$pip_version"-py3-none-any.whl)
    cat > "$bootstrap.tmp" <<PY
# Stand-in written by pgdbaas tests/sanity.sh for ansible-test's pip $pip_version bootstrap script
# (get-pip.py, fetched from a host this machine cannot reach): installs pip with pip itself,
# run from the pip $pip_version wheel downloaded from PyPI.
import sys

sys.path.insert(0, "$wheel")
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]))
PY
    mv "$bootstrap.tmp" "$bootstrap"
fi

cd "$dest"
ansible-test sanity --python "$python" --color no "$@"
