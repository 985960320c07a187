//! Motion correction through a registration the host supplies (`imh_perfusion_options.registration`,
//! the way 3D Slicer hands the library its own ITK): called for the moving frames from worker
//! threads, its transforms land in the report under its name, a failing callback fails the run
//! with a message naming it, and `IMH_PERFUSION_NO_MOTION_CORRECTION` keeps it from being called.

// This file plays a C caller: every call is an unsafe FFI call whose pointers are plainly valid.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use imhost::*;
use imhost_core::phantom::ctp::{PhantomOptions, generate};
use serde_json::Value;

struct Host {
    calls: AtomicUsize,
    threads: Mutex<std::collections::HashSet<std::thread::ThreadId>>,
    fail_with: u32,
    /// Resample the moving frame through the transform it reports (else return it as it is).
    honest: bool,
}

/// The transform the stand-in reports: angles (rad), then a translation (mm).
const FOUND: [f64; 6] = [0.0, 0.0, 0.0, 0.25, -0.5, 0.75];

/// `moving` resampled through a pure translation `t` (mm) on an axis-aligned grid, as the header
/// asks: linear interpolation, −1024 HU more than half a voxel beyond the outer voxel centres.
fn translate(moving: &[f32], shape: [usize; 3], spacing: [f64; 3], t: [f64; 3], out: &mut [f32]) {
    let [ni, nj, nk] = shape;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let p = [i as f64 + t[0] / spacing[0], j as f64 + t[1] / spacing[1], k as f64 + t[2] / spacing[2]];
                let inside = (0..3).all(|a| p[a] >= -0.5 && p[a] <= shape[a] as f64 - 0.5);
                out[i + ni * (j + nj * k)] = if inside {
                    let mut value = 0.0;
                    for corner in 0..8 {
                        let mut weight = 1.0;
                        let mut index = [0usize; 3];
                        for a in 0..3 {
                            let x = p[a].clamp(0.0, (shape[a] - 1) as f64);
                            let lo = (x.floor() as usize).min(shape[a] - 1);
                            let f = x - lo as f64;
                            let up = corner >> a & 1 == 1;
                            index[a] = if up { (lo + 1).min(shape[a] - 1) } else { lo };
                            weight *= if up { f } else { 1.0 - f };
                        }
                        value += weight * f64::from(moving[index[0] + ni * (index[1] + nj * index[2])]);
                    }
                    value as f32
                } else {
                    -1024.0
                };
            }
        }
    }
}

/// A stand-in registration that reports a fixed translation and either applies it (honest) or
/// returns the moving frame as it is (what matters here is the contract, not the registration;
/// ITK's is tested in itk-sys, in the `imhost` command and against Slicer's ITK in
/// slicer-extension/Testing).
unsafe extern "C" fn register(
    user: *mut c_void,
    fixed: *const f32,
    moving: *const f32,
    shape: *const i64,
    geometry: *const imh_geometry,
    motion: *mut f64,
    resampled: *mut f32,
) -> u32 {
    let host = unsafe { &*user.cast::<Host>() };
    host.calls.fetch_add(1, Ordering::SeqCst);
    host.threads.lock().unwrap().insert(std::thread::current().id());
    if host.fail_with != 0 {
        return host.fail_with;
    }
    let shape = unsafe { std::slice::from_raw_parts(shape, 3) };
    let shape = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
    let spacing = unsafe { (*geometry).spacing };
    assert!(spacing[0] > 0.0 && !fixed.is_null());
    let n = shape.iter().product::<usize>();
    let (moving, out) =
        unsafe { (std::slice::from_raw_parts(moving, n), std::slice::from_raw_parts_mut(resampled, n)) };
    if host.honest {
        translate(moving, shape, spacing, [FOUND[3], FOUND[4], FOUND[5]], out);
    } else {
        out.copy_from_slice(moving);
    }
    unsafe { ptr::copy_nonoverlapping(FOUND.as_ptr(), motion, 6) };
    0
}

