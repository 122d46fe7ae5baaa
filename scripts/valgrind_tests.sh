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
# Property tests run 16 cases per property here (96 natively, where CI runs them on every
# level too). Left out: tests/workspace.rs (repeated ResNet-18 training steps, minutes under valgrind;
# it replaces the allocator anyway) and tests/threads_env.rs (environment only).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

binaries=$(cargo test -p conv2d --no-run 2>&1 | sed -n 's/^ *Executable tests\/\([a-z_]*\)\.rs (\(.*\))$/\1 \2/p')
cd conv2d  # the fixtures are read relative to the crate
for isa in avx2; do
    while read -r name path; do
        case "$name" in workspace|threads_env) continue ;; esac
        start=$(date +%s)
        CONV2D_ISA=$isa CONV2D_STRESS_SECONDS=0.5 CONV2D_PROPTEST_CASES=16 valgrind --error-exitcode=101 --quiet \
            "../$path" --test-threads=2 --quiet >/tmp/valgrind-$name.log 2>&1 || {
            cat /tmp/valgrind-$name.log
            echo "valgrind: $name failed with CONV2D_ISA=$isa"
            exit 1
        }
        echo "valgrind clean: $name, CONV2D_ISA=$isa, $(( $(date +%s) - start )) s"
    done <<< "$binaries"
done
