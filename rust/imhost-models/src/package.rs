//! A model folder (`manifest.json` + weights) loaded onto a device, behind one interface for
//! both kinds of weights: our architectures in `.safetensors` and TorchScript `.pt` modules.
//!
//! Inference runs slice batches sized to the device ([`batch_slices`]), pads every slice to the
//! network's multiple (zeros: the background the network was trained on) and crops back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor, nn};

use imhost_core::control::RunControl;
use imhost_core::perfusion::model::{ModelInput, ModelInputSpec, ModelOutputScale, PerfusionMapModel};

use crate::manifest::{self, Manifest};
use crate::runtime::{self, Error, OrModel, Precision, Result};
use crate::unet::{Config, PerfusionUNet};

/// How to load a model.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// `auto`, `cpu`, `cuda`, `cuda:N` (`None`: `IMHOST_DEVICE`, else auto).
    pub device: Option<String>,
    /// Inference precision (float16/bfloat16 need CUDA).
    pub precision: Precision,
    /// Memory for one slice batch in bytes (`None`: 2 GiB on the CPU, 16 GiB on CUDA).
    pub batch_budget_bytes: Option<usize>,
    /// Run float16/bfloat16 on the CPU too (slow; for measuring the precision's effect on a
    /// machine without a GPU). Off: half precision on the CPU is refused.
    pub allow_half_on_cpu: bool,
}

impl LoadOptions {
    /// Options for `device` and `precision`.
    pub fn new(device: Option<String>, precision: Precision) -> Self {
        LoadOptions { device, precision, batch_budget_bytes: None, allow_half_on_cpu: false }
    }
}

enum Net {
    UNet { net: Box<PerfusionUNet>, _vs: nn::VarStore },
    Script(tch::CModule),
}

/// A loaded perfusion-map model.
pub struct PerfusionModel {
    manifest: Manifest,
    dir: PathBuf,
    device: Device,
    precision: Precision,
    budget: usize,
    multiple: usize,
    // LibTorch modules are not `Sync`; one inference at a time per loaded model.
    net: Mutex<Net>,
}

impl std::fmt::Debug for PerfusionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfusionModel")
            .field("id", &self.manifest.id)
            .field("dir", &self.dir)
            .field("device", &self.device)
            .finish()
    }
}

/// Build the U-Net of `manifest` on `device` and load `weights` (the verified bytes of its
/// `.safetensors` file, read from `path`) into it.
fn load_unet(manifest: &Manifest, path: &Path, weights: &[u8], device: Device, kind: Kind) -> Result<Net> {
    let config: Config = serde_json::from_value(manifest.architecture.config.clone().unwrap_or_default())
        .map_err(|e| Error::format(format!("architecture.config of {}: {e}", manifest.id)))?;
    if config.time_points != manifest.inputs.spec.time_points || config.outputs != manifest.outputs.len() {
        return Err(Error::format(format!(
            "the U-Net config ({} time points, {} outputs) contradicts the manifest's inputs/outputs ({}, {})",
            config.time_points,
            config.outputs,
            manifest.inputs.spec.time_points,
            manifest.outputs.len()
        )));
    }
    let mut vs = nn::VarStore::new(device);
    let net = PerfusionUNet::new(&vs.root(), &config)?;
    load_safetensors(&vs, weights).map_err(|e| e.context(path.display()))?;
    vs.set_kind(kind);
    Ok(Net::UNet { net: Box::new(net), _vs: vs })
}

/// Copy the tensors of a `.safetensors` file (in memory) into every variable of `vs`; a missing
/// or misshapen tensor is an error naming it.
pub fn load_safetensors(vs: &nn::VarStore, bytes: &[u8]) -> Result<()> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(format!("not a valid .safetensors file: {e}")))?;
    let tensors: std::collections::HashMap<String, Tensor> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Tensor::try_from(view).model().map(|t| (name, t)))
        .collect::<Result<_>>()?;
    for (name, mut var) in vs.variables() {
        let src = tensors.get(&name).ok_or_else(|| Error::format(format!("the weights have no tensor '{name}'")))?;
        tch::no_grad(|| var.f_copy_(src)).model().map_err(|e| e.context(format!("tensor '{name}'")))?;
    }
    Ok(())
}

