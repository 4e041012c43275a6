#!/usr/bin/env bash
# Builds the libFuzzer executables listed in Tests/fuzz/targets.txt into $FUZZ_SCRATCH/bin (default .build-fuzz/bin).
#
# The package modules are compiled by SwiftPM into a separate scratch path with coverage instrumentation and
# AddressSanitizer (`-Xswiftc -sanitize=fuzzer,address`, release optimisation so a few minutes of fuzzing get
# through many inputs; Swift's bounds and overflow checks stay on in -O). Not SwiftPM's `--sanitize=fuzzer
# --sanitize=address`: it passes two separate -sanitize= flags in an order that changes from run to run, and the
# driver keeps only the last one, so a module came out with ASan but no coverage (or the reverse). Only library targets are built, so
# libFuzzer's main() never clashes with the executable's. Each fuzzer is then one swiftc link of its target file,
# Support/FuzzSupport.swift, any package source file named `src:PATH` in targets.txt, and the module objects.
#
#   Tests/fuzz/build.sh [TARGET...]     (default: every target in targets.txt)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ=$ROOT/Tests/fuzz
SCRATCH=${FUZZ_SCRATCH:-$ROOT/.build-fuzz}
SWIFT=${SWIFT:-swift}
SWIFTC=${SWIFTC:-swiftc}
OUT=$SCRATCH/release
BIN=$SCRATCH/bin
mkdir -p "$BIN"

# name → modules, from targets.txt (comments and blank lines skipped).
declare -A MODULES
ORDER=()
while read -r name mods; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    MODULES[$name]=$mods
    ORDER+=("$name")
done < "$FUZZ/targets.txt"

WANTED=("$@")
[[ ${#WANTED[@]} -eq 0 ]] && WANTED=("${ORDER[@]}")

build_module() {
    (
        cd "$ROOT" || exit 1
        "$SWIFT" build --scratch-path "$SCRATCH" -c release \
            -Xswiftc -sanitize=fuzzer,address --target "$1" 2>&1 | grep -v '^\[' || true
    )
}

# Swift modules must carry both coverage counters and ASan checks (any object of the module will do). C targets
# (CGPIOD: the libgpiod shim, which no fuzz target reaches) are built without instrumentation.
has_coverage() {
    local o syms
    [[ -f "$OUT/$1.build/sources" ]] && grep -q '\.c$' "$OUT/$1.build/sources" && return 0
    [[ "$1" == CGPIOD ]] && return 0
    # Any other C target (CPlatform): only .c.o objects, no Swift ones. SwiftPM writes no `sources` file for them.
    if compgen -G "$OUT/$1.build/*.c.o" >/dev/null && ! compgen -G "$OUT/$1.build/*.swift.o" >/dev/null; then
        return 0
    fi
    for o in "$OUT/$1.build"/*.o; do
        syms=$(nm "$o" 2>/dev/null)
        grep -q sancov <<<"$syms" && grep -q __asan <<<"$syms" && return 0
    done
    return 1
}

# Build every module the wanted targets need, once each (SwiftPM skips what is up to date).
declare -A BUILT
for t in "${WANTED[@]}"; do
    [[ -n "${MODULES[$t]:-}" ]] || { echo "build.sh: unknown fuzz target '$t' (see $FUZZ/targets.txt)" >&2; exit 2; }
    for m in ${MODULES[$t]}; do
        [[ $m == src:* || -n "${BUILT[$m]:-}" ]] && continue
        build_module "$m"
        [[ -d "$OUT/$m.build" ]] || { echo "build.sh: module $m did not build" >&2; exit 1; }
        # Check the objects really are instrumented (see build_module), and rebuild from scratch once if not.
        if ! has_coverage "$m"; then
            echo "build.sh: $m has no coverage instrumentation; rebuilding it" >&2
            rm -f "$OUT/$m.build"/*.o
            build_module "$m"
            has_coverage "$m" || { echo "build.sh: $m still has no coverage instrumentation" >&2; exit 1; }
        fi
        BUILT[$m]=1
    done
done

for t in "${WANTED[@]}"; do
    objects=()
    extra=()
    sources=()
    for m in ${MODULES[$t]}; do
        if [[ $m == src:* ]]; then
            sources+=("$ROOT/${m#src:}")
            continue
        fi
        # Objects of the module's current sources only: a file deleted upstream leaves a stale .o behind.
        if [[ -f "$OUT/$m.build/sources" ]]; then
            while read -r src; do objects+=("$OUT/$m.build/$(basename "$src").o"); done < "$OUT/$m.build/sources"
        else
            objects+=("$OUT/$m.build"/*.o)
        fi
        if [[ $m == CGPIOD ]]; then
            extra+=(-Xcc "-fmodule-map-file=$OUT/CGPIOD.build/module.modulemap" -lgpiod)
        fi
        if [[ $m == CPlatform ]]; then
            extra+=(-Xcc "-fmodule-map-file=$OUT/CPlatform.build/module.modulemap")
        fi
    done
    echo "linking fuzzer $t"
    rm -f "$BIN/$t"
    "$SWIFTC" -sanitize=fuzzer,address -parse-as-library -O -g -module-name "fuzz_$t" \
        -I "$OUT/Modules" "${extra[@]}" \
        "$FUZZ/Support/FuzzSupport.swift" "$FUZZ/Targets/$t.swift" "${sources[@]}" "${objects[@]}" \
        -o "$BIN/$t" 2>&1 | { grep -v "Cannot export local symbol" || true; }
    [[ -x "$BIN/$t" ]] || { echo "build.sh: linking $t failed" >&2; exit 1; }
done
