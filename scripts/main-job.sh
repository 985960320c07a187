#!/usr/bin/env bash
# The main job on its built-in default: set up, build everything (Rust library, CLI, C/C++
# parts), then run `imhost demo`, which generates a 4-D CT volume with known content, computes
# its temporal MIP, checks it against the truth, and writes the results to out/main-job/
# (override with IMHOST_OUT). Idempotent; a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh main
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON >/dev/null
cmake --build build -j "$(nproc)"
exec target/release/imhost demo --out "${IMHOST_OUT:-out/main-job}"
