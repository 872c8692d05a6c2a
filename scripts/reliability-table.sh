#!/usr/bin/env bash
# Prints the reliability table from the rows the suite reported (case, trials,
# failures, figure; tab-separated) and exits non-zero if any case failed.
set -euo pipefail
report=$1
if [ ! -s "$report" ]; then
  echo "reliability: no case reported (see the test output above)" >&2
  exit 1
fi
echo
echo "| case | trials | failures | figure |"
echo "|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$report"
awk -F'\t' '$3 != 0 { bad = 1 } END { exit bad }' "$report"
