#!/usr/bin/env bash
# DICOM benchmark (BENCHMARKS.md "DICOM results"): imhost reading a 512×512×16×89 series of 1424
# instances from memory and writing every perfusion result as DICOM, against its NIfTI writer
# and against highdicom writing the same Parametric Map. Whole-process peak memory with
# /usr/bin/time -v. Needs scripts/setup.sh test (highdicom); uses ~3 GB of disk in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${TMPDIR:-/tmp}/imhost-bench-dicom}"
runs="${2:-3}"
cargo build --release -q -p imhost-core --example bench_dicom
/usr/bin/time -v target/release/examples/bench_dicom "$out" "$runs" 2>"$out.time" | tee "$out.imhost.json"
grep -E "Maximum resident set size|Elapsed" "$out.time"
PYTHONPATH=.cache/python /usr/bin/time -v python3 benches/highdicom_pm.py "$out" "$runs" 2>"$out.highdicom.time" | tee "$out.highdicom.json"
grep -E "Maximum resident set size|Elapsed" "$out.highdicom.time"
