#!/usr/bin/env bash
# Runs the fuzzers built by Tests/fuzz/build.sh.
#
#   Tests/fuzz/run.sh fuzz SECONDS [TARGET...]     fuzz each target for SECONDS, print a summary line per target
#   Tests/fuzz/run.sh regressions [TARGET...]      replay corpus/TARGET and regressions/TARGET once, no fuzzing
#
# The committed seeds (corpus/TARGET) are read-only inputs; what the fuzzer learns goes to
# $FUZZ_SCRATCH/corpus/TARGET, crashes to $FUZZ_SCRATCH/artifacts/TARGET/. A crash fails the run: minimise it,
# fix the code, and commit the input under regressions/TARGET/ (see docs/reliability.md).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ=$ROOT/Tests/fuzz
SCRATCH=${FUZZ_SCRATCH:-$ROOT/.build-fuzz}
BIN=$SCRATCH/bin
# The Swift runtime's backtracer fights AddressSanitizer over the crashed process; libFuzzer prints the stack.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:symbolize=1}
mode=${1:?usage: run.sh fuzz SECONDS [TARGET...] | run.sh regressions [TARGET...]}
shift
if [[ $mode == fuzz ]]; then seconds=${1:?seconds}; shift; fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    while read -r name _; do [[ -z "$name" || "$name" == \#* ]] || targets+=("$name"); done < "$FUZZ/targets.txt"
fi

failed=0
for t in "${targets[@]}"; do
    [[ -x "$BIN/$t" ]] || { echo "run.sh: $BIN/$t is not built (Tests/fuzz/build.sh)" >&2; exit 2; }
    mkdir -p "$FUZZ/corpus/$t" "$FUZZ/regressions/$t"
    log=$SCRATCH/logs/$t.log
    mkdir -p "$SCRATCH/logs"
    if [[ $mode == regressions ]]; then
        # -runs=0 with directories: execute every input once and stop.
        n=$(find "$FUZZ/regressions/$t" "$FUZZ/corpus/$t" -type f ! -name '.*' | wc -l)
        if "$BIN/$t" -runs=0 "$FUZZ/regressions/$t" "$FUZZ/corpus/$t" >"$log" 2>&1; then
            printf '%-20s replayed %4d inputs: ok\n' "$t" "$n"
        else
            printf '%-20s replayed %4d inputs: FAILED (see %s)\n' "$t" "$n" "$log"
            grep -m3 -E "INVARIANT|ERROR|SUMMARY" "$log"
            failed=1
        fi
        continue
    fi
    mkdir -p "$SCRATCH/corpus/$t" "$SCRATCH/artifacts/$t"
    "$BIN/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$SCRATCH/artifacts/$t/" "$SCRATCH/corpus/$t" "$FUZZ/corpus/$t" "$FUZZ/regressions/$t" \
        >"$log" 2>&1
    rc=$?
    runs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    cov=$(grep -aoE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
    rss=$(grep -aoE 'stat::peak_rss_mb: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    if [[ $rc -eq 0 ]]; then
        printf '%-20s %5ss %10s runs  %-32s peak %s MB: no crash\n' "$t" "$seconds" "${runs:-?}" "$cov" "${rss:-?}"
    else
        printf '%-20s %5ss FAILED (exit %d): %s\n' "$t" "$seconds" "$rc" "$(find "$SCRATCH/artifacts/$t" -type f -printf '%f\n' | sort | tail -n 1)"
        grep -m3 -E "INVARIANT|ERROR: |SUMMARY" "$log"
        failed=1
    fi
done
exit $failed
