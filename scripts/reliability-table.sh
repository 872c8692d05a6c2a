#!/usr/bin/env bash
# Prints the reliability table from the rows the suites reported (case,
# trials, failures, figure; tab-separated; one file per suite, missing files
# skipped) and exits non-zero if none was reported or any case failed.
set -euo pipefail
reports=()
for f in "$@"; do [ -s "$f" ] && reports+=("$f"); done
if [ ${#reports[@]} -eq 0 ]; then
  echo "reliability: no case reported (see the test output above)" >&2
  exit 1
fi
echo
echo "| case | trials | failures | figure |"
echo "|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "${reports[@]}"
awk -F'\t' '$3 != 0 { bad = 1 } END { exit bad }' "${reports[@]}"
