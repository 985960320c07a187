//! The coronary-calcium model of Gogin et al. 2021: an **ensemble of five** 3D U-Nets
//! ([`crate::cac_unet`]) with a per-voxel **majority vote**, on the isotropic 2.5/3 mm grid of
//! `imhost_core::cac::preprocess`; training with Adam on the Dice loss, the best epoch chosen on
//! a validation split (§2.3 "Training").
//!
//! A model folder holds `manifest.json` (format `imhost-model/1`, task `coronary-calcium`, the
//! architecture config and the five members' files and sha256) and `member-1..5.safetensors`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

use imhost_core::cac::preprocess::{IsoGrid, crop, iso_spacing, pad_to_multiple};
use imhost_core::phantom::ctp::SplitMix64;
use imhost_core::{Error, Result, RunControl};
use imhost_registry::network::{read_trusted, sha256_hex};

use crate::cac_unet::{CacUNet, Config};
use crate::package::load_safetensors;
use crate::runtime::{self, OrModel};

pub use imhost_registry::cac::{CacManifest, MEMBERS, Member, TASK};

/// The architecture configuration of a CAC manifest.
pub fn config_of(m: &CacManifest) -> Result<Config> {
    if m.architecture.name != "cac-unet3d" {
        return Err(Error::unsupported(format!("architecture {:?} (cac-unet3d)", m.architecture.name)));
    }
    let c: Config = serde_json::from_value(m.architecture.config.clone().unwrap_or_default())
        .map_err(|e| Error::format(format!("architecture.config: {e}")))?;
    c.validate()?;
    Ok(c)
}

struct Net {
    net: CacUNet,
    _vs: nn::VarStore,
}

/// A loaded ensemble.
pub struct CacEnsemble {
    manifest: CacManifest,
    device: Device,
    nets: Mutex<Vec<Net>>,
    multiple: usize,
}

impl std::fmt::Debug for CacEnsemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacEnsemble").field("id", &self.manifest.id).field("device", &self.device).finish()
    }
}

/// What the ensemble found in one CT.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// The vote on the original grid, kept ≥ 130 HU.
    pub mask: Vec<bool>,
    /// Each member's own mask on the original grid (≥ 130 HU), in member order.
    pub members: Vec<Vec<bool>>,
    /// The isotropic spacing used, mm.
    pub iso_mm: f64,
}

impl CacEnsemble {
    /// Load `dir` (every member's sha256 verified) onto `device` (`None`: `IMHOST_DEVICE`, else
    /// CUDA when present, else CPU).
    pub fn load(dir: &Path, device: Option<&str>) -> Result<Self> {
        let manifest = CacManifest::read(dir)?;
        let config = config_of(&manifest)?;
        let device = runtime::choose_device(device)?;
        let mut nets = Vec::new();
        for member in &manifest.members {
            let (path, bytes) = read_trusted(dir, &member.file, 1 << 30)?;
            let found = sha256_hex(&bytes);
            if !found.eq_ignore_ascii_case(&member.sha256) {
                return Err(Error::format(format!(
                    "{}: sha256 {found} does not match the manifest's {}: the weights are corrupt or were replaced",
                    path.display(),
                    member.sha256
                )));
            }
            let vs = nn::VarStore::new(device);
            let net = CacUNet::new(&vs.root(), &config)?;
            load_safetensors(&vs, &bytes).map_err(|e| e.context(path.display()))?;
            nets.push(Net { net, _vs: vs });
        }
        Ok(CacEnsemble { manifest, device, nets: Mutex::new(nets), multiple: config.multiple() })
    }

