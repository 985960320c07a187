"""Oracle values for imhost's scoring module (rust/imhost-core/src/score), from the libraries
users trust. Writes tests/fixtures/score/oracle.json, which rust/imhost-core/tests/score_oracle.rs
reads; CI does not run this script (it needs torch for MONAI), the fixture is committed.

    python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install -r tests/oracle/score_oracle.requirements.txt
    /tmp/oracle/bin/python tests/oracle/score_oracle.py tests/fixtures/score/oracle.json

Pinned: numpy 2.3.5, scipy 1.17.1, scikit-learn 1.9.1, scikit-image 0.26.0, lifelines 0.30.3,
MedPy 0.5.2, MONAI 1.6.1 (torch 2.11.0), pingouin 0.7.0. The script checks the versions.

Masks are stored run-length encoded over the voxels with i fastest (runs alternate, starting
with a run of unset voxels). Arrays are built with shape (ni, nj, nk) in Fortran order so that
axis 0 is i and spacing is (si, sj, sk). Non-finite oracle values are the strings "nan", "inf".
"""
import json
import math
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

PINNED = {
    "numpy": "2.3.5",
    "scipy": "1.17.1",
    "sklearn": "1.9.1",
    "skimage": "0.26.0",
    "lifelines": "0.30.3",
    "medpy": "0.5.2",
    "monai": "1.6.1",
    "pingouin": "0.7.0",
}


def versions():
    import importlib

    got = {}
    for name, want in PINNED.items():
        mod = importlib.import_module(name)
        v = getattr(mod, "__version__", None)
        if v is None:
            from importlib.metadata import version

            v = version({"sklearn": "scikit-learn", "skimage": "scikit-image", "medpy": "MedPy"}.get(name, name))
        if v != want:
            sys.exit(f"{name} {v} is installed; this script is pinned to {want}")
        got[name] = v
    return got


