//! `imh_score_segmentation`: overlap and surface distances of a predicted label map against the
//! truth (`imhost_core::score`, conventions in docs/SCORING.md), as plain numbers in a struct.

use imhost_core::score::{Empty, label_volumes};

use crate::context::{context_arg, imh_context};
use crate::ops::read_size_prefixed;
use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status};
use crate::view::{imh_view, view_from_c};

/// `imh_score_options.flags`: score only the voxels equal to `label` (default: every non-zero
/// voxel is foreground).
pub const IMH_SCORE_LABEL: u32 = 1;
/// `imh_score_options.flags`: also the surface distances (HD, HD95 both ways, ASSD, MASD, NSD);
/// without it those fields are NaN and `has_surface` is 0.
pub const IMH_SCORE_SURFACE: u32 = 2;

/// `imh_segmentation_scores.empty`: neither mask is empty.
pub const IMH_SCORE_EMPTY_NEITHER: u32 = 0;
/// The prediction is empty.
pub const IMH_SCORE_EMPTY_PREDICTION: u32 = 1;
/// The truth is empty.
pub const IMH_SCORE_EMPTY_TRUTH: u32 = 2;
/// Both are empty.
pub const IMH_SCORE_EMPTY_BOTH: u32 = 3;

/// Options of `imh_score_segmentation`; set `struct_size = sizeof(imh_score_options)`, zero
/// means the default. NULL: every non-zero voxel, overlap only. Added in 0.2.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_score_options {
    /// `sizeof(imh_score_options)`.
    pub struct_size: u32,
    /// `IMH_SCORE_*` flags.
    pub flags: u32,
    /// The label scored with `IMH_SCORE_LABEL` (a whole number).
    pub label: f64,
    /// NSD tolerance τ in mm (a surface voxel within τ of the other surface counts); 0 means
    /// 1 mm, the command line's default. Distances below the smallest spacing all count as 0,
    /// so a τ of 1e-6 asks for coincident surface voxels only.
    pub tolerance_mm: f64,
}

/// What `imh_score_segmentation` gives. The caller sets `struct_size = sizeof(...)`; the library
/// fills that many bytes (fields added in later versions go at the end). Ratios that are
/// undefined (Dice of two empty masks, precision of an empty prediction) are NaN; distances to
/// an empty surface are +infinity (`empty` says which). Added in 0.2.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(non_camel_case_types)]
pub struct imh_segmentation_scores {
    /// `sizeof(imh_segmentation_scores)` as the caller compiled it.
    pub struct_size: u32,
    /// `IMH_SCORE_EMPTY_*`.
    pub empty: u32,
    /// Voxels in both.
    pub true_positives: u64,
    /// Voxels in the prediction only.
    pub false_positives: u64,
    /// Voxels in the truth only.
    pub false_negatives: u64,
    /// Voxels in neither.
    pub true_negatives: u64,
    /// 2TP / (2TP + FP + FN).
    pub dice: f64,
    /// TP / (TP + FP + FN).
    pub jaccard: f64,
    /// TP / (TP + FP).
    pub precision: f64,
    /// Sensitivity, TP / (TP + FN).
    pub recall: f64,
    /// TN / (TN + FP).
    pub specificity: f64,
    /// (TP + TN) / voxels.
    pub accuracy: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Predicted volume, ml.
    pub volume_prediction_ml: f64,
    /// True volume, ml.
    pub volume_truth_ml: f64,
    /// Predicted − true volume, ml.
    pub volume_difference_ml: f64,
    /// (predicted − true) / true volume.
    pub relative_volume_error: f64,
    /// 1 when the surface fields below were computed (`IMH_SCORE_SURFACE`).
    pub has_surface: u32,
    /// Zero.
    pub reserved: u32,
    /// Surface voxels (6-connected boundary) of the prediction.
    pub surface_voxels_prediction: u64,
    /// Surface voxels of the truth.
    pub surface_voxels_truth: u64,
    /// Hausdorff distance, mm.
    pub hd: f64,
    /// The larger of the two directed 95th percentiles, mm (MONAI, Metrics Reloaded).
    pub hd95: f64,
    /// The 95th percentile of both directions pooled, mm (MedPy `hd95`).
    pub hd95_pooled: f64,
    /// Mean of both directions pooled, mm (MONAI symmetric, MedPy `assd`).
    pub assd: f64,
    /// Mean of the two directed means, mm (Metrics Reloaded `masd`).
    pub masd: f64,
    /// Share of surface voxels within `nsd_tolerance_mm` of the other surface.
    pub nsd: f64,
    /// τ of `nsd`, mm.
    pub nsd_tolerance_mm: f64,
}

