//! The worker side of isolation (`imhost-plugin-worker`, started by the host only): load one
//! plugin from the folder descriptor the host checked, answer run requests from the host's
//! socket, and speak JSON lines on a private copy of stdout (the plugin's own prints go to
//! stderr, so they cannot corrupt the protocol). See [`crate::isolated`] for the protocol and the
//! trust boundary.
//!
//! Arguments: `--socket-fd=3 --plugin-dir-fd=4 --plugin=NAME --host-pid=PID --plugin-path=PATH`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imhost_core::registry::Model;
use imhost_core::{DType, Error, ErrorKind, Geometry, Result};
use serde_json::{Value, json};

use crate::channel;
use crate::native::{self, OutputSink, RunSink, TensorIn, contiguous_strides};
use crate::trust::TrustedDir;

/// Protocol output, shared by the progress sink and the main loop.
type Out = Arc<Mutex<File>>;

fn say(out: &Out, message: &Value) {
    let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(f, "{message}");
    let _ = f.flush();
}

/// Outputs in memory the host allocates on request.
struct HostAllocated<'a> {
    out: Out,
    socket: BorrowedFd<'a>,
    maps: Vec<memmap2::MmapMut>,
}

impl OutputSink for HostAllocated<'_> {
    fn allocate(&mut self, name: &str, dtype: DType, shape: [usize; 4], _: &Geometry) -> Result<*mut u8> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size_of(), |a, &s| a.checked_mul(s))
            .ok_or_else(|| Error::too_large("output size overflows"))?;
        say(&self.out, &json!({"type": "alloc", "name": name, "dtype": dtype.code(), "shape": shape}));
        let (reply, fds) = channel::receive(self.socket)
            .map_err(|e| Error::model(format!("the host's answer: {e}")))?
            .ok_or_else(|| Error::model("the host closed the channel"))?;
        match reply["type"].as_str() {
            Some("allocated") => {}
            _ => {
                return Err(Error::invalid_argument(
                    reply["message"].as_str().unwrap_or("refused by the host").to_string(),
                ));
            }
        }
        let memory = File::from(fds.into_iter().next().ok_or_else(|| Error::model("the host sent no memory"))?);
        if memory.metadata().map(|m| m.len()).ok() != Some(bytes as u64) {
            return Err(Error::model(format!("the host's memory for '{name}' is not {bytes} bytes")));
        }
        // SAFETY: a memfd the host sized and sealed against shrinking; only the plugin writes it
        // (through the pointer returned here) until the run ends.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&memory) }.map_err(|e| Error::model(e.to_string()))?;
        let ptr = map.as_mut_ptr();
        self.maps.push(map);
        Ok(ptr)
    }
}

/// Forwards the worker's log records (the plugin's `host->log` lines, the host code's own) to
/// the host as `{"type":"log"}` lines, where they reach the log callback of the call.
struct ForwardLogs {
    out: Out,
    max: tracing::Level,
}

#[derive(Default)]
struct LogFields {
    plugin: Option<String>,
    text: String,
}

impl tracing::field::Visit for LogFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        match field.name() {
            "plugin" => self.plugin = Some(value.trim_matches('"').to_string()),
            "message" => self.text.insert_str(0, &value),
            other => self.text.push_str(&format!(" {other}={value}")),
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = Some(value.to_string()),
            "message" => self.text.insert_str(0, value),
            other => self.text.push_str(&format!(" {other}={value}")),
        }
    }
}

impl tracing::Subscriber for ForwardLogs {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = LogFields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => 1,
            tracing::Level::WARN => 2,
            tracing::Level::INFO => 3,
            _ => 4,
        };
        let plugin = fields.plugin.unwrap_or_else(|| "plugin worker".into());
        let text: String = fields.text.chars().take(4000).collect();
        say(&self.out, &json!({"type": "log", "plugin": plugin, "level": level, "message": text}));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

struct LineSink(Out);

impl RunSink for LineSink {
    fn progress(&self, fraction: f64, stage: &str) -> bool {
        say(&self.0, &json!({"type": "progress", "fraction": fraction, "stage": stage}));
        true
    }
    fn cancelled(&self) -> bool {
        false
    }
}

fn argument(name: &str) -> Option<String> {
    std::env::args().skip(1).find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
}

