//! `imh_model`: a model folder (manifest + verified weights) loaded once onto a device and
//! reused across calls (`imh_perfusion_options.model`). The network runs in the
//! `imhost-model-worker` program (LibTorch is never loaded into the caller's process); the worker
//! starts, loads and verifies the weights in `imh_model_load` and stays for the model's life.

use std::ffi::{CStr, CString, c_char};
use std::sync::Arc;

use imhost_core::registry::Model;
use imhost_registry::{PackageKind, network, package_kind};

use crate::context::{context_arg, imh_context};
use crate::ops::read_size_prefixed;
use crate::status::{FfiError, FfiResult, arg_out, ffi_boundary, imh_status};

/// Numeric precision of inference (`imh_model_options.precision`).
#[allow(non_camel_case_types)]
pub type imh_model_precision = u32;
/// float32 (the default).
pub const IMH_MODEL_PRECISION_F32: imh_model_precision = 0;
/// float16 (CUDA only).
pub const IMH_MODEL_PRECISION_F16: imh_model_precision = 1;
/// bfloat16 (CUDA only).
pub const IMH_MODEL_PRECISION_BF16: imh_model_precision = 2;

/// Options of `imh_model_load`. Size-prefixed, zero/NULL meaning default:
/// `imh_model_options o = {sizeof o};`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_model_options {
    /// `sizeof(imh_model_options)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `IMH_MODEL_PRECISION_*`.
    pub precision: imh_model_precision,
    /// `"auto"`, `"cpu"`, `"cuda"` or `"cuda:N"`; NULL: the `IMHOST_DEVICE` environment
    /// variable, else CUDA when available, else the CPU. Borrowed for the call.
    pub device: *const c_char,
}

/// A loaded model. Free with `imh_model_free`.
///
/// Thread safety: may be shared by threads; runs on one model are serialised internally.
#[allow(non_camel_case_types)]
pub struct imh_model {
    /// `perfusion-cnn` with this network, run by its worker.
    pub(crate) model: Arc<dyn Model>,
    manifest: CString,
}

/// Load the model folder `dir` (`manifest.json` + weights; the weights' sha256 is verified)
/// onto a device. `options` may be NULL. On success `*out` receives the model.
/// Errors: `IMH_STATUS_IO` (no such folder), `IMH_STATUS_FORMAT` (invalid manifest, checksum
/// mismatch), `IMH_STATUS_MODEL` (LibTorch refused the weights, no CUDA device when one was
/// asked for), `IMH_STATUS_UNSUPPORTED` (half precision on the CPU, unknown architecture, a
/// folder that is not a perfusion map network, no `imhost-model-worker` installed),
/// `IMH_STATUS_UNTRUSTED` (the folder or a file fails the trust rules).
///
/// The network runs in a child process, `imhost-model-worker` (found next to the program, next to
/// libimhost.so or in `../bin` from it, or at `IMHOST_MODEL_WORKER`), which links LibTorch: this
/// process never loads LibTorch. The worker uses as many threads as the context.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_load(
    context: *const imh_context,
    dir: *const c_char,
    options: *const imh_model_options,
    out: *mut *mut imh_model,
) -> imh_status {
    ffi_boundary!("imh_model_load", {
        let context = context_arg(context)?;
        let out = arg_out!(out, "out");
        if dir.is_null() {
            return Err(FfiError::new(imh_status::NullArgument, "dir is NULL"));
        }
        // SAFETY: a non-NULL `dir` is a NUL-terminated string (header contract).
        let dir = unsafe { CStr::from_ptr(dir) }
            .to_str()
            .map_err(|_| FfiError::new(imh_status::InvalidArgument, "dir is not UTF-8"))?
            .to_owned();
        let defaults = imh_model_options {
            struct_size: size_of::<imh_model_options>() as u32,
            precision: IMH_MODEL_PRECISION_F32,
            device: std::ptr::null(),
        };
        let minimum = std::mem::offset_of!(imh_model_options, precision);
        // SAFETY: header contract; the struct holds integers and a borrowed pointer.
        let o = unsafe { read_size_prefixed(options, defaults, minimum, "imh_model_options") }?;
        let precision = match o.precision {
            IMH_MODEL_PRECISION_F32 => "f32",
            IMH_MODEL_PRECISION_F16 => "f16",
            IMH_MODEL_PRECISION_BF16 => "bf16",
            p => return Err(FfiError::new(imh_status::InvalidArgument, format!("unknown precision {p}"))),
        };
        let device = if o.device.is_null() {
            None
        } else {
            // SAFETY: a non-NULL device is a NUL-terminated string (header contract).
            Some(
                unsafe { CStr::from_ptr(o.device) }
                    .to_str()
                    .map_err(|_| FfiError::new(imh_status::InvalidArgument, "device is not UTF-8"))?
                    .to_owned(),
            )
        };
        let model = context.scope(|| -> FfiResult<imh_model> {
            let dir = std::path::Path::new(&dir);
            if package_kind(dir)? != PackageKind::PerfusionNetwork {
                return Err(FfiError::new(
                    imh_status::Unsupported,
                    format!("{}: imh_model_load takes a perfusion map network folder (imhost-model/1); run other model packages through imh_registry", dir.display()),
                ));
            }
            let network = network::Manifest::read(dir)?;
            // In the context's pool, so that the worker gets the context's thread count.
            let model = context.in_pool(|| imhost_registry::open_in_worker(dir, device.clone(), Some(precision), true))?;
            let manifest = serde_json::to_string_pretty(&network)
                .map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?;
            tracing::info!(dir = %dir.display(), ?device, "model loaded");
            Ok(imh_model {
                model,
                manifest: CString::new(manifest).map_err(|e| FfiError::new(imh_status::Internal, e.to_string()))?,
            })
        })?;
        // SAFETY: checked by arg_out!; points to storage for one pointer.
        unsafe { out.write(Box::into_raw(Box::new(model))) };
        Ok(())
    })
}

/// The model's manifest (JSON: id, version, architecture, inputs, outputs with units, training
/// data, weights sha256) as a NUL-terminated UTF-8 string owned by `model`. NULL when `model`
/// is NULL.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_manifest_json(model: *const imh_model) -> *const c_char {
    ffi_boundary!("imh_model_manifest_json", default = std::ptr::null(), {
        // SAFETY: NULL or a live model (header contract).
        unsafe { model.as_ref() }.map_or(std::ptr::null(), |m| m.manifest.as_ptr())
    })
}

/// Free a model. NULL is ignored. Results computed with it stay valid.
///
/// Thread safety: not while a call is using the model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_model_free(model: *mut imh_model) {
    ffi_boundary!("imh_model_free", default = (), {
        if !model.is_null() {
            // SAFETY: a non-NULL model came from imh_model_load and is freed once (header).
            drop(unsafe { Box::from_raw(model) });
        }
    })
}
