//! `imh_score_segmentation` as a C caller uses it: a shifted cube scored as computed by hand,
//! a label picked out of a label map, an older caller's shorter struct filled only as far as it
//! reaches, and bad input refused with a status and `out` untouched.

// This file plays a C caller: every call is an unsafe FFI call whose pointers are plainly valid.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::CStr;
use std::ptr;

use imhost::*;

const N: usize = 10;

fn geometry(origin: [f64; 3]) -> imh_geometry {
    imh_geometry { spacing: [1.0, 1.0, 2.0], origin, direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] }
}

/// A 10×10×10 label map, i fastest (a VTK/ITK buffer), 1×1×2 mm.
fn labels<T: Copy + Default>(f: impl Fn(usize, usize, usize) -> T) -> Vec<T> {
    let mut v = vec![T::default(); N * N * N];
    for k in 0..N {
        for j in 0..N {
            for i in 0..N {
                v[i + N * (j + N * k)] = f(i, j, k);
            }
        }
    }
    v
}

fn view<T>(data: &[T], dtype: imh_dtype, origin: [f64; 3]) -> imh_view {
    let n = N as i64;
    imh_view {
        data: data.as_ptr().cast(),
        dtype,
        ndim: 3,
        shape: [n, n, n, 1],
        strides: [1, n, n * n, 0],
        geometry: geometry(origin),
        frame_times: ptr::null(),
    }
}

fn cube(i: usize, j: usize, k: usize, k0: usize) -> bool {
    (2..6).contains(&i) && (2..6).contains(&j) && (k0..k0 + 4).contains(&k)
}

fn blank() -> imh_segmentation_scores {
    let mut s: imh_segmentation_scores = unsafe { std::mem::zeroed() };
    s.struct_size = size_of::<imh_segmentation_scores>() as u32;
    s.dice = -7.0;
    s
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned()
}