impl PerfusionModel {
    /// Load `dir` (verifying the weights' sha256) onto the chosen device.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        if manifest.task != "perfusion-maps" {
            return Err(Error::unsupported(format!(
                "{} is a {:?} model, not a perfusion-maps model",
                dir.display(),
                manifest.task
            )));
        }
        let (weights_path, weights) = manifest.read_weights(dir)?;
        let device = runtime::choose_device(options.device.as_deref())?;
        if !options.allow_half_on_cpu {
            runtime::check_precision(device, options.precision)?;
        }
        let kind = options.precision.kind();
        let net = match manifest.architecture.name.as_str() {
            "perfusion-unet" => load_unet(&manifest, &weights_path, &weights, device, kind)?,
            "torchscript" => {
                let mut m = tch::CModule::load_data_on_device(&mut std::io::Cursor::new(&weights), device)
                    .model()
                    .map_err(|e| e.context(weights_path.display()))?;
                m.f_set_eval().model()?;
                m.to(device, kind, false);
                Net::Script(m)
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{}: architecture {other:?} is not known to this imhost (perfusion-unet, torchscript)",
                    dir.display()
                )));
            }
        };
        let budget = options.batch_budget_bytes.unwrap_or(if device.is_cuda() { 16 << 30 } else { 2 << 30 });
        Ok(PerfusionModel {
            manifest,
            dir: dir.to_path_buf(),
            device,
            precision: options.precision,
            budget,
            multiple: PerfusionUNet::MULTIPLE,
            net: Mutex::new(net),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The device it runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Slices per batch for `[rows, columns]` slices under the memory budget: the activations of
    /// one padded slice are ≈ 4 bytes · H · W · (T + 16 · width) (every stage's two feature maps
    /// and skips, summed over the pyramid, in float32).
    pub fn batch_slices(&self, rows: usize, columns: usize, slices: usize) -> usize {
        let width = self
            .manifest
            .architecture
            .config
            .as_ref()
            .and_then(|c| c.get("base_width"))
            .and_then(|w| w.as_u64())
            .unwrap_or(64) as usize;
        let (h, w) = (rows.next_multiple_of(self.multiple), columns.next_multiple_of(self.multiple));
        let per_slice = 4 * h * w * (self.manifest.inputs.spec.time_points + 16 * width);
        (self.budget / per_slice.max(1)).clamp(1, slices.max(1))
    }

    /// Run `[n, T, rows, columns]` float32 values → `[n, outputs, rows, columns]`.
    pub fn predict_slices(&self, data: &[f32], shape: [usize; 4], control: &RunControl<'_>) -> Result<Vec<f32>> {
        let [n, t, h, w] = shape;
        let outputs = self.manifest.outputs.len();
        if t != self.manifest.inputs.spec.time_points || data.len() != n * t * h * w {
            return Err(Error::shape(format!(
                "model {} takes {} time points; got {n}×{t}×{h}×{w} ({} values)",
                self.manifest.id,
                self.manifest.inputs.spec.time_points,
                data.len()
            )));
        }
        let (ph, pw) = (h.next_multiple_of(self.multiple), w.next_multiple_of(self.multiple));
        let batch = self.batch_slices(h, w, n);
        let mut out = vec![0.0f32; n * outputs * h * w];
        let net = self.net.lock().map_err(|_| Error::internal("a previous inference panicked"))?;
        let threads = if self.device == Device::Cpu { runtime::use_cpu_threads() } else { 0 };
        tracing::debug!(model = %self.manifest.id, slices = n, batch, cpu_threads = threads, "CNN inference");
        let _no_grad = tch::no_grad_guard();
        let mut start = 0;
        while start < n {
            control.check()?;
            let b = batch.min(n - start);
            let chunk = &data[start * t * h * w..(start + b) * t * h * w];
            let x = Tensor::f_from_slice(chunk)
                .model()?
                .f_reshape([b as i64, t as i64, h as i64, w as i64])
                .model()?
                .f_constant_pad_nd([0, (pw - w) as i64, 0, (ph - h) as i64])
                .model()?
                .f_to_device(self.device)
                .model()?
                .f_to_kind(self.precision.kind())
                .model()?;
            let y = match &*net {
                Net::UNet { net, .. } => net.forward(&x, false)?,
                Net::Script(m) => m.forward_ts(&[&x]).model()?,
            };
            let size = y.size();
            if size != [b as i64, outputs as i64, ph as i64, pw as i64] {
                return Err(Error::shape(format!(
                    "model {} returned {size:?}; expected [{b}, {outputs}, {ph}, {pw}]",
                    self.manifest.id
                )));
            }
            let y = y
                .f_narrow(2, 0, h as i64)
                .model()?
                .f_narrow(3, 0, w as i64)
                .model()?
                .f_to_kind(Kind::Float)
                .model()?
                .f_to_device(Device::Cpu)
                .model()?
                .f_contiguous()
                .model()?
                .f_view([-1])
                .model()?;
            let values = Vec::<f32>::try_from(&y).model()?;
            out[start * outputs * h * w..(start + b) * outputs * h * w].copy_from_slice(&values);
            start += b;
            control.report("cnn inference", start as f64 / n as f64)?;
        }
        Ok(out)
    }
}

impl PerfusionMapModel for PerfusionModel {
    fn input_spec(&self) -> ModelInputSpec {
        self.manifest.inputs.spec
    }

    fn output_scale(&self) -> ModelOutputScale {
        self.manifest.output_scale()
    }

    fn predict(&self, input: &ModelInput, control: &RunControl<'_>) -> Result<Vec<f32>> {
        self.predict_slices(&input.data, input.shape, control)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.manifest.id,
            "version": self.manifest.version,
            "architecture": self.manifest.architecture.name,
            "weights_sha256": self.manifest.weights.sha256,
            "device": runtime::device_name(self.device),
            "precision": self.precision.name(),
            "trained_on": self.manifest.training.get("data").cloned().unwrap_or_default(),
        })
    }
}

/// Save a U-Net's weights as `dir/model.safetensors` and write `manifest` with their sha256.
pub fn save_unet(dir: &Path, vs: &nn::VarStore, manifest: &mut Manifest) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::from(e).in_file(dir))?;
    manifest.weights.file = "model.safetensors".into();
    manifest.weights.format = "safetensors".into();
    let path = dir.join(&manifest.weights.file);
    vs.save(&path).model().map_err(|e| e.context(path.display()))?;
    manifest.weights.sha256 = manifest::sha256_file(&path)?;
    manifest.write(dir)
}
