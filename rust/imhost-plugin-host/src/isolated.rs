//! Plugins run in a child worker process (`imhost-plugin-worker PLUGIN`), so that a plugin that
//! segfaults or aborts fails the job with an error instead of taking down Slicer or Orthanc.
//!
//! Protocol: one JSON object per line. The worker loads the plugin (never the host) and says
//! `{"type":"hello", "plugin", "version", "manifests":[…]}` (or `{"type":"error"}`). The host
//! sends `{"type":"run", "model", "options", "inputs":[{file, offset, dtype, shape, spacing,
//! origin, direction, frame_times}], "out_dir"}`; inputs travel in one file in shared memory
//! (`/dev/shm`, else the temp folder) that the worker maps read-only. The worker answers with
//! `progress` and `log` lines and ends with `{"type":"done"}` (outputs as files it allocated
//! there and mapped for the plugin, scores, report) or `{"type":"failed", kind, message}`.
//! Cancelling kills the worker; a dead worker is restarted on the next run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imhost_core::registry::{Manifest, Model, ModelOutput, Source};
use imhost_core::{AnyVolume, AnyVolumeView, DType, Error, Result, RunControl, with_view};
use serde_json::{Map, Value, json};

use crate::{Grid, volume_ptr, zeroed_volume};

/// How long a worker may take to load its plugin.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// The worker program: `IMHOST_PLUGIN_WORKER`, else `imhost-plugin-worker` next to the running
/// program, its parent folder (cargo's `deps/`), or the library holding this code.
pub fn worker_program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IMHOST_PLUGIN_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        dirs.extend(dir.parent().map(Path::to_path_buf));
    }
    if let Some(dir) = own_library_dir() {
        dirs.push(dir.clone());
        dirs.extend(dir.parent().map(|p| p.join("bin")));
    }
    dirs.iter().map(|d| d.join("imhost-plugin-worker")).find(|p| p.is_file()).ok_or_else(|| {
        Error::unsupported(
            "plugin isolation needs the imhost-plugin-worker program (installed next to imhost); set IMHOST_PLUGIN_WORKER to its path",
        )
    })
}