    /// The manifest.
    pub fn manifest(&self) -> &CacManifest {
        &self.manifest
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Segment the coronary calcium of the CT `hu` (`dims`, `spacing` mm, i fastest).
    pub fn segment(
        &self,
        hu: &[f32],
        dims: [usize; 3],
        spacing: [f64; 3],
        control: &RunControl<'_>,
    ) -> Result<Segmentation> {
        let grid = IsoGrid::new(dims, spacing, iso_spacing(spacing[2]))?;
        let input = grid.downsample_ct(hu)?;
        let (padded, pd) = pad_to_multiple(&input, grid.iso_dims, self.multiple, 0.0);
        let nets = self.nets.lock().map_err(|_| Error::internal("a previous inference panicked"))?;
        if self.device == Device::Cpu {
            runtime::use_cpu_threads();
        }
        let _no_grad = tch::no_grad_guard();
        let x = Tensor::f_from_slice(&padded)
            .model()?
            .f_reshape([1, 1, pd[2] as i64, pd[1] as i64, pd[0] as i64])
            .model()?
            .f_to_device(self.device)
            .model()?;
        let mut votes = vec![0u8; padded.len()];
        let mut members = Vec::with_capacity(nets.len());
        for (n, net) in nets.iter().enumerate() {
            control.report(&format!("calcium model {} of {}", n + 1, nets.len()), n as f64 / nets.len() as f64)?;
            let y = net
                .net
                .forward(&x, false)?
                .f_gt(0.0)
                .model()?
                .f_to_kind(Kind::Uint8)
                .model()?
                .f_to_device(Device::Cpu)
                .model()?;
            let v: Vec<u8> = Vec::<u8>::try_from(y.f_flatten(0, -1).model()?).model()?;
            for (a, b) in votes.iter_mut().zip(&v) {
                *a += *b;
            }
            let own: Vec<bool> = crop(&v, pd, grid.iso_dims).into_iter().map(|b| b != 0).collect();
            members.push(grid.upsample_mask(&own, hu)?);
        }
        let half = nets.len() / 2;
        let vote: Vec<bool> = crop(&votes, pd, grid.iso_dims).into_iter().map(|c| usize::from(c) > half).collect();
        Ok(Segmentation { mask: grid.upsample_mask(&vote, hu)?, members, iso_mm: grid.iso })
    }
}

/// One training exam on its isotropic grid, padded.
#[derive(Debug, Clone)]
pub struct CacSample {
    /// Network input, `[k][j][i]` padded to `dims`.
    pub input: Vec<f32>,
    /// Target 0/1 (coronary calcium, downsampled by any).
    pub target: Vec<f32>,
    /// Padded isotropic size `[i, j, k]`.
    pub dims: [usize; 3],
}

impl CacSample {
    /// A sample from a CT (HU) and its coronary calcium mask on the original grid.
    pub fn new(hu: &[f32], truth: &[bool], dims: [usize; 3], spacing: [f64; 3], multiple: usize) -> Result<Self> {
        let grid = IsoGrid::new(dims, spacing, iso_spacing(spacing[2]))?;
        let input = grid.downsample_ct(hu)?;
        let target: Vec<f32> = grid.downsample_mask(truth)?.into_iter().map(f32::from).collect();
        let (input, pd) = pad_to_multiple(&input, grid.iso_dims, multiple, 0.0);
        let (target, _) = pad_to_multiple(&target, grid.iso_dims, multiple, 0.0);
        Ok(CacSample { input, target, dims: pd })
    }
}

/// Training options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacTrainOptions {
    /// Epochs per member.
    pub epochs: usize,
    /// Random crops per training exam per epoch.
    pub crops_per_exam: usize,
    /// Crop size `[i, j, k]` (multiples of 8; clamped to the exam).
    pub crop: [usize; 3],
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of the first member (member m uses seed + m).
    pub seed: u64,
    /// Device request.
    pub device: Option<String>,
    /// Architecture.
    pub config: Config,
}

impl Default for CacTrainOptions {
    fn default() -> Self {
        CacTrainOptions {
            epochs: 12,
            crops_per_exam: 2,
            crop: [48, 48, 32],
            learning_rate: 2e-3,
            seed: 1,
            device: None,
            config: Config { base_width: 8, levels: 4 },
        }
    }
}

