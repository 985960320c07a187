//! Plugins run in a child worker process (`imhost-plugin-worker`), so that a plugin that
//! segfaults, aborts or hangs fails the job with an error instead of taking down Slicer or
//! Orthanc — and so that a worker, which runs third-party code, gets nothing from the host that
//! it could not get by itself.
//!
//! Trust boundary (see also ARCHITECTURE.md): the worker is treated as hostile. The host
//! - opens and checks the plugin's folder and file itself ([`crate::trust`]) and hands the worker
//!   the open folder (descriptor 4), never a path to look up again;
//! - creates every piece of shared memory itself, as anonymous `memfd`s passed as descriptors
//!   ([`crate::channel`]): nothing in `/dev/shm`, nothing with a name, nothing left after any
//!   signal; the worker names no file the host would open, write or delete;
//! - sizes every output from the manifest and the input grid before allocating
//!   ([`crate::native::check_output_request`]), bounds every message the worker sends, and
//!   stops a run that exceeds its time limit (`limits.timeout_s` of the manifest, or the run's
//!   own [`RunControl::time_limit`]) by killing the worker;
//! - starts the worker with `PR_SET_PDEATHSIG` from a thread that lives as long as the process,
//!   and the worker also exits when its socket to the host closes or its parent changes, so a
//!   worker never outlives its host (`kill -9` included).
//!
//! Protocol: the worker says `{"type":"hello", plugin, version, manifests}` (or
//! `{"type":"error", message}`) on its protocol pipe. A run is one packet `{"type":"run"}` with
//! two sealed memfds: the request (`{model, options, inputs:[{name, offset, dtype, shape,
//! spacing, origin, direction, frame_times}]}`) and the input pixels. The worker answers with
//! `progress` and `log` lines; for each output it asks `{"type":"alloc", name, dtype, shape}` and
//! gets `{"type":"allocated"}` with a memfd of the right size, or `{"type":"refused", message}`;
//! it ends with `{"type":"done", scores, report}` or `{"type":"failed", kind, message}`.
//! Cancelling kills the worker; a dead worker is restarted on the next run.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use imhost_core::registry::{Manifest, Model, ModelOutput, Source};
use imhost_core::{AnyVolume, AnyVolumeView, DType, Error, Geometry, Result, RunControl, with_view};
use serde_json::{Map, Value, json};

use crate::channel::{self, Line};
use crate::trust::TrustedDir;
use crate::{Grid, volume_ptr, zeroed_volume};

/// How long a worker may take to load its plugin.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// A run's time limit when neither the run nor the manifest sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many worker lines may wait for the host's run loop (the worker blocks beyond).
const LINE_QUEUE: usize = 256;
/// The longest stderr line of a worker that is kept (quoted in crash messages).
const STDERR_LINE: usize = 4096;

/// The plugin worker program: `IMHOST_PLUGIN_WORKER`, else `imhost-plugin-worker` next to the
/// running program, its parent folder (cargo's `deps/`), or the library holding this code (and
/// `../bin` from there). It runs the plugins, so it must pass the same trust rules as they do.
pub fn worker_program() -> Result<PathBuf> {
    find_program(WorkerKind::Plugin)
}

/// Which worker program runs a model out of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerKind {
    /// `imhost-plugin-worker`: a native plugin library.
    Plugin,
    /// `imhost-model-worker`: a model package on LibTorch (linked by that program only).
    Package,
}

impl WorkerKind {
    fn program(self) -> &'static str {
        match self {
            WorkerKind::Plugin => "imhost-plugin-worker",
            WorkerKind::Package => "imhost-model-worker",
        }
    }
    fn variable(self) -> &'static str {
        match self {
            WorkerKind::Plugin => "IMHOST_PLUGIN_WORKER",
            WorkerKind::Package => "IMHOST_MODEL_WORKER",
        }
    }
    fn what(self) -> &'static str {
        match self {
            WorkerKind::Plugin => "plugin",
            WorkerKind::Package => "model package",
        }
    }
}

