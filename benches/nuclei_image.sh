#!/bin/sh
# One 1024×1024 RGB nuclei image end to end through `imhost nuclei` (PNG read, MultiResUNet of
# models/multiresunet-nuclei, mask, probability, report and preview written), three runs: wall
# time and peak memory of the whole process.
#
#   benches/nuclei_image.sh [WORK_DIR]     (IMHOST=path/to/imhost, IMHOST_DEVICE=cuda on a GPU)
set -eu
B=${IMHOST:-target/release/imhost}
D=${1:-${TMPDIR:-/tmp}/imhost-nuclei-bench}
"$B" phantom nuclei --out "$D/ph" --size 1024,1024 --seed 7 --overwrite -q
for n in 1 2 3; do
    /usr/bin/time -f "run $n: %e s wall, %M KiB peak RSS" "$B" nuclei "$D/ph/000.png" --out "$D/out" --overwrite -q
done
