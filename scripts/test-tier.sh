#!/usr/bin/env bash
# Runs one test tier and fails it if it ran no test, or, with CI=true, if a
# test skipped: a tier that cannot run must be red in CI, never quietly empty.
#   test-tier.sh NAME GO-TEST-ARGS...
set -uo pipefail
name=$1
shift
log=$(mktemp -t "directord-$name.XXXXXX")
trap 'rm -f "$log"' EXIT

echo "== tier $name: go test $*"
go test -count=1 -v "$@" ./... >"$log" 2>&1
rc=$?

passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
# Package results, failures and skips (with the reason on the next line).
grep -E '^(ok|FAIL|panic:)' "$log"
grep -E -A1 '^\s*--- (FAIL|SKIP)' "$log" | grep -v '^--$' | sed -n '1,400p'
if [ $rc -ne 0 ]; then
	echo "---- what the failing tests said ----"
	grep -E '^\s+(\S+_test\.go|guest\|\s+\S+_test\.go):[0-9]+: ' "$log" | grep -vE 'netlab: \[' | sed -n '1,200p'
	echo "---- last 150 lines of the tier's log ----"
	tail -n 150 "$log"
fi
echo "tier $name: $passed passed, $failed failed, $skipped skipped"

if [ $rc -ne 0 ]; then
	exit $rc
fi
if [ "$passed" -eq 0 ]; then
	echo "tier $name: no test ran" >&2
	exit 1
fi
if [ "${CI:-}" = "true" ] && [ "$skipped" -gt 0 ]; then
	echo "tier $name: $skipped tests skipped under CI" >&2
	exit 1
fi
