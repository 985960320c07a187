#!/usr/bin/env bash
# Regenerate docs/VALIDATION.md: every perfusion method at noise 0, 2, 5 and 10 HU on the
# anatomical and Kudo phantoms, against their ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imhost-cli
exec target/release/imhost validate --out docs/VALIDATION.md
