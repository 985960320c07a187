//! # imhost-plugin-abi
//!
//! The C types of the imhost plugin ABI, from which `include/imhost_plugin.h` is generated (the
//! rules — version check, struct sizes, who frees what — are in that header's preamble, see
//! `cbindgen.toml`). The host (`imhost-plugin-host`) and the Rust SDK (`imhost-plugin-sdk`) use
//! these definitions; C and C++ plugins use the header.
//!
//! History: 1.0 the first ABI; 1.1 added `imhp_plugin.unload` (a 1.0 plugin has none and
//! loads unchanged); 1.2 appended `imhp_host.plugin_dir`, `option_number` and `option_string`
//! (a plugin that uses them on an older host checks `IMHP_HOST_HAS(host, member)` first).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// The ABI major version: plugins built for another major are refused.
pub const IMHP_ABI_MAJOR: u32 = 1;
/// The ABI minor version: any minor of the same major loads (see the header's rules).
pub const IMHP_ABI_MINOR: u32 = 2;
/// The name of the one symbol a plugin exports (type `imhp_entry_fn`), NUL-terminated for
/// `dlsym`. (The header defines it as a macro in its trailer: cbindgen skips byte strings.)
pub const IMHP_ENTRY_SYMBOL: &[u8] = b"imhost_plugin_entry\0";

/// Result of a plugin function.
pub type imhp_status = i32;
/// Success.
pub const IMHP_OK: imhp_status = 0;
/// Failure; describe it with `imhp_host.set_error` before returning.
pub const IMHP_ERROR: imhp_status = 1;
/// The inputs or options are not what the model can use.
pub const IMHP_INVALID_INPUT: imhp_status = 2;
/// The run stopped because `is_cancelled` or `progress` said so.
pub const IMHP_CANCELLED: imhp_status = 3;
/// Memory could not be allocated.
pub const IMHP_NO_MEMORY: imhp_status = 4;

/// Pixel type; the numbers are those of the host's `imh_dtype`.
pub type imhp_dtype = u32;
/// uint8 (label maps).
pub const IMHP_DTYPE_U8: imhp_dtype = 1;
/// int16 (CT in HU).
pub const IMHP_DTYPE_I16: imhp_dtype = 2;
/// uint16.
pub const IMHP_DTYPE_U16: imhp_dtype = 3;
/// int32.
pub const IMHP_DTYPE_I32: imhp_dtype = 4;
/// float32 (maps).
pub const IMHP_DTYPE_F32: imhp_dtype = 5;
/// float64.
pub const IMHP_DTYPE_F64: imhp_dtype = 6;

/// Log level of `imhp_host.log`.
pub type imhp_log_level = i32;
/// An error.
pub const IMHP_LOG_ERROR: imhp_log_level = 1;
/// A warning.
pub const IMHP_LOG_WARN: imhp_log_level = 2;
/// Information.
pub const IMHP_LOG_INFO: imhp_log_level = 3;
/// Detail for developers.
pub const IMHP_LOG_DEBUG: imhp_log_level = 4;

/// `imhp_model.flags`: `run` may be called concurrently on one instance.
pub const IMHP_MODEL_FLAG_THREAD_SAFE: u32 = 1;

/// A 4-D pixel array with its patient geometry. Inputs point at the caller's memory (read
/// only, valid during `run`); outputs at memory the host allocated (`alloc_output`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct imhp_tensor {
    /// `sizeof(imhp_tensor)` as the writer compiled it.
    pub struct_size: u32,
    /// Pixel type.
    pub dtype: imhp_dtype,
    /// The first element (`[0][0][0][0]`). Inputs: do not write.
    pub data: *mut c_void,
    /// Sizes along i, j, k, t (t = 1 for a 3-D volume).
    pub shape: [usize; 4],
    /// Distance in ELEMENTS between neighbours along i, j, k, t: never negative, but an input's may
    /// be other than contiguous (a view of the caller's memory), so always index through them.
    pub strides: [isize; 4],
    /// Voxel spacing along i, j, k in mm.
    pub spacing: [f64; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Direction cosines, row-major 3×3: column c is the LPS unit vector of index axis c.
    pub direction: [f64; 9],
    /// `shape[3]` frame times in seconds, or NULL when `shape[3] == 1`.
    pub frame_times: *const f64,
    /// The input's or output's name in the manifest.
    pub name: *const c_char,
}