/// Exit (without running the plugin's exit handlers) once the host is gone: its socket end
/// closed, or this process was given to another parent. `PR_SET_PDEATHSIG` does the same when
/// the host dies; this covers the rest (a host that died before that was set, a host that closed
/// the channel).
fn watch_host(socket: i32, host_pid: u32) {
    let _ = std::thread::Builder::new().name("imhost-host-watch".into()).spawn(move || {
        loop {
            let mut fds = [libc::pollfd { fd: socket, events: libc::POLLRDHUP, revents: 0 }];
            // SAFETY: one valid pollfd; a timeout in milliseconds.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 500) };
            // SAFETY: getppid cannot fail.
            let parent = unsafe { libc::getppid() } as u32;
            let hung_up =
                ready > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            if hung_up || parent != host_pid {
                // SAFETY: ends the process at once; nothing of ours needs cleaning up.
                unsafe { libc::_exit(0) };
            }
            std::thread::sleep(Duration::from_millis(if ready > 0 { 500 } else { 0 }));
        }
    });
}

/// Opens the model package in the folder the host passed (as `/proc/self/fd/4/`), with the
/// host's `--package-options` (device, precision): the models it serves. Given by the program
/// that links a model runtime (`imhost-model-worker`).
pub type PackageOpener = fn(&std::path::Path, &serde_json::Map<String, Value>) -> Result<Vec<Arc<dyn Model>>>;

/// What a worker serves: one plugin library, or the models of a package.
enum Served {
    Plugin(Arc<native::LoadedPlugin>, HashMap<usize, native::Instance>),
    Models(Vec<Arc<dyn Model>>),
}

/// The plugin worker's `main` (`imhost-plugin-worker`): returns the process exit code.
pub fn main() -> i32 {
    main_with(None)
}

/// A worker's `main`: with `packages`, a worker started with `--package` serves the model
/// package in the folder it was given; else it loads a plugin library from it.
pub fn main_with(packages: Option<PackageOpener>) -> i32 {
    // The protocol gets a private copy of stdout; fd 1 then points at stderr.
    // SAFETY: dup/dup2 on the standard descriptors of this fresh process; the new fd is owned
    // by the File below and by nothing else.
    let out: Out = unsafe {
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 5);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            eprintln!("imhost worker: cannot set up its output");
            return 2;
        }
        Arc::new(Mutex::new(File::from_raw_fd(fd)))
    };
    let fail = |e: &Error| {
        say(&out, &json!({"type": "error", "kind": e.kind().as_str(), "message": e.message()}));
        1
    };
    let (Some(name), Some(pid), Some(path)) = (argument("plugin"), argument("host-pid"), argument("plugin-path"))
    else {
        return fail(&Error::invalid_argument("this program is started by imhost for isolated models, not by hand"));
    };
    let Ok(host_pid) = pid.parse::<u32>() else { return fail(&Error::invalid_argument("bad --host-pid")) };
    if argument("socket-fd").as_deref() != Some("3") || argument("plugin-dir-fd").as_deref() != Some("4") {
        return fail(&Error::invalid_argument("the host passes its socket as descriptor 3 and the folder as 4"));
    }
    // SAFETY: descriptors 3 and 4 were placed by the host for this process and are owned by
    // nothing else here. Close-on-exec keeps them from programs a plugin might start.
    let (socket, dir) = unsafe {
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(4, libc::F_SETFD, libc::FD_CLOEXEC);
        (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4))
    };
    watch_host(3, host_pid);
    let max = match argument("log-level").and_then(|l| l.parse::<i32>().ok()).unwrap_or(2) {
        l if l <= 0 => None,
        1 => Some(tracing::Level::ERROR),
        2 => Some(tracing::Level::WARN),
        3 => Some(tracing::Level::INFO),
        _ => Some(tracing::Level::DEBUG),
    };
    if let Some(max) = max {
        let _ = tracing::subscriber::set_global_default(ForwardLogs { out: out.clone(), max });
    }
    if let Some(threads) = argument("threads").and_then(|t| t.parse::<usize>().ok()).filter(|&t| t > 0) {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    }
    let plugin_path = PathBuf::from(path);
    let package = std::env::args().skip(1).any(|a| a == "--package");
    let loaded = match (package, packages) {
        (true, None) => Err(Error::unsupported("this worker runs plugin libraries, not model packages")),
        (true, Some(open)) => {
            let options = argument("package-options")
                .and_then(|o| serde_json::from_str::<Value>(&o).ok())
                .and_then(|o| o.as_object().cloned())
                .unwrap_or_default();
            TrustedDir::from_fd(dir, plugin_path.clone())
                .map_err(Error::untrusted)
                // The models may read the folder again by this descriptor's path: kept open.
                .and_then(|dir| open(&dir.keep_open().proc_path(""), &options))
                .map(Served::Models)
        }
        (false, _) => {
            let folder = plugin_path.parent().map(PathBuf::from).unwrap_or_default();
            TrustedDir::from_fd(dir, folder)
                .map_err(Error::untrusted)
                .and_then(|dir| {
                    let file = dir.open_file(&name).map_err(Error::untrusted)?;
                    native::load_from(dir, &file)
                })
                .map(|p| Served::Plugin(Arc::new(p), HashMap::new()))
        }
    };
    let mut served = match loaded {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let hello = match &served {
        Served::Plugin(plugin, _) => {
            let manifests: Vec<&imhost_core::registry::Manifest> = plugin.models.iter().map(|m| &m.manifest).collect();
            json!({"type": "hello", "plugin": plugin.name, "version": plugin.version, "manifests": manifests})
        }
        Served::Models(models) => {
            let manifests: Vec<&imhost_core::registry::Manifest> = models.iter().map(|m| m.manifest()).collect();
            json!({"type": "hello", "plugin": name, "version": env!("CARGO_PKG_VERSION"), "manifests": manifests})
        }
    };
    say(&out, &hello);
    loop {
        let (request, fds) = match channel::receive(&socket) {
            Ok(Some(packet)) => packet,
            Ok(None) => return 0,
            Err(e) => {
                say(&out, &json!({"type": "failed", "kind": "internal", "message": format!("bad request: {e}")}));
                continue;
            }
        };
        let reply = match serve(&mut served, &request, fds, &out, socket.as_fd()) {
            Ok(done) => done,
            Err(e) => json!({"type": "failed", "kind": kind_name(e.kind()), "message": e.message()}),
        };
        say(&out, &reply);
    }
}

