#!/usr/bin/env bash
# Every test: set up, then formatting, lints, the Rust tests (including the nibabel oracle and
# the generated-header check), and the C/C++ tests under valgrind via ctest. Exits non-zero on
# the first failure. Idempotent; a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --release --quiet -- -D warnings
# The command without LibTorch (feature `learned` off) compiles and is lint-clean too.
cargo clippy -p imhost-cli --release --quiet --no-default-features -- -D warnings

step "cargo build (the workspace: plugin worker and Rust plugins the tests load)"
cargo build --workspace --release --quiet

step "cargo test (Rust units, nibabel oracle, must-fail inputs, C ABI from Rust, CLI, header drift, security attacks run as an unprivileged user)"
cargo test --workspace --release --quiet

step "ctest (header as C99/C++17, C ABI and C++ wrapper and static link under valgrind)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON >/dev/null
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure

step "all tests passed"