/// Writes one log line (`message` is copied).
pub type imhp_log_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, level: imhp_log_level, message: *const c_char)>;
/// Reports progress (`fraction` 0..1 of this run; `stage` may be NULL). Returns false when the
/// run should stop: return `IMHP_CANCELLED` soon after.
pub type imhp_progress_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, fraction: f64, stage: *const c_char) -> bool>;
/// Whether the user cancelled the run.
pub type imhp_is_cancelled_fn = Option<unsafe extern "C" fn(ctx: *mut c_void) -> bool>;
/// Allocates the output called `name` (declared in the manifest) of pixel type `dtype` and
/// `shape[4]`, zero-filled, on the grid of the input the manifest names; fills `*out`
/// (contiguous, i fastest). The memory belongs to the host. Refused (`IMHP_INVALID_INPUT`,
/// with a message) for an undeclared name, a second allocation of one name, a shape other than
/// the manifest's grid, or a label map that is not uint8.
pub type imhp_alloc_output_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        name: *const c_char,
        dtype: imhp_dtype,
        shape: *const usize,
        out: *mut imhp_tensor,
    ) -> imhp_status,
>;
/// Sets the score output `name` (declared in the manifest, finite).
pub type imhp_set_score_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, name: *const c_char, value: f64) -> imhp_status>;
/// Describes why the run (or create) failed, in one line (copied).
pub type imhp_set_error_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, message: *const c_char)>;
/// Attaches a JSON object to the result (QC flags, details; copied). Must be valid JSON.
pub type imhp_set_report_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, json: *const c_char) -> imhp_status>;
/// Since 1.2, during `run`: the value of option `name` as a number into `*value` (`number` and
/// `integer` options; a `boolean` gives 1 or 0). `IMHP_INVALID_INPUT` (with a message) when the
/// manifest declares no such option or it is a string option.
pub type imhp_option_number_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, name: *const c_char, value: *mut f64) -> imhp_status>;
/// Since 1.2, during `run`: copies the `string` option `name` with its NUL into `buffer` of
/// `capacity` bytes and writes its length without the NUL to `*length` (when `length` is not
/// NULL). `IMHP_ERROR` when the buffer is too small (`*length` still says how long it is; call
/// again with `*length + 1` bytes); `IMHP_INVALID_INPUT` for an unknown or non-string option.
pub type imhp_option_string_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        name: *const c_char,
        buffer: *mut c_char,
        capacity: usize,
        length: *mut usize,
    ) -> imhp_status,
>;

/// What the host offers a plugin. Passed to the entry function, `create` and (in
/// `imhp_run_args`) `run`; valid only during that call. Outside `run`, `alloc_output`,
/// `set_score` and `set_report` return `IMHP_ERROR`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct imhp_host {
    /// `sizeof(imhp_host)` as the host compiled it: check it before calling a callback added in
    /// a later minor version.
    pub struct_size: u32,
    /// The host's ABI major.
    pub abi_major: u32,
    /// The host's ABI minor.
    pub abi_minor: u32,
    /// Pass to every callback.
    pub ctx: *mut c_void,
    /// Logging (shown in the host's log, e.g. Slicer's or Orthanc's).
    pub log: imhp_log_fn,
    /// Progress.
    pub progress: imhp_progress_fn,
    /// Cancellation.
    pub is_cancelled: imhp_is_cancelled_fn,
    /// Output volumes.
    pub alloc_output: imhp_alloc_output_fn,
    /// Output scores.
    pub set_score: imhp_set_score_fn,
    /// Error message of a failed call.
    pub set_error: imhp_set_error_fn,
    /// Free-form JSON report.
    pub set_report: imhp_set_report_fn,
    /// Since 1.2: the folder the plugin library was loaded from, where it finds the files it
    /// ships (weights, tables); NUL-terminated, valid for the life of the process. It is the
    /// folder the host checked, named through its open descriptor (`/proc/self/fd/N`, in an
    /// isolated worker too), so it cannot be swapped. NULL on older hosts.
    pub plugin_dir: *const c_char,
    /// Since 1.2: read a number or boolean option (only during `run`).
    pub option_number: imhp_option_number_fn,
    /// Since 1.2: read a string option (only during `run`).
    pub option_string: imhp_option_string_fn,
}

