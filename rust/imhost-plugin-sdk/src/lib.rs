//! # imhost-plugin-sdk
//!
//! Write an imhost model plugin in safe Rust. Implement [`Model`] for a type, list the types in
//! [`export_plugin!`], build the crate as a `cdylib`, and drop the `.so` into a plugin folder:
//!
//! ```ignore
//! use imhost_plugin_sdk::{export_plugin, Error, Host, Model, Run};
//!
//! struct Invert;
//! impl Model for Invert {
//!     fn manifest() -> String { include_str!("invert.json").into() }
//!     fn create(_: &Host<'_>) -> Result<Self, Error> { Ok(Invert) }
//!     fn run(&mut self, run: &Run<'_>) -> Result<(), Error> {
//!         let input = run.input(0)?.view::<f32>()?;
//!         let mut out = run.output::<f32>("inverted", run.input(0)?.spatial_shape())?;
//!         out.zip_mut_with(&input, |o, &x| *o = -x);
//!         Ok(())
//!     }
//! }
//! export_plugin!(name: "invert", version: "1.0.0", models: [Invert]);
//! ```
//!
//! The macro exports `imhost_plugin_entry`, fills the versioned C descriptor
//! (`include/imhost_plugin.h`) and wraps every call into the plugin in `catch_unwind`: a panic
//! becomes an `IMHP_ERROR` with the panic message, never an unwind into the host.

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

pub use imhost_plugin_abi as abi;
use imhost_plugin_abi::*;
pub use ndarray;
use ndarray::{ArrayView4, ArrayViewMut4, ShapeBuilder};
pub use serde_json;
use serde_json::{Map, Value};

/// A failure to report to the host: a status and one line.
#[derive(Debug, Clone)]
pub struct Error {
    status: imhp_status,
    message: String,
}

impl Error {
    /// A failure (`IMHP_ERROR`).
    pub fn new(message: impl Into<String>) -> Self {
        Error { status: IMHP_ERROR, message: message.into() }
    }
    /// Inputs or options the model cannot use (`IMHP_INVALID_INPUT`).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error { status: IMHP_INVALID_INPUT, message: message.into() }
    }
    /// The run was cancelled (`IMHP_CANCELLED`).
    pub fn cancelled() -> Self {
        Error { status: IMHP_CANCELLED, message: "cancelled".into() }
    }
    /// The status this error returns.
    pub fn status(&self) -> imhp_status {
        self.status
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A pixel type a tensor can hold: `u8`, `i16`, `u16`, `i32`, `f32`, `f64`, the manifest's
/// `dtypes` names `"u8"`, `"i16"`, `"u16"`, `"i32"`, `"f32"`, `"f64"`.
///
/// An input arrives in the first type its manifest lists when the caller's is not listed (the
/// host converts, rounding and saturating into integer types); with `"dtypes": []` it arrives as
/// the caller has it, so match on [`Input::dtype`]. Readers give a rescaled NIfTI (`scl_slope`)
/// of 8/16-bit integers as `f32` and 64-bit integers as `f64`. A label map output is `u8`.
pub trait Pixel: Copy + 'static {
    /// Its `IMHP_DTYPE_*`.
    const DTYPE: imhp_dtype;
}
macro_rules! pixel {
    ($($t:ty => $d:ident),*) => { $(impl Pixel for $t { const DTYPE: imhp_dtype = $d; })* };
}
pixel!(u8 => IMHP_DTYPE_U8, i16 => IMHP_DTYPE_I16, u16 => IMHP_DTYPE_U16, i32 => IMHP_DTYPE_I32, f32 => IMHP_DTYPE_F32, f64 => IMHP_DTYPE_F64);

/// Log levels. The host writes a plugin's lines to its own log, tagged with the plugin: the
/// `imhost` command shows `Error` and `Warn` by default, `Info` with `IMHOST_LOG=info` and
/// `Debug` with `IMHOST_LOG=debug`; Slicer and Orthanc route them to their logs. Keep errors
/// for what the user must act on: a failed run returns its [`Error`] anyway.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Error.
    Error = IMHP_LOG_ERROR as isize,
    /// Warning.
    Warn = IMHP_LOG_WARN as isize,
    /// Information (shown with `IMHOST_LOG=info`).
    Info = IMHP_LOG_INFO as isize,
    /// Detail (shown with `IMHOST_LOG=debug`).
    Debug = IMHP_LOG_DEBUG as isize,
}

