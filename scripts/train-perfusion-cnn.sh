#!/usr/bin/env bash
# Reproduce the committed default weights (models/perfusion-cnn): build the phantom training
# set (80 varied anatomical phantoms, seeds 1000-1079, targets = our box-NLR maps), then train
# the compact U-Net (width 16, batch norm, Adam 2e-3 halved on validation plateaus, 40 epochs,
# seed 1). About 30 minutes on 2 CPU cores; both steps resume where they stopped.
#   scripts/train-perfusion-cnn.sh [DATA_DIR] [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-out/training/perfusion-set}"
model="${2:-out/training/perfusion-cnn}"
cargo build --release -q -p imhost-cli
target/release/imhost train perfusion-set --out "$data" --cases 80 --seed 1000 --size 128,128,8
resume=()
[ -f "$model/checkpoints/checkpoint.json" ] && resume=(--resume)
exec target/release/imhost train perfusion-cnn --data "$data" --out "$model" --epochs 40 --width 16 \
  --batch-norm --optimizer adam --learning-rate 0.002 --seed 1 --id perfusion-cnn-phantom "${resume[@]}"
