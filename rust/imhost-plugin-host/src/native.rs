//! Opening a plugin library and calling it: the entry symbol, the version check, reading the
//! descriptor with the plugin's struct sizes, and one run with the host's callback table.

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imhost_core::registry::{Manifest, OutputKind};
use imhost_core::{DType, Error, Geometry, Result};
use imhost_plugin_abi::*;
use libloading::Library;

/// Plugin calls under way in this process, and the last one's name: read by [`on_exit`].
static IN_PLUGIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static IN_PLUGIN_NAME: Mutex<String> = Mutex::new(String::new());

/// `atexit` hook: a plugin that calls `exit()` (C's, or Rust's `std::process::exit`) during
/// one of its calls would end the host with the plugin's status (often 0: a script would see
/// success with no outputs). This turns it into status 1 and one line naming the plugin.
extern "C" fn on_exit() {
    if IN_PLUGIN.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        return;
    }
    let name = IN_PLUGIN_NAME.try_lock().map(|n| n.clone()).unwrap_or_else(|_| "a plugin".into());
    let line = format!(
        "imhost: error: {name} called exit() during its run, which ends the whole process: the run did not finish and nothing was written (a plugin must return a status instead; see docs/plugins.md)\n"
    );
    // SAFETY: write(2) of an owned buffer, then _exit: no more atexit handlers or destructors run
    // (they could hang in a half-finished plugin call).
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(1);
    }
}

/// Marks a call into a plugin for [`on_exit`] while it lives.
struct InPlugin;

impl InPlugin {
    fn enter(what: String) -> InPlugin {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            // SAFETY: registering a plain extern "C" function without arguments.
            if unsafe { libc::atexit(on_exit) } != 0 {
                tracing::warn!("cannot register the exit() guard for plugins");
            }
        });
        *IN_PLUGIN_NAME.lock().unwrap_or_else(|e| e.into_inner()) = what;
        IN_PLUGIN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InPlugin
    }
}

impl Drop for InPlugin {
    fn drop(&mut self) {
        IN_PLUGIN.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A loaded plugin library and what its entry function described. Dropping it (after every
/// model and instance, which hold an `Arc` of it) calls the plugin's `unload` (ABI ≥ 1.1) but
/// keeps the code mapped until the process exits: unmapping a library whose threads or
/// thread-local destructors may still run (Rust's std, C++ runtimes) can crash the host, so
/// imhost never `dlclose`s a plugin — as Python and Slicer do with their extensions.
pub struct LoadedPlugin {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The ABI version it was built for.
    pub abi: (u32, u32),
    /// The library file.
    pub path: PathBuf,
    /// Its models.
    pub models: Vec<ModelDesc>,
    /// The checked folder it was loaded from, as the plugin sees it (`imhp_host.plugin_dir`:
    /// `/proc/self/fd/N`, the folder's kept descriptor).
    pub dir: CString,
    unload: Option<unsafe extern "C" fn()>,
    _library: std::mem::ManuallyDrop<Library>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("path", &self.path).finish()
    }
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        if let Some(unload) = self.unload {
            // SAFETY: the plugin's own unload hook, called once while the library is loaded.
            unsafe { unload() };
        }
    }
}

/// One model of a plugin: its manifest and functions.
#[derive(Debug, Clone)]
pub struct ModelDesc {
    /// The manifest (validated).
    pub manifest: Manifest,
    /// `IMHP_MODEL_FLAG_*`.
    pub flags: u32,
    create: imhp_create_fn,
    run: imhp_run_fn,
    destroy: imhp_destroy_fn,
}

unsafe extern "C" fn log_cb(ctx: *mut c_void, level: imhp_log_level, message: *const c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `CtxHeader` or `RunState` we passed: both start with the
        // plugin name (see `CtxHeader`).
        let header = unsafe { &*(ctx as *const CtxHeader) };
        // SAFETY: a NUL-terminated message (ABI contract), copied here.
        let text = unsafe { c_str(message) };
        emit_log(&header.plugin, level, &text);
    }));
}

