#!/usr/bin/env bash
# The main job on its built-in default: set up, build everything (Rust library, CLI, C/C++
# parts), generate the anatomical CT-perfusion phantom (known ground truth) and run
# `imhost perfusion` on it: CBF, CBV, MTT, TTP, Tmax maps, core and hypoperfusion masks,
# report.json and preview.png in out/main-job/perfusion/ (override the root with IMHOST_OUT),
# plus a comparison with the phantom's truth; then the same with the perfusion CNN
# (out/main-job/perfusion-cnn/). Idempotent; a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh main
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON >/dev/null
cmake --build build -j "$(nproc)"
out="${IMHOST_OUT:-out/main-job}"
target/release/imhost phantom ctp --kind anatomical --noise 5 --seed 1 --out "$out/phantom" --overwrite
target/release/imhost perfusion "$out/phantom/ctp.nii.gz" --out "$out/perfusion" --truth "$out/phantom/truth" --overwrite
# The same study through the perfusion CNN (committed phantom-trained weights; CUDA when present).
exec target/release/imhost perfusion "$out/phantom/ctp.nii.gz" --method cnn --out "$out/perfusion-cnn" \
  --truth "$out/phantom/truth" --overwrite
