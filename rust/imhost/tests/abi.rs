//! The C ABI called the way a C program calls it (raw pointers, C structs), from Rust: log
//! routing, size-prefixed options, view validation, and results checked by hand.

// This file plays a C caller: every call is an unsafe FFI call whose pointers are plainly valid.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::Mutex;

use imhost::*;

fn last_error() -> String {
    // SAFETY: imh_last_error_message returns this thread's live NUL-terminated message.
    unsafe { CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned()
}

struct Ctx(*mut imh_context);
impl Ctx {
    fn new() -> Ctx {
        let mut c = ptr::null_mut();
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { imh_context_new(&mut c) }, imh_status::Ok);
        Ctx(c)
    }
}
impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created by imh_context_new, freed once.
        unsafe { imh_context_free(self.0) }
    }
}

fn identity_geometry() -> imh_geometry {
    imh_geometry {
        spacing: [1.0, 1.0, 2.0],
        origin: [0.0; 3],
        direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    }
}

/// A 4-D f32 view over `data` laid out as a C array `[i][j][k][t]` (t fastest).
fn c_order_view(data: &[f32], shape: [i64; 4], times: &[f64]) -> imh_view {
    let [_, nj, nk, nt] = shape;
    imh_view {
        data: data.as_ptr().cast(),
        dtype: IMH_DTYPE_F32,
        ndim: 4,
        shape,
        strides: [nj * nk * nt, nk * nt, nt, 1],
        geometry: identity_geometry(),
        frame_times: times.as_ptr(),
    }
}

unsafe extern "C" fn record_log(
    user: *mut c_void,
    level: imh_log_level,
    target: *const c_char,
    message: *const c_char,
) {
    // SAFETY: user is the &Mutex<Vec<..>> passed below; strings are valid during the call.
    let sink = unsafe { &*(user as *const Mutex<Vec<(u32, String, String)>>) };
    let (target, message) = unsafe { (CStr::from_ptr(target), CStr::from_ptr(message)) };
    sink.lock().unwrap().push((level, target.to_string_lossy().into_owned(), message.to_string_lossy().into_owned()));
}

#[test]
fn mip_of_a_c_ordered_buffer_matches_a_hand_computed_maximum_and_logs() {
    let ctx = Ctx::new();
    let records: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());
    // SAFETY: the callback and the sink outlive every call on this context.
    let st = unsafe {
        imh_context_set_log_callback(ctx.0, Some(record_log), (&raw const records).cast_mut().cast(), IMH_LOG_INFO)
    };
    assert_eq!(st, imh_status::Ok);

    let shape = [3i64, 2, 2, 4];
    let n: usize = shape.iter().product::<i64>() as usize;
    // value(i,j,k,t) = (i + 10j + 100k) * (t % 3 == 1 ? 2 : 1) - t: the maximum is at t = 1.
    let mut data = vec![0f32; n];
    for i in 0..3 {
        for j in 0..2 {
            for k in 0..2 {
                for t in 0..4 {
                    let base = (i + 10 * j + 100 * k) as f32;
                    data[((i * 2 + j) * 2 + k) * 4 + t] = base * if t % 3 == 1 { 2.0 } else { 1.0 } - t as f32;
                }
            }
        }
    }
    let times = [0.0, 1.0, 2.5, 4.0];
    let view = c_order_view(&data, shape, &times);
    let mut out = ptr::null_mut();
    // SAFETY: all pointers valid for the call.
    assert_eq!(unsafe { imh_mip(ctx.0, &view, ptr::null(), &mut out) }, imh_status::Ok, "{}", last_error());
    let mut result: imh_view = unsafe { std::mem::zeroed() };
    // SAFETY: `out` is a live volume.
    assert_eq!(unsafe { imh_volume_get_view(out, &mut result) }, imh_status::Ok);
    assert_eq!(result.ndim, 3);
    assert_eq!(result.dtype, IMH_DTYPE_F32);
    assert_eq!(&result.shape[..3], &[3, 2, 2]);
    assert_eq!(result.geometry, identity_geometry());
    assert!(result.frame_times.is_null());
    for i in 0..3i64 {
        for j in 0..2i64 {
            for k in 0..2i64 {
                let off = i * result.strides[0] + j * result.strides[1] + k * result.strides[2];
                // SAFETY: offset within the result's shape and strides.
                let got = unsafe { *result.data.cast::<f32>().offset(off as isize) };
                let base = (i + 10 * j + 100 * k) as f32;
                assert_eq!(got, (2.0 * base - 1.0).max(base), "voxel ({i},{j},{k})");
            }
        }
    }
    // SAFETY: freed once.
    unsafe { imh_volume_free(out) };
    let records = records.lock().unwrap();
    assert!(
        records.iter().any(|(level, target, msg)| *level == IMH_LOG_INFO
            && target.starts_with("imhost")
            && msg.contains("temporal MIP done")),
        "{records:?}"
    );
}