#[test]
fn a_shifted_cube_scores_as_computed_by_hand_and_bad_input_leaves_out_untouched() {
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { imh_context_new(&mut ctx) }, imh_status::Ok);
    // Truth (i16): a 4×4×4 cube of label 1 and a voxel of label 2. Prediction (u8): the cube
    // one 2 mm slice further along k, label 2 missing.
    let truth = labels(|i, j, k| {
        if cube(i, j, k, 2) {
            1i16
        } else if (i, j, k) == (8, 8, 8) {
            2
        } else {
            0
        }
    });
    let pred = labels(|i, j, k| u8::from(cube(i, j, k, 3)));
    let (pv, tv) = (view(&pred, IMH_DTYPE_U8, [0.0; 3]), view(&truth, IMH_DTYPE_I16, [0.0; 3]));
    let options = |flags, label, tolerance_mm| imh_score_options {
        struct_size: size_of::<imh_score_options>() as u32,
        flags,
        label,
        tolerance_mm,
    };

    let mut s = blank();
    let o = options(IMH_SCORE_LABEL | IMH_SCORE_SURFACE, 1.0, 1.0);
    assert_eq!(unsafe { imh_score_segmentation(ctx, &pv, &tv, &o, &mut s) }, imh_status::Ok, "{}", last_error());
    assert_eq!((s.true_positives, s.false_positives, s.false_negatives), (48, 16, 16));
    assert_eq!(s.true_negatives, 1000 - 80);
    assert_eq!(s.empty, IMH_SCORE_EMPTY_NEITHER);
    assert_eq!(s.dice, 0.75);
    assert!((s.volume_truth_ml - 0.128).abs() < 1e-12, "64 voxels of 2 mm³");
    assert_eq!(s.has_surface, 1);
    assert_eq!((s.surface_voxels_prediction, s.surface_voxels_truth), (56, 56));
    // Per side: 36 surface voxels shared, 16 of the face the other lacks at 2 mm, 4 inner voxels
    // of the other face 1 mm from the other's side.
    assert_eq!((s.hd, s.hd95, s.hd95_pooled), (2.0, 2.0, 2.0));
    assert!((s.assd - 2.0 * 36.0 / 112.0).abs() < 1e-12, "assd {}", s.assd);
    assert!((s.nsd - 80.0 / 112.0).abs() < 1e-12, "nsd {}", s.nsd);
    assert_eq!(s.nsd_tolerance_mm, 1.0);

    // Defaults (NULL options): every non-zero voxel, no surfaces.
    let mut s = blank();
    assert_eq!(unsafe { imh_score_segmentation(ctx, &pv, &tv, ptr::null(), &mut s) }, imh_status::Ok);
    assert_eq!((s.true_positives, s.false_negatives), (48, 17));
    assert_eq!(s.has_surface, 0);
    assert!(s.hd.is_nan());
    // Label 2: predicted nowhere.
    let mut s = blank();
    let o = options(IMH_SCORE_LABEL | IMH_SCORE_SURFACE, 2.0, 0.0);
    assert_eq!(unsafe { imh_score_segmentation(ctx, &pv, &tv, &o, &mut s) }, imh_status::Ok);
    assert_eq!((s.empty, s.dice), (IMH_SCORE_EMPTY_PREDICTION, 0.0));
    assert!(s.precision.is_nan() && s.hd95 == f64::INFINITY && s.nsd == 0.0);
    assert_eq!(s.nsd_tolerance_mm, 1.0, "0 means 1 mm");

    // A caller compiled against a shorter struct (up to has_surface) gets only that much.
    let mut s = blank();
    s.struct_size = std::mem::offset_of!(imh_segmentation_scores, has_surface) as u32;
    s.hd = -3.0;
    let o = options(IMH_SCORE_LABEL | IMH_SCORE_SURFACE, 1.0, 1.0);
    assert_eq!(unsafe { imh_score_segmentation(ctx, &pv, &tv, &o, &mut s) }, imh_status::Ok);
    assert_eq!(s.dice, 0.75);
    assert_eq!((s.has_surface, s.hd), (0, -3.0), "bytes beyond struct_size are the caller's");

    // Bad input: a status, a message, `out` as it was.
    let moved = view(&truth, IMH_DTYPE_I16, [0.0, 0.0, 4.0]);
    let two_frames: Vec<i16> = truth.iter().chain(&truth).copied().collect();
    let times = [0.0, 1.0];
    let mut four_d = view(&two_frames, IMH_DTYPE_I16, [0.0; 3]);
    four_d.ndim = 4;
    four_d.shape[3] = 2;
    four_d.strides[3] = (N * N * N) as i64;
    four_d.frame_times = times.as_ptr();
    let cases: Vec<(&str, imh_view, imh_view, imh_score_options, u32, imh_status, &str)> = vec![
        ("moved origin", pv, moved, options(0, 0.0, 0.0), 0, imh_status::Geometry, "origin"),
        ("4-D", pv, four_d, options(0, 0.0, 0.0), 0, imh_status::Shape, "frames"),
        ("fractional label", pv, tv, options(IMH_SCORE_LABEL, 1.5, 0.0), 0, imh_status::InvalidArgument, "label"),
        ("unknown flag", pv, tv, options(8, 0.0, 0.0), 0, imh_status::InvalidArgument, "flags"),
        ("negative τ", pv, tv, options(IMH_SCORE_SURFACE, 0.0, -1.0), 0, imh_status::InvalidArgument, "tolerance"),
        ("small out", pv, tv, options(0, 0.0, 0.0), 4, imh_status::InvalidArgument, "struct_size"),
    ];
    for (name, p, t, o, size, status, needle) in cases {
        let mut s = blank();
        if size != 0 {
            s.struct_size = size;
        }
        let before = s;
        assert_eq!(unsafe { imh_score_segmentation(ctx, &p, &t, &o, &mut s) }, status, "{name}");
        assert!(last_error().contains(needle), "{name}: {}", last_error());
        assert_eq!(s.dice.to_bits(), before.dice.to_bits(), "{name}: out untouched");
    }
    let mut s = blank();
    assert_eq!(unsafe { imh_score_segmentation(ctx, ptr::null(), &tv, ptr::null(), &mut s) }, imh_status::NullArgument);
    assert_eq!(
        unsafe { imh_score_segmentation(ctx, &pv, &tv, ptr::null(), ptr::null_mut()) },
        imh_status::NullArgument
    );
    unsafe { imh_context_free(ctx) };
}
