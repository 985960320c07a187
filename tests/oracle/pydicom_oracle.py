"""DICOM oracle for the Rust tests: describe a folder's CT series as pydicom reads it.

Prints JSON: the slices sorted along the slice normal (then by temporal position), with
ImagePositionPatient, the orientation, pixel spacing, rows/columns, a few HU values
(pixel_array * slope + intercept), and each slice's AcquisitionTime (seconds after midnight) and
TemporalPositionIdentifier where present.
"""
import json
import os
import sys

import pydicom

folder = sys.argv[1]
slices = []
for name in sorted(os.listdir(folder)):
    ds = pydicom.dcmread(os.path.join(folder, name))
    if "ImagePositionPatient" not in ds:
        continue
    slices.append(ds)
o = [float(x) for x in slices[0].ImageOrientationPatient]
normal = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]]
def temporal(d):
    return int(getattr(d, "TemporalPositionIdentifier", 0) or 0)


def seconds(d):
    tm = str(getattr(d, "AcquisitionTime", "") or "")
    if len(tm) < 6:
        return None
    return int(tm[0:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


slices.sort(key=lambda d: (temporal(d), sum(float(p) * n for p, n in zip(d.ImagePositionPatient, normal))))
out = {
    "orientation": o,
    "pixel_spacing": [float(x) for x in slices[0].PixelSpacing],
    "rows": int(slices[0].Rows),
    "columns": int(slices[0].Columns),
    "positions": [[float(x) for x in d.ImagePositionPatient] for d in slices],
    "temporal_positions": [temporal(d) for d in slices],
    "times_s": [seconds(d) for d in slices],
    "samples": [],
}
for k, d in enumerate(slices):
    hu = d.pixel_array.astype(float) * float(getattr(d, "RescaleSlope", 1)) + float(getattr(d, "RescaleIntercept", 0))
    for (r, c) in [(0, 0), (d.Rows // 2, d.Columns // 3), (d.Rows - 1, d.Columns - 1)]:
        out["samples"].append({"k": k, "row": r, "column": c, "hu": hu[r, c]})
print(json.dumps(out))