#[test]
fn records_stay_with_their_context_and_respect_the_level() {
    let (a, b) = (Ctx::new(), Ctx::new());
    let seen_a: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());
    // SAFETY: callback and sink outlive the calls.
    unsafe { imh_context_set_log_callback(a.0, Some(record_log), (&raw const seen_a).cast_mut().cast(), IMH_LOG_WARN) };
    let data = vec![1f32; 8];
    let mut view = c_order_view(&data, [2, 2, 1, 2], &[0.0, 1.0]);
    view.frame_times = ptr::null(); // -> a warning: frames assumed 1 s apart
    let mut out = ptr::null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { imh_mip(b.0, &view, ptr::null(), &mut out) }, imh_status::Ok);
    unsafe { imh_volume_free(out) };
    assert!(seen_a.lock().unwrap().is_empty(), "context a saw b's records");
    assert_eq!(unsafe { imh_mip(a.0, &view, ptr::null(), &mut out) }, imh_status::Ok);
    unsafe { imh_volume_free(out) };
    let seen = seen_a.lock().unwrap();
    assert!(seen.iter().any(|(l, _, m)| *l == IMH_LOG_WARN && m.contains("assuming frames 1 s apart")), "{seen:?}");
    assert!(seen.iter().all(|(l, _, _)| *l <= IMH_LOG_WARN), "info records leaked through: {seen:?}");
    // An invalid level is refused.
    assert_eq!(unsafe { imh_context_set_log_callback(a.0, None, ptr::null_mut(), 9) }, imh_status::InvalidArgument);
}

unsafe extern "C" fn count_and_cancel_at_two(user: *mut c_void, fraction: f64, _stage: *const c_char) -> bool {
    // SAFETY: user points to the Vec below.
    let calls = unsafe { &mut *(user as *mut Vec<f64>) };
    calls.push(fraction);
    calls.len() < 2
}

#[test]
fn options_are_read_up_to_the_callers_struct_size() {
    let ctx = Ctx::new();
    let data = vec![0f32; 300 * 300 * 2];
    let view = c_order_view(&data, [300, 300, 1, 2], &[0.0, 1.0]);
    let mut token = ptr::null_mut();
    unsafe { imh_cancel_token_new(&mut token) };
    unsafe { imh_cancel_token_cancel(token) };
    let mut calls: Vec<f64> = Vec::new();
    let mut options = imh_run_options {
        struct_size: size_of::<imh_run_options>() as u32,
        progress: Some(count_and_cancel_at_two),
        progress_user_data: (&raw mut calls).cast(),
        cancel: token,
        timeout_s: 0.0,
    };
    let mut out = ptr::null_mut();
    // Full struct: the cancelled token stops the run at the first check.
    assert_eq!(unsafe { imh_mip(ctx.0, &view, &options, &mut out) }, imh_status::Cancelled);
    assert!(out.is_null(), "no output on failure");
    assert!(last_error().starts_with("cancelled: imh_mip:"), "{}", last_error());
    // An older caller whose struct ends before `cancel`: the token is not seen; the progress
    // callback cancels on its second call instead.
    calls.clear();
    options.struct_size = std::mem::offset_of!(imh_run_options, cancel) as u32;
    assert_eq!(unsafe { imh_mip(ctx.0, &view, &options, &mut out) }, imh_status::Cancelled);
    assert_eq!(calls.len(), 2);
    // A struct_size that cannot be right.
    options.struct_size = 2;
    assert_eq!(unsafe { imh_mip(ctx.0, &view, &options, &mut out) }, imh_status::InvalidArgument);
    unsafe { imh_cancel_token_free(token) };
}

