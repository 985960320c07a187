#!/usr/bin/env bash
# Time the perfusion pipeline on the CNN paper's protocol: a 512×512×16×89 int16 study (the
# anatomical phantom at 0.45 mm pixels, 89 frames 0.5 s apart), per stage (report.json timings)
# and end to end, with the peak resident memory of each run. Results go to BENCHMARKS.md by hand.
#   [METHODS="bsvd cnn"] scripts/bench-perfusion.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/imhost-bench-perfusion}"
cargo build --release -q -p imhost-cli
imhost=target/release/imhost
if [ ! -f "$work/still/ctp.nii.gz" ]; then
  $imhost phantom ctp --size 512,512,16 --frames 89 --interval 0.5 --out "$work/still" -q
fi
peak() { python3 -c "import re,sys; print(round(int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', open(sys.argv[1]).read()).group(1))/1024))" "$1"; }
echo "input: $(du -h "$work/still/ctp.nii.gz" | cut -f1) compressed, 746 MB as int16"
# METHODS="cnn" scripts/bench-perfusion.sh times one method (cnn: the committed default weights).
for method in ${METHODS:-bsvd osvd tikhonov ssvd nlr cnn}; do
  /usr/bin/time -v -o "$work/time-$method.txt" $imhost perfusion "$work/still/ctp.nii.gz" --out "$work/out-$method" \
    --method "$method" --no-motion-correction -q >/dev/null
  python3 - "$work/out-$method/report.json" "$method" "$(peak "$work/time-$method.txt")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
stages = ", ".join(f"{t['stage']} {t['seconds']:.2f}" for t in r["timings"])
total = sum(t["seconds"] for t in r["timings"])
print(f"{sys.argv[2]}: pipeline {total:.2f} s (without file reading/writing); peak RSS {sys.argv[3]} MiB; {stages}")
PY
  grep "Elapsed (wall clock)" "$work/time-$method.txt" | sed "s/^/  $method end to end incl. reading .nii.gz and writing outputs: /"
done
