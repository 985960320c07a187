#!/usr/bin/env bash
# Run `imhost perfusion` over a fixed set of small phantoms and methods and print one checksum
# line per output file: run it with the binary before and after a change that must not alter the
# arithmetic, and diff the two listings (bit for bit). Needs no GPU and no ITK.
#   scripts/compare-perfusion.sh IMHOST_BINARY WORKDIR > listing.txt
set -euo pipefail
imhost="$1"
work="$2"
mkdir -p "$work"
phantom() { # name, then phantom options
  local name="$1"; shift
  [ -f "$work/$name/ctp.nii.gz" ] || "$imhost" phantom ctp --out "$work/$name" -q "$@" >/dev/null
}
phantom anatomical
phantom kudo --kind kudo
phantom nonuniform --nonuniform-times --seed 3
phantom noisy --noise 10 --seed 5
phantom moving --motion --seed 2
run() { # label, input, options
  local label="$1" input="$2"; shift 2
  rm -rf "$work/out-$label"
  "$imhost" perfusion "$work/$input/ctp.nii.gz" --out "$work/out-$label" -q "$@" >/dev/null
  (cd "$work/out-$label" && for f in *.nii.gz; do
     printf '%s %s %s\n' "$label" "$f" "$(gzip -dc "$f" | sha256sum | cut -c1-16)"; done)
  python3 - "$work/out-$label/report.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("timings", "software", "threads"):
    r.pop(k, None)
print(sys.argv[2], "report", json.dumps(r, sort_keys=True)[:0] or __import__("hashlib").sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16])
PY
}
for m in osvd bsvd ssvd tikhonov nlr; do run "anatomical-$m" anatomical --method "$m"; done
for m in osvd nlr; do run "kudo-$m" kudo --method "$m"; done
run nonuniform-osvd nonuniform
run noisy-osvd noisy
run nofilter-osvd anatomical --no-filter
run moving-estimate-only moving --no-motion-correction
run anatomical-cnn anatomical --method cnn --model models/perfusion-cnn
