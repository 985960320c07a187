//! `imh_perfusion_curves` as a C caller uses it: the numbers of the core's curve analysis (the
//! same code), the constants switch, and bad input refused with a status and `out` untouched.

// This file plays a C caller: every call is an unsafe FFI call whose pointers are plainly valid.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ptr;

use imhost::*;
use imhost_core::perfusion::curves::{CurveOptions, analyse};

fn aif(t: f64) -> f64 {
    let s = t - 10.0;
    if s <= 0.0 { 0.0 } else { 400.0 * (s / 8.0).powi(3) * (3.0 * (1.0 - s / 8.0)).exp() }
}

/// Box residue of 4 s, flow 0.01 /s (CBF 60 ml/100 ml/min, CBV 4 ml/100 ml), delayed by `delay`.
fn tissue(times: &[f64], delay: f64) -> Vec<f64> {
    let h = 0.01;
    times
        .iter()
        .map(|&t| {
            let steps = ((t - delay).max(0.0) / h) as usize;
            (0..steps).filter(|&m| t - delay - m as f64 * h < 4.0).map(|m| aif(m as f64 * h)).sum::<f64>() * h * 0.01
        })
        .collect()
}

#[test]
fn curves_through_the_c_abi_equal_the_core_and_refuse_bad_input() {
    let times: Vec<f64> = (0..60).map(f64::from).collect();
    let a: Vec<f64> = times.iter().map(|&t| aif(t)).collect();
    let (c1, c2) = (tissue(&times, 0.0), tissue(&times, 2.0));
    let both: Vec<f64> = c1.iter().chain(&c2).copied().collect();
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { imh_context_new(&mut ctx) }, imh_status::Ok);
    let options = |method, flags| imh_curve_options {
        struct_size: size_of::<imh_curve_options>() as u32,
        method,
        flags,
        baseline_frames: 0,
    };
    let mut out = [imh_curve_perfusion::default(); 2];
    let call = |o: *const imh_curve_options, out: &mut [imh_curve_perfusion; 2]| unsafe {
        imh_perfusion_curves(ctx, a.as_ptr(), both.as_ptr(), 2, times.len(), times.as_ptr(), o, out.as_mut_ptr())
    };
    assert_eq!(call(ptr::null(), &mut out), imh_status::Ok);
    let core = analyse(&a, &[c1.clone(), c2.clone()], &times, &CurveOptions::default()).unwrap();
    for (c, r) in out.iter().zip(&core) {
        assert_eq!((c.cbf, c.cbv, c.mtt, c.tmax, c.delay), (r.cbf, r.cbv, r.mtt, r.tmax, r.delay));
    }
    // Without the constants: CBV is the area ratio, 4 ml/100 ml (± 0.05 + 3 %).
    let without = options(IMH_PERFUSION_METHOD_NLR, IMH_CURVES_NO_CONSTANTS);
    assert_eq!(call(&without, &mut out), imh_status::Ok);
    for c in &out {
        assert!((c.cbv - 4.0).abs() <= 0.05 + 0.12, "{c:?}");
        assert!((c.cbf - 60.0).abs() <= 0.1 * 60.0, "NLR on a box: {c:?}");
    }
    assert!((out[1].delay - out[0].delay - 2.0).abs() <= 0.3, "{out:?}");
    // Bad input: a status, and `out` as it was.
    let before = out;
    let cnn = options(IMH_PERFUSION_METHOD_CNN, 0);
    assert_eq!(call(&cnn, &mut out), imh_status::InvalidArgument);
    let flags = options(0, 0x80);
    assert_eq!(call(&flags, &mut out), imh_status::InvalidArgument);
    let mut back = times.clone();
    back[5] = 1.0;
    let status = unsafe {
        imh_perfusion_curves(
            ctx,
            a.as_ptr(),
            both.as_ptr(),
            2,
            times.len(),
            back.as_ptr(),
            ptr::null(),
            out.as_mut_ptr(),
        )
    };
    assert_eq!(status, imh_status::InvalidArgument);
    let status = unsafe {
        imh_perfusion_curves(ctx, a.as_ptr(), both.as_ptr(), 2, 3, times.as_ptr(), ptr::null(), out.as_mut_ptr())
    };
    assert_eq!(status, imh_status::InvalidArgument);
    let status = unsafe {
        imh_perfusion_curves(
            ctx,
            ptr::null(),
            both.as_ptr(),
            2,
            times.len(),
            times.as_ptr(),
            ptr::null(),
            out.as_mut_ptr(),
        )
    };
    assert_eq!(status, imh_status::NullArgument);
    let flat = vec![7.0; times.len()];
    let status = unsafe {
        imh_perfusion_curves(
            ctx,
            flat.as_ptr(),
            both.as_ptr(),
            2,
            times.len(),
            times.as_ptr(),
            ptr::null(),
            out.as_mut_ptr(),
        )
    };
    assert_eq!(status, imh_status::InvalidArgument);
    let message = unsafe { std::ffi::CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned();
    assert!(message.contains("no bolus") && !message.contains('\n'), "{message}");
    assert_eq!(out, before, "nothing written on error");
    unsafe { imh_context_free(ctx) };
}
