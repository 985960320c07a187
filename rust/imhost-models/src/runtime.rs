//! LibTorch set-up: loading the CUDA back end when present, device and precision choice, threads,
//! and the one conversion of LibTorch errors into imhost errors.
//!
//! - CUDA: tch never references a symbol of `libtorch_cuda.so`, so the linker drops it and CUDA
//!   is never found (tch-rs #980). [`init`] `dlopen`s it once with `RTLD_GLOBAL` before the first
//!   tensor op; on a machine without the CUDA libraries that fails harmlessly and everything runs
//!   on the CPU.
//! - Device: the `device` option, else `IMHOST_DEVICE` (`cpu`, `cuda`, `cuda:N`), else CUDA
//!   when available, else CPU. Asking for CUDA where there is none is an error, not a silent CPU
//!   run.
//! - Precision: float32 everywhere; float16/bfloat16 on CUDA only (weights and input cast,
//!   outputs returned as float32).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

pub use imhost_core::{Error, Result};

/// `Result<T, TchError>` → our `Result`, with the kind [`imhost_core::ErrorKind::Model`].
pub trait OrModel<T> {
    /// Convert.
    fn model(self) -> Result<T>;
}

impl<T> OrModel<T> for std::result::Result<T, tch::TchError> {
    fn model(self) -> Result<T> {
        self.map_err(|e| Error::model(format!("LibTorch: {e}")))
    }
}

/// Numeric precision of inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 (the default).
    #[default]
    F32,
    /// float16 (CUDA only).
    F16,
    /// bfloat16 (CUDA only).
    Bf16,
}

impl Precision {
    /// Parse `f32`, `f16` or `bf16`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(Precision::F32),
            "f16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::invalid_argument(format!("unknown precision {name:?} (f32, f16, bf16)"))),
        }
    }

    /// The tensor kind.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::F16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// What [`init`] found.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// Whether `libtorch_cuda.so` was loaded.
    pub cuda_library_loaded: bool,
    /// Why not, when it was not.
    pub cuda_library_error: Option<String>,
    /// Whether a CUDA device is usable.
    pub cuda_available: bool,
    /// CUDA devices.
    pub cuda_devices: i64,
    /// CPU threads LibTorch uses.
    pub cpu_threads: i32,
}

static RUNTIME: OnceLock<RuntimeInfo> = OnceLock::new();

/// Load the CUDA back end if it is installed, once.
pub fn init() -> &'static RuntimeInfo {
    RUNTIME.get_or_init(|| {
        let (loaded, error) = load_cuda_library();
        // All cores to start with (the order LibTorch's MKL expects); each run then sets the
        // count of its own pool (`use_cpu_threads`).
        tch::set_num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
        let info = RuntimeInfo {
            cuda_library_loaded: loaded,
            cuda_library_error: error,
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cpu_threads: tch::get_num_threads(),
        };
        tracing::debug!(?info, "LibTorch runtime");
        info
    })
}

fn load_cuda_library() -> (bool, Option<String>) {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading LibTorch's own CUDA back end, built with the same version and C++ ABI as
    // the libtorch_cpu.so this process already uses; its initialisers only register CUDA
    // kernels and hooks. It is never unloaded (the handle is leaked on purpose).
    match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            std::mem::forget(lib);
            (true, None)
        }
        Err(e) => (false, Some(e.to_string())),
    }
}

/// Give LibTorch as many CPU threads as the work running now may use: the size of the rayon pool
/// this thread works in (the C ABI's context pool, `imh_context_set_threads`; all cores in the
/// command line). LibTorch's setting is one per process, so it is set again at every run; returns
/// the count set.
pub fn use_cpu_threads() -> usize {
    let threads = rayon::current_num_threads().max(1);
    if tch::get_num_threads() != threads as i32 {
        tch::set_num_threads(threads as i32);
    }
    threads
}

/// Choose the device: `request` (`cpu`, `cuda`, `cuda:N`, `auto`), else `IMHOST_DEVICE`, else
/// CUDA when available, else CPU.
pub fn choose_device(request: Option<&str>) -> Result<Device> {
    let info = init();
    let env = std::env::var("IMHOST_DEVICE").ok().filter(|s| !s.is_empty());
    let (name, source) = match (request, env.as_deref()) {
        (Some(r), _) => (r.to_string(), "the device option"),
        (None, Some(e)) => (e.to_string(), "IMHOST_DEVICE"),
        (None, None) => ("auto".to_string(), "default"),
    };
    let cuda = |index: usize| -> Result<Device> {
        if !info.cuda_available || index as i64 >= info.cuda_devices {
            return Err(Error::model(format!(
                "{source} asks for CUDA device {index}, but {} (libtorch_cuda: {})",
                if info.cuda_available {
                    format!("only {} CUDA devices exist", info.cuda_devices)
                } else {
                    "no CUDA device is available".to_string()
                },
                info.cuda_library_error.as_deref().unwrap_or("loaded")
            )));
        }
        Ok(Device::Cuda(index))
    };
    match name.as_str() {
        "auto" => Ok(if info.cuda_available { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => {
                Err(Error::invalid_argument(format!("{source}: unknown device {other:?} (auto, cpu, cuda, cuda:N)")))
            }
        },
    }
}

/// Check that `precision` runs on `device`.
pub fn check_precision(device: Device, precision: Precision) -> Result<()> {
    if precision != Precision::F32 && !device.is_cuda() {
        return Err(Error::unsupported(format!(
            "{} inference needs a CUDA device; this run is on the CPU (use f32)",
            precision.name()
        )));
    }
    Ok(())
}

/// A short name of the device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choice_and_refusals() {
        init();
        assert_eq!(choose_device(Some("cpu")).unwrap(), Device::Cpu);
        let e = choose_device(Some("tpu")).unwrap_err();
        assert!(e.message().contains("unknown device"), "{e}");
        if !tch::Cuda::is_available() {
            assert_eq!(choose_device(Some("auto")).unwrap(), Device::Cpu);
            let e = choose_device(Some("cuda")).unwrap_err();
            assert_eq!(e.kind(), imhost_core::ErrorKind::Model);
            assert!(e.message().contains("no CUDA device"), "{e}");
            assert!(check_precision(Device::Cpu, Precision::Bf16).is_err());
        }
        assert!(check_precision(Device::Cpu, Precision::F32).is_ok());
        assert_eq!(Precision::from_name("bf16").unwrap(), Precision::Bf16);
    }
}
