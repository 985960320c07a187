//! Training of the perfusion U-Net on (input, target maps) slices — the paper's recipe (§2.3):
//! MSE loss, SGD with the learning rate decayed when the validation loss plateaus; Adam as an
//! option. The split is by case (no slice of a validation case is seen in training), the seed
//! fixes initialisation and order, a checkpoint is written after every epoch and `resume`
//! continues from it (the optimiser's momentum restarts).
//!
//! The loss is the mean squared error over brain voxels: outside the brain the maps are 0 by
//! construction and never read, so they would only dilute the gradient.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

use imhost_core::phantom::ctp::SplitMix64;

use crate::runtime::{self, Error, OrModel, Result};
use crate::unet::{Config, PerfusionUNet};

/// One training slice.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `[T, H, W]` input.
    pub input: Vec<f32>,
    /// `[3, H, W]` targets in [0, 1] (CBV, CBF, TTP).
    pub target: Vec<f32>,
    /// `[H, W]` 1 inside the brain.
    pub mask: Vec<f32>,
    /// Rows and columns (multiples of 16).
    pub size: [usize; 2],
    /// The case it came from (the split is by case).
    pub case: usize,
}

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum (the paper).
    Sgd,
    /// Adam.
    Adam,
}

/// Training options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrainOptions {
    /// Epochs.
    pub epochs: usize,
    /// Slices per batch.
    pub batch_size: usize,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Fraction of cases held out for validation.
    pub validation_fraction: f64,
    /// Epochs without validation improvement before the rate is multiplied by `decay`.
    pub plateau_patience: usize,
    /// Learning-rate decay factor on a plateau.
    pub decay: f64,
    /// Seed of initialisation, split and order.
    pub seed: u64,
    /// Device request (`None`: `IMHOST_DEVICE`, else auto).
    pub device: Option<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 30,
            batch_size: 8,
            optimizer: Optimizer::Sgd,
            learning_rate: 0.05,
            momentum: 0.9,
            validation_fraction: 0.15,
            plateau_patience: 2,
            decay: 0.5,
            seed: 1,
            device: None,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
    pub validation_loss: f64,
    /// Wall time (s).
    pub seconds: f64,
}

/// Progress of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchProgress {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Batch within the epoch (1-based).
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Running mean loss of the epoch.
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    config: Config,
    epoch: usize,
    learning_rate: f64,
    best_validation_loss: f64,
    bad_epochs: usize,
    log: Vec<EpochLog>,
}

/// The trained network (best validation loss) and its history.
pub struct Trained {
    /// Variables of the best epoch.
    pub vs: nn::VarStore,
    /// The network.
    pub net: PerfusionUNet,
    /// Per-epoch figures.
    pub log: Vec<EpochLog>,
    /// Best validation loss.
    pub best_validation_loss: f64,
    /// Training and validation case counts.
    pub cases: (usize, usize),
    /// The device trained on.
    pub device: Device,
}

/// Split case ids into (training, validation) with the seed.
fn split_cases(samples: &[Sample], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut cases: Vec<usize> = samples.iter().map(|s| s.case).collect();
    cases.sort_unstable();
    cases.dedup();
    let mut rng = SplitMix64::new(seed ^ 0x0073_706c_6974);
    for i in (1..cases.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        cases.swap(i, j);
    }
    let n_val = ((cases.len() as f64 * fraction).round() as usize).clamp(usize::from(cases.len() > 1), cases.len() / 2);
    let val = cases[..n_val].to_vec();
    let train = cases[n_val..].to_vec();
    (train, val)
}

/// Batches of sample indices with equal size, shuffled.
fn batches(indices: &[usize], samples: &[Sample], batch: usize, rng: Option<&mut SplitMix64>) -> Vec<Vec<usize>> {
    let mut order = indices.to_vec();
    if let Some(rng) = rng {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    let mut groups: Vec<([usize; 2], Vec<usize>)> = Vec::new();
    for i in order {
        match groups.iter_mut().find(|(s, _)| *s == samples[i].size) {
            Some((_, g)) => g.push(i),
            None => groups.push((samples[i].size, vec![i])),
        }
    }
    groups.into_iter().flat_map(|(_, g)| g.chunks(batch.max(1)).map(<[usize]>::to_vec).collect::<Vec<_>>()).collect()
}

fn stack(samples: &[Sample], batch: &[usize], device: Device) -> Result<(Tensor, Tensor, Tensor)> {
    let [h, w] = samples[batch[0]].size;
    let t = samples[batch[0]].input.len() / (h * w);
    let b = batch.len() as i64;
    let gather = |f: &dyn Fn(&Sample) -> &[f32], c: usize| -> Result<Tensor> {
        let mut v = Vec::with_capacity(batch.len() * c * h * w);
        for &i in batch {
            v.extend_from_slice(f(&samples[i]));
        }
        Tensor::f_from_slice(&v)
            .model()?
            .f_reshape([b, c as i64, h as i64, w as i64])
            .model()?
            .f_to_device(device)
            .model()
    };
    Ok((gather(&|s| &s.input, t)?, gather(&|s| &s.target, 3)?, gather(&|s| &s.mask, 1)?))
}

fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = pred.f_sub(target).model()?;
    let sq = d.f_mul(&d).model()?.f_mul(mask).model()?;
    let denominator = mask.f_sum(Kind::Float).model()?.f_mul_scalar(3.0).model()?.f_clamp_min(1.0).model()?;
    sq.f_sum(Kind::Float).model()?.f_div(&denominator).model()
}