/// One epoch of one member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacEpoch {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training Dice loss.
    pub train_loss: f64,
    /// Validation Dice loss (global over the validation exams).
    pub validation_loss: f64,
    /// Wall time, s.
    pub seconds: f64,
}

/// Soft Dice loss 1 − (2Σpg + 1)/(Σp + Σg + 1) of probabilities `p` and targets `g`.
pub fn dice_loss(p: &Tensor, g: &Tensor) -> Result<Tensor> {
    let inter = p.f_mul(g).model()?.f_sum(Kind::Float).model()?;
    let sums = p.f_sum(Kind::Float).model()?.f_add(&g.f_sum(Kind::Float).model()?).model()?;
    let dice =
        inter.f_mul_scalar(2.0).model()?.f_add_scalar(1.0).model()?.f_div(&sums.f_add_scalar(1.0).model()?).model()?;
    dice.f_neg().model()?.f_add_scalar(1.0).model()
}

fn tensor(data: &[f32], dims: [usize; 3], device: Device) -> Result<Tensor> {
    Tensor::f_from_slice(data)
        .model()?
        .f_reshape([1, 1, dims[2] as i64, dims[1] as i64, dims[0] as i64])
        .model()?
        .f_to_device(device)
        .model()
}

/// A random crop of `s` of size `c`; with probability ½ one that holds a calcium voxel.
fn random_crop(s: &CacSample, c: [usize; 3], rng: &mut SplitMix64) -> (Vec<f32>, Vec<f32>, [usize; 3]) {
    let c = [0, 1, 2].map(|a| c[a].min(s.dims[a]));
    let positives: Vec<usize> = s.target.iter().enumerate().filter(|(_, v)| **v > 0.5).map(|(i, _)| i).collect();
    let start: [usize; 3] = if !positives.is_empty() && rng.uniform() < 0.5 {
        let p = positives[(rng.next_u64() % positives.len() as u64) as usize];
        let at = [p % s.dims[0], (p / s.dims[0]) % s.dims[1], p / (s.dims[0] * s.dims[1])];
        [0, 1, 2].map(|a| {
            let lo = at[a].saturating_sub(c[a] - 1);
            let hi = at[a].min(s.dims[a] - c[a]);
            lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize
        })
    } else {
        [0, 1, 2].map(|a| (rng.next_u64() % (s.dims[a] - c[a] + 1) as u64) as usize)
    };
    let (mut x, mut y) = (Vec::with_capacity(c.iter().product()), Vec::with_capacity(c.iter().product()));
    for k in 0..c[2] {
        for j in 0..c[1] {
            let off = start[0] + s.dims[0] * (start[1] + j + s.dims[1] * (start[2] + k));
            x.extend_from_slice(&s.input[off..off + c[0]]);
            y.extend_from_slice(&s.target[off..off + c[0]]);
        }
    }
    (x, y, c)
}

