#!/usr/bin/env bash
# Regenerate include/imhost.h from rust/imhost with the pinned cbindgen (a dev-dependency of
# rust/imhost), then show what changed. Commit the header with the change that caused it.
set -euo pipefail
cd "$(dirname "$0")/.."
IMHOST_BLESS=1 cargo test -q -p imhost --test header committed_header_matches_the_rust_source
git --no-pager diff --stat -- include/imhost.h || true
