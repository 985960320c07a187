#!/bin/sh
# One 512×512×64 cardiac CT end to end through `imhost cac` (NIfTI read, checks, the five-member
# cac-agatston ensemble, Agatston scoring, mask, report and preview written), three runs: wall
# time and peak memory of the whole process, and the stages from report.json.
#
#   benches/cac_exam.sh [WORK_DIR]        (IMHOST=path/to/imhost, IMHOST_DEVICE=cuda on a GPU)
set -eu
B=${IMHOST:-target/release/imhost}
D=${1:-${TMPDIR:-/tmp}/imhost-cac-bench}
"$B" phantom cac --out "$D/ph" --size 512,512,64 --spacing 0.4,0.4,3 --category D --seed 5 --overwrite -q
for n in 1 2 3; do
    /usr/bin/time -f "run $n: %e s wall, %M KiB peak RSS" "$B" cac "$D/ph/ct.nii.gz" --out "$D/out" --overwrite -q
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('  stages (s):', {k: round(v, 3) for k, v in r['seconds'].items()}, 'Agatston', round(r['agatston'], 1), r['category'])" "$D/out/report.json"
done
