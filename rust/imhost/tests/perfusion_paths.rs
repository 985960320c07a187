//! One path for perfusion: `imh_perfusion_run` is a convenience over the registry's
//! `perfusion-*` models — the same options mapping (manual AIF, filter σs, age, NIHSS reach the
//! pipeline either way and give identical maps), one set of limits, and the result metadata
//! (UCUM units, SNOMED CT segment codes) of `imh_model_result_json`.

// This file plays a C caller: every call is an unsafe FFI call whose pointers are plainly valid.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString};
use std::ptr;

use imhost::*;
use serde_json::Value;

const NI: usize = 24;
const NJ: usize = 24;
const NK: usize = 2;
const NT: usize = 40;

fn gamma_variate(t: f64, t0: f64) -> f64 {
    let x = (t - t0) / 4.5;
    if t <= t0 { 0.0 } else { x * x * x * (3.0 * (1.0 - x)).exp() }
}

/// The C test's study: tissue at 30 HU with a delayed gamma-variate enhancement, a 4×4 artery.
/// Laid out i fastest, then j, k, t.
fn study() -> (Vec<f32>, Vec<f64>) {
    let mut data = Vec::with_capacity(NI * NJ * NK * NT);
    for t in 0..NT {
        for _k in 0..NK {
            for j in 0..NJ {
                for i in 0..NI {
                    let artery = (4..8).contains(&i) && (4..8).contains(&j);
                    let t = t as f64;
                    data.push(if artery {
                        40.0 + 400.0 * gamma_variate(t, 8.0)
                    } else {
                        30.0 + 20.0 * gamma_variate(t, 10.0)
                    } as f32);
                }
            }
        }
    }
    (data, (0..NT).map(|t| t as f64).collect())
}

fn view(data: &[f32], times: &[f64]) -> imh_view {
    imh_view {
        data: data.as_ptr().cast(),
        dtype: IMH_DTYPE_F32,
        ndim: 4,
        shape: [NI as i64, NJ as i64, NK as i64, NT as i64],
        strides: [1, NI as i64, (NI * NJ) as i64, (NI * NJ * NK) as i64],
        geometry: imh_geometry {
            spacing: [1.0, 1.0, 5.0],
            origin: [0.0; 3],
            direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        },
        frame_times: times.as_ptr(),
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(imh_last_error_message()) }.to_string_lossy().into_owned()
}

fn options(age: f64) -> imh_perfusion_options {
    imh_perfusion_options {
        struct_size: size_of::<imh_perfusion_options>() as u32,
        method: IMH_PERFUSION_METHOD_BSVD,
        flags: IMH_PERFUSION_MANUAL_AIF | IMH_PERFUSION_HAS_AGE | IMH_PERFUSION_HAS_NIHSS,
        aif_voxel: [5, 6, 1],
        age,
        nihss: 10.0,
        filter_sigma_mm: 1.5,
        filter_range_hu: 20.0,
        model: ptr::null(),
        registration: None,
        registration_user_data: ptr::null_mut(),
        registration_name: ptr::null(),
    }
}

fn registry_options(age: f64) -> CString {
    CString::new(format!(
        r#"{{"aif_i": 5, "aif_j": 6, "aif_k": 1, "age_years": {age}, "nihss": 10, "filter_sigma_mm": 1.5, "filter_range_hu": 20}}"#
    ))
    .unwrap()
}

fn f32s(volume: *const imh_volume) -> Vec<f32> {
    let mut v: imh_view = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { imh_volume_get_view(volume, &mut v) }, imh_status::Ok);
    assert_eq!(v.dtype, IMH_DTYPE_F32);
    let n = (v.shape[0] * v.shape[1] * v.shape[2]) as usize;
    unsafe { std::slice::from_raw_parts(v.data.cast::<f32>(), n) }.to_vec()
}