/// Forward a plugin's log line into `tracing` (and so to the C ABI's log callback).
pub fn emit_log(plugin: &str, level: imhp_log_level, text: &str) {
    match level {
        IMHP_LOG_ERROR => tracing::error!(plugin, "{text}"),
        IMHP_LOG_WARN => tracing::warn!(plugin, "{text}"),
        IMHP_LOG_INFO => tracing::info!(plugin, "{text}"),
        _ => tracing::debug!(plugin, "{text}"),
    }
}

/// The first field of every ctx the host passes: the plugin's name (for log lines) and the
/// last error message.
#[repr(C)]
struct CtxHeader {
    plugin: String,
    error: Mutex<Option<String>>,
}

unsafe extern "C" fn set_error_cb(ctx: *mut c_void, message: *const c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `log_cb`.
        let header = unsafe { &*(ctx as *const CtxHeader) };
        // SAFETY: NUL-terminated (ABI contract).
        let text = unsafe { c_str(message) };
        *header.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }));
}

unsafe extern "C" fn no_progress(_: *mut c_void, _: f64, _: *const c_char) -> bool {
    true
}
unsafe extern "C" fn never_cancelled(_: *mut c_void) -> bool {
    false
}
unsafe extern "C" fn no_alloc(
    ctx: *mut c_void,
    _: *const c_char,
    _: imhp_dtype,
    _: *const usize,
    _: *mut imhp_tensor,
) -> imhp_status {
    // SAFETY: as in `log_cb`.
    unsafe { set_error_cb(ctx, c"alloc_output is only available during run".as_ptr()) };
    IMHP_ERROR
}
unsafe extern "C" fn no_score(_: *mut c_void, _: *const c_char, _: f64) -> imhp_status {
    IMHP_ERROR
}
unsafe extern "C" fn no_report(_: *mut c_void, _: *const c_char) -> imhp_status {
    IMHP_ERROR
}

/// The dynamic loader's message with the `/proc/self/fd/…` name replaced by the file's path.
fn loader_error(e: &libloading::Error, loader_path: &Path, path: &Path) -> String {
    e.to_string().replace(&loader_path.display().to_string(), &path.display().to_string())
}

/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: caller contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

unsafe extern "C" fn no_number(_: *mut c_void, _: *const c_char, _: *mut f64) -> imhp_status {
    IMHP_ERROR
}
unsafe extern "C" fn no_string(
    _: *mut c_void,
    _: *const c_char,
    _: *mut c_char,
    _: usize,
    _: *mut usize,
) -> imhp_status {
    IMHP_ERROR
}

fn host_table(ctx: *mut c_void, dir: &CStr) -> imhp_host {
    imhp_host {
        struct_size: size_of::<imhp_host>() as u32,
        abi_major: IMHP_ABI_MAJOR,
        abi_minor: IMHP_ABI_MINOR,
        ctx,
        log: Some(log_cb),
        progress: Some(no_progress),
        is_cancelled: Some(never_cancelled),
        alloc_output: Some(no_alloc),
        set_score: Some(no_score),
        set_error: Some(set_error_cb),
        set_report: Some(no_report),
        plugin_dir: dir.as_ptr(),
        option_number: Some(no_number),
        option_string: Some(no_string),
    }
}

/// Read the first `declared` bytes of a plugin struct over `defaults`.
///
/// # Safety
/// `ptr` points to at least `declared` readable bytes; every field of `T` is valid for any bit
/// pattern (integers, nullable pointers, nullable function pointers).
unsafe fn read_prefix<T: Copy>(ptr: *const T, declared: usize, defaults: T) -> T {
    let mut out = defaults;
    let n = declared.min(size_of::<T>());
    // SAFETY: caller contract; no overlap with a local.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&raw mut out).cast::<u8>(), n) };
    out
}