fn undeclared(name: &str, kind: &str) -> Error {
    Error::new(format!("option '{name}' is not {kind} option of this model's manifest (declare it under \"options\")"))
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("NULs replaced")
}

/// The manifest's name of a pixel type code (`IMHP_DTYPE_F32` → `"f32"`).
pub fn dtype_name(dtype: imhp_dtype) -> &'static str {
    match dtype {
        IMHP_DTYPE_U8 => "u8",
        IMHP_DTYPE_I16 => "i16",
        IMHP_DTYPE_U16 => "u16",
        IMHP_DTYPE_I32 => "i32",
        IMHP_DTYPE_F32 => "f32",
        IMHP_DTYPE_F64 => "f64",
        _ => "an unknown type",
    }
}

/// The host's callbacks, valid during one call into the plugin.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    raw: &'a imhp_host,
}

impl<'a> Host<'a> {
    /// The host's ABI version `(major, minor)`.
    pub fn abi_version(&self) -> (u32, u32) {
        (self.raw.abi_major, self.raw.abi_minor)
    }

    /// Write a log line to the host's log.
    pub fn log(&self, level: Level, message: &str) {
        if let Some(log) = self.raw.log {
            let m = c_string(message);
            // SAFETY: a callback of the host table with its ctx, during the call that got it.
            unsafe { log(self.raw.ctx, level as imhp_log_level, m.as_ptr()) };
        }
    }

    /// The folder the plugin library was loaded from (ABI 1.2; `None` on an older host): where
    /// the files it ships lie (`host.plugin_dir()?.join("weights.bin")`). It names the folder
    /// the host checked through its open descriptor (`/proc/self/fd/N`), so it stays the same
    /// folder for the life of the process, in an isolated worker too.
    pub fn plugin_dir(&self) -> Option<std::path::PathBuf> {
        let covered = std::mem::offset_of!(imhp_host, plugin_dir) + size_of::<*const c_char>();
        if (self.raw.struct_size as usize) < covered || self.raw.plugin_dir.is_null() {
            return None;
        }
        // SAFETY: inside the host's struct_size, a NUL-terminated path valid for the process.
        let dir = unsafe { CStr::from_ptr(self.raw.plugin_dir) };
        Some(std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir.to_bytes())))
    }

    fn set_error(&self, message: &str) {
        if let Some(set_error) = self.raw.set_error {
            let m = c_string(message);
            // SAFETY: as in `log`; the host copies the message.
            unsafe { set_error(self.raw.ctx, m.as_ptr()) };
        }
    }
}

/// One input of a run: the caller's memory, read-only.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    raw: &'a imhp_tensor,
}

impl<'a> Input<'a> {
    /// Its name in the manifest.
    pub fn name(&self) -> &'a str {
        if self.raw.name.is_null() {
            return "";
        }
        // SAFETY: the host passes a NUL-terminated name valid during the run.
        unsafe { CStr::from_ptr(self.raw.name) }.to_str().unwrap_or("")
    }
    /// `IMHP_DTYPE_*`.
    pub fn dtype(&self) -> imhp_dtype {
        self.raw.dtype
    }
    /// Sizes along i, j, k, t.
    pub fn shape(&self) -> [usize; 4] {
        self.raw.shape
    }
    /// `[ni, nj, nk, 1]`: the shape of a 3-D output on this input's grid.
    pub fn spatial_shape(&self) -> [usize; 4] {
        let [i, j, k, _] = self.raw.shape;
        [i, j, k, 1]
    }
    /// Voxel spacing (mm).
    pub fn spacing(&self) -> [f64; 3] {
        self.raw.spacing
    }
    /// LPS origin (mm).
    pub fn origin(&self) -> [f64; 3] {
        self.raw.origin
    }
    /// Direction cosines (row-major; column c = axis c in LPS).
    pub fn direction(&self) -> [f64; 9] {
        self.raw.direction
    }
    /// Frame times (s) of a 4-D input.
    pub fn frame_times(&self) -> Option<&'a [f64]> {
        if self.raw.frame_times.is_null() {
            return None;
        }
        // SAFETY: the host passes shape[3] frame times valid during the run.
        Some(unsafe { std::slice::from_raw_parts(self.raw.frame_times, self.raw.shape[3]) })
    }
    /// The pixels as an `[i, j, k, t]` array view (no copy); an error when the type differs.
    pub fn view<T: Pixel>(&self) -> Result<ArrayView4<'a, T>, Error> {
        if self.raw.dtype != T::DTYPE {
            return Err(Error::invalid_input(format!(
                "input '{}' is {}, but the model reads it as {} (list the types you read in the manifest's \"dtypes\": the host converts to the first)",
                self.name(),
                dtype_name(self.raw.dtype),
                dtype_name(T::DTYPE)
            )));
        }
        let shape = self.raw.shape;
        let strides = self.raw.strides.map(|s| s as usize);
        // SAFETY: the host guarantees data/shape/strides describe readable memory of this type
        // for the run (validated on its side; strides are never negative).
        Ok(unsafe { ArrayView4::from_shape_ptr(shape.strides(strides), self.raw.data as *const T) })
    }
}