#[test]
fn both_calls_take_the_same_options_to_the_same_maps_with_one_set_of_limits() {
    let (data, times) = study();
    let input = view(&data, &times);
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { imh_context_new(&mut ctx) }, imh_status::Ok);

    // imh_perfusion_run: the options reach the pipeline.
    let mut result = ptr::null_mut();
    let status = unsafe { imh_perfusion_run(ctx, &input, &options(125.0), ptr::null(), &mut result) };
    assert_eq!(status, imh_status::Ok, "{}", last_error());
    let report: Value =
        serde_json::from_str(&unsafe { CStr::from_ptr(imh_perfusion_result_report_json(result)) }.to_string_lossy())
            .unwrap();
    assert_eq!(report["schema"], "imhost-perfusion-report/1");
    assert_eq!(report["aif"]["source"], "manual");
    assert_eq!(report["aif"]["voxels"][0], serde_json::json!([5, 6, 1]));
    assert_eq!(report["preprocessing"]["bilateral"]["sigma_spatial_mm"], 1.5);
    assert_eq!(report["preprocessing"]["bilateral"]["sigma_range_hu"], 20.0);
    let mut cbf = ptr::null();
    assert_eq!(unsafe { imh_perfusion_result_volume(result, IMH_PERFUSION_CBF, &mut cbf) }, imh_status::Ok);
    let cbf_direct = f32s(cbf);
    let mut delay = ptr::null();
    assert_eq!(unsafe { imh_perfusion_result_volume(result, IMH_PERFUSION_DELAY, &mut delay) }, imh_status::Ok);
    unsafe { imh_perfusion_result_free(result) };

    // The registry's perfusion-bsvd with the same options in its own names: the same maps.
    let mut registry = ptr::null_mut();
    assert_eq!(unsafe { imh_registry_open(ctx, ptr::null(), &mut registry) }, imh_status::Ok);
    let mut out = ptr::null_mut();
    let id = c"perfusion-bsvd";
    let status = unsafe {
        imh_registry_run(ctx, registry, id.as_ptr(), &input, 1, registry_options(125.0).as_ptr(), ptr::null(), &mut out)
    };
    assert_eq!(status, imh_status::Ok, "{}", last_error());
    let count = unsafe { imh_model_result_volume_count(out) };
    let cbf = (0..count)
        .find_map(|n| {
            let (mut name, mut volume) = (ptr::null(), ptr::null());
            assert_eq!(unsafe { imh_model_result_volume(out, n, &mut name, &mut volume) }, imh_status::Ok);
            (unsafe { CStr::from_ptr(name) }.to_str() == Ok("cbf")).then_some(volume)
        })
        .expect("a cbf volume");
    assert_eq!(f32s(cbf), cbf_direct, "the two calls are one pipeline with one options mapping");

    // The result says what each output is, from the manifest.
    let summary: Value =
        serde_json::from_str(&unsafe { CStr::from_ptr(imh_model_result_json(out)) }.to_string_lossy()).unwrap();
    assert_eq!(summary["schema"], "imhost-model-result/1");
    assert_eq!(summary["model"]["id"], "perfusion-bsvd");
    assert_eq!(summary["research_use_only"], true);
    let output = |name: &str| summary["outputs"].as_array().unwrap().iter().find(|o| o["name"] == name).cloned();
    assert_eq!(output("cbf").unwrap()["unit_ucum"], "mL/(100.g.min)");
    assert_eq!(output("cbv").unwrap()["unit_ucum"], "mL/(100.g)");
    assert_eq!(output("delay").unwrap()["unit_ucum"], "s");
    let brain = output("brain").unwrap();
    assert_eq!(
        brain["labels"][0]["property"],
        serde_json::json!({"scheme": "SCT", "value": "12738006", "meaning": "Brain"})
    );
    let lesions = output("lesions").unwrap();
    assert_eq!(lesions["labels"][0]["name"], "ischemic core");
    assert_eq!(lesions["labels"][0]["property"]["value"], "55641003");
    assert_eq!(lesions["labels"][1]["color"], serde_json::json!([240, 200, 40]));
    assert!(output("hypoperfusion").is_some());
    unsafe { imh_model_result_free(out) };

    // One set of limits: an age of 130 passes both, 131 fails both for the same reason.
    for (age, ok) in [(130.0, true), (131.0, false)] {
        let mut result = ptr::null_mut();
        let direct = unsafe { imh_perfusion_run(ctx, &input, &options(age), ptr::null(), &mut result) };
        let direct_message = last_error();
        unsafe { imh_perfusion_result_free(result) };
        let mut out = ptr::null_mut();
        let via = unsafe {
            imh_registry_run(
                ctx,
                registry,
                id.as_ptr(),
                &input,
                1,
                registry_options(age).as_ptr(),
                ptr::null(),
                &mut out,
            )
        };
        let via_message = last_error();
        unsafe { imh_model_result_free(out) };
        let expected = if ok { imh_status::Ok } else { imh_status::InvalidArgument };
        assert_eq!((direct, via), (expected, expected), "age {age}: {direct_message} / {via_message}");
        if !ok {
            assert!(direct_message.contains("age_years") && via_message.contains("age_years"), "{direct_message}");
        }
    }
    // A manual AIF outside the image is refused by the pipeline through either call.
    let mut outside = options(70.0);
    outside.aif_voxel = [NI as u32, 0, 0];
    let mut result = ptr::null_mut();
    assert_eq!(
        unsafe { imh_perfusion_run(ctx, &input, &outside, ptr::null(), &mut result) },
        imh_status::InvalidArgument
    );
    assert!(last_error().contains("outside the image"), "{}", last_error());
    unsafe { imh_registry_free(registry) };
    unsafe { imh_context_free(ctx) };
}