/// The size of `imhp_plugin` in ABI 1.0 (before `unload`).
const PLUGIN_SIZE_1_0: usize = std::mem::offset_of!(imhp_plugin, unload);
/// The size of `imhp_model` in ABI 1.0.
const MODEL_SIZE_1_0: usize = size_of::<imhp_model>();

/// Open `path` (after the checks of [`crate::trust`], on the descriptors then used), call its
/// entry and read its descriptor. Every failure is an error naming the file.
pub fn load(path: &Path) -> Result<LoadedPlugin> {
    let fail = |m: String| Error::untrusted(format!("plugin {}: {m}", path.display()));
    let (dir, file) = crate::trust::open_file(path).map_err(fail)?;
    load_from(dir, &file)
}

/// Load the library `file`, checked in the checked folder `dir` (through
/// `/proc/self/fd/<dir>/<name>`, see [`crate::trust`]); the folder stays open for the life of
/// the process.
pub fn load_from(dir: crate::trust::TrustedDir, file: &crate::trust::TrustedFile) -> Result<LoadedPlugin> {
    let name = file.name.as_str();
    let path = file.path.as_path();
    let fail = |m: String| Error::format(format!("plugin {}: {m}", path.display()));
    // The library's name for the dynamic loader contains the folder's descriptor number: the
    // folder is kept open (one descriptor per folder, however often it is loaded from).
    let kept = dir.keep_open();
    let loader_path = kept.proc_path(name);
    let folder = CString::new(kept.proc_path("").to_string_lossy().trim_end_matches('/').as_bytes())
        .expect("a /proc path has no NUL");
    // SAFETY: loading a library runs its initialisers; the file and every folder above it passed
    // the trust rules, and the name is resolved in the very folder that was checked. This is the
    // one point of trust.
    let library = unsafe { Library::new(&loader_path) }
        .map_err(|e| fail(format!("cannot be loaded: {}", loader_error(&e, &loader_path, path))))?;
    // SAFETY: the symbol's type is the documented entry signature.
    let entry =
        match unsafe { library.get::<unsafe extern "C" fn(*const imhp_host) -> *const imhp_plugin>(IMHP_ENTRY_SYMBOL) }
        {
            Ok(symbol) => *symbol,
            Err(_) => return Err(fail("exports no 'imhost_plugin_entry' symbol: not an imhost plugin".into())),
        };
    let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    let header = CtxHeader { plugin: stem, error: Mutex::new(None) };
    let host = host_table((&raw const header).cast_mut().cast(), &folder);
    let guard = InPlugin::enter(format!("plugin {}", path.display()));
    // SAFETY: the plugin's entry with our host table (valid for the call).
    let raw = unsafe { entry(&host) };
    drop(guard);
    let said = header.error.lock().unwrap_or_else(|e| e.into_inner()).take();
    if raw.is_null() {
        return Err(fail(format!(
            "its entry function returned NULL{}",
            said.map(|m| format!(": {m}")).unwrap_or_default()
        )));
    }
    // SAFETY: a non-NULL descriptor the plugin's entry returned (ABI contract).
    let Descriptor { name, version, abi: (major, minor), models, unload } =
        unsafe { read_descriptor(raw, path) }.map_err(fail)?;
    tracing::info!(plugin = %name, version = %version, abi = %format!("{major}.{minor}"), models = models.len(), "loaded {}", path.display());
    Ok(LoadedPlugin {
        name,
        version,
        abi: (major, minor),
        path: path.to_path_buf(),
        models,
        dir: folder,
        unload,
        _library: std::mem::ManuallyDrop::new(library),
    })
}

/// What a plugin's descriptor says, read and checked.
pub struct Descriptor {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The ABI version it was built for.
    pub abi: (u32, u32),
    /// Its models (manifests validated).
    pub models: Vec<ModelDesc>,
    /// Its `unload` hook (ABI 1.1 and later).
    pub unload: Option<unsafe extern "C" fn()>,
}

/// The most models one plugin may list.
pub const MAX_MODELS: u32 = 1024;

