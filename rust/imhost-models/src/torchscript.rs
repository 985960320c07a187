//! TorchScript model packages: a folder with `manifest.json` (an `imhost-manifest/1` manifest
//! plus a `runtime` section) and `model.pt`, no native code. The host does the pre- and
//! post-processing the manifest declares:
//!
//! ```json
//! "runtime": {
//!   "kind": "torchscript", "file": "model.pt", "sha256": "…",
//!   "preprocessing": {"window": [0, 100], "normalize": {"mean": 0, "std": 100}, "spacing_mm": [2, 2, 2]},
//!   "postprocessing": [
//!     {"output": "lesion", "argmax": [0, 1]},
//!     {"output": "prob", "channel": 1, "activation": "softmax", "softmax_channels": [0, 1]},
//!     {"output": "intensity", "channel": 2, "scale": 0.0625},
//!     {"output": "lesion_ml", "volume_of": "lesion", "label": 1}
//!   ]
//! }
//! ```
//!
//! The single 3-D input is converted to float32, clipped to `window`, normalised
//! (`(x − mean)/std`), resampled (trilinear) to `spacing_mm` and given to the module as
//! `[1, 1, k, j, i]` (PyTorch's depth, height, width). The module returns `[1, C, k', j', i']`,
//! resampled back (trilinear) to the input grid before the outputs are taken from it:
//! `argmax` over the listed channels (the position in the list is the label value, 0 the
//! background), a `channel` with an optional `sigmoid` or `softmax` (over `softmax_channels`),
//! then `scale`/`offset`; scores as the volume of a label.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use imhost_core::registry::{Manifest, Model, ModelOutput, OutputKind, Source};
use imhost_core::{AnyVolume, AnyVolumeView, Error, Result, RunControl, Volume};
use ndarray::{Array4, ShapeBuilder};
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

use crate::manifest::{read_trusted, sha256_hex};
use crate::runtime::{self, OrModel};
pub use imhost_registry::torchscript::{Normalize, Post, Preprocessing, RuntimeSpec};

/// A TorchScript package as a registry model (the module is loaded on first use).
pub struct TorchScriptPackage {
    dir: PathBuf,
    manifest: Manifest,
    spec: RuntimeSpec,
    device: Option<String>,
    module: Mutex<Option<(tch::CModule, Device)>>,
}

impl TorchScriptPackage {
    /// Read and check `dir/manifest.json` ([`imhost_registry::torchscript::read_package`]); the
    /// weights are verified and loaded at the first run.
    pub fn open(dir: &Path, device: Option<String>) -> Result<Self> {
        let (mut manifest, spec) = imhost_registry::torchscript::read_package(dir)?;
        manifest.source = Some(Source {
            kind: "package".into(),
            path: Some(dir.display().to_string()),
            plugin: None,
            isolated: false,
        });
        Ok(TorchScriptPackage { dir: dir.to_path_buf(), manifest, spec, device, module: Mutex::new(None) })
    }

    fn load(&self) -> Result<(tch::CModule, Device)> {
        let (file, bytes) =
            read_trusted(&self.dir, &self.spec.file, imhost_core::memory::available_bytes_or(u64::MAX))?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&self.spec.sha256) {
            return Err(Error::format(format!(
                "{}: sha256 {actual} differs from the manifest's {}; the file was changed or damaged",
                file.display(),
                self.spec.sha256
            )));
        }
        let device = runtime::choose_device(self.device.as_deref())?;
        let mut m = tch::CModule::load_data_on_device(&mut std::io::Cursor::new(&bytes), device)
            .model()
            .map_err(|e| e.context(file.display()))?;
        m.f_set_eval().model()?;
        Ok((m, device))
    }
}

