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
}

/// A stand-in registration that reports a fixed transform and returns the moving frame as it is
/// (what matters here is the contract, not the registration; ITK's is tested in itk-sys and
/// against Slicer's ITK in slicer-extension/Testing).
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
    assert!(unsafe { (*geometry).spacing[0] } > 0.0 && !fixed.is_null());
    let n = (shape[0] * shape[1] * shape[2]) as usize;
    unsafe { ptr::copy_nonoverlapping(moving, resampled, n) };
    let found = [0.001, -0.002, 0.003, 0.25, -0.5, 0.75];
    unsafe { ptr::copy_nonoverlapping(found.as_ptr(), motion, 6) };
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
    Host { calls: AtomicUsize::new(0), threads: Mutex::new(Default::default()), fail_with }
}

#[test]
fn the_hosts_registration_corrects_motion_and_is_reported_by_name() {
    let h = host(0);
    let (status, report, message) = run(&h, 0);
    assert_eq!(status, imh_status::Ok, "{message}");
    let motion = &report.unwrap()["motion"];
    assert_eq!(motion["corrected"], true, "{motion}");
    assert_eq!(motion["backend"], "test registration");
    // Every frame but the reference, each once, with the transform the host returned.
    assert_eq!(h.calls.load(Ordering::SeqCst), 23);
    let registered = motion["registered"].as_array().unwrap();
    assert_eq!(registered.len(), 24);
    assert_eq!(registered[5]["translation"], serde_json::json!([0.25, -0.5, 0.75]));
    assert_eq!(registered[5]["angles"], serde_json::json!([0.001, -0.002, 0.003]));
    assert_eq!(registered[0]["translation"], serde_json::json!([0.0, 0.0, 0.0]));
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
    assert_eq!(h.calls.load(Ordering::SeqCst), 23);
    unsafe { imh_model_result_free(result) };
    unsafe { imh_registry_free(registry) };
    unsafe { imh_context_free(ctx) };
}