/// Read and check the descriptor at `raw` by the sizes it declares (its own and its models'):
/// ABI version, sizes, names, every manifest, the functions each model needs. Errors are one
/// line (without the path, which the caller adds).
///
/// # Safety
/// `raw` is non-NULL and points to a descriptor laid out as `imhost_plugin.h` says: at least
/// `struct_size` readable bytes, `n_models` readable model structs of `model_struct_size` bytes
/// at `models`, and NUL-terminated strings (or NULL) at every string pointer.
pub unsafe fn read_descriptor(raw: *const imhp_plugin, path: &Path) -> std::result::Result<Descriptor, String> {
    // SAFETY: a non-NULL descriptor starts with its u32 struct_size, then the versions.
    let (declared, major, minor) = unsafe { ((*raw).struct_size as usize, (*raw).abi_major, (*raw).abi_minor) };
    if major != IMHP_ABI_MAJOR {
        return Err(format!(
            "built for plugin ABI {major}.{minor}; this host speaks {IMHP_ABI_MAJOR}.{IMHP_ABI_MINOR} and loads only {IMHP_ABI_MAJOR}.x plugins (rebuild it against this imhost_plugin.h)"
        ));
    }
    if declared < PLUGIN_SIZE_1_0 {
        return Err(format!("descriptor struct_size {declared} is smaller than ABI 1.0's {PLUGIN_SIZE_1_0}"));
    }
    let defaults = imhp_plugin {
        struct_size: 0,
        abi_major: 0,
        abi_minor: 0,
        model_struct_size: 0,
        name: std::ptr::null(),
        version: std::ptr::null(),
        n_models: 0,
        models: std::ptr::null(),
        unload: None,
    };
    // SAFETY: the plugin declared `declared` readable bytes; fields are integers and nullable
    // pointers.
    let plugin = unsafe { read_prefix(raw, declared, defaults) };
    // SAFETY: NUL-terminated strings owned by the plugin (ABI contract).
    let (name, version) = unsafe { (c_str(plugin.name), c_str(plugin.version)) };
    if name.is_empty() {
        return Err("its descriptor has no name".into());
    }
    let stride = plugin.model_struct_size as usize;
    if plugin.n_models > MAX_MODELS {
        return Err(format!("its descriptor lists {} models (at most {MAX_MODELS})", plugin.n_models));
    }
    if plugin.n_models > 0 && (plugin.models.is_null() || stride < MODEL_SIZE_1_0) {
        return Err(format!(
            "its descriptor lists {} models but models is NULL or model_struct_size {stride} < {MODEL_SIZE_1_0}",
            plugin.n_models
        ));
    }
    let mut models = Vec::new();
    for n in 0..plugin.n_models as usize {
        // SAFETY: `models` holds n_models elements of `stride` bytes (checked non-NULL).
        let ptr = unsafe { plugin.models.cast::<u8>().add(n * stride) }.cast::<imhp_model>();
        // SAFETY: element of at least MODEL_SIZE_1_0 bytes; read our prefix.
        let m = unsafe { read_prefix(ptr, stride, std::ptr::read_unaligned(ptr)) };
        // SAFETY: NUL-terminated manifest (ABI contract).
        let text = unsafe { c_str(m.manifest_json) };
        let mut manifest = Manifest::from_json(&text).map_err(|e| format!("model {n}: {}", e.message()))?;
        if m.run.is_none() {
            return Err(format!("model '{}' has no run function", manifest.id));
        }
        manifest.source = Some(imhost_core::registry::Source {
            kind: "plugin".into(),
            path: Some(path.display().to_string()),
            plugin: Some(format!("{name} {version}")),
            isolated: false,
        });
        models.push(ModelDesc { manifest, flags: m.flags, create: m.create, run: m.run, destroy: m.destroy });
    }
    if let Some(dup) = models
        .iter()
        .enumerate()
        .find_map(|(n, m)| models[..n].iter().any(|o| o.manifest.id == m.manifest.id).then(|| m.manifest.id.clone()))
    {
        return Err(format!("it lists model '{dup}' twice"));
    }
    Ok(Descriptor { name, version, abi: (major, minor), models, unload: if minor >= 1 { plugin.unload } else { None } })
}

