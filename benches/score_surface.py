#!/usr/bin/env python3
"""HD95 and NSD of a 512×512×300 mask pair: imhost against MONAI and MedPy, in one run.

The pair: two ellipsoids on a 0.8×0.8×1.0 mm grid (the truth with semi-axes 150, 120, 100
voxels; the prediction moved by (3, −2, 1) voxels with semi-axes 147, 123, 98), about 140 000
surface voxels each. Written once as uncompressed NIfTI into a temporary folder.

For each tool the wall time of HD95 + NSD (τ = 1 mm) is measured on masks already in memory
(imhost: `cargo bench -p imhost-core --bench score_surface` gives that figure; here the whole
`imhost score seg --metrics hd95,nsd` process, NIfTI reads included, is timed as well), and the
values are compared: the three must agree (HD95 to 1e-4 mm between imhost and MONAI, which works in float32, NSD
to 1e-6; MedPy's hd95 pools both directions, so it is compared with imhost's hd95_pooled).

Run (takes a few minutes; MedPy is the slow one):
    python3 -m venv .cache/score-oracle
    .cache/score-oracle/bin/pip install -r tests/oracle/score_oracle.requirements.txt
    cargo build --release -p imhost-cli
    .cache/score-oracle/bin/python benches/score_surface.py [--imhost target/release/imhost]
"""

import argparse
import json
import os
import struct
import subprocess
import tempfile
import time

import numpy as np

SHAPE = (512, 512, 300)
SPACING = (0.8, 0.8, 1.0)


def ellipsoid(centre, axes):
    i = ((np.arange(SHAPE[0], dtype=np.float32) - centre[0]) / axes[0]) ** 2
    j = ((np.arange(SHAPE[1], dtype=np.float32) - centre[1]) / axes[1]) ** 2
    k = ((np.arange(SHAPE[2], dtype=np.float32) - centre[2]) / axes[2]) ** 2
    return (i[:, None, None] + j[None, :, None] + k[None, None, :]) <= 1.0


def write_nifti(path, mask):
    """A uint8 NIfTI-1 file (i fastest), axis-aligned, LPS origin 0."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *SHAPE, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 2, 8)  # DT_UINT8, 8 bits
    struct.pack_into("<8f", header, 76, 1.0, *SPACING, 1.0, 0, 0, 0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[123] = 10  # xyzt_units: mm, s
    struct.pack_into("<hh", header, 252, 0, 1)  # qform 0, sform scanner
    # sform: RAS = diag(-sx, -sy, sz) (LPS axes), origin 0.
    struct.pack_into("<4f", header, 280, -SPACING[0], 0, 0, 0)
    struct.pack_into("<4f", header, 296, 0, -SPACING[1], 0, 0)
    struct.pack_into("<4f", header, 312, 0, 0, SPACING[2], 0)
    header[344:348] = b"n+1\0"
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.asfortranarray(mask.astype(np.uint8)).tobytes(order="F"))


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imhost", default="target/release/imhost")
    ap.add_argument("--no-medpy", action="store_true", help="skip MedPy (the slow one)")
    args = ap.parse_args()
    c = (256.0, 256.0, 150.0)
    truth = ellipsoid(c, (150, 120, 100))
    pred = ellipsoid((c[0] + 3, c[1] - 2, c[2] + 1), (147, 123, 98))
    print(f"grid {SHAPE}, spacing {SPACING} mm; truth {truth.sum()} voxels, prediction {pred.sum()}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        p, t = os.path.join(d, "pred.nii"), os.path.join(d, "truth.nii")
        write_nifti(p, pred)
        write_nifti(t, truth)
        cmd = [args.imhost, "score", "seg", p, t, "--metrics", "hd95,hd95_pooled,nsd", "--tolerance-mm", "1",
               "--json", "-q"]
        subprocess.run(cmd, check=True, capture_output=True)  # page cache warm
        out, secs = timed(lambda: subprocess.run(cmd, check=True, capture_output=True).stdout)
        ours = json.loads(out)["labels"][0]
        rows.append(("imhost score seg (whole process, 2 NIfTI reads)", secs, ours["hd95"], ours["nsd"]))

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    torch.set_num_threads(os.cpu_count() or 1)
    pt = torch.from_numpy(pred[None, None].astype(np.float32))
    tt = torch.from_numpy(truth[None, None].astype(np.float32))
    kw = dict(include_background=True, spacing=list(SPACING))

    def monai():
        hd95 = float(compute_hausdorff_distance(pt, tt, percentile=95, **kw)[0, 0])
        nsd = float(compute_surface_dice(pt, tt, [1.0], **kw)[0, 0])
        return hd95, nsd

    (m_hd95, m_nsd), secs = timed(monai)
    rows.append(("MONAI 1.6.1 compute_hausdorff_distance + compute_surface_dice", secs, m_hd95, m_nsd))
    if not args.no_medpy:
        from medpy.metric.binary import hd95 as medpy_hd95

        md, secs = timed(lambda: medpy_hd95(pred, truth, voxelspacing=SPACING, connectivity=1))
        rows.append(("MedPy 0.5.2 hd95 (pooled; no NSD)", secs, md, float("nan")))

    print(f"{'tool':<66} {'seconds':>8} {'HD95 mm':>10} {'NSD':>9}")
    for name, secs, h, n in rows:
        print(f"{name:<66} {secs:8.2f} {h:10.6f} {n:9.6f}")
    base = rows[0][1]
    for name, secs, _, _ in rows[1:]:
        print(f"ratio {name.split(' ')[0]} / imhost: {secs / base:.1f}×")
    # MONAI works in float32: its distances carry ~1e-7 relative rounding.
    assert abs(ours["hd95"] - m_hd95) < 1e-4, (ours["hd95"], m_hd95)
    assert abs(ours["nsd"] - m_nsd) < 1e-6, (ours["nsd"], m_nsd)
    if not args.no_medpy:
        assert abs(ours["hd95_pooled"] - md) < 1e-6, (ours["hd95_pooled"], md)
    print("values agree")


if __name__ == "__main__":
    main()