fn find_program(kind: WorkerKind) -> Result<PathBuf> {
    let name = kind.program();
    let program = match std::env::var_os(kind.variable()) {
        Some(p) if !Path::new(&p).exists() => {
            return Err(Error::unsupported(format!(
                "{} names {}, which does not exist: {name} is needed to run this model",
                kind.variable(),
                Path::new(&p).display()
            )));
        }
        Some(p) => PathBuf::from(p),
        None => {
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
            dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
                Error::unsupported(match kind {
                    WorkerKind::Plugin => "plugin isolation needs the imhost-plugin-worker program (installed next to imhost); set IMHOST_PLUGIN_WORKER to its path".to_string(),
                    WorkerKind::Package => "learned models run in the imhost-model-worker program (installed next to imhost when imhost is built with LibTorch); set IMHOST_MODEL_WORKER to its path".to_string(),
                })
            })?
        }
    };
    let (_, file) = crate::trust::open_file(&program)
        .map_err(|m| Error::untrusted(format!("the worker program {}: {m}", program.display())))?;
    Ok(file.path)
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

/// The most detailed plugin log level anyone listens to now (`IMHP_LOG_*`), for the worker to
/// forward.
fn log_level() -> i32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        _ => 4,
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Start `command` from one thread that lives as long as the process: `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked the child exits, so a worker started from a host's short-lived
/// job thread would otherwise be killed when that thread ends.
fn spawn_from_keeper(mut command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<SyncSender<SpawnJob>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = sync_channel::<SpawnJob>(0);
        // A small stack of its own: it only forks, and glibc then gives it a fresh stack instead
        // of reusing one of an exited thread (which would credit its thread-local memory, still
        // in use at exit, to that thread's creator in valgrind's report).
        let started =
            std::thread::Builder::new().name("imhost-worker-spawner".into()).stack_size(256 << 10).spawn(move || {
                for job in rx {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::warn!("cannot start the worker spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = sync_channel(1);
    let job: SpawnJob = Box::new(move || {
        let _ = reply.send(command.spawn());
    });
    keeper.lock().unwrap_or_else(|e| e.into_inner()).send(job).map_err(|_| std::io::Error::other("no spawner"))?;
    answer.recv().map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Move `fd` to descriptor `to` in a child between fork and exec (not close-on-exec there).
///
/// # Safety
/// Only async-signal-safe calls (fcntl, dup2), as `pre_exec` requires.
unsafe fn place_fd(fd: i32, to: i32) -> std::io::Result<()> {
    // SAFETY: caller contract. Every move goes through a copy at 16 or above first, so placing
    // the socket on 3 cannot overwrite the folder's descriptor before it is placed on 4.
    unsafe {
        // Above every target, so moving one cannot overwrite another not yet moved.
        let high = libc::fcntl(fd, libc::F_DUPFD, 16);
        if high < 0 || libc::dup2(high, to) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(high);
    }
    Ok(())
}

struct Worker {
    child: Child,
    socket: OwnedFd,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    /// Kill the worker and wait (up to a second) for the threads reading its output to end: they
    /// end when its pipes close, which a grandchild it started could delay.
    fn drop(&mut self) {
        self.kill();
        self.lines = sync_channel(1).1;
        let started = Instant::now();
        while self.readers.iter().any(|r| !r.is_finished()) && started.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in self.readers.drain(..).filter(|r| r.is_finished()) {
            let _ = reader.join();
        }
    }
}

impl Worker {
    fn spawn(plugin: &IsolatedPlugin) -> Result<(Worker, Value)> {
        let program = find_program(plugin.kind)?;
        let (host_end, worker_end) =
            channel::socket_pair().map_err(|e| Error::model(format!("worker channel: {e}")))?;
        let (socket_fd, dir_fd) = (worker_end.as_raw_fd(), plugin.dir.as_file().as_raw_fd());
        let host_pid = std::process::id();
        let mut command = Command::new(&program);
        command
            .arg("--plugin-dir-fd=4")
            .arg("--socket-fd=3")
            .arg(format!("--plugin={}", plugin.name))
            .arg(format!("--host-pid={host_pid}"))
            .arg(format!("--plugin-path={}", plugin.path.display()))
            .arg(format!("--log-level={}", log_level()))
            .args(&plugin.extra_args)
            .args(plugin.threads.map(|t| format!("--threads={}", if t > 0 { t } else { rayon::current_num_threads() })))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls: prctl, getppid, fcntl,
        // dup2, _exit.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The host may have died before the line above: then nobody would kill us.
                if libc::getppid() as u32 != host_pid {
                    libc::_exit(70);
                }
                let (high_socket, high_dir) =
                    (libc::fcntl(socket_fd, libc::F_DUPFD, 16), libc::fcntl(dir_fd, libc::F_DUPFD, 16));
                if high_socket < 0 || high_dir < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                place_fd(high_socket, 3)?;
                place_fd(high_dir, 4)?;
                libc::close(high_socket);
                libc::close(high_dir);
                Ok(())
            });
        }
        let mut child =
            spawn_from_keeper(command).map_err(|e| Error::model(format!("cannot start {}: {e}", program.display())))?;
        drop(worker_end);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = sync_channel(LINE_QUEUE);
        let stdout_reader = std::thread::spawn(move || {
            channel::read_bounded_lines(stdout, channel::MAX_LINE, false, |line| tx.send(line).is_ok());
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let sink = tail.clone();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let stderr_reader = std::thread::spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            channel::read_bounded_lines(stderr, STDERR_LINE, true, |line| {
                if let Line::Text(line) = line {
                    tracing::debug!(target: "imhost::plugin_worker", "{line}");
                    let mut t = sink.lock().unwrap_or_else(|e| e.into_inner());
                    t.push_back(line);
                    if t.len() > 8 {
                        t.pop_front();
                    }
                }
                true
            });
        });
        let mut worker =
            Worker { child, socket: host_end, lines, stderr: tail, readers: vec![stdout_reader, stderr_reader] };
        // Log lines may come before the hello (the plugin's own, while it loads).
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let hello = loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let message = match worker.lines.recv_timeout(wait) {
                Ok(Line::Text(line)) => serde_json::from_str::<Value>(&line).map_err(|e| {
                    worker.kill();
                    Error::model(format!("the plugin worker said something unreadable: {e}"))
                })?,
                Ok(Line::TooLong(max)) => {
                    worker.kill();
                    return Err(Error::model(format!(
                        "the plugin worker sent a line over {max} bytes; it was stopped"
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    worker.kill();
                    return Err(Error::timed_out(format!(
                        "{} {} did not load within {} s in its isolated worker; it was stopped",
                        plugin.kind.what(),
                        plugin.path.display(),
                        HELLO_TIMEOUT.as_secs()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(worker.death(plugin, "while loading"));
                }
            };
            if message["type"] == "log" {
                forward_log(&message);
            } else {
                break message;
            }
        };
        match hello["type"].as_str() {
            Some("hello") => Ok((worker, hello)),
            _ => {
                worker.kill();
                let message =
                    hello["message"].as_str().unwrap_or("the worker failed").chars().take(4000).collect::<String>();
                let kind = hello["kind"].as_str().and_then(imhost_core::ErrorKind::from_name);
                Err(match kind {
                    Some(kind) => Error::new(kind, message),
                    None if message.contains("refused:") => Error::untrusted(message),
                    None => Error::format(message),
                })
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The error for a worker that stopped answering: how it died and its last stderr lines.
    fn death(&mut self, plugin: &IsolatedPlugin, doing: &str) -> Error {
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
        // The stderr reader may still be taking the last lines.
        std::thread::sleep(Duration::from_millis(20));
        let tail: Vec<String> = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        Error::model(format!(
            "{} {} crashed in its isolated worker {doing}: the worker {how}; the host is unaffected{}",
            plugin.kind.what(),
            plugin.path.display(),
            if tail.is_empty() { String::new() } else { format!(" (worker's last words: {})", tail.join(" | ")) }
        ))
    }
}

/// A worker's `{"type":"log"}` line as a record of this process (bounded).
fn forward_log(msg: &Value) {
    crate::native::emit_log(
        &msg["plugin"].as_str().unwrap_or("plugin").chars().take(100).collect::<String>(),
        msg["level"].as_i64().and_then(|l| i32::try_from(l).ok()).unwrap_or(3),
        &msg["message"].as_str().unwrap_or_default().chars().take(4000).collect::<String>(),
    );
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

/// A plugin library or a model package run by a worker process.
pub struct IsolatedPlugin {
    path: PathBuf,
    name: String,
    dir: TrustedDir,
    kind: WorkerKind,
    extra_args: Vec<String>,
    /// Threads of a package worker (0: the size of the rayon pool that starts it).
    threads: Option<usize>,
    worker: Mutex<Option<Worker>>,
}

impl Drop for IsolatedPlugin {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            w.kill();
        }
    }
}

impl IsolatedPlugin {
    /// Check `path` and its folders ([`crate::trust`]), start a worker on the open folder and
    /// return the plugin's models.
    pub fn start(path: &Path) -> Result<Vec<Arc<dyn Model>>> {
        let (dir, file) =
            crate::trust::open_file(path).map_err(|m| Error::untrusted(format!("plugin {}: {m}", path.display())))?;
        let plugin = IsolatedPlugin {
            path: file.path.clone(),
            name: file.name,
            dir,
            kind: WorkerKind::Plugin,
            extra_args: Vec::new(),
            threads: None,
            worker: Mutex::new(None),
        };
        let (worker, hello) = Worker::spawn(&plugin)?;
        *plugin.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker);
        let plugin = Arc::new(plugin);
        let name = format!("{} {}", hello["plugin"].as_str().unwrap_or("?"), hello["version"].as_str().unwrap_or("?"));
        let manifests = hello["manifests"].as_array().cloned().unwrap_or_default();
        manifests
            .into_iter()
            .map(|m| {
                let mut manifest: Manifest = serde_json::from_value(m).map_err(|e| Error::format(e.to_string()))?;
                manifest.validate().map_err(|e| e.context(format!("plugin {}", plugin.path.display())))?;
                manifest.source = Some(Source {
                    kind: "plugin".into(),
                    path: Some(plugin.path.display().to_string()),
                    plugin: Some(name.clone()),
                    isolated: true,
                });
                Ok(Arc::new(IsolatedModel { plugin: plugin.clone(), manifest }) as Arc<dyn Model>)
            })
            .collect()
    }
}

/// How a model package's worker is started.
#[derive(Debug, Clone, Default)]
pub struct PackageWorker {
    /// Given to the package's opener (device, precision), as JSON.
    pub options: Map<String, Value>,
    /// Threads of the worker (its rayon pool and LibTorch's CPU threads); 0: the size of the
    /// rayon pool of the thread that starts it (the context's pool through the C ABI).
    pub threads: usize,
    /// Start the worker now (its errors — a bad checksum, a missing device — come back here)
    /// instead of at the first run.
    pub start_now: bool,
}

impl IsolatedPlugin {
    /// The models of the package folder `dir`, run by `imhost-model-worker` — the program that
    /// links LibTorch, so this process never loads it. `manifests` are the models' manifests as
    /// this process read them (the worker serves the same ids). The worker starts at the first
    /// run, or now with [`PackageWorker::start_now`].
    pub fn package(dir: &Path, manifests: Vec<Manifest>, worker: &PackageWorker) -> Result<Vec<Arc<dyn Model>>> {
        let folder = TrustedDir::open(dir).map_err(|m| {
            if m.starts_with("refused") { Error::untrusted(m) } else { Error::new(imhost_core::ErrorKind::Io, m) }
        })?;
        let plugin = IsolatedPlugin {
            path: folder.path().to_path_buf(),
            name: folder.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            dir: folder,
            kind: WorkerKind::Package,
            extra_args: vec![
                "--package".into(),
                format!("--package-options={}", Value::Object(worker.options.clone())),
            ],
            threads: Some(worker.threads),
            worker: Mutex::new(None),
        };
        if worker.start_now {
            let (started, hello) = Worker::spawn(&plugin)?;
            let served: Vec<&str> =
                hello["manifests"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
            if let Some(m) = manifests.iter().find(|m| !served.contains(&m.id.as_str())) {
                return Err(Error::format(format!("{}: the worker does not serve model '{}'", dir.display(), m.id)));
            }
            *plugin.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        }
        let plugin = Arc::new(plugin);
        Ok(manifests
            .into_iter()
            .map(|manifest| Arc::new(IsolatedModel { plugin: plugin.clone(), manifest }) as Arc<dyn Model>)
            .collect())
    }
}

/// A model of an isolated plugin.
pub struct IsolatedModel {
    plugin: Arc<IsolatedPlugin>,
    manifest: Manifest,
}

/// Write the pixels of `view` (i fastest) to `out`.
pub(crate) fn write_pixels(view: &AnyVolumeView<'_>, out: &mut impl Write) -> std::io::Result<()> {
    with_view!(view, v => {
        let data = v.data();
        let reversed = data.view().reversed_axes();
        match reversed.as_slice() {
            Some(slice) => out.write_all(imhost_core::dtype::as_bytes(slice)),
            None => {
                for value in reversed.iter() {
                    out.write_all(imhost_core::dtype::as_bytes(std::slice::from_ref(value)))?;
                }
                Ok(())
            }
        }
    })
}

/// An output the host allocated for the worker.
struct Allocated {
    name: String,
    dtype: DType,
    shape: [usize; 4],
    geometry: Geometry,
    memory: std::fs::File,
}

/// The sealed memfds of a run's request and inputs.
fn run_memory(
    manifest: &Manifest,
    inputs: &[AnyVolumeView<'_>],
    options: &Map<String, Value>,
) -> Result<[std::fs::File; 2]> {
    let io = |e: std::io::Error| Error::model(format!("shared memory for the worker: {e}"));
    let pixels = channel::memfd("imhost-input").map_err(io)?;
    let mut described = Vec::new();
    {
        let mut w = BufWriter::with_capacity(1 << 20, &pixels);
        let mut offset = 0usize;
        for (spec, view) in manifest.inputs.iter().zip(inputs) {
            write_pixels(view, &mut w).map_err(io)?;
            let g = view.geometry();
            described.push(json!({
                "name": spec.name, "offset": offset, "dtype": view.dtype().code(), "shape": view.shape(),
                "spacing": g.spacing, "origin": g.origin, "direction": g.direction,
                "frame_times": with_view!(view, v => v.frame_times().map(<[f64]>::to_vec)),
                "time_source": with_view!(view, v => v.time_source().map(|s| s.name())),
            }));
            offset += view.shape().iter().product::<usize>() * view.dtype().size_of();
        }
        w.flush().map_err(io)?;
    }
    channel::seal(&pixels, channel::INPUT_SEALS).map_err(io)?;
    let request = channel::memfd("imhost-request").map_err(io)?;
    let text = json!({"model": manifest.id, "options": options, "inputs": described}).to_string();
    (&request).write_all(text.as_bytes()).map_err(io)?;
    channel::seal(&request, channel::INPUT_SEALS).map_err(io)?;
    Ok([request, pixels])
}

impl IsolatedModel {
    /// The run's time limit: the run's own, else the manifest's, else [`DEFAULT_TIMEOUT`].
    fn time_limit(&self, control: &RunControl<'_>) -> Duration {
        control
            .time_limit()
            .or_else(|| self.manifest.limits.timeout_s.map(Duration::from_secs_f64))
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Answer an `alloc` request: check it against the manifest and grids, then create, size
    /// and seal the memory and send it, or send the refusal.
    fn allocate(&self, worker: &Worker, msg: &Value, grids: &[Grid], outputs: &mut Vec<Allocated>) -> Result<()> {
        let name = msg["name"].as_str().unwrap_or_default().to_string();
        let shape: Option<[usize; 4]> = serde_json::from_value(msg["shape"].clone()).ok();
        let dtype = msg["dtype"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(u32::MAX);
        let grid_list: Vec<([usize; 4], Geometry)> = grids.iter().map(|g| (g.shape, g.geometry)).collect();
        let allocated: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
        let checked = match shape {
            None => Err(format!("output '{name}': the shape is not four sizes")),
            Some(shape) => {
                crate::native::check_output_request(&self.manifest, &grid_list, &allocated, &name, dtype, shape)
                    .map(|(dtype, geometry)| (dtype, shape, geometry))
            }
        };
        let send_error = |e: std::io::Error| Error::model(format!("worker channel: {e}"));
        match checked.and_then(|(dtype, shape, geometry)| {
            let bytes = shape.iter().product::<usize>() * dtype.size_of();
            // The memfd and then the host's copy of it.
            let budget = imhost_core::memory::available_bytes_or(u64::MAX);
            if (bytes as u64).saturating_mul(2) > budget {
                return Err(format!(
                    "output '{name}' needs {} MiB twice; {} MiB are available",
                    bytes >> 20,
                    budget >> 20
                ));
            }
            let memory = channel::memfd("imhost-output").and_then(|m| {
                m.set_len(bytes as u64)?;
                channel::seal(&m, channel::OUTPUT_SEALS)?;
                Ok(m)
            });
            memory
                .map(|memory| Allocated { name: name.clone(), dtype, shape, geometry, memory })
                .map_err(|e| e.to_string())
        }) {
            Ok(output) => {
                channel::send(&worker.socket, &json!({"type": "allocated", "name": name}), &[output.memory.as_fd()])
                    .map_err(send_error)?;
                outputs.push(output);
            }
            Err(message) => {
                tracing::warn!(plugin = %self.plugin.path.display(), "{message}");
                channel::send(&worker.socket, &json!({"type": "refused", "message": message}), &[])
                    .map_err(send_error)?;
            }
        }
        Ok(())
    }
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
        let id = &self.manifest.id;
        let mut guard = self.plugin.worker.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_mut().is_none_or(|w| w.child.try_wait().ok().flatten().is_some()) {
            tracing::info!("starting the isolated worker of {}", path.display());
            *guard = Some(Worker::spawn(&self.plugin)?.0);
        }
        let worker = guard.as_mut().expect("started above");
        let grids: Vec<Grid> = inputs.iter().map(Grid::of).collect::<Result<_>>()?;
        let [request, pixels] = run_memory(&self.manifest, inputs, options)?;
        if channel::send(&worker.socket, &json!({"type": "run"}), &[request.as_fd(), pixels.as_fd()]).is_err() {
            let e = worker.death(&self.plugin, &format!("before running '{id}'"));
            *guard = None;
            return Err(e);
        }
        drop((request, pixels));
        let limit = self.time_limit(control);
        let started = Instant::now();
        let mut outputs: Vec<Allocated> = Vec::new();
        let stop = |guard: &mut Option<Worker>, error: Error| {
            if let Some(mut w) = guard.take() {
                w.kill();
            }
            Err(error)
        };
        let done = loop {
            if started.elapsed() > limit {
                return stop(
                    &mut guard,
                    Error::timed_out(format!(
                        "model '{id}' ({}) did not finish within its time limit of {} s; its worker was stopped (the manifest's limits.timeout_s, or the run's timeout, sets the limit)",
                        path.display(),
                        limit.as_secs_f64()
                    )),
                );
            }
            let worker = guard.as_mut().expect("present during the run");
            match worker.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(Line::Text(line)) => {
                    let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    match msg["type"].as_str() {
                        Some("progress") => {
                            let f = msg["fraction"].as_f64().filter(|f| f.is_finite()).unwrap_or(0.0);
                            let stage = msg["stage"].as_str().unwrap_or("plugin");
                            if control.report(&stage.chars().take(200).collect::<String>(), f).is_err() {
                                return stop(&mut guard, Error::cancelled());
                            }
                        }
                        Some("log") => forward_log(&msg),
                        Some("alloc") => {
                            if let Err(e) = self.allocate(worker, &msg, &grids, &mut outputs) {
                                return stop(&mut guard, e);
                            }
                        }
                        Some("done") | Some("failed") => break msg,
                        _ => tracing::debug!("plugin worker: {}", line.chars().take(200).collect::<String>()),
                    }
                }
                Ok(Line::TooLong(max)) => {
                    return stop(
                        &mut guard,
                        Error::model(format!(
                            "the worker of {} sent a message over {max} bytes; it was stopped",
                            path.display()
                        )),
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    if control.check().is_err() {
                        return stop(&mut guard, Error::cancelled());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let e = worker.death(&self.plugin, &format!("while running '{id}'"));
                    *guard = None;
                    return Err(e);
                }
            }
        };
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "isolated run finished");
        if done["type"] == "failed" {
            let message = done["message"].as_str().unwrap_or("failed").chars().take(4000).collect::<String>();
            return Err(match done["kind"].as_str() {
                Some("cancelled") => Error::cancelled(),
                Some(kind) => Error::new(
                    imhost_core::ErrorKind::from_name(kind).unwrap_or(imhost_core::ErrorKind::Model),
                    message,
                ),
                None => Error::model(message),
            });
        }
        // Only what the host allocated comes back; names of files in the reply mean nothing.
        let mut volumes = Vec::new();
        for output in &outputs {
            volumes.push(read_output(output, &grids, &self.manifest)?);
        }
        let scores = done["scores"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v))).collect())
            .unwrap_or_default();
        let preview_png = done["preview_png_hex"].as_str().map(decode_preview).transpose()?;
        Ok(ModelOutput { volumes, scores, report: done["report"].clone(), preview_png })
    }
}

/// Largest preview PNG a worker may send back, bytes.
pub const MAX_PREVIEW_BYTES: usize = 4 << 20;

/// A worker's preview (hex in its reply): refused unless it is at most [`MAX_PREVIEW_BYTES`] of
/// well-formed hex that starts with the PNG signature.
fn decode_preview(hex: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::model(format!("the worker's preview was refused: {why}"));
    if hex.len() % 2 != 0 || hex.len() > 2 * MAX_PREVIEW_BYTES {
        return Err(bad("wrong length"));
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("not hex"))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(bad("not a PNG"));
    }
    Ok(bytes)
}

/// Copy an output the worker wrote into a host volume (one copy).
fn read_output(output: &Allocated, grids: &[Grid], manifest: &Manifest) -> Result<(String, AnyVolume)> {
    use std::os::unix::fs::FileExt;
    let spec = manifest.output(&output.name).ok_or_else(|| Error::internal("allocated an undeclared output"))?;
    let times = grids.get(spec.grid).and_then(|g| g.times_for(output.shape[3]));
    let mut volume = zeroed_volume(output.dtype, output.shape, &output.geometry, times)?;
    let bytes = output.shape.iter().product::<usize>() * output.dtype.size_of();
    if !channel::is_sealed(&output.memory, channel::OUTPUT_SEALS, bytes as u64) {
        return Err(Error::internal(format!("output '{}' lost its seals", output.name)));
    }
    let ptr = volume_ptr(&mut volume);
    // SAFETY: the volume owns `bytes` contiguous bytes (zeroed_volume: shape × dtype size), not
    // aliased while this slice lives.
    let target = unsafe { std::slice::from_raw_parts_mut(ptr, bytes) };
    output
        .memory
        .read_exact_at(target, 0)
        .map_err(|e| Error::model(format!("reading output '{}' from the worker: {e}", output.name)))?;
    Ok((output.name.clone(), volume))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_previews_are_checked() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let hex: String = png.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode_preview(&hex).unwrap(), png);
        assert!(decode_preview("0").unwrap_err().message().contains("wrong length"));
        assert!(decode_preview("zz").unwrap_err().message().contains("not hex"));
        assert!(decode_preview("ffd8ffe0").unwrap_err().message().contains("not a PNG"));
        assert!(decode_preview(&"00".repeat(MAX_PREVIEW_BYTES + 1)).is_err());
    }
}