/// One run: inputs, options and the host's callbacks.
pub struct Run<'a> {
    host: &'a imhp_host,
    inputs: Vec<Input<'a>>,
    options: Map<String, Value>,
}

impl<'a> Run<'a> {
    /// The host.
    pub fn host(&self) -> Host<'a> {
        Host { raw: self.host }
    }
    /// The inputs, in manifest order.
    pub fn inputs(&self) -> &[Input<'a>] {
        &self.inputs
    }
    /// Input `n`.
    pub fn input(&self, n: usize) -> Result<Input<'a>, Error> {
        self.inputs.get(n).copied().ok_or_else(|| Error::invalid_input(format!("no input {n}")))
    }
    /// The options: every option the manifest declares, defaults filled in, each checked by
    /// the host against its type, range and `enum` before the run; nothing else.
    pub fn options(&self) -> &Map<String, Value> {
        &self.options
    }
    /// A `number` or `integer` option.
    pub fn option_f64(&self, name: &str) -> Result<f64, Error> {
        self.options.get(name).and_then(Value::as_f64).ok_or_else(|| undeclared(name, "a number or integer"))
    }
    /// A `boolean` option.
    pub fn option_bool(&self, name: &str) -> Result<bool, Error> {
        self.options.get(name).and_then(Value::as_bool).ok_or_else(|| undeclared(name, "a boolean"))
    }
    /// A `string` option.
    pub fn option_str(&self, name: &str) -> Result<&str, Error> {
        self.options.get(name).and_then(Value::as_str).ok_or_else(|| undeclared(name, "a string"))
    }
    /// Log a line.
    pub fn log(&self, level: Level, message: &str) {
        self.host().log(level, message)
    }
    /// Report progress; `Err(cancelled)` when the user stopped the run.
    pub fn progress(&self, fraction: f64, stage: &str) -> Result<(), Error> {
        if let Some(progress) = self.host.progress {
            let s = c_string(stage);
            // SAFETY: host callback during the run.
            if !unsafe { progress(self.host.ctx, fraction, s.as_ptr()) } {
                return Err(Error::cancelled());
            }
        }
        Ok(())
    }
    /// Whether the user cancelled.
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: host callback during the run.
        self.host.is_cancelled.is_some_and(|f| unsafe { f(self.host.ctx) })
    }
    /// Allocate the output `name` (declared in the manifest) with `shape`; the host checks it
    /// against the manifest. The returned view is zero-filled, host-owned memory.
    pub fn output<T: Pixel>(&self, name: &str, shape: [usize; 4]) -> Result<ArrayViewMut4<'a, T>, Error> {
        let alloc = self.host.alloc_output.ok_or_else(|| Error::new("the host offers no alloc_output"))?;
        let n = c_string(name);
        let mut t = std::mem::MaybeUninit::<imhp_tensor>::zeroed();
        // SAFETY: host callback during the run; `t` is a writable imhp_tensor.
        let status = unsafe { alloc(self.host.ctx, n.as_ptr(), T::DTYPE, shape.as_ptr(), t.as_mut_ptr()) };
        if status != IMHP_OK {
            return Err(Error { status, message: format!("the host refused output '{name}' {shape:?}") });
        }
        // SAFETY: on success the host filled the tensor.
        let t = unsafe { t.assume_init() };
        let strides = t.strides.map(|s| s as usize);
        // SAFETY: host-allocated, zeroed, exclusively ours until the run returns, of type T.
        Ok(unsafe { ArrayViewMut4::from_shape_ptr(t.shape.strides(strides), t.data as *mut T) })
    }
    /// Set a score output.
    pub fn set_score(&self, name: &str, value: f64) -> Result<(), Error> {
        let f = self.host.set_score.ok_or_else(|| Error::new("the host offers no set_score"))?;
        let n = c_string(name);
        // SAFETY: host callback during the run.
        match unsafe { f(self.host.ctx, n.as_ptr(), value) } {
            IMHP_OK => Ok(()),
            status => Err(Error { status, message: format!("the host refused score '{name}' = {value}") }),
        }
    }
    /// Attach a JSON report (QC flags, details).
    pub fn set_report(&self, report: &Value) -> Result<(), Error> {
        let f = self.host.set_report.ok_or_else(|| Error::new("the host offers no set_report"))?;
        let j = c_string(&report.to_string());
        // SAFETY: host callback during the run.
        match unsafe { f(self.host.ctx, j.as_ptr()) } {
            IMHP_OK => Ok(()),
            status => Err(Error { status, message: "the host refused the report".into() }),
        }
    }
}