/// A run's failure keeps its kind across the channel (the host reads it as a status only).
fn kind_name(kind: ErrorKind) -> &'static str {
    kind.as_str()
}

/// Read a sealed memfd the host sent, by position (the descriptor shares the host's offset).
fn read_request(file: &File) -> Result<Value> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if len > 64 << 20 {
        return Err(Error::internal("the run request is over 64 MiB"));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(format!("bad run request: {e}")))
}

fn serve(served: &mut Served, packet: &Value, fds: Vec<OwnedFd>, out: &Out, socket: BorrowedFd<'_>) -> Result<Value> {
    if packet["type"] != "run" || fds.len() != 2 {
        return Err(Error::internal("expected a run request with its request and input memory"));
    }
    let mut fds = fds.into_iter();
    let (request, input) = (File::from(fds.next().expect("two")), File::from(fds.next().expect("two")));
    let request = read_request(&request)?;
    match served {
        Served::Plugin(plugin, instances) => serve_plugin(plugin, instances, &request, input, out, socket),
        Served::Models(models) => serve_model(models, &request, input, out, socket),
    }
}

/// One input as the request describes it: its place in the input memory and its grid.
struct Described {
    name: String,
    dtype: DType,
    offset: usize,
    shape: [usize; 4],
    geometry: Geometry,
    times: Option<Vec<f64>>,
    time_source: imhost_core::TimeSource,
}

