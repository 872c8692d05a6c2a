#!/usr/bin/env bash
# Runs make targets in order, stops at the first that fails, and prints how long
# each took: where make test spends its time.
#   scripts/phases.sh setup lint unit e2e+bench-smoke,scale-test …
# Lanes joined by a comma run at the same time, each its targets (joined by a plus) in order,
# every target into .run/phases/<target>.log, printed whole when all lanes are done. (The Citus
# suites leave a third of the two cores idle, which the single-node suites fill.)
set -uo pipefail
LOGS=.run/phases
declare -a rows
total_start=$(date +%s)
status=0
row() { # target, seconds, exit status
    rows+=("$(printf '%-14s %5ss%s' "$1" "$2" "$([ "$3" -ne 0 ] && echo '  FAILED')")")
}
for phase in "$@"; do
    start=$(date +%s)
    if [[ "$phase" != *[,+]* ]]; then
        make --no-print-directory "$phase"
        status=$?
        row "$phase" "$(( $(date +%s) - start ))" "$status"
    else
        mkdir -p "$LOGS"
        IFS=, read -ra lanes <<<"$phase"
        targets=()
        for lane in "${lanes[@]}"; do
            IFS=+ read -ra in_lane <<<"$lane"
            for target in "${in_lane[@]}"; do
                targets+=("$target")
                rm -f "$LOGS/$target.log" "$LOGS/$target.status"
            done
            (
                for target in "${in_lane[@]}"; do
                    began=$(date +%s)
                    make --no-print-directory "$target" >"$LOGS/$target.log" 2>&1
                    code=$?
                    echo "$code $(( $(date +%s) - began ))" >"$LOGS/$target.status"
                    [ $code -ne 0 ] && break
                done
            ) &
        done
        wait
        for target in "${targets[@]}"; do
            [ -f "$LOGS/$target.status" ] || continue # its lane stopped before it
            echo "==> $target ($LOGS/$target.log; ran beside the rest of $phase)"
            cat "$LOGS/$target.log"
            read -r code seconds <"$LOGS/$target.status"
            row "$target" "$seconds" "$code"
            [ "$code" -ne 0 ] && status=$code
        done
        row "  (together)" "$(( $(date +%s) - start ))" 0
    fi
    [ $status -ne 0 ] && break
done
echo
echo "phase          time"
printf '%s\n' "${rows[@]}"
printf '%-14s %5ss\n' "total" "$(( $(date +%s) - total_start ))"
exit $status