/// A model a plugin provides.
pub trait Model: Sized + Send + 'static {
    /// The manifest JSON (`"format": "imhost-manifest/1"`).
    fn manifest() -> String;
    /// Make an instance (once per load).
    fn create(host: &Host<'_>) -> Result<Self, Error>;
    /// Run once.
    fn run(&mut self, run: &Run<'_>) -> Result<(), Error>;
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run `f`, turning an error or a panic into a status and a message for the host.
fn guarded(host: *const imhp_host, f: impl FnOnce() -> Result<(), Error>) -> imhp_status {
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let error = match outcome {
        Ok(Ok(())) => return IMHP_OK,
        Ok(Err(e)) => e,
        Err(payload) => Error::new(format!("the plugin panicked: {}", panic_message(&*payload))),
    };
    if !host.is_null() {
        // SAFETY: the host table passed to this call.
        Host { raw: unsafe { &*host } }.set_error(&error.message);
    }
    error.status
}

unsafe extern "C" fn create_instance<M: Model>(host: *const imhp_host, instance: *mut *mut c_void) -> imhp_status {
    guarded(host, || {
        if host.is_null() || instance.is_null() {
            return Err(Error::new("create called with NULL"));
        }
        // SAFETY: non-NULL host table valid during the call.
        let model = M::create(&Host { raw: unsafe { &*host } })?;
        // SAFETY: `instance` is a writable out-pointer (checked non-NULL).
        unsafe { *instance = Box::into_raw(Box::new(model)).cast() };
        Ok(())
    })
}

unsafe extern "C" fn run_instance<M: Model>(instance: *mut c_void, args: *const imhp_run_args) -> imhp_status {
    // SAFETY: `args` is NULL or the host's run arguments.
    let host = if args.is_null() { std::ptr::null() } else { unsafe { (*args).host } };
    guarded(host, || {
        if args.is_null() || instance.is_null() || host.is_null() {
            return Err(Error::new("run called with NULL"));
        }
        // SAFETY: valid during the call (host contract).
        let (args, host) = unsafe { (&*args, &*host) };
        let inputs = (0..args.n_inputs as usize)
            // SAFETY: `inputs` holds n_inputs valid tensor pointers.
            .map(|i| Input { raw: unsafe { &**args.inputs.add(i) } })
            .collect();
        let options = if args.options_json.is_null() {
            Map::new()
        } else {
            // SAFETY: NUL-terminated JSON from the host.
            let text = unsafe { CStr::from_ptr(args.options_json) }.to_string_lossy();
            serde_json::from_str(&text)
                .map_err(|e| Error::invalid_input(format!("options are not a JSON object: {e}")))?
        };
        // SAFETY: made by `create_instance::<M>`; the host never runs one instance concurrently.
        let model = unsafe { &mut *instance.cast::<M>() };
        model.run(&Run { host, inputs, options })
    })
}

unsafe extern "C" fn destroy_instance<M: Model>(instance: *mut c_void) {
    if !instance.is_null() {
        let _ = catch_unwind(|| {
            // SAFETY: made by `create_instance::<M>` and destroyed once.
            drop(unsafe { Box::from_raw(instance.cast::<M>()) })
        });
    }
}

/// One model's entry in the descriptor (used by [`export_plugin!`]).
pub struct ModelEntry {
    manifest: CString,
    create: imhp_create_fn,
    run: imhp_run_fn,
    destroy: imhp_destroy_fn,
}

impl ModelEntry {
    /// The entry of model type `M`.
    pub fn of<M: Model>() -> Self {
        ModelEntry {
            manifest: c_string(&M::manifest()),
            create: Some(create_instance::<M>),
            run: Some(run_instance::<M>),
            destroy: Some(destroy_instance::<M>),
        }
    }
}

/// The plugin descriptor, built once (used by [`export_plugin!`]).
pub struct Descriptor {
    plugin: imhp_plugin,
    _models: Vec<imhp_model>,
    _strings: Vec<CString>,
    _entries: Vec<ModelEntry>,
}

// SAFETY: the descriptor is immutable after construction; its raw pointers point into the
// vectors and strings it owns, which live as long as it does (a static).
unsafe impl Sync for Descriptor {}
// SAFETY: as above.
unsafe impl Send for Descriptor {}

impl Descriptor {
    /// A descriptor for `models`; `unload` is called by the host before it closes the library
    /// (the macro passes a function that frees this descriptor).
    pub fn new(name: &str, version: &str, models: Vec<ModelEntry>, unload: Option<unsafe extern "C" fn()>) -> Self {
        let strings = vec![c_string(name), c_string(version)];
        let raw: Vec<imhp_model> = models
            .iter()
            .map(|m| imhp_model {
                struct_size: size_of::<imhp_model>() as u32,
                flags: 0,
                manifest_json: m.manifest.as_ptr(),
                create: m.create,
                run: m.run,
                destroy: m.destroy,
            })
            .collect();
        let plugin = imhp_plugin {
            struct_size: size_of::<imhp_plugin>() as u32,
            abi_major: IMHP_ABI_MAJOR,
            abi_minor: IMHP_ABI_MINOR,
            model_struct_size: size_of::<imhp_model>() as u32,
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            n_models: raw.len() as u32,
            models: raw.as_ptr(),
            unload,
        };
        Descriptor { plugin, _models: raw, _strings: strings, _entries: models }
    }
}

/// The body of the exported entry function (used by [`export_plugin!`]): checks the host's
/// ABI major, builds the descriptor once, catches panics.
///
/// # Safety
/// `host` is NULL or the host's callback table, valid for the call.
#[doc(hidden)]
pub unsafe fn __entry(
    host: *const imhp_host,
    cell: &'static Mutex<Option<Box<Descriptor>>>,
    build: impl FnOnce() -> Descriptor,
) -> *const imhp_plugin {
    let mut out: *const imhp_plugin = std::ptr::null();
    let status = guarded(host, || {
        if !host.is_null() {
            // SAFETY: the host's table, valid during the call.
            let major = unsafe { (*host).abi_major };
            if major != IMHP_ABI_MAJOR {
                return Err(Error::new(format!(
                    "plugin built for imhost plugin ABI {IMHP_ABI_MAJOR}.x; the host speaks {major}.x"
                )));
            }
        }
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        // The descriptor lives in a Box: its address stays put until `__unload` drops it.
        out = &slot.get_or_insert_with(|| Box::new(build())).plugin;
        Ok(())
    });
    if status == IMHP_OK { out } else { std::ptr::null() }
}

/// The body of the exported unload hook (used by [`export_plugin!`]): frees the descriptor so
/// that nothing the plugin allocated outlives the library.
#[doc(hidden)]
pub fn __unload(cell: &'static Mutex<Option<Box<Descriptor>>>) {
    let _ = catch_unwind(|| drop(cell.lock().unwrap_or_else(|e| e.into_inner()).take()));
}

/// Export a plugin: `export_plugin!(name: "acme", version: "1.0.0", models: [A, B]);`
/// defines `imhost_plugin_entry` for the listed [`Model`] types.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, models: [$($model:ty),* $(,)?] $(,)?) => {
        /// The imhost plugin entry point (generated by `imhost_plugin_sdk::export_plugin!`).
        ///
        /// # Safety
        /// Called by the imhost host with its callback table (or NULL).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn imhost_plugin_entry(
            host: *const $crate::abi::imhp_host,
        ) -> *const $crate::abi::imhp_plugin {
            static DESCRIPTOR: ::std::sync::Mutex<Option<Box<$crate::Descriptor>>> = ::std::sync::Mutex::new(None);
            unsafe extern "C" fn unload() {
                $crate::__unload(&DESCRIPTOR)
            }
            // SAFETY: `host` comes from the imhost host (or is NULL), as `__entry` requires.
            unsafe {
                $crate::__entry(host, &DESCRIPTOR, || {
                    $crate::Descriptor::new($name, $version, vec![$($crate::ModelEntry::of::<$model>()),*], Some(unload))
                })
            }
        }
    };
}
