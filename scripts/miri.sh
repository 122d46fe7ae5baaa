#!/usr/bin/env bash
# Runs the small-problem test under Miri on the portable (scalar) kernels: undefined
# behaviour in the library's raw-buffer and dispatch code fails it. Needs a nightly
# toolchain with the miri and rust-src components:
#   rustup component add miri rust-src --toolchain nightly
#
#   bash scripts/miri.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CONV2D_ISA=scalar CONV2D_NUM_THREADS=1
export MIRIFLAGS="-Zmiri-env-forward=CONV2D_ISA -Zmiri-env-forward=CONV2D_NUM_THREADS"
cargo +nightly miri test -p conv2d --test integration small_cases::
