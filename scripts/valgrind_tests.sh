#!/usr/bin/env bash
# Runs the conv2d test binaries under valgrind memcheck on the AVX2 kernels (valgrind does
# not decode AVX-512 and hides it from CPUID, so the AVX-512 builds are never picked under
# it). Any memory error fails the run.
#
# Not run with CONV2D_ISA=scalar: the scalar level executes no unsafe block that the AVX2
# level does not (the intrinsics kernels are skipped, the raw-buffer code is shared), so a
# second pass would re-check safe Rust only and cost CI about six minutes; the portable
# kernels are checked under Miri by scripts/miri.sh.
#
#   bash scripts/valgrind_tests.sh
#
# Property tests run 6 cases per property here (96 natively, where CI runs them on every
# level too). Left out: tests/workspace.rs (repeated ResNet-18 training steps, minutes under
# valgrind; it replaces the allocator anyway), tests/threads_env.rs (environment only), and the
# properties written for AVX-512-only kernels (the masked tiles, AMX), which valgrind never
# runs (the masked tiles' slabs of channel blocks alone took 383 s here): at the AVX2 level they reach the padded tiles and the widened `bf16` path, which
# `direct_tiles_match_reference` and `conv2d_half_and_complex_match_reference` check here,
# and they cost CI about five minutes here; and `wide_tiles_across_chunks_match_reference`
# (73 s here for its one case), whose kernel calls `wide_tiles_match_reference` makes too
# (only the sums carried between them differ, in safe code), and
# `wide_tiles_with_large_sums_match_reference` (106 s here), the same kernel calls over a
# layer that only the shape rule sends there; and `bf16_weights_read_in_place_match_reference`
# (288 s on a Zen 3), written for the AVX512-BF16 dot products, whose `bf16` layers take the
# widened path at the AVX2 level, as `conv2d_half_and_complex_match_reference` checks here.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

# The conv2d crate's test binaries, "name path" per line, `integration` first. Built with
# `--workspace`, whose dependency features CI built already (`-p conv2d` alone rebuilds
# them).
binaries=$(cargo test --workspace --no-run --message-format=json 2>/dev/null |
    grep '"reason":"compiler-artifact"' | grep '/conv2d#' | grep '"kind":\["test"\]' |
    sed -n 's/.*"name":"\([a-z_]*\)".*"executable":"\([^"]*\)".*/\1 \2/p' |
    awk '{ print ($1 == "integration" ? 0 : 1), $0 }' | sort -k1,1n -k2,2 | cut -d" " -f2-)
[ -n "$binaries" ] || { echo "valgrind_tests.sh: no test binaries found"; exit 1; }
not_here="properties::same_padding_tiles_match_reference
properties::dilated_same_padding_rows_match_reference
properties::masked_tiles_match_reference_over_slabs_of_channel_blocks
properties::bf16_tiles_match_reference
properties::bf16_in_place_tiles_match_reference
properties::bf16_strided_tiles_match_reference
properties::bf16_dot_products_match_reference
properties::bf16_weights_read_in_place_match_reference
properties::wide_tiles_across_chunks_match_reference
properties::wide_tiles_with_large_sums_match_reference"
cd conv2d  # the fixtures are read relative to the crate

# One binary under valgrind (the tests that any further arguments select); its log shown
# and a mark left in $failed_dir if it fails.
check() {
    local isa=$1 name=$2 path=$3 start
    shift 3
    start=$(date +%s)
    if CONV2D_ISA=$isa CONV2D_STRESS_SECONDS=0.5 CONV2D_PROPTEST_CASES=6 valgrind --error-exitcode=101 --quiet \
        "$path" --test-threads=2 --quiet "$@" >"/tmp/valgrind-$name.log" 2>&1; then
        echo "valgrind clean: $name, CONV2D_ISA=$isa, $(( $(date +%s) - start )) s"
    else
        cat "/tmp/valgrind-$name.log"
        echo "valgrind: $name failed with CONV2D_ISA=$isa"
        touch "$failed_dir/$name"
    fi
}

# Two processes at a time, each started as soon as one ends: valgrind runs all of a
# process's threads on one core, and the machine has two. The `integration` binary runs a
# process per test of its two heavy modules, `pytorch_fixtures` and `properties` (11
# minutes of the 14 here; whole, they kept one core busy alone for minutes), started first,
# then a process per other module.
failed_dir=$(mktemp -d)
start_check() {
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
    check "$@" &
}
for isa in avx2; do
    while read -r name path; do
        case "$name" in
            workspace|threads_env) ;;
            integration)
                tests=$("$path" --list 2>/dev/null | sed -n 's/: test$//p' |
                    grep -vxF "$not_here")
                for test in $(grep -E '^(pytorch_fixtures|properties)::' <<< "$tests"); do
                    start_check "$isa" "$test" "$path" --exact "$test"
                done
                for module in $(grep -vE '^(pytorch_fixtures|properties)::' <<< "$tests" |
                    sed 's/::.*//' | sort -u); do
                    start_check "$isa" "$module" "$path" "$module::"
                done ;;
            *) start_check "$isa" "$name" "$path" ;;
        esac
    done <<< "$binaries"
done
wait
if [ -n "$(ls -A "$failed_dir")" ]; then
    exit 1
fi