/// A model instance made by the plugin's `create` (NULL when it has none). Destroyed with the
/// plugin's `destroy` before the library can close (it holds the plugin).
pub struct Instance {
    ptr: *mut c_void,
    destroy: imhp_destroy_fn,
    _plugin: Arc<LoadedPlugin>,
}

// SAFETY: the instance is only used under the owning model's Mutex (runs are serialised).
unsafe impl Send for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy
            && !self.ptr.is_null()
        {
            // SAFETY: made by this model's create; destroyed once.
            unsafe { destroy(self.ptr) };
        }
    }
}

/// Make an instance of model `index` of `plugin`.
pub fn create(plugin: &Arc<LoadedPlugin>, index: usize) -> Result<Instance> {
    let desc = &plugin.models[index];
    let mut ptr: *mut c_void = std::ptr::null_mut();
    if let Some(create) = desc.create {
        let header = CtxHeader { plugin: plugin.name.clone(), error: Mutex::new(None) };
        let host = host_table((&raw const header).cast_mut().cast(), &plugin.dir);
        let guard = InPlugin::enter(format!("model '{}' of plugin {}", desc.manifest.id, plugin.path.display()));
        // SAFETY: the plugin's create with our host table and a writable out-pointer.
        let status = unsafe { create(&host, &mut ptr) };
        drop(guard);
        if status != IMHP_OK {
            let said = header.error.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(Error::model(format!(
                "model '{}' of plugin {} could not be created (status {status}){}",
                desc.manifest.id,
                plugin.path.display(),
                said.map(|m| format!(": {m}")).unwrap_or_default()
            )));
        }
    }
    Ok(Instance { ptr, destroy: desc.destroy, _plugin: plugin.clone() })
}

/// An input as the plugin sees it (the tensor points at the caller's memory).
pub struct TensorIn {
    /// The tensor.
    pub tensor: imhp_tensor,
    _name: CString,
    _times: Option<Vec<f64>>,
}

impl TensorIn {
    /// Describe memory at `data` with `dtype`, `shape`, element `strides`, geometry and frame
    /// times. The memory must stay valid while the tensor is used.
    pub fn new(
        name: &str,
        dtype: DType,
        data: *const u8,
        shape: [usize; 4],
        strides: [isize; 4],
        geometry: &Geometry,
        frame_times: Option<&[f64]>,
    ) -> Self {
        let name = CString::new(name.replace('\0', " ")).expect("no NUL");
        let times = frame_times.map(<[f64]>::to_vec);
        let tensor = imhp_tensor {
            struct_size: size_of::<imhp_tensor>() as u32,
            dtype: dtype.code(),
            data: data as *mut c_void,
            shape,
            strides,
            spacing: geometry.spacing,
            origin: geometry.origin,
            direction: geometry.direction.concat().try_into().expect("3×3"),
            frame_times: times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            name: name.as_ptr(),
        };
        TensorIn { tensor, _name: name, _times: times }
    }
}

/// Where a run's outputs go: memory the host owns (in process) or files mapped into the worker.
pub trait OutputSink {
    /// Allocate a zeroed output of `dtype` and `shape` on `geometry`; return its first byte
    /// (contiguous, i fastest).
    fn allocate(&mut self, name: &str, dtype: DType, shape: [usize; 4], geometry: &Geometry) -> Result<*mut u8>;
}

/// Progress, cancellation and logs of a run.
pub trait RunSink {
    /// Progress; false to stop.
    fn progress(&self, fraction: f64, stage: &str) -> bool;
    /// Whether to stop.
    fn cancelled(&self) -> bool;
}

/// What a run produced besides volumes.
#[derive(Debug, Default)]
pub struct RunExtras {
    /// Scores.
    pub scores: Vec<(String, f64)>,
    /// The report (JSON).
    pub report: serde_json::Value,
}

