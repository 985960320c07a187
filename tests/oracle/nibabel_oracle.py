#!/usr/bin/env python3
"""Print, as JSON, what nibabel reads from NIfTI files: the independent truth that imhost's
NIfTI reader and writer are tested against (rust/imhost-core/tests/nifti_oracle.rs).

Usage: nibabel_oracle.py FILE...   -> one JSON object per file, in a list.

For each file: shape, best affine (nibabel's get_best_affine: sform, then qform, then its own
base affine), the form codes, zooms, time unit, the scaled voxel values' sum/min/max, and the
values at 16 deterministic voxels (Fortran-order flat indices, so that Rust can find them).
"""
import json
import sys

import nibabel as nib
import numpy as np


def num(x):
    """A float for JSON: NaN and infinities (not valid JSON) become null."""
    x = float(x)
    return x if np.isfinite(x) else None


def describe(path):
    # Plain NIfTI classes, so that CIFTI-2 files are seen as the NIfTI-2 images they are.
    img = None
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            img = cls.from_filename(path)
            break
        except Exception as exc:  # a file nibabel refuses is reported, not fatal
            error = f"{type(exc).__name__}: {exc}"
    if img is None:
        return {"path": path, "error": error}
    header = img.header
    data = np.asanyarray(img.get_fdata(dtype=np.float64))
    flat = data.reshape(-1, order="F")
    n = flat.size
    picks = sorted({(k * 7919 * 104729 + 17) % n for k in range(16)} | {0, n - 1})
    samples = [
        {"index": [int(x) for x in np.unravel_index(p, data.shape, order="F")], "value": num(flat[p])}
        for p in picks
    ]
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    _, time_unit = header.get_xyzt_units()
    # After loading, nibabel keeps the scaling on the data proxy (the header's is reset).
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return {
        "path": path,
        "version": 2 if isinstance(header, nib.Nifti2Header) else 1,
        "shape": [int(s) for s in data.shape],
        "affine": img.affine.tolist(),
        "sform_code": sform_code,
        "qform_code": qform_code,
        "zooms": [float(z) for z in header.get_zooms()],
        "time_unit": time_unit,
        "toffset": float(header["toffset"]),
        "slope": None if slope is None else float(slope),
        "inter": None if inter is None else float(inter),
        "on_disk_dtype": str(header.get_data_dtype()),
        "big_endian": header.endianness == ">",
        "sum": num(np.nansum(flat)),
        "min": num(np.nanmin(flat)),
        "max": num(np.nanmax(flat)),
        "samples": samples,
    }


if __name__ == "__main__":
    json.dump([describe(p) for p in sys.argv[1:]], sys.stdout, allow_nan=False)
