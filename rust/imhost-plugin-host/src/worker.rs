//! The worker side of isolation (`imhost-plugin-worker PLUGIN`): load one plugin, answer run
//! requests on stdin with JSON lines on a private copy of stdout (the plugin's own prints go to
//! stderr, so they cannot corrupt the protocol). See [`crate::isolated`] for the protocol.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use imhost_core::{DType, Error, ErrorKind, Geometry, Result};
use serde_json::{Value, json};

use crate::native::{self, OutputSink, RunSink, TensorIn, contiguous_strides};

/// Protocol output, shared by the progress sink and the main loop.
type Out = Arc<Mutex<File>>;

fn say(out: &Out, message: &Value) {
    let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(f, "{message}");
    let _ = f.flush();
}

/// Outputs as files in the exchange folder, mapped for the plugin to write.
struct FileOutputs {
    dir: PathBuf,
    stem: String,
    files: Vec<(String, DType, [usize; 4], PathBuf, memmap2::MmapMut)>,
}

impl OutputSink for FileOutputs {
    fn allocate(&mut self, name: &str, dtype: DType, shape: [usize; 4], _: &Geometry) -> Result<*mut u8> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size_of(), |a, &s| a.checked_mul(s))
            .ok_or_else(|| Error::too_large("output size overflows"))?;
        let path = self.dir.join(format!("{}-{}.out", self.stem, self.files.len()));
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::from(e).in_file(&path))?;
        f.set_len(bytes as u64).map_err(|e| Error::from(e).in_file(&path))?;
        // SAFETY: a file this process just created with create_new; only the plugin writes it,
        // through the pointer returned here, until the run ends.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.map_err(|e| Error::from(e).in_file(&path))?;
        let ptr = map.as_mut_ptr();
        self.files.push((name.to_string(), dtype, shape, path, map));
        Ok(ptr)
    }
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

/// The worker's `main`: returns the process exit code.
pub fn main() -> i32 {
    // The protocol gets a private copy of stdout; fd 1 then points at stderr.
    // SAFETY: dup/dup2 on the standard descriptors of this fresh process; the new fd is owned
    // by the File below and by nothing else.
    let out: Out = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            eprintln!("imhost-plugin-worker: cannot set up its output");
            return 2;
        }
        Arc::new(Mutex::new(File::from_raw_fd(fd)))
    };
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        say(&out, &json!({"type": "error", "message": "usage: imhost-plugin-worker PLUGIN.so"}));
        return 2;
    };
    let plugin = match native::load(&path) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            say(&out, &json!({"type": "error", "message": e.message()}));
            return 1;
        }
    };
    let manifests: Vec<&imhost_core::registry::Manifest> = plugin.models.iter().map(|m| &m.manifest).collect();
    say(&out, &json!({"type": "hello", "plugin": plugin.name, "version": plugin.version, "manifests": manifests}));
    let mut instances: HashMap<usize, native::Instance> = HashMap::new();
    let stdin = std::io::stdin();
    for (n, line) in stdin.lock().lines().enumerate() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => match serve(&plugin, &mut instances, &request, &out, n) {
                Ok(done) => done,
                Err(e) => json!({"type": "failed", "kind": kind_name(e.kind()), "message": e.message()}),
            },
            Err(e) => json!({"type": "failed", "kind": "internal", "message": format!("bad request: {e}")}),
        };
        say(&out, &reply);
    }
    0
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::InvalidArgument => "invalid_argument",
        _ => "model",
    }
}

fn serve(
    plugin: &Arc<native::LoadedPlugin>,
    instances: &mut HashMap<usize, native::Instance>,
    request: &Value,
    out: &Out,
    n: usize,
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
    let input_file = PathBuf::from(request["input_file"].as_str().unwrap_or_default());
    let f = File::open(&input_file).map_err(|e| Error::from(e).in_file(&input_file))?;
    // SAFETY: the host wrote the file completely before sending the request and does not
    // change it until the reply.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::from(e).in_file(&input_file))?;
    let mut tensors = Vec::new();
    let mut grids = Vec::new();
    for d in request["inputs"].as_array().into_iter().flatten() {
        let bad = |m: &str| Error::internal(format!("bad input description: {m}"));
        let shape: [usize; 4] = serde_json::from_value(d["shape"].clone()).map_err(|_| bad("shape"))?;
        let dtype = d["dtype"].as_u64().and_then(|c| DType::from_code(c as u32)).ok_or_else(|| bad("dtype"))?;
        let offset = d["offset"].as_u64().ok_or_else(|| bad("offset"))? as usize;
        let bytes = shape.iter().product::<usize>() * dtype.size_of();
        if offset.checked_add(bytes).is_none_or(|end| end > map.len()) {
            return Err(bad("outside the input file"));
        }
        let geometry = Geometry {
            spacing: serde_json::from_value(d["spacing"].clone()).map_err(|_| bad("spacing"))?,
            origin: serde_json::from_value(d["origin"].clone()).map_err(|_| bad("origin"))?,
            direction: serde_json::from_value(d["direction"].clone()).map_err(|_| bad("direction"))?,
        };
        let times: Option<Vec<f64>> = serde_json::from_value(d["frame_times"].clone()).unwrap_or(None);
        let name = d["name"].as_str().unwrap_or_default();
        // SAFETY: offset + bytes lies inside the map (checked above).
        let data = unsafe { map.as_ptr().add(offset) };
        tensors.push(TensorIn::new(name, dtype, data, shape, contiguous_strides(shape), &geometry, times.as_deref()));
        grids.push((shape, geometry));
    }
    let options = request["options"].as_object().cloned().unwrap_or_default();
    let dir = PathBuf::from(request["out_dir"].as_str().unwrap_or("/tmp"));
    let mut outputs = FileOutputs { dir, stem: format!("imhost-worker-{}-{n}", std::process::id()), files: Vec::new() };
    let instance = instances.get_mut(&index).expect("inserted above");
    let result = native::run(
        &plugin.name,
        &plugin.models[index],
        instance,
        &tensors,
        grids,
        &options,
        &mut outputs,
        &LineSink(out.clone()),
    );
    let described: Vec<Value> = outputs
        .files
        .iter()
        .map(|(name, dtype, shape, path, map)| {
            let _ = map.flush();
            json!({"name": name, "dtype": dtype.code(), "shape": shape, "file": path})
        })
        .collect();
    match result {
        Ok(extras) => {
            let scores: serde_json::Map<String, Value> =
                extras.scores.into_iter().map(|(k, v)| (k, json!(v))).collect();
            Ok(json!({"type": "done", "outputs": described, "scores": scores, "report": extras.report}))
        }
        Err(e) => {
            for (_, _, _, path, _) in &outputs.files {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}
