#!/usr/bin/env bash
# Runs one benchmark command of `make bench`, shows its output and keeps it
# in DIR (one numbered log per command) for bench-report.sh.
#   bench-run.sh DIR COMMAND...
set -uo pipefail
dir=$1
shift
mkdir -p "$dir"
n=$(find "$dir" -name '*.log' | wc -l)
log=$(printf '%s/%02d.log' "$dir" "$n")
q=()
for a in "$@"; do
	case $a in
	*[!A-Za-z0-9_./=:-]*) q+=("'$a'") ;;
	*) q+=("$a") ;;
	esac
done
echo "\$ ${q[*]}" >"$log"
"$@" 2>&1 | tee -a "$log"