fn describe_inputs(request: &Value, bytes_of_map: usize) -> Result<Vec<Described>> {
    let mut described = Vec::new();
    for d in request["inputs"].as_array().into_iter().flatten() {
        let bad = |m: &str| Error::internal(format!("bad input description: {m}"));
        let shape: [usize; 4] = serde_json::from_value(d["shape"].clone()).map_err(|_| bad("shape"))?;
        let dtype = d["dtype"].as_u64().and_then(|c| DType::from_code(c as u32)).ok_or_else(|| bad("dtype"))?;
        let offset = d["offset"].as_u64().ok_or_else(|| bad("offset"))? as usize;
        let bytes =
            shape.iter().try_fold(dtype.size_of(), |a, &s| a.checked_mul(s)).ok_or_else(|| bad("size overflows"))?;
        if offset.checked_add(bytes).is_none_or(|end| end > bytes_of_map) {
            return Err(bad("outside the input memory"));
        }
        let geometry = Geometry {
            spacing: serde_json::from_value(d["spacing"].clone()).map_err(|_| bad("spacing"))?,
            origin: serde_json::from_value(d["origin"].clone()).map_err(|_| bad("origin"))?,
            direction: serde_json::from_value(d["direction"].clone()).map_err(|_| bad("direction"))?,
        };
        let times: Option<Vec<f64>> = serde_json::from_value(d["frame_times"].clone()).unwrap_or(None);
        let name = d["name"].as_str().unwrap_or_default().to_string();
        let time_source = d["time_source"]
            .as_str()
            .and_then(imhost_core::TimeSource::from_name)
            .unwrap_or(imhost_core::TimeSource::Caller);
        described.push(Described { name, dtype, offset, shape, geometry, times, time_source });
    }
    Ok(described)
}

fn map_input(input: &File) -> Result<Option<memmap2::Mmap>> {
    if input.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(None);
    }
    // SAFETY: a memfd the host wrote completely and sealed against writing and shrinking.
    Ok(Some(unsafe { memmap2::Mmap::map(input) }.map_err(|e| Error::internal(e.to_string()))?))
}

