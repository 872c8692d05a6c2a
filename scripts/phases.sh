#!/usr/bin/env bash
# Runs make targets in order, stops at the first that fails, and prints how long
# each took: where make test spends its time.
#   scripts/phases.sh setup lint unit …
set -uo pipefail
declare -a rows
total_start=$(date +%s)
status=0
for phase in "$@"; do
    start=$(date +%s)
    make --no-print-directory "$phase"
    status=$?
    rows+=("$(printf '%-14s %5ss%s' "$phase" "$(( $(date +%s) - start ))" "$([ $status -ne 0 ] && echo '  FAILED')")")
    [ $status -ne 0 ] && break
done
echo
echo "phase          time"
printf '%s\n' "${rows[@]}"
printf '%-14s %5ss\n' "total" "$(( $(date +%s) - total_start ))"
exit $status
