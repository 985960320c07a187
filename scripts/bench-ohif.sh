#!/usr/bin/env bash
# Click to maps in OHIF on a larger study: the anatomical phantom at SIZE (default the CNN
# paper's protocol, 512×512×16×89, 1424 DICOM instances, 748 MB) uploaded to Orthanc with our
# plugin, then the end-to-end viewer test (ohif-plugin/tests/test_ohif_viewer.py: headless
# Chromium clicks "Generate perfusion maps", the page's volumes checked against the command's)
# in a private network namespace. Figures: WORK/viewer/artefacts/timing.json and page.json
# (stage times after the click); they go to BENCHMARKS.md by hand. Needs the build
# (cmake --build build) and scripts/setup.sh test (Orthanc, Chromium, the OHIF viewer).
#   scripts/bench-ohif.sh [WORK] [SIZE] [FRAMES]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
work="${1:-${TMPDIR:-/tmp}/imhost-bench-ohif}"
size="${2:-512,512,16}"
frames="${3:-89}"
dist="$root/.cache/ohif/app-3.13.2/package/dist"
mkdir -p "$work"
cmake --install build --prefix "$work/prefix" >/dev/null
if [ ! -f "$work/phantom-$size-$frames/dicom/.done" ]; then
  rm -rf "$work/phantom-$size-$frames"
  "$work/prefix/bin/imhost" phantom ctp --size "$size" --frames "$frames" --interval 0.5 --dicom \
    --out "$work/phantom-$size-$frames" -q
  touch "$work/phantom-$size-$frames/dicom/.done"
fi
rm -rf "$work/cli" "$work/viewer"
/usr/bin/time -v -o "$work/cli-time.txt" "$work/prefix/bin/imhost" run perfusion-osvd \
  --input "$work/phantom-$size-$frames/dicom" --out "$work/cli" -q
grep -E "Elapsed|Maximum resident" "$work/cli-time.txt"
unshare -n bash -c "
  set -e
  ip link set lo up
  NODE_PATH='$root/ohif-plugin/node_modules' python3 '$root/ohif-plugin/tests/test_ohif_viewer.py' \
    '$work/prefix' '$work/viewer' '$work/phantom-$size-$frames/dicom' '$work/cli' '$dist'
"
cat "$work/viewer/artefacts/timing.json"; echo
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ['stageSeconds', 'resultsShownSeconds', 'overlaySelectedSeconds', 'overlayWindowSeconds', 'mapsShownSeconds']})" "$work/viewer/artefacts/page.json"
