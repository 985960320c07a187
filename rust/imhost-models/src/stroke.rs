//! The end-to-end stroke-lesion network of Wang et al. (Fig. 2, §3.4): the feature extractor
//! Φ_e (a UNet on the C_e cropped frames I*, one output channel: F_h, eq. 4), the pseudo-DWI
//! generator Φ_g (a UNet on [F_o, F_l, F_h]: the four perfusion maps, the temporal MIP and F_h;
//! eq. 5), the context encoder Φ_c of the contextual loss and the segmenter Φ_s (SLNet, or UNet
//! for the comparison of Table 3) on the pseudo-DWI I_g (eq. 10), trained together on the total
//! loss of eq. 15 with RMSprop (§4.1). Slices are the unit, as in the paper (2-D networks on
//! thick-slice studies).
//!
//! Widths: the paper's networks have 64 filters in the first block; `base_width` scales all
//! four together (the phantom-trained default uses fewer, and says so).

use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::runtime::{OrModel, Result};
use crate::slnet::{Config as NetConfig, Norm, SegNet};
use crate::stroke_loss::{ContextEncoder, LossWeights, total_loss};

/// Configuration of the four networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrokeConfig {
    /// First-block filters of Φ_e, Φ_g and Φ_s (64 in the paper).
    pub base_width: usize,
    /// C_e (6).
    pub frames: usize,
    /// Perfusion maps in F_o (4: CBF, CBV, MTT, Tmax).
    pub maps: usize,
    /// Φ_s is SLNet (true) or the plain UNet.
    pub slnet: bool,
}

impl StrokeConfig {
    /// The paper's networks.
    pub const PAPER: StrokeConfig = StrokeConfig { base_width: 64, frames: 6, maps: 4, slnet: true };
}

/// The four networks on one `VarStore`.
#[derive(Debug)]
pub struct StrokeNet {
    config: StrokeConfig,
    phi_e: SegNet,
    phi_g: SegNet,
    phi_c: ContextEncoder,
    phi_s: SegNet,
}

/// What one forward pass gives.
#[derive(Debug)]
pub struct StrokeOutputs {
    /// F_h `[N, 1, H, W]`.
    pub features: Tensor,
    /// The pseudo-DWI I_g `[N, 1, H, W]`.
    pub pseudo_dwi: Tensor,
    /// Φ_s's class probabilities P `[N, 2, H, W]` (softmax).
    pub probabilities: Tensor,
}

