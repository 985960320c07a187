#!/usr/bin/env bash
# Fuzz imhost's parsers of untrusted bytes under libFuzzer (stable Rust: sanitizer coverage
# through -C passes=sancov-module; libFuzzer itself is built by the libfuzzer-sys crate).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s; all four targets)
# Targets: nifti, dicom, manifest, plugin_descriptor (fuzz/src/lib.rs). Each run starts from the
# committed corpus fuzz/corpus/<target>/ (plus tests/data/must-fail/ for nifti), writes what it
# finds to fuzz/artifacts/<target>/ and the corpus back minimised (libFuzzer's set-cover merge).
# A finding, once fixed, goes into fuzz/findings/<target>/ under a name that says what it was.
# Not part of CI's budget: `cargo test -p imhost-fuzz` replays the corpus and the findings in
# every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(nifti dicom manifest plugin_descriptor)
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps the instrumentation off build scripts and proc macros.
cargo build --release --quiet --manifest-path fuzz/libfuzzer/Cargo.toml --target "$triple"
bin="fuzz/libfuzzer/target/$triple/release"
status=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  extra=()
  [ "$t" = nifti ] && extra=(tests/data/must-fail)
  echo "== $t: ${seconds} s"
  if ! "$bin/$t" "$corpus" "${extra[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -artifact_prefix="$artifacts/" -print_final_stats=1 2>"fuzz/artifacts/$t.log"; then
    echo "   FINDING: see $artifacts/ and fuzz/artifacts/$t.log"
    tail -n 30 "fuzz/artifacts/$t.log"
    status=1
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "fuzz/artifacts/$t.log" | sed 's/^/   /' || true
  # Keep the committed corpus small: only inputs that add coverage.
  merged="$(mktemp -d)"
  "$bin/$t" -set_cover_merge=1 "$merged" "$corpus" -max_len=65536 >/dev/null 2>&1 || true
  if [ -n "$(ls -A "$merged")" ]; then rm -rf "$corpus" && mv "$merged" "$corpus" && chmod 755 "$corpus"; else rm -rf "$merged"; fi
  echo "   corpus: $(ls "$corpus" | wc -l) inputs"
done
exit $status