/// Arguments of one run.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct imhp_run_args {
    /// `sizeof(imhp_run_args)` as the host compiled it.
    pub struct_size: u32,
    /// Number of inputs (as many as the manifest declares, in its order).
    pub n_inputs: u32,
    /// The inputs: an array of `n_inputs` pointers (each tensor carries its own struct_size).
    pub inputs: *const *const imhp_tensor,
    /// The options as a JSON object: every option the manifest declares, defaults filled in,
    /// values checked against the manifest's schema.
    pub options_json: *const c_char,
    /// The host's callbacks for this run.
    pub host: *const imhp_host,
}

/// Makes a model instance (load weights, allocate scratch). May be NULL: instances are then
/// NULL. On failure return non-zero after `host->set_error`.
pub type imhp_create_fn =
    Option<unsafe extern "C" fn(host: *const imhp_host, instance: *mut *mut c_void) -> imhp_status>;
/// Runs the model once.
pub type imhp_run_fn = Option<unsafe extern "C" fn(instance: *mut c_void, args: *const imhp_run_args) -> imhp_status>;
/// Frees what `create` made. May be NULL.
pub type imhp_destroy_fn = Option<unsafe extern "C" fn(instance: *mut c_void)>;

/// One model of a plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct imhp_model {
    /// `sizeof(imhp_model)` as the plugin compiled it.
    pub struct_size: u32,
    /// `IMHP_MODEL_FLAG_*`.
    pub flags: u32,
    /// The manifest (JSON, format "imhost-manifest/1"; its "id" is the model's id).
    pub manifest_json: *const c_char,
    /// Instance constructor (may be NULL).
    pub create: imhp_create_fn,
    /// The run (required).
    pub run: imhp_run_fn,
    /// Instance destructor (may be NULL).
    pub destroy: imhp_destroy_fn,
}

/// What the entry function returns: static data owned by the plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct imhp_plugin {
    /// `sizeof(imhp_plugin)` as the plugin compiled it.
    pub struct_size: u32,
    /// `IMHP_ABI_MAJOR` the plugin was compiled with.
    pub abi_major: u32,
    /// `IMHP_ABI_MINOR` the plugin was compiled with.
    pub abi_minor: u32,
    /// `sizeof(imhp_model)` as the plugin compiled it: the stride of `models`.
    pub model_struct_size: u32,
    /// The plugin's name (e.g. "acme-liver").
    pub name: *const c_char,
    /// The plugin's version.
    pub version: *const c_char,
    /// Number of models.
    pub n_models: u32,
    /// The models (`n_models` elements of `model_struct_size` bytes).
    pub models: *const imhp_model,
    /// Since 1.1: called once before the host unloads the library (may be NULL).
    pub unload: Option<unsafe extern "C" fn()>,
}

/// The entry function a plugin exports as `imhost_plugin_entry`. Called once after loading,
/// with the host's callbacks (only `log` and `set_error` work here). Return the descriptor, or
/// NULL after `host->set_error` to refuse to load (e.g. a missing licence file or GPU).
pub type imhp_entry_fn = Option<unsafe extern "C" fn(host: *const imhp_host) -> *const imhp_plugin>;