/// A moving anatomical phantom (48×48×6, 24 frames 2 s apart) and its frame times.
fn moving_phantom() -> (imhost_core::phantom::ctp::CtpPhantom, Vec<f64>) {
    let mut options = PhantomOptions::default();
    options.motion = true;
    options.shape = Some([48, 48, 6]);
    options.frame_times = Some((0..24).map(|t| 2.0 * t as f64).collect());
    let phantom = generate(&options).unwrap();
    let times = phantom.ctp.frame_times().unwrap().as_slice().to_vec();
    (phantom, times)
}

/// A C view of the phantom (borrowing it and `times`).
fn view_of(phantom: &imhost_core::phantom::ctp::CtpPhantom, times: &[f64]) -> imh_view {
    let v = phantom.ctp.data();
    let s = v.strides();
    let [ni, nj, nk, nt] = phantom.ctp.shape();
    let g = phantom.ctp.geometry();
    imh_view {
        data: v.as_ptr().cast(),
        dtype: IMH_DTYPE_I16,
        ndim: 4,
        shape: [ni as i64, nj as i64, nk as i64, nt as i64],
        strides: [s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64],
        geometry: imh_geometry {
            spacing: g.spacing,
            origin: g.origin,
            direction: std::array::from_fn(|n| g.direction[n / 3][n % 3]),
        },
        frame_times: times.as_ptr(),
    }
}

fn run(host: &Host, flags: u32) -> (imh_status, Option<Value>, String) {
    let (phantom, times) = moving_phantom();
    let view = view_of(&phantom, &times);
    let o = imh_perfusion_options {
        struct_size: size_of::<imh_perfusion_options>() as u32,
        method: IMH_PERFUSION_METHOD_DEFAULT,
        flags,
        aif_voxel: [0; 3],
        age: 0.0,
        nihss: 0.0,
        filter_sigma_mm: 0.0,
        filter_range_hu: 0.0,
        model: ptr::null(),
        registration: Some(register),
        registration_user_data: (host as *const Host).cast_mut().cast(),
        registration_name: c"test registration".as_ptr(),
    };
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { imh_context_new(&mut ctx) }, imh_status::Ok);
    let mut result = ptr::null_mut();
    let status = unsafe { imh_perfusion_run(ctx, &view, &o, ptr::null(), &mut result) };
    let message = unsafe { CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned();
    let report = (status == imh_status::Ok).then(|| {
        let text = unsafe { CStr::from_ptr(imh_perfusion_result_report_json(result)) };
        serde_json::from_str(text.to_str().unwrap()).unwrap()
    });
    unsafe { imh_perfusion_result_free(result) };
    unsafe { imh_context_free(ctx) };
    (status, report, message)
}

fn host(fail_with: u32) -> Host {
    Host { calls: AtomicUsize::new(0), threads: Mutex::new(Default::default()), fail_with, honest: true }
}

/// The frames the skull estimate finds moving (≥ 0.1 mm): the ones registered.
fn moving_frames(motion: &Value) -> usize {
    motion["estimated_mm"].as_array().unwrap().iter().skip(1).filter(|e| e.as_f64().unwrap() >= 0.1).count()
}

#[test]
fn the_hosts_registration_corrects_motion_and_is_reported_by_name() {
    let h = host(0);
    let (status, report, message) = run(&h, 0);
    assert_eq!(status, imh_status::Ok, "{message}");
    let report = report.unwrap();
    let motion = &report["motion"];
    assert_eq!(motion["corrected"], true, "{motion}");
    assert_eq!(motion["backend"], "test registration");
    // Every moving frame once (the phantom holds still for its first 12 frames), with the
    // transform the host returned; the still frames are left as they are.
    let moving = moving_frames(motion);
    assert!((8..=12).contains(&moving), "{motion}");
    assert_eq!(h.calls.load(Ordering::SeqCst), moving);
    assert_eq!(motion["registered_frames"], moving);
    let registered = motion["registered"].as_array().unwrap();
    assert_eq!(registered.len(), 24);
    assert_eq!(registered[23]["translation"], serde_json::json!([0.25, -0.5, 0.75]));
    assert_eq!(registered[23]["angles"], serde_json::json!([0.0, 0.0, 0.0]));
    assert_eq!(registered[0]["translation"], serde_json::json!([0.0, 0.0, 0.0]));
    assert_eq!(registered[5]["translation"], serde_json::json!([0.0, 0.0, 0.0]));
    assert!(report["warnings"].as_array().unwrap().iter().all(|w| !w.as_str().unwrap().contains("full size")));
}