/// Score a predicted label map against the truth, two 3-D views on the same grid (size,
/// spacing, origin and axes). Foreground is every non-zero voxel, or the voxels equal to
/// `options->label` with `IMH_SCORE_LABEL`; surface distances with `IMH_SCORE_SURFACE`.
/// Runs on the context's threads. Errors (nothing written to `out`): `IMH_STATUS_NULL_ARGUMENT`,
/// `IMH_STATUS_SHAPE` for grids of different size or a 4-D view, `IMH_STATUS_GEOMETRY` for
/// different spacing, origin or axes, `IMH_STATUS_INVALID_ARGUMENT` for a label or tolerance
/// that is not valid, an unknown flag or `out->struct_size` below 8, `IMH_STATUS_TOO_LARGE`
/// over the context's memory limit.
///
/// Thread safety: may be called from any thread, concurrently with other calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_score_segmentation(
    context: *const imh_context,
    prediction: *const imh_view,
    truth: *const imh_view,
    options: *const imh_score_options,
    out: *mut imh_segmentation_scores,
) -> imh_status {
    ffi_boundary!("imh_score_segmentation", {
        let context = context_arg(context)?;
        let prediction = arg_ref!(prediction, "prediction");
        let truth = arg_ref!(truth, "truth");
        let out = arg_out!(out, "out");
        let invalid = |m: String| FfiError::new(imh_status::InvalidArgument, m);
        // SAFETY: `out` is non-NULL and starts with its u32 struct_size (header contract).
        let declared = unsafe { out.cast::<u32>().read_unaligned() } as usize;
        if declared < 8 {
            return Err(invalid(format!("out->struct_size is {declared}; set it to sizeof(imh_segmentation_scores)")));
        }
        let defaults = imh_score_options {
            struct_size: size_of::<imh_score_options>() as u32,
            flags: 0,
            label: 0.0,
            tolerance_mm: 0.0,
        };
        // SAFETY: NULL or a size-prefixed struct of integers and doubles (header contract).
        let o = unsafe { read_size_prefixed(options, defaults, size_of::<u32>() * 2, "imh_score_options") }?;
        let known = IMH_SCORE_LABEL | IMH_SCORE_SURFACE;
        if o.flags & !known != 0 {
            return Err(invalid(format!("unknown imh_score_options flags {:#x}", o.flags & !known)));
        }
        let tolerance = if o.tolerance_mm == 0.0 { 1.0 } else { o.tolerance_mm };
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(invalid(format!(
                "imh_score_options.tolerance_mm is {}; give mm > 0 (0 means 1 mm)",
                o.tolerance_mm
            )));
        }
        let label = (o.flags & IMH_SCORE_LABEL != 0).then_some(o.label);
        let surface = (o.flags & IMH_SCORE_SURFACE != 0).then_some(tolerance);
        let scores = context.scope(|| -> FfiResult<_> {
            // SAFETY: the header's imh_view contract holds for both views during this call.
            let (p, t) = unsafe { (view_from_c(prediction)?, view_from_c(truth)?) };
            Ok(context.in_pool(|| label_volumes(&p, &t, label, surface))?)
        })?;
        let o = &scores.overlap;
        let nan = f64::NAN;
        let s = scores.surface.as_ref();
        let value = imh_segmentation_scores {
            struct_size: declared.min(size_of::<imh_segmentation_scores>()) as u32,
            empty: match o.empty {
                Empty::Neither => IMH_SCORE_EMPTY_NEITHER,
                Empty::Prediction => IMH_SCORE_EMPTY_PREDICTION,
                Empty::Truth => IMH_SCORE_EMPTY_TRUTH,
                Empty::Both => IMH_SCORE_EMPTY_BOTH,
            },
            true_positives: o.counts.tp,
            false_positives: o.counts.fp,
            false_negatives: o.counts.fn_,
            true_negatives: o.counts.tn,
            dice: o.dice,
            jaccard: o.jaccard,
            precision: o.precision,
            recall: o.recall,
            specificity: o.specificity,
            accuracy: o.accuracy,
            f1: o.f1,
            volume_prediction_ml: o.volume_prediction_ml,
            volume_truth_ml: o.volume_truth_ml,
            volume_difference_ml: o.volume_difference_ml,
            relative_volume_error: o.relative_volume_error,
            has_surface: u32::from(s.is_some()),
            reserved: 0,
            surface_voxels_prediction: s.map_or(0, |s| s.surface_voxels_prediction),
            surface_voxels_truth: s.map_or(0, |s| s.surface_voxels_truth),
            hd: s.map_or(nan, |s| s.hd),
            hd95: s.map_or(nan, |s| s.hd95),
            hd95_pooled: s.map_or(nan, |s| s.hd95_pooled),
            assd: s.map_or(nan, |s| s.assd),
            masd: s.map_or(nan, |s| s.masd),
            nsd: s.map_or(nan, |s| s.nsd),
            nsd_tolerance_mm: s.map_or(nan, |s| s.nsd_tolerance_mm),
        };
        let n = declared.min(size_of::<imh_segmentation_scores>());
        // SAFETY: the caller's struct has `declared` ≥ n writable bytes (header contract); ours
        // has n or more; no overlap.
        unsafe { std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), out.cast::<u8>(), n) };
        Ok(())
    })
}
