#!/usr/bin/env bash
# Plugin call overhead, in process and isolated (BENCHMARKS.md "Plugins"). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imhost-plugin-host --bin imhost-plugin-worker
IMHOST_PLUGIN_WORKER="$PWD/target/release/imhost-plugin-worker" \
  cargo run --release -q -p imhost-plugin-host --example bench_plugins