/// Run a model of a package: the inputs are views of the host's sealed memory (copies where an
/// input is not aligned for its pixel type), the outputs are copied into memory the host
/// allocates for them.
fn serve_model(
    models: &[Arc<dyn Model>],
    request: &Value,
    input: File,
    out: &Out,
    socket: BorrowedFd<'_>,
) -> Result<Value> {
    let id = request["model"].as_str().unwrap_or_default();
    let model = models
        .iter()
        .find(|m| m.manifest().id == id)
        .ok_or_else(|| Error::invalid_argument(format!("the package has no model '{id}'")))?;
    let map = map_input(&input)?;
    let memory: &[u8] = map.as_deref().unwrap_or(&[]);
    let described = describe_inputs(request, memory.len())?;
    // Views straight over the host's sealed memory (no copy) where it is aligned for the pixel
    // type — the first input always is —, else a copy.
    let mut copies = Vec::new();
    let mut direct = Vec::new();
    for (n, d) in described.iter().enumerate() {
        let bytes = d.shape.iter().product::<usize>() * d.dtype.size_of();
        let slice = &memory[d.offset..d.offset + bytes];
        if (slice.as_ptr() as usize) % d.dtype.size_of() == 0 {
            direct.push((n, view_over(slice, d)?));
        } else {
            let times = match &d.times {
                Some(t) => Some(imhost_core::FrameTimes::new(t.clone(), d.time_source)?),
                None => None,
            };
            let mut volume = crate::zeroed_volume(d.dtype, d.shape, &d.geometry, times)?;
            let ptr = crate::volume_ptr(&mut volume);
            // SAFETY: the volume owns `bytes` contiguous bytes (zeroed_volume: shape × dtype size).
            unsafe { std::slice::from_raw_parts_mut(ptr, bytes) }.copy_from_slice(slice);
            copies.push((n, volume));
        }
        tracing::debug!(input = d.name, "input received");
    }
    let mut views: Vec<(usize, imhost_core::AnyVolumeView<'_>)> = direct;
    views.extend(copies.iter().map(|(n, v)| (*n, v.view())));
    views.sort_by_key(|(n, _)| *n);
    let views: Vec<imhost_core::AnyVolumeView<'_>> = views.into_iter().map(|(_, v)| v).collect();
    let options = request["options"].as_object().cloned().unwrap_or_default();
    let progress = |f: f64, stage: &str| {
        say(out, &json!({"type": "progress", "fraction": f, "stage": stage}));
        true
    };
    let control = imhost_core::RunControl::new(Some(&progress), None);
    let output = model.run(&views, &options, &control)?;
    drop(views);
    drop(map);
    let mut sink = HostAllocated { out: out.clone(), socket, maps: Vec::new() };
    for (name, volume) in &output.volumes {
        let view = volume.view();
        let ptr = sink.allocate(name, view.dtype(), view.shape(), view.geometry())?;
        let bytes = view.shape().iter().product::<usize>() * view.dtype().size_of();
        // SAFETY: `allocate` mapped exactly `bytes` bytes for this output (checked against the
        // memfd's size), written only here.
        let target = unsafe { std::slice::from_raw_parts_mut(ptr, bytes) };
        crate::isolated::write_pixels(&view, &mut std::io::Cursor::new(target))?;
    }
    for map in &sink.maps {
        let _ = map.flush();
    }
    let scores: serde_json::Map<String, Value> = output.scores.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let mut done = json!({"type": "done", "scores": scores, "report": output.report});
    // The model's preview travels as hex in the reply; the host checks its size and signature.
    if let Some(png) = output.preview_png.filter(|p| p.len() <= crate::isolated::MAX_PREVIEW_BYTES) {
        done["preview_png_hex"] = Value::String(png.iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(done)
}

/// A view of the pixels of `d` in `bytes` (aligned for its type; i fastest).
fn view_over<'a>(bytes: &'a [u8], d: &'a Described) -> Result<imhost_core::AnyVolumeView<'a>> {
    fn typed<'a, T: imhost_core::Voxel>(bytes: &'a [u8], d: &'a Described) -> Result<imhost_core::VolumeView<'a, T>> {
        use ndarray::ShapeBuilder;
        let n = bytes.len() / size_of::<T>();
        // SAFETY: `bytes` is aligned for T (checked by the caller), holds n whole elements and
        // lives for 'a; every bit pattern is a valid value of the pixel types.
        let data = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n) };
        let array = ndarray::ArrayView4::from_shape(d.shape.f(), data)
            .map_err(|e| Error::internal(format!("input '{}': {e}", d.name)))?;
        let times = d.times.as_deref().map(|t| (std::borrow::Cow::Borrowed(t), d.time_source));
        imhost_core::VolumeView::new(array, d.geometry, times)
    }
    Ok(match d.dtype {
        DType::U8 => typed::<u8>(bytes, d)?.into(),
        DType::I16 => typed::<i16>(bytes, d)?.into(),
        DType::U16 => typed::<u16>(bytes, d)?.into(),
        DType::I32 => typed::<i32>(bytes, d)?.into(),
        DType::F32 => typed::<f32>(bytes, d)?.into(),
        DType::F64 => typed::<f64>(bytes, d)?.into(),
    })
}

fn serve_plugin(
    plugin: &Arc<native::LoadedPlugin>,
    instances: &mut HashMap<usize, native::Instance>,
    request: &Value,
    input: File,
    out: &Out,
    socket: BorrowedFd<'_>,
) -> Result<Value> {
    let id = request["model"].as_str().unwrap_or_default();
    let index = plugin
        .models
        .iter()
        .position(|m| m.manifest.id == id)
        .ok_or_else(|| Error::invalid_argument(format!("the plugin has no model '{id}'")))?;
    if let std::collections::hash_map::Entry::Vacant(slot) = instances.entry(index) {
        slot.insert(native::create(plugin, index)?);
    }
    let map = map_input(&input)?;
    let bytes_of_map = map.as_ref().map_or(0, |m| m.len());
    let mut tensors = Vec::new();
    let mut grids = Vec::new();
    for d in describe_inputs(request, bytes_of_map)? {
        let base = map.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
        // SAFETY: offset + bytes lies inside the map (checked by describe_inputs).
        let data = unsafe { base.add(d.offset) };
        tensors.push(TensorIn::new(
            &d.name,
            d.dtype,
            data,
            d.shape,
            contiguous_strides(d.shape),
            &d.geometry,
            d.times.as_deref(),
        ));
        grids.push((d.shape, d.geometry));
    }
    let options = request["options"].as_object().cloned().unwrap_or_default();
    let mut outputs = HostAllocated { out: out.clone(), socket, maps: Vec::new() };
    let instance = instances.get_mut(&index).expect("inserted above");
    let result = native::run(plugin, index, instance, &tensors, grids, &options, &mut outputs, &LineSink(out.clone()));
    for map in &outputs.maps {
        let _ = map.flush();
    }
    let extras = result?;
    let scores: serde_json::Map<String, Value> = extras.scores.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(json!({"type": "done", "scores": scores, "report": extras.report}))
}
