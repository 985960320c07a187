#!/usr/bin/env bash
# Regenerate the perfusion-CNN section of docs/VALIDATION.md (and docs/validation-cnn.json):
# the committed default weights on 12 held-out varied phantoms against box NLR and the truth,
# at full and half dose (every second frame dropped). About 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imhost-cli
exec target/release/imhost validate-cnn --model models/perfusion-cnn --cases 12 --seed 90000 --out docs/VALIDATION.md