def num(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def rle(mask):
    flat = mask.ravel(order="F").astype(bool)
    runs, cur, n = [], False, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    return runs


def blob(rng, dims, spacing, count):
    """Union of `count` random ellipsoids (mm) with a few random voxels flipped."""
    ii, jj, kk = np.meshgrid(*[np.arange(d) * s for d, s in zip(dims, spacing)], indexing="ij")
    m = np.zeros(dims, bool)
    ext = np.array(dims) * np.array(spacing)
    for _ in range(count):
        c = rng.uniform(0.1, 0.9, 3) * ext
        r = rng.uniform(0.08, 0.35, 3) * ext.max()
        r = np.maximum(r, np.array(spacing) * 0.6)
        m |= ((ii - c[0]) / r[0]) ** 2 + ((jj - c[1]) / r[1]) ** 2 + ((kk - c[2]) / r[2]) ** 2 <= 1.0
    flips = rng.random(dims) < rng.choice([0.0, 0.002, 0.01])
    return m ^ flips


def seg_oracle(pred, truth, spacing, tol):
    import torch
    from medpy.metric import binary as mb
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    out = {}
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    tn = int(pred.size - tp - fp - fn)
    out["counts"] = [tp, fp, fn, tn]
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

    y, p = truth.ravel(), pred.ravel()
    if truth.any() or pred.any():
        out["dice_sklearn_f1"] = num(f1_score(y, p, zero_division=np.nan))
        out["jaccard_sklearn"] = num(jaccard_score(y, p))
    out["precision_sklearn"] = num(precision_score(y, p, zero_division=np.nan))
    out["recall_sklearn"] = num(recall_score(y, p, zero_division=np.nan))
    out["specificity_sklearn"] = num(recall_score(~y, ~p, zero_division=np.nan))
    out["accuracy_sklearn"] = num(accuracy_score(y, p))
    if pred.any() and truth.any():
        out["dice_medpy"] = num(mb.dc(pred, truth))
        out["hd_medpy"] = num(mb.hd(pred, truth, voxelspacing=spacing, connectivity=1))
        out["hd95_medpy"] = num(mb.hd95(pred, truth, voxelspacing=spacing, connectivity=1))
        out["assd_medpy"] = num(mb.assd(pred, truth, voxelspacing=spacing, connectivity=1))
        out["ravd_medpy"] = num(mb.ravd(pred, truth))
        # MONAI's definitions in float64: MedPy's directed surface distances (the same surface,
        # scipy's exact transform), then numpy's linear quantile per direction / mean per direction.
        surf = getattr(mb, "__surface_distances")
        d1 = surf(pred, truth, spacing, 1)
        d2 = surf(truth, pred, spacing, 1)
        out["hd95_directed_medpy_numpy"] = num(max(np.quantile(d1, 0.95), np.quantile(d2, 0.95)))
        out["masd_directed_medpy_numpy"] = num((d1.mean() + d2.mean()) / 2)
    tp_ = torch.from_numpy(pred[None, None].astype(np.float32))
    tt_ = torch.from_numpy(truth[None, None].astype(np.float32))
    sp = list(spacing)
    kw = dict(include_background=True, spacing=sp)
    out["hd_monai"] = num(compute_hausdorff_distance(tp_, tt_, **kw)[0, 0])
    out["hd95_monai"] = num(compute_hausdorff_distance(tp_, tt_, percentile=95, **kw)[0, 0])
    out["assd_monai"] = num(compute_average_surface_distance(tp_, tt_, symmetric=True, **kw)[0, 0])
    d1 = compute_average_surface_distance(tp_, tt_, symmetric=False, **kw)[0, 0]
    d2 = compute_average_surface_distance(tt_, tp_, symmetric=False, **kw)[0, 0]
    out["masd_monai_directed"] = num((float(d1) + float(d2)) / 2)
    out["nsd_monai"] = num(compute_surface_dice(tp_, tt_, [tol], **kw)[0, 0])
    return out


def seg_cases(rng):
    cases = []
    for n in range(60):
        dims = tuple(int(x) for x in rng.integers(6, 34, 3))
        spacing = tuple(float(x) for x in rng.choice([0.4, 0.5, 0.8, 1.0, 1.5, 2.5, 3.0], 3))
        truth = blob(rng, dims, spacing, int(rng.integers(1, 4)))
        pred = blob(rng, dims, spacing, int(rng.integers(1, 4))) if n % 3 else truth ^ (rng.random(dims) < 0.05)
        cases.append((f"random-{n}", dims, spacing, pred, truth))
    dims, spacing = (20, 18, 12), (0.6, 0.6, 3.0)
    base = blob(np.random.default_rng(5), dims, spacing, 2)
    empty = np.zeros(dims, bool)
    single = empty.copy()
    single[4, 5, 6] = True
    single2 = empty.copy()
    single2[10, 2, 9] = True
    border = empty.copy()
    border[:6, :, :3] = True
    border2 = empty.copy()
    border2[:4, 3:, :5] = True
    full = np.ones(dims, bool)
    cases += [
        ("empty-prediction", dims, spacing, empty, base),
        ("empty-truth", dims, spacing, base, empty),
        ("both-empty", dims, spacing, empty, empty),
        ("single-voxel-same", dims, spacing, single, single),
        ("single-voxels-apart", dims, spacing, single, single2),
        ("single-voxel-vs-blob", dims, spacing, single, base),
        ("touching-border", dims, spacing, border, border2),
        ("full-grid-vs-blob", dims, spacing, full, base),
        ("anisotropic-0.4x0.4x5", (30, 30, 8), (0.4, 0.4, 5.0),
         blob(np.random.default_rng(8), (30, 30, 8), (0.4, 0.4, 5.0), 2),
         blob(np.random.default_rng(9), (30, 30, 8), (0.4, 0.4, 5.0), 2)),
        ("flat-2d", (25, 30, 1), (0.7, 0.7, 1.0),
         blob(np.random.default_rng(10), (25, 30, 1), (0.7, 0.7, 1.0), 2),
         blob(np.random.default_rng(11), (25, 30, 1), (0.7, 0.7, 1.0), 2)),
    ]
    # The cross-check vector of shared/notes/metrics.md.
    dims, spacing = (24, 48, 48), (2.5, 0.8, 0.8)
    ii, jj, kk = np.meshgrid(*[np.arange(d) for d in dims], indexing="ij")

    def ball(c, r):
        return ((ii - c[0]) * spacing[0]) ** 2 + ((jj - c[1]) * spacing[1]) ** 2 + ((kk - c[2]) * spacing[2]) ** 2 <= r * r

    gt = ball((12, 24, 24), 12.0)
    pr = ball((13, 26, 23), 10.5)
    pr[2:4, 5:8, 5:8] = True
    cases.append(("notes-cross-check", dims, spacing, pr, gt))
    out = []
    for name, dims, spacing, pred, truth in cases:
        tol = float(rng.choice([0.5, 1.0, 2.0, 3.0]))
        out.append({
            "name": name,
            "dims": list(dims),
            "spacing": list(spacing),
            "tolerance_mm": tol,
            "prediction": rle(pred),
            "truth": rle(truth),
            "oracle": seg_oracle(pred, truth, spacing, tol),
        })
    return out


def smooth_image(rng, dims):
    ii, jj, kk = np.meshgrid(*[np.arange(d, dtype=float) for d in dims], indexing="ij")
    img = np.zeros(dims)
    for _ in range(4):
        c = rng.uniform(0, 1, 3) * np.array(dims)
        s = rng.uniform(2, 8)
        img += rng.uniform(-50, 100) * np.exp(-((ii - c[0]) ** 2 + (jj - c[1]) ** 2 + (kk - c[2]) ** 2) / (2 * s * s))
    return img


def image_cases(rng):
    import torch
    from monai.metrics import SSIMMetric
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out = []
    shapes = [(32, 28, 1), (24, 26, 14), (20, 22, 5), (40, 16, 1), (16, 17, 12), (30, 30, 3)]
    for n in range(12):
        dims = shapes[n % len(shapes)]
        ref = np.round(smooth_image(rng, dims) + rng.normal(0, 2, dims), 3)
        img = np.round(ref * rng.uniform(0.7, 1.1) + rng.normal(0, rng.uniform(0.5, 10), dims) + rng.uniform(-5, 5), 3)
        mask = smooth_image(rng, dims) > 10 if n % 2 else None
        if mask is not None and not mask.any():
            mask[dims[0] // 2, dims[1] // 2, dims[2] // 2] = True
        rng_ = float(ref.max() - ref.min())
        window = "slices" if dims[2] < 11 else "volume"
        kw = dict(data_range=rng_, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
        pad = 5
        if window == "volume":
            _, s = structural_similarity(img, ref, **kw)
            crop = s[pad:-pad, pad:-pad, pad:-pad]
            mcrop = None if mask is None else mask[pad:-pad, pad:-pad, pad:-pad]
            values = crop[mcrop] if mcrop is not None else crop.ravel()
            metric = SSIMMetric(spatial_dims=3, data_range=rng_, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
            monai = float(metric(torch.from_numpy(img[None, None]), torch.from_numpy(ref[None, None]))[0, 0]) if mask is None else None
        else:
            values, monai_sum = [], []
            for k in range(dims[2]):
                _, s = structural_similarity(img[:, :, k], ref[:, :, k], **kw)
                crop = s[pad:-pad, pad:-pad]
                if mask is not None:
                    values.extend(crop[mask[pad:-pad, pad:-pad, k]].tolist())
                else:
                    values.extend(crop.ravel().tolist())
            values = np.array(values)
            monai = None
        sel = mask if mask is not None else np.ones(dims, bool)
        mse = float(np.mean((img[sel] - ref[sel]) ** 2))
        psnr = peak_signal_noise_ratio(ref, img, data_range=rng_) if mask is None else 10 * math.log10(rng_ ** 2 / mse)
        out.append({
            "name": f"image-{n}",
            "dims": list(dims),
            "window": window,
            "image": img.ravel(order="F").tolist(),
            "reference": ref.ravel(order="F").tolist(),
            "mask": None if mask is None else rle(mask),
            "data_range": rng_,
            "oracle": {
                "ssim_skimage": num(np.mean(values)) if len(values) else "nan",
                "ssim_monai": None if monai is None else num(monai),
                "psnr": num(psnr),
                "mse": num(mse),
            },
        })
    return out


def table_cases(rng):
    import pandas as pd
    import pingouin
    from lifelines.utils import concordance_index
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

    out = []
    for n in range(50):
        size = int(rng.integers(5, 120))
        t = np.round(rng.normal(50, 20, size), 2)
        p = np.round(t * rng.uniform(0.5, 1.3) + rng.normal(rng.uniform(-10, 10), rng.uniform(0.1, 30), size), 2)
        if n % 5 == 0:
            p = np.round(p / 10) * 10  # ties for Spearman
        df = pd.DataFrame({"s": np.r_[np.arange(size), np.arange(size)], "r": ["t"] * size + ["p"] * size, "v": np.r_[t, p]})
        icc = pingouin.intraclass_corr(df, targets="s", raters="r", ratings="v").set_index("Type")
        d = p - t
        cont = {
            "pearson": num(pearsonr(t, p)[0]),
            "spearman": num(spearmanr(t, p)[0]),
            "icc2_1": num(icc.loc["ICC(A,1)", "ICC"]),
            "icc3_1": num(icc.loc["ICC(C,1)", "ICC"]),
            "ba_bias": num(d.mean()),
            "ba_sd": num(d.std(ddof=1)),
        }
        k = int(rng.integers(2, 6))
        a = rng.integers(0, k, size)
        b = np.clip(a + rng.choice([-1, 0, 0, 0, 1, 2], size), 0, k - 1)
        labels = list(range(k))
        cat = {
            "labels": labels,
            "kappa": num(cohen_kappa_score(a, b, labels=labels)),
            "kappa_linear": num(cohen_kappa_score(a, b, labels=labels, weights="linear")),
            "kappa_quadratic": num(cohen_kappa_score(a, b, labels=labels, weights="quadratic")),
            "c_index_ordinal": num(concordance_index(a, b)) if len(set(a.tolist())) > 1 else "nan",
        }
        y = rng.random(size) < rng.uniform(0.2, 0.8)
        if y.all() or not y.any():
            y[0] = not y[0]
        s = np.round(y * rng.uniform(0, 2) + rng.normal(0, 1, size), 1 if n % 4 == 0 else 4)
        thr = float(np.round(rng.uniform(-0.5, 1.5), 2))
        tn, fp, fn, tp = confusion_matrix(y, s >= thr, labels=[False, True]).ravel()
        binary = {
            "auc": num(roc_auc_score(y, s)),
            "threshold": thr,
            "counts": [int(tp), int(fp), int(fn), int(tn)],
        }
        time = np.round(rng.exponential(10, size), 0) + 1
        event = rng.random(size) < 0.7
        event[0] = True
        risk = np.round(-time * rng.uniform(0, 1) + rng.normal(0, 5, size), 0)
        surv = {"harrell_c": num(concordance_index(time, -risk, event))}
        out.append({
            "name": f"table-{n}",
            "truth": t.tolist(), "pred": p.tolist(), "continuous": cont,
            "cat_a": a.tolist(), "cat_b": b.tolist(), "category": cat,
            "positive": y.tolist(), "score": s.tolist(), "binary": binary,
            "time": time.tolist(), "event": event.tolist(), "risk": risk.tolist(), "survival": surv,
        })
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    got = versions()
    rng = np.random.default_rng(20261203)
    doc = {
        "generator": "tests/oracle/score_oracle.py",
        "versions": got,
        "segmentation": seg_cases(rng),
        "image": image_cases(rng),
        "table": table_cases(rng),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"{len(doc['segmentation'])} segmentation, {len(doc['image'])} image, {len(doc['table'])} table cases")


if __name__ == "__main__":
    main()
