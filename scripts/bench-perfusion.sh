#!/usr/bin/env bash
# Time the perfusion pipeline on the CNN paper's protocol: a 512×512×16×89 int16 study (the
# anatomical phantom at 0.45 mm pixels, 89 frames 0.5 s apart), per stage (report.json timings)
# and end to end, with the peak resident memory of each run. Results go to BENCHMARKS.md by hand.
#   [METHODS="bsvd cnn"] [MOTION=1] scripts/bench-perfusion.sh [WORKDIR]
# MOTION=1: the same phantom with simulated rigid head motion (--motion), motion corrected by
# ITK as the command does by default, compared with the phantom's truth.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/imhost-bench-perfusion}"
cargo build --release -q -p imhost-cli
imhost=target/release/imhost
study=still
motion_flags=(--no-motion-correction)
if [ "${MOTION:-0}" = 1 ]; then
  study=moving
  motion_flags=(--truth "$work/moving/truth")
fi
if [ ! -f "$work/$study/ctp.nii.gz" ]; then
  extra=()
  [ "$study" = moving ] && extra=(--motion)
  $imhost phantom ctp --size 512,512,16 --frames 89 --interval 0.5 "${extra[@]}" --out "$work/$study" -q
fi
peak() { python3 -c "import re,sys; print(round(int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', open(sys.argv[1]).read()).group(1))/1024))" "$1"; }
echo "input ($study): $(du -h "$work/$study/ctp.nii.gz" | cut -f1) compressed, 746 MB as int16"
# METHODS="cnn" scripts/bench-perfusion.sh times one method (cnn: the committed default weights).
for method in ${METHODS:-bsvd osvd tikhonov ssvd nlr cnn}; do
  /usr/bin/time -v -o "$work/time-$method.txt" $imhost perfusion "$work/$study/ctp.nii.gz" --out "$work/out-$method" \
    --method "$method" "${motion_flags[@]}" -q --overwrite >/dev/null
  python3 - "$work/out-$method/report.json" "$method" "$(peak "$work/time-$method.txt")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
stages = ", ".join(f"{t['stage']} {t['seconds']:.2f}" + (f" ({t['peak_memory_mib']:.0f} MiB)" if "peak_memory_mib" in t else "") for t in r["timings"])
total = sum(t["seconds"] for t in r["timings"])
print(f"{sys.argv[2]}: pipeline {total:.2f} s (without file reading/writing); peak RSS {sys.argv[3]} MiB; {stages}")
m = r["motion"]
if m.get("corrected"):
    print(f"  motion: {m['registered_frames']} frames registered, grid shrunk {m['grid_shrink']}, largest {max(m['registered_mm']):.2f} mm; QC flags {[f['flag'] for f in r['qc_flags']]}")
import os
cmp = os.path.join(os.path.dirname(sys.argv[1]), "truth_comparison.json")
if os.path.exists(cmp):
    c = json.load(open(cmp))
    print(f"  against the truth: core Dice {c['core_dice']:.3f}, hypoperfusion Dice {c['hypoperfusion_dice']:.3f}")
PY
  grep "Elapsed (wall clock)" "$work/time-$method.txt" | sed "s/^/  $method end to end incl. reading .nii.gz and writing outputs: /"
done
