#!/usr/bin/env bash
# Runs every molecule scenario (molecule/*/molecule.yml) against this machine, one after the
# other, from the repository root (`make molecule`). Works without a TTY (CI=true).
# Usage: tests/molecule.sh [scenario ...]   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$root"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
# The checkout is the collection dbaas.postgresql (as `make collection` links it).
mkdir -p ansible_collections/dbaas
ln -sfn ../.. ansible_collections/dbaas/postgresql

if [ "$#" -gt 0 ]; then
    scenarios=("$@")
else
    scenarios=()
    for f in molecule/*/molecule.yml; do
        scenarios+=("$(basename "$(dirname "$f")")")
    done
fi

failed=()
for s in "${scenarios[@]}"; do
    echo "=== molecule test -s $s"
    start=$SECONDS
    if molecule test -s "$s" </dev/null; then
        echo "=== $s passed in $((SECONDS - start)) s"
    else
        echo "=== $s FAILED after $((SECONDS - start)) s"
        failed+=("$s")
    fi
done
echo "molecule: $(( ${#scenarios[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
