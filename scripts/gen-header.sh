#!/usr/bin/env bash
# Regenerate include/imhost.h (from rust/imhost) and include/imhost_plugin.h (from
# rust/imhost-plugin-abi) with the pinned cbindgen, then show what changed. Commit the headers
# with the change that caused them.
set -euo pipefail
cd "$(dirname "$0")/.."
IMHOST_BLESS=1 cargo test -q -p imhost --test header committed_header_matches_the_rust_source
IMHOST_BLESS=1 cargo test -q -p imhost-plugin-abi --test header committed_header_matches_the_rust_source
git --no-pager diff --stat -- include/ || true
