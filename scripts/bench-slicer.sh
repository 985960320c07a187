#!/usr/bin/env bash
# Generate perfusion maps in 3D Slicer's logic vs the command, on the CNN paper's protocol
# (512×512×16×89 int16, 746 MB): the study held as Slicer holds it (a Sequence, one volume per
# frame), from Apply to every node in the scene (the module's 100 ms polling included), with the
# longest time the main thread was held, the input copy and peak memory; then `imhost perfusion`
# on the same file under /usr/bin/time -v. Needs the extension's test build (ctest -R
# slicer_extension builds it). Results go to BENCHMARKS.md by hand.
#   [METHODS="osvd bsvd"] scripts/bench-slicer.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/imhost-bench-slicer}"
bench=build/tests/slicer/build/Testing/benchPerfusionMaps
imhost=build/tests/slicer/prefix/bin/imhost
if [ ! -x "$bench" ]; then
  echo "build the extension's tests first: ctest --test-dir build -R slicer_extension" >&2
  exit 1
fi
mkdir -p "$work"
if [ ! -f "$work/still/ctp.nii.gz" ]; then
  $imhost phantom ctp --size 512,512,16 --frames 89 --interval 0.5 --out "$work/still" -q
fi
peak() { python3 -c "import re,sys; print(round(int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', open(sys.argv[1]).read()).group(1))/1024))" "$1"; }
wall() { python3 -c "import re,sys; m=re.search(r'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)', open(sys.argv[1]).read()); print(round((int(m.group(1) or 0)*60+int(m.group(2)))*60+float(m.group(3)) if m.group(1) else int(m.group(2))*60+float(m.group(3)), 1))" "$1"; }
# RUNS alternating runs of each (the machine is noisy): medians.
for method in ${METHODS:-osvd bsvd}; do
  runs=()
  for n in $(seq "${RUNS:-3}"); do
    slicer=$("$bench" "$work/still/ctp.nii.gz" "$method" 2>/dev/null | tail -1)
    /usr/bin/time -v -o "$work/time-$method.txt" $imhost perfusion "$work/still/ctp.nii.gz" --method "$method" \
      --out "$work/cli-$method" --overwrite -q >/dev/null
    cli_pipeline=$(python3 -c "import json,sys; print(sum(t['seconds'] for t in json.load(open(sys.argv[1]))['timings']))" "$work/cli-$method/report.json")
    runs+=("{\"slicer\": $slicer, \"cli_wall\": $(wall "$work/time-$method.txt"), \"cli_peak\": $(peak "$work/time-$method.txt"), \"cli_pipeline\": $cli_pipeline}")
  done
  python3 - "$method" "${runs[@]}" <<'PY'
import json, statistics, sys
method, runs = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
med = lambda f: statistics.median(f(r) for r in runs)
apply_s, pipe_s = med(lambda r: r["slicer"]["apply_to_nodes_s"]), med(lambda r: r["slicer"]["pipeline_s"])
longest = max(r["slicer"]["longest_main_thread_update_s"] for r in runs)
start = max(r["slicer"]["start_s"] for r in runs)
copy = runs[0]["slicer"]["input_copy_mib"]
peak = max(r["slicer"]["peak_during_run_mib"] for r in runs)
added = max(r["slicer"]["peak_during_run_mib"] - r["slicer"]["rss_before_mib"] for r in runs)
cli_wall, cli_pipe, cli_peak = med(lambda r: r["cli_wall"]), med(lambda r: r["cli_pipeline"]), max(r["cli_peak"] for r in runs)
print(f"{method} (median of {len(runs)}): Slicer Apply->nodes {apply_s:.1f} s (its pipeline {pipe_s:.1f} s; start {start*1000:.1f} ms and "
      f"longest main-thread update {longest*1000:.1f} ms, the worst of the runs; input copy {copy:.0f} MiB; peak {peak:.0f} MiB incl. "
      f"the Sequence) | command {cli_wall:.1f} s end to end, pipeline {cli_pipe:.1f} s, peak {cli_peak:.0f} MiB | Apply->nodes vs the "
      f"command's pipeline {100 * (apply_s / cli_pipe - 1):+.0f} %, vs its end to end {100 * (apply_s / cli_wall - 1):+.0f} %; "
      f"the run added {added:.0f} MiB to the process (peak - RSS before Apply, which holds the Sequence) vs the command's whole "
      f"peak {cli_peak:.0f} MiB (target: <= that + one input copy, {cli_peak + copy:.0f})")
PY
done
