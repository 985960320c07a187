#!/usr/bin/env bash
# CNN inference per study (16 slices of 512x512, T of the model): our runtime, then PyTorch eager
# on the same safetensors weights when Python can import torch (the GPU machines have it:
# /opt/torch/.venv). Prints one JSON line each.
#   scripts/bench-cnn.sh [MODEL_DIR] [DEVICE] [PRECISION]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-models/perfusion-cnn}"
device="${2:-cpu}"
precision="${3:-f32}"
bin=target/release/examples/bench_cnn
[ -x "$bin" ] || cargo build --release -q -p imhost-models --example bench_cnn
"$bin" "$model" --device "$device" --precision "$precision" --repeats "${REPEATS:-5}"
python="${PYTHON:-python3}"
if "$python" -c "import torch" 2>/dev/null; then
  "$python" benches/perfusion_unet_eager.py bench "$model" --device "$device" --dtype "$precision" --repeats "${REPEATS:-5}"
else
  echo "PyTorch eager: skipped ($python cannot import torch)" >&2
fi