/// The folder of the shared object (libimhost.so) or program that holds this function.
fn own_library_dir() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let address = own_library_dir as *const () as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`; 0 means not found.
    if unsafe { libc::dladdr(address, info.as_mut_ptr()) } == 0 {
        return None;
    }
    // SAFETY: filled by a successful dladdr.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_str().ok()?;
    Path::new(name).canonicalize().ok()?.parent().map(Path::to_path_buf)
}

/// Where input and output files go: shared memory when there is some.
pub fn exchange_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Worker {
    fn spawn(plugin: &Path) -> Result<(Worker, Value)> {
        let program = worker_program()?;
        let mut child = Command::new(&program)
            .arg(plugin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::model(format!("cannot start {}: {e}", program.display())))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(std::io::Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let sink = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(std::io::Result::ok) {
                tracing::debug!(target: "imhost::plugin_worker", "{line}");
                let mut t = sink.lock().unwrap_or_else(|e| e.into_inner());
                t.push_back(line);
                if t.len() > 8 {
                    t.pop_front();
                }
            }
        });
        let mut worker = Worker { child, stdin, lines, stderr: tail };
        let hello = match worker.lines.recv_timeout(HELLO_TIMEOUT) {
            Ok(line) => serde_json::from_str::<Value>(&line)
                .map_err(|e| Error::model(format!("the plugin worker said something unreadable: {e}")))?,
            Err(_) => return Err(worker.death(plugin, "while loading the plugin")),
        };
        match hello["type"].as_str() {
            Some("hello") => Ok((worker, hello)),
            _ => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                Err(Error::format(hello["message"].as_str().unwrap_or("the plugin worker failed").to_string()))
            }
        }
    }

    /// The error for a worker that stopped answering: how it died and its last stderr lines.
    fn death(&mut self, plugin: &Path, doing: &str) -> Error {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                std::thread::sleep(Duration::from_millis(50));
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let how = match status {
            Some(s) if s.signal().is_some() => {
                let sig = s.signal().expect("checked");
                format!("was killed by signal {sig} ({})", signal_name(sig))
            }
            Some(s) => format!("exited with {s}"),
            None => "stopped answering".into(),
        };
        let tail: Vec<String> = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        Error::model(format!(
            "plugin {} crashed in its isolated worker {doing}: the worker {how}; the host is unaffected{}",
            plugin.display(),
            if tail.is_empty() { String::new() } else { format!(" (worker's last words: {})", tail.join(" | ")) }
        ))
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV, invalid memory access",
        libc::SIGABRT => "SIGABRT, abort",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE, arithmetic error",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL, killed",
        _ => "signal",
    }
}

/// A plugin library run by a worker process.
pub struct IsolatedPlugin {
    path: PathBuf,
    worker: Mutex<Option<Worker>>,
}

impl Drop for IsolatedPlugin {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl IsolatedPlugin {
    /// Start a worker for `path` and return its models. The permission check runs here too,
    /// before the worker is started.
    pub fn start(path: &Path) -> Result<Vec<Arc<dyn Model>>> {
        crate::discover::check_permissions(path)
            .map_err(|m| Error::format(format!("plugin {}: {m}", path.display())))?;
        let (worker, hello) = Worker::spawn(path)?;
        let plugin = Arc::new(IsolatedPlugin { path: path.to_path_buf(), worker: Mutex::new(Some(worker)) });
        let name = format!("{} {}", hello["plugin"].as_str().unwrap_or("?"), hello["version"].as_str().unwrap_or("?"));
        let manifests = hello["manifests"].as_array().cloned().unwrap_or_default();
        manifests
            .into_iter()
            .map(|m| {
                let mut manifest: Manifest = serde_json::from_value(m).map_err(|e| Error::format(e.to_string()))?;
                manifest.source = Some(Source {
                    kind: "plugin".into(),
                    path: Some(path.display().to_string()),
                    plugin: Some(name.clone()),
                    isolated: true,
                });
                Ok(Arc::new(IsolatedModel { plugin: plugin.clone(), manifest }) as Arc<dyn Model>)
            })
            .collect()
    }
}

/// A model of an isolated plugin.
pub struct IsolatedModel {
    plugin: Arc<IsolatedPlugin>,
    manifest: Manifest,
}

static EXCHANGE: AtomicU64 = AtomicU64::new(0);

/// A file in the exchange folder, removed when dropped.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn exchange_file(suffix: &str) -> TempFile {
    let n = EXCHANGE.fetch_add(1, Ordering::Relaxed);
    TempFile(exchange_dir().join(format!("imhost-{}-{n}.{suffix}", std::process::id())))
}

/// Write the pixels of `view` (i fastest) to `out`.
fn write_pixels(view: &AnyVolumeView<'_>, out: &mut impl Write) -> std::io::Result<()> {
    with_view!(view, v => {
        let data = v.data();
        let reversed = data.view().reversed_axes();
        match reversed.as_slice() {
            Some(slice) => out.write_all(imhost_core::dtype::as_bytes(slice)),
            None => {
                let owned: Vec<_> = reversed.iter().copied().collect();
                out.write_all(imhost_core::dtype::as_bytes(&owned))
            }
        }
    })
}

impl Model for IsolatedModel {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        options: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let path = &self.plugin.path;
        let mut guard = self.plugin.worker.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_mut().is_none_or(|w| w.child.try_wait().ok().flatten().is_some()) {
            tracing::info!("starting the isolated worker of {}", path.display());
            *guard = Some(Worker::spawn(path)?.0);
        }
        let worker = guard.as_mut().expect("started above");
        let grids: Vec<Grid> = inputs.iter().map(Grid::of).collect::<Result<_>>()?;
        let file = exchange_file("in");
        let mut described = Vec::new();
        {
            let f = std::fs::File::create(&file.0).map_err(|e| Error::from(e).in_file(&file.0))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let mut offset = 0usize;
            for (spec, view) in self.manifest.inputs.iter().zip(inputs) {
                write_pixels(view, &mut w).map_err(|e| Error::from(e).in_file(&file.0))?;
                let g = view.geometry();
                described.push(json!({
                    "name": spec.name, "offset": offset, "dtype": view.dtype().code(), "shape": view.shape(),
                    "spacing": g.spacing, "origin": g.origin, "direction": g.direction,
                    "frame_times": with_view!(view, v => v.frame_times().map(<[f64]>::to_vec)),
                }));
                offset += view.shape().iter().product::<usize>() * view.dtype().size_of();
            }
            w.flush().map_err(|e| Error::from(e).in_file(&file.0))?;
        }
        let request = json!({"type": "run", "model": self.manifest.id, "options": options,
                             "input_file": file.0, "inputs": described, "out_dir": exchange_dir()});
        if writeln!(worker.stdin, "{request}").and_then(|_| worker.stdin.flush()).is_err() {
            let e = worker.death(path, &format!("before running '{}'", self.manifest.id));
            *guard = None;
            return Err(e);
        }
        let started = Instant::now();
        let done = loop {
            match worker.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    match msg["type"].as_str() {
                        Some("progress") => {
                            let f = msg["fraction"].as_f64().unwrap_or(0.0);
                            if control.report(msg["stage"].as_str().unwrap_or("plugin"), f).is_err() {
                                let _ = worker.child.kill();
                                let _ = worker.child.wait();
                                *guard = None;
                                return Err(Error::cancelled());
                            }
                        }
                        Some("log") => crate::native::emit_log(
                            msg["plugin"].as_str().unwrap_or("plugin"),
                            msg["level"].as_i64().unwrap_or(3) as i32,
                            msg["message"].as_str().unwrap_or_default(),
                        ),
                        Some("done") | Some("failed") => break msg,
                        _ => tracing::debug!("plugin worker: {line}"),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if control.check().is_err() {
                        let _ = worker.child.kill();
                        let _ = worker.child.wait();
                        *guard = None;
                        return Err(Error::cancelled());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let e = worker.death(path, &format!("while running '{}'", self.manifest.id));
                    *guard = None;
                    return Err(e);
                }
            }
        };
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "isolated run finished");
        let outputs: Vec<TempFile> = done["outputs"]
            .as_array()
            .map(|a| a.iter().filter_map(|o| o["file"].as_str().map(|f| TempFile(PathBuf::from(f)))).collect())
            .unwrap_or_default();
        if done["type"] == "failed" {
            let message = done["message"].as_str().unwrap_or("failed").to_string();
            return Err(match done["kind"].as_str() {
                Some("cancelled") => Error::cancelled(),
                Some("invalid_argument") => Error::invalid_argument(message),
                _ => Error::model(message),
            });
        }
        let mut volumes = Vec::new();
        for (o, file) in done["outputs"].as_array().into_iter().flatten().zip(&outputs) {
            volumes.push(read_output(o, &file.0, &grids, &self.manifest)?);
        }
        let scores = done["scores"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v))).collect())
            .unwrap_or_default();
        Ok(ModelOutput { volumes, scores, report: done["report"].clone() })
    }
}

/// Copy an output file the worker wrote into a host volume (one copy).
fn read_output(o: &Value, file: &Path, grids: &[Grid], manifest: &Manifest) -> Result<(String, AnyVolume)> {
    let name = o["name"].as_str().unwrap_or_default().to_string();
    let dtype =
        o["dtype"].as_u64().and_then(|c| DType::from_code(c as u32)).ok_or_else(|| Error::model("bad output dtype"))?;
    let shape: [usize; 4] = serde_json::from_value(o["shape"].clone()).map_err(|e| Error::model(e.to_string()))?;
    let spec = manifest.output(&name).ok_or_else(|| Error::model(format!("undeclared output '{name}'")))?;
    let grid = &grids[spec.grid];
    let mut volume = zeroed_volume(dtype, shape, &grid.geometry, grid.times_for(shape[3]))?;
    let bytes = shape.iter().product::<usize>() * dtype.size_of();
    let f = std::fs::File::open(file).map_err(|e| Error::from(e).in_file(file))?;
    // SAFETY: a private file in the exchange folder that the worker finished writing (it said
    // "done"); nobody else maps or truncates it.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::from(e).in_file(file))?;
    if map.len() < bytes {
        return Err(Error::model(format!("output '{name}' file is {} bytes, expected {bytes}", map.len())));
    }
    let ptr = volume_ptr(&mut volume);
    // SAFETY: the volume owns `bytes` contiguous bytes (zeroed_volume, shape × dtype size); the
    // map has at least as many; distinct allocations.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), ptr, bytes) };
    Ok((name, volume))
}