impl StrokeNet {
    /// Create the networks under `p` (`phi_e`, `phi_g`, `phi_c`, `phi_s`).
    pub fn new(p: &nn::Path, config: &StrokeConfig) -> Result<Self> {
        let w = config.base_width;
        let unet = |cin: usize, classes: usize| NetConfig {
            in_channels: cin,
            classes,
            base_width: w,
            norm: Norm::Batch,
            se: false,
            se_reduction: 1,
        };
        let seg = if config.slnet {
            NetConfig { in_channels: 1, base_width: w, ..NetConfig::SLNET }
        } else {
            NetConfig { in_channels: 1, base_width: w, ..NetConfig::UNET }
        };
        Ok(StrokeNet {
            config: *config,
            phi_e: SegNet::new(&(p / "phi_e"), &unet(config.frames, 1))?,
            phi_g: SegNet::new(&(p / "phi_g"), &unet(config.maps + 2, 1))?,
            phi_c: ContextEncoder::new(&(p / "phi_c")),
            phi_s: SegNet::new(&(p / "phi_s"), &seg)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StrokeConfig {
        &self.config
    }

    /// `maps` `[N, maps, H, W]` (F_o), `mip` `[N, 1, H, W]` (F_l), `frames` `[N, C_e, H, W]` (I*).
    pub fn forward(&self, maps: &Tensor, mip: &Tensor, frames: &Tensor, train: bool) -> Result<StrokeOutputs> {
        let features = self.phi_e.forward(frames, train)?;
        let input = Tensor::f_cat(&[maps, mip, &features], 1).model()?;
        let pseudo_dwi = self.phi_g.forward(&input, train)?;
        let probabilities = self.phi_s.forward(&pseudo_dwi, train)?.f_softmax(1, Kind::Float).model()?;
        Ok(StrokeOutputs { features, pseudo_dwi, probabilities })
    }

    /// Eq. 15 on a batch: `dwi` `[N, 1, H, W]` (I_d), `lesion` `[N, 1, H, W]` (0/1), `attention`
    /// `[N, 1, H, W]` (eq. 9).
    pub fn loss(
        &self,
        out: &StrokeOutputs,
        dwi: &Tensor,
        lesion: &Tensor,
        attention: &Tensor,
        weights: &LossWeights,
    ) -> Result<Tensor> {
        let background = lesion.f_neg().model()?.f_add_scalar(1.0).model()?;
        let onehot = Tensor::f_cat(&[&background, lesion], 1).model()?;
        total_loss(&out.probabilities, &onehot, attention, &out.pseudo_dwi, &out.features, dwi, &self.phi_c, weights)
    }
}

/// One batch of slices for [`train_step`].
#[derive(Debug)]
pub struct StrokeBatch {
    /// F_o.
    pub maps: Tensor,
    /// F_l.
    pub mip: Tensor,
    /// I*.
    pub frames: Tensor,
    /// I_d.
    pub dwi: Tensor,
    /// Lesion 0/1.
    pub lesion: Tensor,
    /// Eq. 9's A.
    pub attention: Tensor,
}

/// One RMSprop step on eq. 15 (all four networks updated together); returns the loss.
pub fn train_step(net: &StrokeNet, opt: &mut nn::Optimizer, batch: &StrokeBatch, weights: &LossWeights) -> Result<f64> {
    let out = net.forward(&batch.maps, &batch.mip, &batch.frames, true)?;
    let loss = net.loss(&out, &batch.dwi, &batch.lesion, &batch.attention, weights)?;
    opt.zero_grad();
    loss.f_backward().model()?;
    opt.step();
    loss.f_double_value(&[]).model()
}

/// RMSprop over `vs` at `lr` (§4.1; PyTorch's defaults otherwise: α 0.99, ε 1e-8).
pub fn optimizer(vs: &nn::VarStore, lr: f64) -> Result<nn::Optimizer> {
    nn::RmsProp { alpha: 0.99, eps: 1e-8, wd: 0.0, momentum: 0.0, centered: false }.build(vs, lr).model()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny batch: a bright square lesion on the DWI, lower CBF over it in the maps.
    fn batch(n: i64) -> StrokeBatch {
        let kind = (Kind::Float, tch::Device::Cpu);
        let lesion = Tensor::zeros([n, 1, 32, 32], kind);
        let _ = lesion.narrow(2, 10, 8).narrow(3, 12, 8).fill_(1.0);
        let noise = |c: i64| Tensor::rand([n, c, 32, 32], kind) * 0.05;
        let maps = Tensor::ones([n, 4, 32, 32], kind) * 0.5 - lesion.repeat([1, 4, 1, 1]) * 0.3 + noise(4);
        let dwi = Tensor::ones([n, 1, 32, 32], kind) * 0.4 + &lesion * 0.5 + noise(1);
        let frames = Tensor::ones([n, 6, 32, 32], kind) * 0.3 - lesion.repeat([1, 6, 1, 1]) * 0.1 + noise(6);
        let mip = frames.amax([1i64].as_slice(), true);
        let mask: Vec<bool> =
            Vec::<f32>::try_from(lesion.get(0).flatten(0, -1)).unwrap().iter().map(|&v| v > 0.5).collect();
        let a = crate::stroke_loss::attention_map(&mask, 32, 32, 1.5, 50.0);
        let attention = Tensor::from_slice(&a).reshape([1, 1, 32, 32]).repeat([n, 1, 1, 1]);
        StrokeBatch { maps, mip, frames, dwi, lesion, attention }
    }

    #[test]
    fn shapes_and_end_to_end_training_lowers_the_loss() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config = StrokeConfig { base_width: 4, ..StrokeConfig::PAPER };
        let net = StrokeNet::new(&vs.root(), &config).unwrap();
        crate::slnet::xavier_init(&vs).unwrap();
        let b = batch(2);
        let out = net.forward(&b.maps, &b.mip, &b.frames, false).unwrap();
        assert_eq!(out.features.size(), [2, 1, 32, 32]);
        assert_eq!(out.pseudo_dwi.size(), [2, 1, 32, 32]);
        assert_eq!(out.probabilities.size(), [2, 2, 32, 32]);
        let mut opt = optimizer(&vs, crate::slnet::learning_rate(0, 10)).unwrap();
        let weights = LossWeights::PAPER;
        let first = train_step(&net, &mut opt, &b, &weights).unwrap();
        // Every network gets a gradient from eq. 15 (end to end), Φ_c's encoder included.
        for prefix in ["phi_e.", "phi_g.", "phi_c.", "phi_s."] {
            let g: f64 = vs
                .variables()
                .iter()
                .filter(|(n, v)| n.starts_with(prefix) && v.requires_grad())
                .map(|(_, v)| v.grad().abs().sum(Kind::Float).double_value(&[]))
                .sum();
            assert!(g > 0.0, "{prefix} got no gradient");
        }
        let mut last = first;
        for _ in 0..14 {
            last = train_step(&net, &mut opt, &b, &weights).unwrap();
        }
        assert!(last.is_finite() && last < first, "loss {first} → {last}");
    }

    #[test]
    fn the_paper_size_builds() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _ = StrokeNet::new(&vs.root(), &StrokeConfig::PAPER).unwrap();
        let count = |prefix: &str| -> i64 {
            vs.variables()
                .iter()
                .filter(|(n, v)| n.starts_with(prefix) && v.requires_grad())
                .map(|(_, v)| v.numel() as i64)
                .sum()
        };
        // Φ_s is SLNet on one channel: Table 3's SLNet less the first convolution's extra
        // input channels (3 × 64 × 9 weights fewer than on the four maps).
        assert_eq!(count("phi_s."), 33_835_822 - 3 * 64 * 9);
    }
}