impl Model for TorchScriptPackage {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn run(
        &self,
        inputs: &[AnyVolumeView<'_>],
        _: &Map<String, Value>,
        control: &RunControl<'_>,
    ) -> Result<ModelOutput> {
        let AnyVolumeView::F32(view) = &inputs[0] else {
            return Err(Error::data_type("TorchScript packages read float32 (the registry converts)"));
        };
        let mut guard = self.module.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            control.report("loading the model", 0.0)?;
            *guard = Some(self.load()?);
        }
        let (module, device) = guard.as_ref().expect("loaded above");
        let _grad = tch::no_grad_guard();
        let [ni, nj, nk, _] = view.shape();
        // [i, j, k] → [k, j, i] in C order = i fastest: the Fortran order of our array.
        let data: Vec<f32> = view.data().view().reversed_axes().iter().copied().collect();
        let mut x = Tensor::f_from_slice(&data).model()?.f_view([1, 1, nk as i64, nj as i64, ni as i64]).model()?;
        let pre = &self.spec.preprocessing;
        if let Some([lo, hi]) = pre.window {
            x = x.f_clamp(lo, hi).model()?;
        }
        if let Some(n) = &pre.normalize {
            x = ((x - n.mean) / n.std).to_kind(Kind::Float);
        }
        let spacing = view.geometry().spacing;
        let size = |n: usize, from: f64, to: f64| ((n as f64 * from / to).round() as i64).max(1);
        if let Some(target) = pre.spacing_mm {
            let out =
                [size(nk, spacing[2], target[2]), size(nj, spacing[1], target[1]), size(ni, spacing[0], target[0])];
            x = x.f_upsample_trilinear3d(out, false, None, None, None).model()?;
        }
        control.report("inference", 0.3)?;
        if *device == Device::Cpu {
            runtime::use_cpu_threads();
        }
        tracing::debug!(model = %self.manifest.id, "TorchScript inference");
        let y = module.forward_ts(&[x.f_to_device(*device).model()?]).model()?.f_to_device(Device::Cpu).model()?;
        let y = y.f_to_kind(Kind::Float).model()?;
        if y.dim() != 5 || y.size()[0] != 1 {
            return Err(Error::model(format!(
                "{}: the module returned shape {:?}, expected [1, C, D, H, W]",
                self.manifest.id,
                y.size()
            )));
        }
        let y = if y.size()[2..] != [nk as i64, nj as i64, ni as i64] {
            y.f_upsample_trilinear3d([nk as i64, nj as i64, ni as i64], false, None, None, None).model()?
        } else {
            y
        };
        let channels = y.size()[1];
        control.report("postprocessing", 0.8)?;
        let check = |c: i64| {
            if (0..channels).contains(&c) {
                Ok(c)
            } else {
                Err(Error::model(format!("{}: channel {c} asked for; the module gave {channels}", self.manifest.id)))
            }
        };
        let to_array = |t: &Tensor| -> Result<Array4<f32>> {
            let v: Vec<f32> = Vec::<f32>::try_from(t.f_contiguous().model()?.f_flatten(0, -1).model()?).model()?;
            Array4::from_shape_vec((ni, nj, nk, 1).f(), v).map_err(|e| Error::internal(e.to_string()))
        };
        let geometry = *view.geometry();
        let mut out = ModelOutput::default();
        for post in &self.spec.postprocessing {
            let Some(spec) = self.manifest.output(&post.output) else { continue };
            match spec.kind {
                OutputKind::Labelmap => {
                    let list = post.argmax.as_ref().expect("checked at open");
                    let idx = Tensor::from_slice(&list.iter().map(|&c| check(c)).collect::<Result<Vec<_>>>()?);
                    let picked = y
                        .f_index_select(1, &idx)
                        .model()?
                        .f_argmax(1, false)
                        .model()?
                        .f_to_kind(Kind::Float)
                        .model()?;
                    let labels = to_array(&picked)?.mapv(|v| v as u8);
                    out.volumes.push((post.output.clone(), AnyVolume::U8(Volume::from_parts(labels, geometry, None)?)));
                }
                OutputKind::Map => {
                    let c = check(post.channel.expect("checked at open"))?;
                    let t = match post.activation.as_deref() {
                        None | Some("none") => y.f_select(1, c).model()?,
                        Some("sigmoid") => y.f_select(1, c).model()?.f_sigmoid().model()?,
                        Some("softmax") => {
                            let list = post.softmax_channels.clone().unwrap_or_else(|| (0..channels).collect());
                            let pos = list.iter().position(|&x| x == c).ok_or_else(|| {
                                Error::format(format!(
                                    "output '{}': channel {c} is not among softmax_channels",
                                    post.output
                                ))
                            })?;
                            let idx = Tensor::from_slice(&list.iter().map(|&k| check(k)).collect::<Result<Vec<_>>>()?);
                            y.f_index_select(1, &idx)
                                .model()?
                                .f_softmax(1, Kind::Float)
                                .model()?
                                .f_select(1, pos as i64)
                                .model()?
                        }
                        Some(other) => return Err(Error::format(format!("unknown activation {other:?}"))),
                    };
                    let map = to_array(&t)?.mapv(|v| (f64::from(v) * post.scale + post.offset) as f32);
                    out.volumes.push((post.output.clone(), AnyVolume::F32(Volume::from_parts(map, geometry, None)?)));
                }
                OutputKind::Score => {}
            }
        }
        let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
        for post in self.spec.postprocessing.iter().filter(|p| p.volume_of.is_some()) {
            let (of, label) = (post.volume_of.as_deref().expect("filtered"), post.label.unwrap_or(1));
            let Some(AnyVolume::U8(labels)) = out.volume(of) else {
                return Err(Error::format(format!(
                    "score '{}' counts '{of}', which is not a label map output",
                    post.output
                )));
            };
            let n = labels.data().iter().filter(|&&v| v == label).count();
            out.scores.push((post.output.clone(), n as f64 * voxel_ml));
        }
        control.report("postprocessing", 1.0)?;
        Ok(out)
    }
}