#[test]
fn invalid_views_are_reported_not_dereferenced() {
    let ctx = Ctx::new();
    let data = vec![0f32; 16];
    let good = c_order_view(&data, [2, 2, 2, 2], &[0.0, 1.0]);
    let unaligned = (data.as_ptr() as *const u8).wrapping_add(1);
    type Case = (&'static str, Box<dyn Fn(&mut imh_view)>, imh_status);
    let cases: Vec<Case> = vec![
        ("dtype 0", Box::new(|v| v.dtype = 0), imh_status::DataType),
        ("dtype 99", Box::new(|v| v.dtype = 99), imh_status::DataType),
        ("ndim 5", Box::new(|v| v.ndim = 5), imh_status::Shape),
        ("zero axis", Box::new(|v| v.shape[1] = 0), imh_status::Shape),
        ("negative axis", Box::new(|v| v.shape[2] = -3), imh_status::Shape),
        ("negative stride", Box::new(|v| v.strides[0] = -8), imh_status::Shape),
        (
            "overflowing strides",
            Box::new(|v| {
                v.shape[0] = 1 << 40;
                v.strides[0] = 1 << 40;
            }),
            imh_status::Shape,
        ),
        ("extent beyond the address space", Box::new(|v| v.strides[0] = i64::MAX / 2), imh_status::TooLarge),
        ("NULL data", Box::new(|v| v.data = ptr::null()), imh_status::NullArgument),
        ("unaligned data", Box::new(move |v| v.data = unaligned.cast()), imh_status::InvalidArgument),
        ("NaN spacing", Box::new(|v| v.geometry.spacing[0] = f64::NAN), imh_status::Geometry),
        ("zero spacing", Box::new(|v| v.geometry.spacing[2] = 0.0), imh_status::Geometry),
        (
            "parallel axes",
            Box::new(|v| v.geometry.direction = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
            imh_status::Geometry,
        ),
        ("3-D into a 4-D op", Box::new(|v| v.ndim = 3), imh_status::Shape),
    ];
    for (label, mutate, expect) in cases {
        let mut view = good;
        mutate(&mut view);
        let mut out = ptr::null_mut();
        let st = unsafe { imh_mip(ctx.0, &view, ptr::null(), &mut out) };
        assert_eq!(st, expect, "{label}: {}", last_error());
        assert!(out.is_null(), "{label}: out written on failure");
        assert!(!last_error().is_empty());
    }
    let times = [0.0, 0.0];
    let mut view = good;
    view.frame_times = times.as_ptr();
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { imh_mip(ctx.0, &view, ptr::null(), &mut out) }, imh_status::Geometry, "repeated frame time");
    // NULL handles and out-pointers.
    assert_eq!(unsafe { imh_mip(ptr::null(), &good, ptr::null(), &mut out) }, imh_status::NullArgument);
    assert_eq!(last_error(), "null argument: imh_mip: argument 'context' is NULL");
    assert_eq!(unsafe { imh_mip(ctx.0, ptr::null(), ptr::null(), &mut out) }, imh_status::NullArgument);
    assert_eq!(unsafe { imh_mip(ctx.0, &good, ptr::null(), ptr::null_mut()) }, imh_status::NullArgument);
    assert_eq!(unsafe { imh_volume_get_view(ptr::null(), ptr::null_mut()) }, imh_status::NullArgument);
    assert_eq!(unsafe { imh_context_new(ptr::null_mut()) }, imh_status::NullArgument);
    // Every free accepts NULL.
    unsafe {
        imh_volume_free(ptr::null_mut());
        imh_context_free(ptr::null_mut());
        imh_cancel_token_free(ptr::null_mut());
    }
}

#[test]
fn slicer_matrix_round_trip_and_error_names() {
    let (s, c) = 25f64.to_radians().sin_cos();
    let g = imh_geometry {
        spacing: [0.5, 0.6, 3.0],
        origin: [10.0, -5.0, 2.0],
        direction: [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0],
    };
    let mut m = [0f64; 16];
    assert_eq!(unsafe { imh_geometry_to_ijk_to_ras(&g, m.as_mut_ptr()) }, imh_status::Ok);
    // RAS = LPS with x and y negated: first row is -(c*0.5, -s*0.6, 0, 10).
    assert!((m[0] + c * 0.5).abs() < 1e-12 && (m[1] - s * 0.6).abs() < 1e-12 && m[3] == -10.0);
    assert_eq!(&m[8..12], &[0.0, 0.0, 3.0, 2.0]);
    let mut back: imh_geometry = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { imh_geometry_from_ijk_to_ras(m.as_ptr(), &mut back) }, imh_status::Ok);
    for n in 0..9 {
        assert!((back.direction[n] - g.direction[n]).abs() < 1e-12);
    }
    m[15] = 0.0;
    assert_eq!(unsafe { imh_geometry_from_ijk_to_ras(m.as_ptr(), &mut back) }, imh_status::Geometry);
    let name = |code| unsafe { CStr::from_ptr(imh_status_name(code)) }.to_str().unwrap().to_owned();
    assert_eq!(name(imh_status::Cancelled as u32), "IMH_STATUS_CANCELLED");
    assert_eq!(name(1234), "IMH_STATUS_UNKNOWN");
}