#[repr(C)]
struct RunState<'a> {
    header: CtxHeader,
    manifest: &'a Manifest,
    options: &'a serde_json::Map<String, serde_json::Value>,
    grids: Vec<([usize; 4], Geometry)>,
    allocated: Vec<String>,
    outputs: &'a mut dyn OutputSink,
    sink: &'a dyn RunSink,
    extras: RunExtras,
}

/// # Safety
/// `ctx` is the `RunState` of the current run.
unsafe fn state<'a>(ctx: *mut c_void) -> &'a mut RunState<'a> {
    // SAFETY: caller contract.
    unsafe { &mut *(ctx as *mut RunState<'a>) }
}

fn refuse(st: &RunState<'_>, message: String) -> imhp_status {
    tracing::warn!(plugin = %st.header.plugin, "{message}");
    *st.header.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    IMHP_INVALID_INPUT
}

unsafe extern "C" fn run_progress(ctx: *mut c_void, fraction: f64, stage: *const c_char) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated stage or NULL.
        let (st, stage) = unsafe { (state(ctx), c_str(stage)) };
        let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
        st.sink.progress(fraction, if stage.is_empty() { "plugin" } else { &stage })
    }))
    .unwrap_or(false)
}

unsafe extern "C" fn run_cancelled(ctx: *mut c_void) -> bool {
    // SAFETY: our RunState.
    catch_unwind(AssertUnwindSafe(|| unsafe { state(ctx) }.sink.cancelled())).unwrap_or(true)
}

unsafe extern "C" fn run_alloc(
    ctx: *mut c_void,
    name: *const c_char,
    dtype: imhp_dtype,
    shape: *const usize,
    out: *mut imhp_tensor,
) -> imhp_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated name.
        let (st, name) = unsafe { (state(ctx), c_str(name)) };
        if shape.is_null() || out.is_null() {
            return refuse(st, format!("alloc_output('{name}') with a NULL shape or out"));
        }
        // SAFETY: shape points to 4 sizes (ABI contract).
        let shape: [usize; 4] = unsafe { std::ptr::read_unaligned(shape.cast::<[usize; 4]>()) };
        let (dtype, geometry) = match check_output_request(st.manifest, &st.grids, &st.allocated, &name, dtype, shape) {
            Ok(ok) => ok,
            Err(message) => return refuse(st, message),
        };
        let data = match st.outputs.allocate(&name, dtype, shape, &geometry) {
            Ok(p) => p,
            Err(e) => return refuse(st, format!("output '{name}': {}", e.message())),
        };
        st.allocated.push(name.clone());
        let t = TensorIn::new(&name, dtype, data, shape, contiguous_strides(shape), &geometry, None);
        // SAFETY: `out` is a writable tensor (ABI contract). Its name pointer is only valid in
        // this call; clear it.
        unsafe { *out = imhp_tensor { name: std::ptr::null(), ..t.tensor } };
        IMHP_OK
    }))
    .unwrap_or(IMHP_ERROR)
}

unsafe extern "C" fn run_score(ctx: *mut c_void, name: *const c_char, value: f64) -> imhp_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated name.
        let (st, name) = unsafe { (state(ctx), c_str(name)) };
        if st.manifest.output(&name).is_none_or(|s| s.kind != OutputKind::Score) {
            return refuse(st, format!("'{name}' is not a score output of the manifest"));
        }
        if !value.is_finite() {
            return refuse(st, format!("score '{name}' is not finite; raise a QC flag in the report instead"));
        }
        st.extras.scores.retain(|(n, _)| *n != name);
        st.extras.scores.push((name, value));
        IMHP_OK
    }))
    .unwrap_or(IMHP_ERROR)
}