/// Mean masked MSE over `indices` (no gradient, evaluation mode).
fn evaluate(net: &PerfusionUNet, samples: &[Sample], indices: &[usize], batch: usize, device: Device) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let (mut sum, mut weight) = (0.0, 0.0);
    for bt in batches(indices, samples, batch, None) {
        let (x, y, m) = stack(samples, &bt, device)?;
        let loss = masked_mse(&net.forward(&x, false)?, &y, &m)?.f_double_value(&[]).model()?;
        let wsum = m.f_sum(Kind::Float).model()?.f_double_value(&[]).model()?;
        sum += loss * wsum;
        weight += wsum;
    }
    Ok(if weight > 0.0 { sum / weight } else { f64::NAN })
}

/// Train `config` on `samples`, writing `out/checkpoint.safetensors` + `out/checkpoint.json`
/// after each epoch and `out/best.safetensors` on every validation improvement. With `resume`
/// it continues from the checkpoint in `out`.
pub fn train(
    samples: &[Sample],
    config: &Config,
    options: &TrainOptions,
    out: &Path,
    resume: bool,
    progress: &mut dyn FnMut(&BatchProgress),
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<Trained> {
    config.validate()?;
    if samples.is_empty() {
        return Err(Error::invalid_argument("no training slices"));
    }
    if let Some(s) = samples.iter().find(|s| {
        s.input.len() != config.time_points * s.size[0] * s.size[1]
            || s.target.len() != 3 * s.size[0] * s.size[1]
            || s.mask.len() != s.size[0] * s.size[1]
            || s.size[0] % PerfusionUNet::MULTIPLE != 0
            || s.size[1] % PerfusionUNet::MULTIPLE != 0
    }) {
        return Err(Error::shape(format!(
            "a slice of case {} does not fit the network ({} time points, sides multiples of 16): size {:?}",
            s.case, config.time_points, s.size
        )));
    }
    if !(options.learning_rate > 0.0 && options.epochs > 0 && options.batch_size > 0) {
        return Err(Error::invalid_argument("epochs, batch size and learning rate must be positive"));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::from(e).in_file(out))?;
    let device = runtime::choose_device(options.device.as_deref())?;
    tch::manual_seed(options.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = PerfusionUNet::new(&vs.root(), config)?;
    let (train_cases, val_cases) = split_cases(samples, options.validation_fraction, options.seed);
    let train_idx: Vec<usize> = (0..samples.len()).filter(|&i| train_cases.contains(&samples[i].case)).collect();
    let val_idx: Vec<usize> = (0..samples.len()).filter(|&i| val_cases.contains(&samples[i].case)).collect();
    if train_idx.is_empty() || val_idx.is_empty() {
        return Err(Error::invalid_argument(format!(
            "need at least two cases to split into training and validation; got {}",
            train_cases.len() + val_cases.len()
        )));
    }
    let ckpt_json = out.join("checkpoint.json");
    let ckpt_weights = out.join("checkpoint.safetensors");
    let best_weights = out.join("best.safetensors");
    let mut state = Checkpoint {
        config: *config,
        epoch: 0,
        learning_rate: options.learning_rate,
        best_validation_loss: f64::INFINITY,
        bad_epochs: 0,
        log: vec![],
    };
    if resume && ckpt_json.exists() {
        let text = std::fs::read_to_string(&ckpt_json).map_err(|e| Error::from(e).in_file(&ckpt_json))?;
        state = serde_json::from_str(&text).map_err(|e| Error::format(format!("{}: {e}", ckpt_json.display())))?;
        if state.config != *config {
            return Err(Error::invalid_argument(format!(
                "the checkpoint in {} is for {:?}, not {:?}",
                out.display(),
                state.config,
                config
            )));
        }
        vs.load(&ckpt_weights).model().map_err(|e| e.context(ckpt_weights.display()))?;
        tracing::info!(epoch = state.epoch, "resuming");
    }
    let mut opt = match options.optimizer {
        Optimizer::Sgd => nn::Sgd { momentum: options.momentum, ..Default::default() }.build(&vs, state.learning_rate),
        Optimizer::Adam => nn::Adam::default().build(&vs, state.learning_rate),
    }
    .model()?;
    let mut rng = SplitMix64::new(options.seed ^ ((state.epoch as u64) << 32));
    for epoch in state.epoch + 1..=options.epochs {
        let started = std::time::Instant::now();
        opt.set_lr(state.learning_rate);
        let bts = batches(&train_idx, samples, options.batch_size, Some(&mut rng));
        let (mut sum, mut count) = (0.0, 0usize);
        for (n, bt) in bts.iter().enumerate() {
            let (x, y, m) = stack(samples, bt, device)?;
            let loss = masked_mse(&net.forward(&x, true)?, &y, &m)?;
            opt.zero_grad();
            loss.f_backward().model()?;
            opt.step();
            let l = loss.f_double_value(&[]).model()?;
            if !l.is_finite() {
                return Err(Error::model(format!(
                    "the training loss diverged at epoch {epoch} (learning rate {}): lower it",
                    state.learning_rate
                )));
            }
            sum += l;
            count += 1;
            progress(&BatchProgress {
                epoch,
                epochs: options.epochs,
                batch: n + 1,
                batches: bts.len(),
                loss: sum / count as f64,
            });
        }
        let validation_loss = evaluate(&net, samples, &val_idx, options.batch_size, device)?;
        let entry = EpochLog {
            epoch,
            learning_rate: state.learning_rate,
            train_loss: sum / count.max(1) as f64,
            validation_loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&entry);
        state.log.push(entry);
        if validation_loss < state.best_validation_loss {
            state.best_validation_loss = validation_loss;
            state.bad_epochs = 0;
            vs.save(&best_weights).model()?;
        } else {
            state.bad_epochs += 1;
            if state.bad_epochs >= options.plateau_patience {
                state.learning_rate *= options.decay;
                state.bad_epochs = 0;
            }
        }
        state.epoch = epoch;
        vs.save(&ckpt_weights).model()?;
        let text = serde_json::to_string_pretty(&state).map_err(|e| Error::internal(e.to_string()))?;
        imhost_core::io::output::write_text(&ckpt_json, &text)?;
    }
    if best_weights.exists() {
        vs.load(&best_weights).model()?;
    }
    Ok(Trained {
        vs,
        net,
        log: state.log,
        best_validation_loss: state.best_validation_loss,
        cases: (train_cases.len(), val_cases.len()),
        device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A learnable toy task: the targets are smooth functions of the input's time channels.
    fn toy(cases: usize) -> Vec<Sample> {
        let (t, h, w) = (4, 16, 16);
        let mut rng = SplitMix64::new(9);
        (0..cases * 2)
            .map(|n| {
                let input: Vec<f32> = (0..t * h * w).map(|_| rng.uniform() as f32).collect();
                let mut target = vec![0.0f32; 3 * h * w];
                for p in 0..h * w {
                    let (a, b) = (input[p], input[h * w + p]);
                    target[p] = 0.5 * a;
                    target[h * w + p] = 0.5 * b;
                    target[2 * h * w + p] = 0.25 * (a + b);
                }
                Sample { input, target, mask: vec![1.0; h * w], size: [h, w], case: n / 2 }
            })
            .collect()
    }

    #[test]
    fn a_short_run_lowers_the_loss_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let samples = toy(6);
        let cfg = Config { time_points: 4, base_width: 4, outputs: 3, batch_norm: true };
        let opts = TrainOptions {
            epochs: 6,
            batch_size: 4,
            optimizer: Optimizer::Adam,
            learning_rate: 3e-3,
            device: Some("cpu".into()),
            ..TrainOptions::default()
        };
        let trained = train(&samples, &cfg, &opts, dir.path(), false, &mut |_| {}, &mut |_| {}).unwrap();
        let first = trained.log[0].train_loss;
        let last = trained.log.last().unwrap().train_loss;
        assert!(last < 0.7 * first, "training loss {first} → {last}");
        assert_eq!(trained.cases, (5, 1), "15 % of 6 cases, at least one");
        assert!(dir.path().join("best.safetensors").exists() && dir.path().join("checkpoint.json").exists());
        // Resume to 8 epochs: the log continues from epoch 7.
        let more = TrainOptions { epochs: 8, ..opts };
        let resumed = train(&samples, &cfg, &more, dir.path(), true, &mut |_| {}, &mut |_| {}).unwrap();
        assert_eq!(resumed.log.iter().map(|e| e.epoch).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
        // A mismatching configuration is refused.
        let other = Config { base_width: 8, ..cfg };
        assert!(train(&samples, &other, &more, dir.path(), true, &mut |_| {}, &mut |_| {}).is_err());
    }

    #[test]
    fn split_is_by_case_and_seeded() {
        let samples = toy(10);
        let (a, b) = split_cases(&samples, 0.2, 3);
        assert_eq!((a.len(), b.len()), (8, 2));
        assert!(a.iter().all(|c| !b.contains(c)));
        assert_eq!(split_cases(&samples, 0.2, 3), (a, b), "same seed, same split");
    }
}
