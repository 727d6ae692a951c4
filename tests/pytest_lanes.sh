#!/usr/bin/env bash
# `make pytest`: the suite in two lanes at once, one per core of the 2-core CI machine. The lanes
# share nothing: each test module owns its instance names and port ranges (docs/playbooks.md and
# tests/api/conftest.py list them), and the API modules of lane 2 start their own servers.
#   lane 1: the collection's tests and the API's Schemathesis run (its own unreachable server)
#   lane 2: every other API test
# Each lane's output is printed whole once both have ended; the exit code is non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=${PYTEST:-.venv/bin/pytest}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

"$pytest" tests/collection tests/api/test_schemathesis.py "$@" > "$logs/lane1.log" 2>&1 &
lane1=$!
"$pytest" tests/api --ignore=tests/api/test_schemathesis.py "$@" \
    > "$logs/lane2.log" 2>&1 &
lane2=$!
wait "$lane1"; rc1=$?
wait "$lane2"; rc2=$?

echo "=== lane 1: tests/collection, tests/api/test_schemathesis.py (exit $rc1) ==="
cat "$logs/lane1.log"
echo "=== lane 2: tests/api (exit $rc2) ==="
cat "$logs/lane2.log"
# The plain closing line over both lanes.
python3 - "$logs/lane1.log" "$logs/lane2.log" <<'PY'
import re
import sys

totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
for path in sys.argv[1:]:
    lines = [line for line in open(path, encoding="utf-8", errors="replace") if re.search(r"\bin [0-9.]+s\b", line)]
    for count, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1] if lines else ""):
        totals["error" if word.startswith("error") else word] += int(count)
failed = totals["failed"] + totals["error"]
print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
PY
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