unsafe extern "C" fn run_report(ctx: *mut c_void, json: *const c_char) -> imhp_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated JSON.
        let (st, json) = unsafe { (state(ctx), c_str(json)) };
        match serde_json::from_str(&json) {
            Ok(v) => {
                st.extras.report = v;
                IMHP_OK
            }
            Err(e) => refuse(st, format!("the report is not valid JSON: {e}")),
        }
    }))
    .unwrap_or(IMHP_ERROR)
}

/// The declared option `name` of this run, or a refusal naming the options there are.
fn option<'s>(st: &'s RunState<'_>, name: &str) -> std::result::Result<&'s serde_json::Value, String> {
    st.options.get(name).ok_or_else(|| {
        let known: Vec<&str> = st.options.keys().map(String::as_str).collect();
        format!(
            "the manifest declares no option '{name}' (options: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )
    })
}

unsafe extern "C" fn run_option_number(ctx: *mut c_void, name: *const c_char, value: *mut f64) -> imhp_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated name.
        let (st, name) = unsafe { (state(ctx), c_str(name)) };
        if value.is_null() {
            return refuse(st, format!("option_number('{name}') with a NULL value pointer"));
        }
        let number = match option(st, &name) {
            Ok(serde_json::Value::Bool(b)) => f64::from(u8::from(*b)),
            Ok(v) => match v.as_f64() {
                Some(x) => x,
                None => return refuse(st, format!("option '{name}' is a string: read it with option_string")),
            },
            Err(message) => return refuse(st, message),
        };
        // SAFETY: `value` is writable (ABI contract; checked non-NULL).
        unsafe { *value = number };
        IMHP_OK
    }))
    .unwrap_or(IMHP_ERROR)
}

unsafe extern "C" fn run_option_string(
    ctx: *mut c_void,
    name: *const c_char,
    buffer: *mut c_char,
    capacity: usize,
    length: *mut usize,
) -> imhp_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: our RunState; NUL-terminated name.
        let (st, name) = unsafe { (state(ctx), c_str(name)) };
        let text = match option(st, &name) {
            Ok(serde_json::Value::String(s)) => s.as_bytes(),
            Ok(_) => return refuse(st, format!("option '{name}' is not a string: read it with option_number")),
            Err(message) => return refuse(st, message),
        };
        if !length.is_null() {
            // SAFETY: `length` is writable when not NULL (ABI contract).
            unsafe { *length = text.len() };
        }
        if buffer.is_null() || capacity <= text.len() {
            return IMHP_ERROR;
        }
        // SAFETY: `buffer` holds `capacity` > len bytes (ABI contract). A string holding a NUL
        // (JSON's \u0000) reads as cut short there in C; option_json has all of it.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buffer.cast::<u8>(), text.len());
            *buffer.add(text.len()) = 0;
        }
        IMHP_OK
    }))
    .unwrap_or(IMHP_ERROR)
}

/// Whether a plugin may have output `name` of pixel type code `dtype` and `shape`: a volume
/// output of `manifest`, not allocated before, a known type (u8 for label maps), exactly on the
/// grid the manifest puts it on (`grids`: shape and geometry of each input). Checked before any
/// memory is set aside, in process and for isolated workers alike.
pub fn check_output_request(
    manifest: &Manifest,
    grids: &[([usize; 4], Geometry)],
    allocated: &[String],
    name: &str,
    dtype: imhp_dtype,
    shape: [usize; 4],
) -> std::result::Result<(DType, Geometry), String> {
    let Some(spec) = manifest.output(name).filter(|s| s.kind != OutputKind::Score) else {
        return Err(format!("output '{name}' is not a volume output of the manifest"));
    };
    if allocated.iter().any(|a| a == name) {
        return Err(format!("output '{name}' was already allocated"));
    }
    let Some(dtype) = DType::from_code(dtype) else {
        return Err(format!("output '{name}': unknown dtype {dtype}"));
    };
    if spec.kind == OutputKind::Labelmap && dtype != DType::U8 {
        return Err(format!("label map '{name}' must be u8, not {dtype}"));
    }
    let Some((grid, geometry)) = grids.get(spec.grid) else {
        return Err(format!("output '{name}' is on input {}, which this run does not have", spec.grid));
    };
    let expected = [grid[0], grid[1], grid[2], if spec.frames == "input" { grid[3] } else { 1 }];
    if shape != expected {
        return Err(format!(
            "output '{name}' asked for shape {shape:?}; the manifest puts it on input {}'s grid {expected:?}",
            spec.grid
        ));
    }
    Ok((dtype, *geometry))
}

