#!/usr/bin/env bash
# cargo fuzz (libFuzzer, coverage-guided) on every target in fuzz/, RUNS
# executions each; a row per target goes to the reliability table REPORT.
# Stable Rust builds libFuzzer targets with RUSTC_BOOTSTRAP=1 and no sanitizer.
set -euo pipefail
RUNS=$1
REPORT=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz"
cd "$ROOT/fuzz"
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "fuzz: no targets" >&2; exit 1; }
status=0
for target in $targets; do
  mkdir -p "corpus/$target"
  started=$(date +%s)
  if out=$(cargo fuzz run --sanitizer none -O "$target" -- -runs="$RUNS" 2>&1); then failed=0; else failed=1; status=1; fi
  done_line=$(grep -o 'Done [0-9]* runs' <<<"$out" | tail -1 || true)
  printf 'cargo fuzz %s\t%s\t%s\t%s in %ss, corpus %s inputs\n' "$target" "$RUNS" "$failed" \
    "${done_line:-no run finished}" "$(( $(date +%s) - started ))" "$(ls "corpus/$target" | wc -l)" >> "$REPORT"
  [ "$failed" = 0 ] || { echo "$out" | tail -30 >&2; }
done
exit $status
