//! `imh_perfusion_curves`: perfusion of curves on borrowed arrays (one arterial input, N tissue
//! curves), with the image pipeline's deconvolution and none of its image steps.

use imhost_core::perfusion::Method;
use imhost_core::perfusion::curves::{CurveOptions, analyse};

use crate::context::{context_arg, imh_context};
use crate::ops::read_size_prefixed;
use crate::perfusion::{
    IMH_PERFUSION_METHOD_BSVD, IMH_PERFUSION_METHOD_DEFAULT, IMH_PERFUSION_METHOD_NLR, IMH_PERFUSION_METHOD_OSVD,
    IMH_PERFUSION_METHOD_SSVD, IMH_PERFUSION_METHOD_TIKHONOV, imh_perfusion_method,
};
use crate::status::{FfiError, FfiResult, ffi_boundary, imh_status};

/// `imh_curve_options.flags`: leave out the hematocrit and density constants k_H/ρ (CBF in
/// ml/100 ml/min, CBV in ml/100 ml), as conventions that omit them do.
pub const IMH_CURVES_NO_CONSTANTS: u32 = 1;

/// Options of `imh_perfusion_curves`; set `struct_size = sizeof(imh_curve_options)`, zero means
/// the default. NULL: all defaults. Added in 0.2.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_curve_options {
    /// `sizeof(imh_curve_options)`.
    pub struct_size: u32,
    /// One of `IMH_PERFUSION_METHOD_*` but the CNN (0: oSVD).
    pub method: imh_perfusion_method,
    /// `IMH_CURVES_*` flags.
    pub flags: u32,
    /// Subtract the mean of this many first samples from every curve (curves in HU); 0: the
    /// curves are concentrations or ΔHU already.
    pub baseline_frames: u32,
}

/// What one tissue curve gives (`imh_perfusion_curves`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(non_camel_case_types)]
pub struct imh_curve_perfusion {
    /// Cerebral blood flow, ml/100 g/min (ml/100 ml/min with `IMH_CURVES_NO_CONSTANTS`).
    pub cbf: f64,
    /// Cerebral blood volume, ml/100 g (ml/100 ml with `IMH_CURVES_NO_CONSTANTS`).
    pub cbv: f64,
    /// Mean transit time CBV/CBF, s (NaN where CBF is 0).
    pub mtt: f64,
    /// Time of the residue function's maximum, s.
    pub tmax: f64,
    /// Arrival after the arterial input (20 % of peak), s.
    pub delay: f64,
}

/// The most samples per curve and curves per call.
const MAX_SAMPLES: usize = 1 << 16;
const MAX_CURVES: usize = 1 << 24;

/// CBF, CBV, MTT, Tmax and delay of `n_curves` tissue curves against one arterial input, all of
/// `n_samples` samples at `times` (seconds, strictly increasing; non-uniform sampling is
/// resampled onto a uniform grid of the smallest step): `aif` holds `n_samples` values, `tissue`
/// `n_curves × n_samples` (curve after curve), `out` receives `n_curves` results. Arrays are
/// borrowed for the call. Errors (nothing written to `out`): `IMH_STATUS_NULL_ARGUMENT`,
/// `IMH_STATUS_INVALID_ARGUMENT` for fewer than 4 samples, times that do not increase, values
/// that are not finite, an input without a bolus, the CNN or an unknown method or flag.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn imh_perfusion_curves(
    context: *const imh_context,
    aif: *const f64,
    tissue: *const f64,
    n_curves: usize,
    n_samples: usize,
    times: *const f64,
    options: *const imh_curve_options,
    out: *mut imh_curve_perfusion,
) -> imh_status {
    ffi_boundary!("imh_perfusion_curves", {
        let context = context_arg(context)?;
        let invalid = |m: String| FfiError::new(imh_status::InvalidArgument, m);
        let null = |name: &str| FfiError::new(imh_status::NullArgument, format!("{name} is NULL"));
        if aif.is_null() {
            return Err(null("aif"));
        }
        if times.is_null() {
            return Err(null("times"));
        }
        if n_curves > 0 && (tissue.is_null() || out.is_null()) {
            return Err(null(if tissue.is_null() { "tissue" } else { "out" }));
        }
        if !(4..=MAX_SAMPLES).contains(&n_samples) {
            return Err(invalid(format!("{n_samples} samples: a curve needs 4 to {MAX_SAMPLES}")));
        }
        if n_curves > MAX_CURVES {
            return Err(invalid(format!("{n_curves} curves: at most {MAX_CURVES} per call")));
        }
        let defaults = imh_curve_options {
            struct_size: size_of::<imh_curve_options>() as u32,
            method: IMH_PERFUSION_METHOD_DEFAULT,
            flags: 0,
            baseline_frames: 0,
        };
        // SAFETY: NULL or a size-prefixed struct of integers (header contract).
        let o = unsafe { read_size_prefixed(options, defaults, size_of::<u32>() * 2, "imh_curve_options") }?;
        let method = match o.method {
            IMH_PERFUSION_METHOD_DEFAULT | IMH_PERFUSION_METHOD_OSVD => Method::Osvd,
            IMH_PERFUSION_METHOD_SSVD => Method::Ssvd,
            IMH_PERFUSION_METHOD_BSVD => Method::Bsvd,
            IMH_PERFUSION_METHOD_TIKHONOV => Method::Tikhonov,
            IMH_PERFUSION_METHOD_NLR => Method::Nlr,
            m => {
                return Err(invalid(format!(
                    "method {m}: curves take ssvd, bsvd, osvd, tikhonov or nlr (not the CNN)"
                )));
            }
        };
        if o.flags & !IMH_CURVES_NO_CONSTANTS != 0 {
            return Err(invalid(format!("unknown imh_curve_options flags {:#x}", o.flags & !IMH_CURVES_NO_CONSTANTS)));
        }
        let mut curve_options = CurveOptions::default();
        curve_options.method = method;
        curve_options.constants = o.flags & IMH_CURVES_NO_CONSTANTS == 0;
        curve_options.baseline_frames = o.baseline_frames as usize;
        context.scope(|| -> FfiResult<()> {
            imhost_core::memory::with_limit(context.memory_limit(), || {
                imhost_core::memory::check(
                    imhost_core::memory::bytes_of(&[n_curves, n_samples], 8 + 4 + 4),
                    "the curves' working copy",
                )
            })?;
            // SAFETY: `n_samples` doubles at `aif` and `times`, `n_curves × n_samples` at
            // `tissue`, live for the call (header contract; the sizes are bounded above).
            let (a, t) =
                unsafe { (std::slice::from_raw_parts(aif, n_samples), std::slice::from_raw_parts(times, n_samples)) };
            let curves: Vec<Vec<f64>> = (0..n_curves)
                // SAFETY: as above; curve c starts c × n_samples values in.
                .map(|c| unsafe { std::slice::from_raw_parts(tissue.add(c * n_samples), n_samples) }.to_vec())
                .collect();
            let results = analyse(a, &curves, t, &curve_options)?;
            for (c, r) in results.iter().enumerate() {
                let value = imh_curve_perfusion { cbf: r.cbf, cbv: r.cbv, mtt: r.mtt, tmax: r.tmax, delay: r.delay };
                // SAFETY: `out` holds `n_curves` writable structs (header contract).
                unsafe { out.add(c).write(value) };
            }
            Ok(())
        })
    })
}