#[test]
fn a_transform_that_does_not_match_its_resampling_is_registered_again_at_full_size() {
    // The host reports a translation but returns the frame unmoved: the pipeline's check of the
    // transform against the host's own resampling fails, so each moving frame is registered a
    // second time at full size and the host's resampling is used, with a warning.
    let h = Host { honest: false, ..host(0) };
    let (status, report, message) = run(&h, 0);
    assert_eq!(status, imh_status::Ok, "{message}");
    let report = report.unwrap();
    let moving = moving_frames(&report["motion"]);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2 * moving);
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains(&format!("{moving} frames were registered at full size"))),
        "{warnings:?}"
    );
}

#[test]
fn a_failing_registration_fails_the_run_naming_it() {
    let h = host(IMH_STATUS_INTERNAL_CODE);
    let (status, report, message) = run(&h, 0);
    assert_eq!(status, imh_status::Internal);
    assert!(report.is_none());
    assert!(message.contains("test registration") && message.contains("IMH_STATUS_INTERNAL"), "{message}");
}

#[test]
fn no_motion_correction_never_calls_the_registration() {
    let h = host(0);
    let (status, report, message) = run(&h, IMH_PERFUSION_NO_MOTION_CORRECTION);
    assert_eq!(status, imh_status::Ok, "{message}");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    let report = report.unwrap();
    assert_eq!(report["motion"]["corrected"], false);
    assert!(
        report["qc_flags"].as_array().unwrap().iter().any(|f| f["flag"] == "too_much_motion"),
        "{}",
        report["qc_flags"]
    );
}

const IMH_STATUS_INTERNAL_CODE: u32 = imh_status::Internal as u32;

#[test]
fn the_registrys_perfusion_models_use_the_hosts_registration() {
    let h = host(0);
    let (phantom, times) = moving_phantom();
    let view = view_of(&phantom, &times);
    let o = imh_registry_options {
        struct_size: size_of::<imh_registry_options>() as u32,
        standard_locations: false,
        isolate_all: false,
        paths: ptr::null(),
        n_paths: 0,
        device: ptr::null(),
        registration: Some(register),
        registration_user_data: (&h as *const Host).cast_mut().cast(),
        registration_name: c"test registration".as_ptr(),
    };
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { imh_context_new(&mut ctx) }, imh_status::Ok);
    let mut registry = ptr::null_mut();
    assert_eq!(unsafe { imh_registry_open(ctx, &o, &mut registry) }, imh_status::Ok);
    let mut result = ptr::null_mut();
    let status = unsafe {
        imh_registry_run(ctx, registry, c"perfusion-bsvd".as_ptr(), &view, 1, ptr::null(), ptr::null(), &mut result)
    };
    let message = unsafe { CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned();
    assert_eq!(status, imh_status::Ok, "{message}");
    let summary: Value =
        serde_json::from_str(unsafe { CStr::from_ptr(imh_model_result_json(result)) }.to_str().unwrap()).unwrap();
    let motion = &summary["report"]["motion"];
    assert_eq!(motion["corrected"], true, "{motion}");
    assert_eq!(motion["backend"], "test registration");
    assert_eq!(h.calls.load(Ordering::SeqCst), moving_frames(motion));
    unsafe { imh_model_result_free(result) };
    unsafe { imh_registry_free(registry) };
    unsafe { imh_context_free(ctx) };
}