#[test]
fn files_through_the_abi_read_write_and_fail_clearly() {
    let ctx = Ctx::new();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let view = c_order_view(&data, [2, 3, 2, 2], &[0.0, 2.5]);
    let path = CString::new(dir.path().join("v.nii.gz").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { imh_view_write(ctx.0, &view, path.as_ptr()) }, imh_status::Ok, "{}", last_error());
    let mut vol = ptr::null_mut();
    assert_eq!(unsafe { imh_volume_read(ctx.0, path.as_ptr(), &mut vol) }, imh_status::Ok);
    let mut back: imh_view = unsafe { std::mem::zeroed() };
    unsafe { imh_volume_get_view(vol, &mut back) };
    assert_eq!(back.shape, [2, 3, 2, 2]);
    let times = unsafe { std::slice::from_raw_parts(back.frame_times, 2) };
    assert_eq!(times, &[0.0, 2.5]);
    // Voxel (1, 2, 0, 1) = ((1*3 + 2)*2 + 0)*2 + 1 = 21 in the C-ordered source.
    let off = back.strides[0] + 2 * back.strides[1] + back.strides[3];
    assert_eq!(unsafe { *back.data.cast::<f32>().offset(off as isize) }, 21.0);
    unsafe { imh_volume_free(vol) };

    let bad = CString::new(format!("{}/../../tests/data/must-fail/truncated.nii", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut vol = ptr::null_mut();
    assert_eq!(unsafe { imh_volume_read(ctx.0, bad.as_ptr(), &mut vol) }, imh_status::Format);
    assert!(vol.is_null());
    let msg = last_error();
    assert!(
        msg.starts_with("format: imh_volume_read: '") && msg.contains("truncated.nii': file is truncated"),
        "{msg}"
    );
}

/// Oversized inputs fail with `IMH_STATUS_TOO_LARGE` instead of aborting the host, also under
/// an address-space limit (`ulimit -v`, as a host's service limits set): each case runs in a
/// child process (this test binary again, `oversized_input_case`) under `ulimit -v 3000000`.
#[test]
fn oversized_inputs_are_refused_under_an_address_space_limit() {
    let exe = std::env::current_exe().unwrap();
    for case in ["mip", "perfusion", "registry-mip", "registry-perfusion"] {
        let script = format!("ulimit -v 3000000 && exec '{}' --exact oversized_input_case --nocapture", exe.display());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("IMHOST_OVERSIZED_CASE", case)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("case {case}: too large")),
            "{case}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One case of [`oversized_inputs_are_refused_under_an_address_space_limit`] (does nothing in a
/// normal run).
#[test]
fn oversized_input_case() {
    let Ok(case) = std::env::var("IMHOST_OVERSIZED_CASE") else { return };
    let ctx = Ctx::new();
    let cell = [0f32; 1];
    let times: Vec<f64> = (0..40).map(f64::from).collect();
    // Zero strides: every voxel is the one float above, so the view is valid and costs nothing.
    let view = |shape: [i64; 4]| imh_view {
        data: cell.as_ptr().cast(),
        dtype: IMH_DTYPE_F32,
        ndim: 4,
        shape,
        strides: [0; 4],
        geometry: identity_geometry(),
        frame_times: times.as_ptr(),
    };
    let status = match case.as_str() {
        "mip" => {
            let mut out = ptr::null_mut();
            unsafe { imh_mip(ctx.0, &view([40000, 40000, 100, 2]), ptr::null(), &mut out) }
        }
        "perfusion" => {
            let mut out = ptr::null_mut();
            unsafe { imh_perfusion_run(ctx.0, &view([2000, 2000, 100, 40]), ptr::null(), ptr::null(), &mut out) }
        }
        registry => {
            let mut r = ptr::null_mut();
            assert_eq!(unsafe { imh_registry_open(ctx.0, ptr::null(), &mut r) }, imh_status::Ok);
            let (id, shape) = if registry == "registry-mip" {
                (c"mip", [40000, 40000, 100, 2])
            } else {
                (c"perfusion-osvd", [2000, 2000, 100, 40])
            };
            let mut out = ptr::null_mut();
            let s =
                unsafe { imh_registry_run(ctx.0, r, id.as_ptr(), &view(shape), 1, ptr::null(), ptr::null(), &mut out) };
            unsafe { imh_registry_free(r) };
            s
        }
    };
    assert_eq!(status, imh_status::TooLarge, "{case}: {}", last_error());
    println!("case {case}: too large ({})", last_error());
}

/// DICOM through the ABI: a real CT series (pydicom's) from a folder and from memory gives the
/// same volume; the bad calls are refused with their status.
#[test]
fn dicom_series_from_a_folder_and_from_memory() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let folder = root.join(".cache/python/pydicom/data/test_files/dicomdirtests/98892001/CT5N");
    assert!(folder.is_dir(), "pydicom's test files (scripts/setup.sh test): {}", folder.display());
    let ctx = Ctx::new();
    let dir = CString::new(folder.to_str().unwrap()).unwrap();
    let mut from_folder = ptr::null_mut();
    assert_eq!(
        unsafe { imh_volume_read_dicom_folder(ctx.0, dir.as_ptr(), &mut from_folder) },
        imh_status::Ok,
        "{}",
        last_error()
    );
    let mut files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let buffers: Vec<imh_buffer> =
        bytes.iter().map(|b| imh_buffer { data: b.as_ptr().cast(), size: b.len() }).collect();
    let mut from_memory = ptr::null_mut();
    let status = unsafe { imh_volume_read_dicom(ctx.0, buffers.as_ptr(), buffers.len(), &mut from_memory) };
    assert_eq!(status, imh_status::Ok, "{}", last_error());
    let (mut a, mut b): (imh_view, imh_view) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    unsafe {
        assert_eq!(imh_volume_get_view(from_folder, &mut a), imh_status::Ok);
        assert_eq!(imh_volume_get_view(from_memory, &mut b), imh_status::Ok);
    }
    assert_eq!((a.shape, a.dtype, a.ndim), (b.shape, b.dtype, b.ndim));
    assert_eq!(a.shape[2], 5, "five slices");
    assert_eq!(
        (a.geometry.spacing, a.geometry.origin, a.geometry.direction),
        (b.geometry.spacing, b.geometry.origin, b.geometry.direction)
    );
    let n = (a.shape[0] * a.shape[1] * a.shape[2]) as usize * 2;
    let (pa, pb) = unsafe {
        (std::slice::from_raw_parts(a.data.cast::<u8>(), n), std::slice::from_raw_parts(b.data.cast::<u8>(), n))
    };
    assert_eq!(pa, pb, "the same pixels");
    unsafe {
        imh_volume_free(from_folder);
        imh_volume_free(from_memory);
    }
    // Bad calls.
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { imh_volume_read_dicom(ctx.0, buffers.as_ptr(), 0, &mut out) }, imh_status::InvalidArgument);
    assert_eq!(unsafe { imh_volume_read_dicom(ctx.0, ptr::null(), 3, &mut out) }, imh_status::NullArgument);
    let mut cut = buffers.clone();
    cut[1].size = 200;
    assert_eq!(unsafe { imh_volume_read_dicom(ctx.0, cut.as_ptr(), cut.len(), &mut out) }, imh_status::Format);
    assert!(last_error().contains("DICOM buffer 1"), "{}", last_error());
    let mut null_data = buffers.clone();
    null_data[0].data = ptr::null();
    assert_eq!(unsafe { imh_volume_read_dicom(ctx.0, null_data.as_ptr(), 2, &mut out) }, imh_status::InvalidArgument);
    // The context's memory limit holds here too.
    assert_eq!(unsafe { imh_context_set_memory_limit(ctx.0, 1000) }, imh_status::Ok);
    assert_eq!(
        unsafe { imh_volume_read_dicom(ctx.0, buffers.as_ptr(), buffers.len(), &mut out) },
        imh_status::TooLarge,
        "{}",
        last_error()
    );
    assert!(out.is_null());
}