/// Strides (elements) of a contiguous array with i fastest.
pub fn contiguous_strides(shape: [usize; 4]) -> [isize; 4] {
    let [ni, nj, nk, _] = shape.map(|s| s as isize);
    [1, ni, ni * nj, ni * nj * nk]
}

/// Run `desc` on `instance` with `inputs` (one per manifest input, their grids in `grids`),
/// `options` (resolved), outputs into `outputs`, progress into `sink`.
#[allow(clippy::too_many_arguments)] // each is one part of the C call; a struct would only rename them
pub fn run(
    plugin: &LoadedPlugin,
    index: usize,
    instance: &mut Instance,
    inputs: &[TensorIn],
    grids: Vec<([usize; 4], Geometry)>,
    options: &serde_json::Map<String, serde_json::Value>,
    outputs: &mut dyn OutputSink,
    sink: &dyn RunSink,
) -> Result<RunExtras> {
    let (plugin_name, desc) = (plugin.name.as_str(), &plugin.models[index]);
    let options_json = CString::new(serde_json::Value::Object(options.clone()).to_string()).expect("JSON has no NUL");
    let pointers: Vec<*const imhp_tensor> = inputs.iter().map(|t| &raw const t.tensor).collect();
    let mut st = RunState {
        header: CtxHeader { plugin: plugin_name.to_string(), error: Mutex::new(None) },
        manifest: &desc.manifest,
        options,
        grids,
        allocated: Vec::new(),
        outputs,
        sink,
        extras: RunExtras::default(),
    };
    let host = imhp_host {
        struct_size: size_of::<imhp_host>() as u32,
        abi_major: IMHP_ABI_MAJOR,
        abi_minor: IMHP_ABI_MINOR,
        ctx: (&raw mut st).cast(),
        log: Some(log_cb),
        progress: Some(run_progress),
        is_cancelled: Some(run_cancelled),
        alloc_output: Some(run_alloc),
        set_score: Some(run_score),
        set_error: Some(set_error_cb),
        set_report: Some(run_report),
        plugin_dir: plugin.dir.as_ptr(),
        option_number: Some(run_option_number),
        option_string: Some(run_option_string),
    };
    let args = imhp_run_args {
        struct_size: size_of::<imhp_run_args>() as u32,
        n_inputs: inputs.len() as u32,
        inputs: pointers.as_ptr(),
        options_json: options_json.as_ptr(),
        host: &host,
    };
    let run = desc.run.expect("checked at load");
    let guard = InPlugin::enter(format!("model '{}' of plugin {}", desc.manifest.id, plugin.path.display()));
    // SAFETY: the plugin's run with its instance, our arguments (valid for the call) and a host
    // table whose ctx is `st`, which outlives the call.
    let status = unsafe { run(instance.ptr, &args) };
    drop(guard);
    let said = st.header.error.lock().unwrap_or_else(|e| e.into_inner()).take();
    let id = &desc.manifest.id;
    match status {
        IMHP_OK => Ok(std::mem::take(&mut st.extras)),
        IMHP_CANCELLED => Err(Error::cancelled()),
        IMHP_INVALID_INPUT => Err(Error::invalid_argument(format!(
            "model '{id}' ({plugin_name}) refused the input: {}",
            said.unwrap_or_else(|| "no reason given".into())
        ))),
        other => Err(Error::model(format!(
            "model '{id}' ({plugin_name}) failed (status {other}): {}",
            said.unwrap_or_else(|| "no reason given".into())
        ))),
    }
}