/// Train one member on `train` (Adam; the rate halves after half and after three quarters of the
/// epochs), choosing the epoch with the lowest validation Dice loss on
/// `validation`; returns its weights (safetensors bytes) and history. `progress(epoch, loss)`
/// is called after every epoch.
pub fn train_member(
    train: &[CacSample],
    validation: &[CacSample],
    options: &CacTrainOptions,
    member: usize,
    progress: &mut dyn FnMut(&CacEpoch),
) -> Result<(Vec<u8>, Vec<CacEpoch>, f64)> {
    if train.is_empty() || validation.is_empty() {
        return Err(Error::invalid_argument("training needs at least one training and one validation exam"));
    }
    let m = options.config.multiple();
    if options.crop.iter().any(|&c| c == 0 || c % m != 0) {
        return Err(Error::invalid_argument(format!("crop sizes must be multiples of {m}: {:?}", options.crop)));
    }
    let device = runtime::choose_device(options.device.as_deref())?;
    if device == Device::Cpu {
        runtime::use_cpu_threads();
    }
    let seed = options.seed + member as u64;
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let net = CacUNet::new(&vs.root(), &options.config)?;
    let mut opt = nn::Adam::default().build(&vs, options.learning_rate).model()?;
    let mut rng = SplitMix64::new(seed ^ 0xCAC7_2A17);
    let mut log = Vec::new();
    let (mut best, mut best_loss) = (Vec::new(), f64::INFINITY);
    let tmp = tempfile_path(seed);
    for epoch in 1..=options.epochs {
        let started = std::time::Instant::now();
        // The rate halves after half and again after three quarters of the epochs.
        let decay = if 4 * epoch > 3 * options.epochs + 3 {
            0.25
        } else if 2 * epoch > options.epochs + 1 {
            0.5
        } else {
            1.0
        };
        opt.set_lr(options.learning_rate * decay);
        let mut order: Vec<usize> =
            (0..train.len()).flat_map(|i| std::iter::repeat_n(i, options.crops_per_exam)).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut total = 0.0;
        for &i in &order {
            let (x, y, c) = random_crop(&train[i], options.crop, &mut rng);
            let (x, y) = (tensor(&x, c, device)?, tensor(&y, c, device)?);
            let p = net.forward(&x, true)?.f_sigmoid().model()?;
            let loss = dice_loss(&p, &y)?;
            opt.zero_grad();
            loss.f_backward().model()?;
            opt.step();
            total += loss.f_double_value(&[]).model()?;
        }
        let validation_loss = tch::no_grad(|| -> Result<f64> {
            let (mut inter, mut sums) = (0.0, 0.0);
            for s in validation {
                let p = net.forward(&tensor(&s.input, s.dims, device)?, false)?.f_sigmoid().model()?;
                let g = tensor(&s.target, s.dims, device)?;
                inter += p.f_mul(&g).model()?.f_sum(Kind::Float).model()?.f_double_value(&[]).model()?;
                sums += p.f_sum(Kind::Float).model()?.f_double_value(&[]).model()?
                    + g.f_sum(Kind::Float).model()?.f_double_value(&[]).model()?;
            }
            Ok(1.0 - (2.0 * inter + 1.0) / (sums + 1.0))
        })?;
        let e = CacEpoch {
            epoch,
            train_loss: total / order.len() as f64,
            validation_loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        progress(&e);
        log.push(e);
        if validation_loss < best_loss {
            best_loss = validation_loss;
            vs.save(&tmp).model()?;
            best = std::fs::read(&tmp).map_err(|e| Error::from(e).in_file(&tmp))?;
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Ok((best, log, best_loss))
}

fn tempfile_path(seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("imhost-cac-member-{}-{seed}.safetensors", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_loss_by_hand() {
        // p = [1, 0.5, 0], g = [1, 1, 0]: 1 − (2·1.5 + 1)/(1.5 + 2 + 1) = 1 − 4/4.5.
        let p = Tensor::from_slice(&[1.0f32, 0.5, 0.0]);
        let g = Tensor::from_slice(&[1.0f32, 1.0, 0.0]);
        let l = dice_loss(&p, &g).unwrap().double_value(&[]);
        assert!((l - (1.0 - 4.0 / 4.5)).abs() < 1e-6, "{l}");
    }

    #[test]
    fn crops_hold_calcium_half_the_time() {
        let dims = [16, 16, 16];
        let mut target = vec![0.0f32; 4096];
        target[5 + 16 * (6 + 16 * 7)] = 1.0;
        let s = CacSample { input: vec![0.5; 4096], target, dims };
        let mut rng = SplitMix64::new(3);
        let mut with = 0;
        for _ in 0..200 {
            let (x, y, c) = random_crop(&s, [8, 8, 8], &mut rng);
            assert_eq!((x.len(), c), (512, [8, 8, 8]));
            with += usize::from(y.iter().any(|&v| v > 0.5));
        }
        assert!((90..=160).contains(&with), "{with} of 200");
    }
}
