//! The segmenters of the stroke-lesion paper (Wang et al., "Automatic ischemic stroke lesion
//! segmentation from computed tomography perfusion images by image synthesis and
//! attention-based deep neural networks", `../shared/papers/stroke-lesion-pseudo-dwi-wang.txt`):
//!
//! - **UNet** (Ronneberger et al. 2015) as the paper's baseline: double 3×3 convolution blocks
//!   (convolution without bias → normalisation → ReLU, twice) of 64, 128, 256, 512 and 1024
//!   filters, 2×2 max pooling, 2×2 stride-2 transposed convolutions halving the width,
//!   concatenation with the skip, a 1×1 convolution to the C = 2 classes (eq. 10);
//! - **SLNet** (§3.3, Fig. 5): the same UNet with every batch norm replaced by **Switchable
//!   Normalization** (Luo et al. 2018) and a **Squeeze-and-Excitation** block (Hu et al. 2018)
//!   after each convolution block of the encoding path.
//!
//! Table 3 gives 31.04 M parameters for UNet and SLNet without SE, and 33.84 M for SLNet and
//! SLNet without SN, on the four perfusion maps F_o. Counted on this definition: UNet 4 → 2 has
//! 31,038,274; SN adds 6 mixing weights per normalisation layer (18 layers: 108); SE blocks
//! with reduction **r = 1** after the five encoder blocks add 2,797,440 (2C² + 2C per block),
//! giving 33,835,822 — Table 3's 33.84 M. (The SE paper's usual r = 16 would give 31.22 M, so
//! Table 3 implies r = 1; `se_reduction` keeps it configurable.)
//!
//! Switchable Normalization follows the authors' reference code: per (sample, channel) the
//! instance-norm mean and unbiased variance over the pixels; layer-norm statistics as their
//! mean over channels (variance through E[x²] − mean²), batch-norm statistics as their mean over
//! the batch (moving averages with momentum 0.997 for inference); the three means and the three
//! variances mixed by softmax weights (`mean_weight`, `var_weight`, initialised to 1), then
//! `(x − μ)/√(σ² + 1e-5)·γ + β`.
//!
//! Input `[batch, C_in, H, W]`, H and W multiples of 16; output logits `[batch, classes, H, W]`
//! (the softmax gives P). Names mirror the PyTorch definition in `benches/slnet_params.py`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::runtime::{OrModel, Result};

/// The normalisation of the convolution blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Batch normalization (UNet, SLNet w/o SN).
    Batch,
    /// Switchable normalization (SLNet).
    Switchable,
}

/// Architecture configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Input channels (4: CBF, CBV, MTT, Tmax for F_o; 1 for a pseudo-DWI).
    pub in_channels: usize,
    /// Output classes (2 in the paper).
    pub classes: usize,
    /// Filters of the first block (64; then ×2 per level, 1024 at the bottom).
    pub base_width: usize,
    /// Normalisation.
    pub norm: Norm,
    /// SE blocks after the encoder blocks.
    pub se: bool,
    /// SE reduction ratio (1 reproduces Table 3).
    pub se_reduction: usize,
}

impl Config {
    /// The paper's UNet on F_o.
    pub const UNET: Config =
        Config { in_channels: 4, classes: 2, base_width: 64, norm: Norm::Batch, se: false, se_reduction: 1 };
    /// The paper's SLNet on F_o.
    pub const SLNET: Config =
        Config { in_channels: 4, classes: 2, base_width: 64, norm: Norm::Switchable, se: true, se_reduction: 1 };
    /// H and W must be multiples of this.
    pub const MULTIPLE: usize = 16;

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=64).contains(&self.in_channels)
            && (1..=64).contains(&self.classes)
            && (2..=128).contains(&self.base_width)
            && (1..=64).contains(&self.se_reduction)
            && (!self.se || self.base_width % self.se_reduction == 0);
        if !ok {
            return Err(imhost_core::Error::invalid_argument(format!("invalid UNet/SLNet configuration {self:?}")));
        }
        Ok(())
    }
}

/// Switchable Normalization (Luo et al. 2018) of 2-D feature maps.
#[derive(Debug)]
pub struct SwitchNorm2d {
    weight: Tensor,
    bias: Tensor,
    mean_weight: Tensor,
    var_weight: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// Moving-average momentum of the batch statistics (the reference code's 0.997).
const SN_MOMENTUM: f64 = 0.997;
const EPS: f64 = 1e-5;

impl SwitchNorm2d {
    /// Variables under `p`: `weight`, `bias`, `mean_weight`, `var_weight` (trainable),
    /// `running_mean`, `running_var`.
    pub fn new(p: nn::Path, c: usize) -> Self {
        let c = c as i64;
        SwitchNorm2d {
            weight: p.ones("weight", &[1, c, 1, 1]),
            bias: p.zeros("bias", &[1, c, 1, 1]),
            mean_weight: p.ones("mean_weight", &[3]),
            var_weight: p.ones("var_weight", &[3]),
            running_mean: p.zeros_no_train("running_mean", &[1, c, 1]),
            running_var: p.zeros_no_train("running_var", &[1, c, 1]),
        }
    }

    /// Normalise `x` `[N, C, H, W]`; in training the batch statistics are used and the moving
    /// averages updated.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        let (n, c) = (size[0], size[1]);
        let flat = x.f_reshape([n, c, -1]).model()?;
        let mean_in = flat.f_mean_dim(-1, true, Kind::Float).model()?;
        let var_in = flat.f_var_dim(-1, true, true).model()?;
        let mean_ln = mean_in.f_mean_dim(1, true, Kind::Float).model()?;
        let temp = var_in.f_add(&mean_in.f_square().model()?).model()?;
        let var_ln = temp.f_mean_dim(1, true, Kind::Float).model()?.f_sub(&mean_ln.f_square().model()?).model()?;
        let (mean_bn, var_bn) = if train {
            let m = mean_in.f_mean_dim(0, true, Kind::Float).model()?;
            let v = temp.f_mean_dim(0, true, Kind::Float).model()?.f_sub(&m.f_square().model()?).model()?;
            tch::no_grad(|| -> Result<()> {
                let mut rm = self.running_mean.shallow_clone();
                let mut rv = self.running_var.shallow_clone();
                let new_m =
                    rm.f_mul_scalar(SN_MOMENTUM).model()?.f_add(&m.f_mul_scalar(1.0 - SN_MOMENTUM).model()?).model()?;
                let new_v =
                    rv.f_mul_scalar(SN_MOMENTUM).model()?.f_add(&v.f_mul_scalar(1.0 - SN_MOMENTUM).model()?).model()?;
                rm.f_copy_(&new_m).model()?;
                rv.f_copy_(&new_v).model()?;
                Ok(())
            })?;
            (m, v)
        } else {
            (self.running_mean.shallow_clone(), self.running_var.shallow_clone())
        };
        let mw = self.mean_weight.f_softmax(0, Kind::Float).model()?;
        let vw = self.var_weight.f_softmax(0, Kind::Float).model()?;
        let mix = |w: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor| -> Result<Tensor> {
            let t = a.f_mul(&w.f_get(0).model()?).model()?;
            let t = t.f_add(&b.f_mul(&w.f_get(1).model()?).model()?).model()?;
            t.f_add(&c.f_mul(&w.f_get(2).model()?).model()?).model()
        };
        let mean = mix(&mw, &mean_in, &mean_ln, &mean_bn)?;
        let var = mix(&vw, &var_in, &var_ln, &var_bn)?;
        let y = flat.f_sub(&mean).model()?.f_div(&var.f_add_scalar(EPS).model()?.f_sqrt().model()?).model()?;
        y.f_reshape(size.as_slice()).model()?.f_mul(&self.weight).model()?.f_add(&self.bias).model()
    }
}

#[derive(Debug)]
enum NormLayer {
    Batch(nn::BatchNorm),
    Switchable(SwitchNorm2d),
}

impl NormLayer {
    fn new(p: nn::Path, c: usize, norm: Norm) -> Self {
        match norm {
            Norm::Batch => NormLayer::Batch(nn::batch_norm2d(p, c as i64, Default::default())),
            Norm::Switchable => NormLayer::Switchable(SwitchNorm2d::new(p, c)),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            NormLayer::Batch(b) => x
                .f_batch_norm(
                    b.ws.as_ref(),
                    b.bs.as_ref(),
                    Some(&b.running_mean),
                    Some(&b.running_var),
                    train,
                    0.1,
                    EPS,
                    true,
                )
                .model(),
            NormLayer::Switchable(s) => s.forward(x, train),
        }
    }
}

/// (3×3 conv without bias → norm → ReLU) × 2.
#[derive(Debug)]
struct DoubleConv {
    conv1: nn::Conv2D,
    norm1: NormLayer,
    conv2: nn::Conv2D,
    norm2: NormLayer,
}

impl DoubleConv {
    fn new(p: nn::Path, cin: usize, cout: usize, norm: Norm) -> Self {
        let c = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        DoubleConv {
            conv1: nn::conv2d(&p / "conv1", cin as i64, cout as i64, 3, c),
            norm1: NormLayer::new(&p / "norm1", cout, norm),
            conv2: nn::conv2d(&p / "conv2", cout as i64, cout as i64, 3, c),
            norm2: NormLayer::new(&p / "norm2", cout, norm),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = x.f_conv2d(&self.conv1.ws, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1).model()?;
        let y = self.norm1.forward(&y, train)?.f_relu().model()?;
        let y = y.f_conv2d(&self.conv2.ws, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1).model()?;
        self.norm2.forward(&y, train)?.f_relu().model()
    }
}

/// Squeeze-and-Excitation: global average pool → FC (C → C/r) → ReLU → FC (C/r → C) →
/// sigmoid → channel scale.
#[derive(Debug)]
struct SeBlock {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl SeBlock {
    fn new(p: nn::Path, c: usize, r: usize) -> Self {
        SeBlock {
            fc1: nn::linear(&p / "fc1", c as i64, (c / r) as i64, Default::default()),
            fc2: nn::linear(&p / "fc2", (c / r) as i64, c as i64, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float).model()?;
        let s = s.f_linear(&self.fc1.ws, self.fc1.bs.as_ref()).model()?.f_relu().model()?;
        let s = s.f_linear(&self.fc2.ws, self.fc2.bs.as_ref()).model()?.f_sigmoid().model()?;
        let size = s.size();
        x.f_mul(&s.f_reshape([size[0], size[1], 1, 1]).model()?).model()
    }
}

/// UNet or SLNet (by its [`Config`]).
#[derive(Debug)]
pub struct SegNet {
    config: Config,
    encoders: Vec<DoubleConv>,
    se: Vec<SeBlock>,
    ups: Vec<nn::ConvTranspose2D>,
    decoders: Vec<DoubleConv>,
    head: nn::Conv2D,
}

impl SegNet {
    /// Variables under `p`: `enc.0..4` (the five encoder blocks), `se.0..4` when SE is on,
    /// `up.0..3` and `dec.0..3` from the bottom up, `head`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let w: Vec<usize> = (0..5).map(|l| config.base_width << l).collect();
        let mut cin = config.in_channels;
        let (mut encoders, mut se) = (Vec::new(), Vec::new());
        for (l, &c) in w.iter().enumerate() {
            encoders.push(DoubleConv::new(p / "enc" / l, cin, c, config.norm));
            if config.se {
                se.push(SeBlock::new(p / "se" / l, c, config.se_reduction));
            }
            cin = c;
        }
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for (d, &c) in w[..4].iter().rev().enumerate() {
            let up = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
            ups.push(nn::conv_transpose2d(p / "up" / d, (2 * c) as i64, c as i64, 2, up));
            decoders.push(DoubleConv::new(p / "dec" / d, 2 * c, c, config.norm));
        }
        let head = nn::conv2d(p / "head", config.base_width as i64, config.classes as i64, 1, Default::default());
        Ok(SegNet { config: *config, encoders, se, ups, decoders, head })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `x` `[batch, C_in, H, W]` → logits `[batch, classes, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        let m = Config::MULTIPLE as i64;
        if size.len() != 4
            || size[1] != self.config.in_channels as i64
            || size[2..].iter().any(|&s| s % m != 0 || s == 0)
        {
            return Err(imhost_core::Error::shape(format!(
                "the network takes [batch, {}, H, W] with H, W multiples of {m}; got {size:?}",
                self.config.in_channels
            )));
        }
        let mut skips = Vec::with_capacity(4);
        let mut y = x.shallow_clone();
        for (l, e) in self.encoders.iter().enumerate() {
            if l > 0 {
                y = y.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).model()?;
            }
            y = e.forward(&y, train)?;
            if let Some(s) = self.se.get(l) {
                y = s.forward(&y)?;
            }
            if l < 4 {
                skips.push(y.shallow_clone());
            }
        }
        for ((up, dec), skip) in self.ups.iter().zip(&self.decoders).zip(skips.iter().rev()) {
            let u = y.f_conv_transpose2d(&up.ws, up.bs.as_ref(), [2, 2], [0, 0], [0, 0], 1, [1, 1]).model()?;
            y = dec.forward(&Tensor::f_cat(&[skip, &u], 1).model()?, train)?;
        }
        y.f_conv2d(&self.head.ws, self.head.bs.as_ref(), [1, 1], [0, 0], [1, 1], 1).model()
    }
}

/// §4.1: "The weights of all networks were initialized by Xavier method": every convolution,
/// transposed convolution and linear weight (a variable named `…weight` of two or more
/// dimensions, outside the normalisation layers) drawn uniformly in ±√(6 / (fan_in + fan_out))
/// (Glorot & Bengio 2010; fan = channels × kernel area, as PyTorch's `xavier_uniform_`);
/// biases 0; normalisation scales stay 1.
pub fn xavier_init(vs: &nn::VarStore) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (name, mut v) in vs.variables() {
            let size = v.size();
            if name.ends_with("bias") && !name.contains("norm") {
                let _ = v.f_zero_().model()?;
            }
            if !name.ends_with("weight") || size.len() < 2 || name.contains("norm") {
                continue;
            }
            let field: i64 = size[2..].iter().product();
            // Convolution [out, in, k, k]; transposed convolution [in, out, k, k]; linear [out, in]:
            // the Glorot bound is symmetric in the two fans, so the order does not matter.
            let (a, b) = (size[0] * field, size[1] * field);
            let bound = (6.0 / (a + b) as f64).sqrt();
            let _ = v.f_uniform_(-bound, bound).model()?;
        }
        Ok(())
    })
}

/// §4.1's schedule: RMSprop at 0.002, multiplied by 0.2 after 60 % of the epochs (the paper:
/// after 180 of 300). `epoch` counts from 0.
pub fn learning_rate(epoch: usize, epochs: usize) -> f64 {
    if 10 * epoch >= 6 * epochs { 0.002 * 0.2 } else { 0.002 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xavier_init_and_the_schedule() {
        let (vs, _) = built(&Config { base_width: 8, ..Config::SLNET });
        xavier_init(&vs).unwrap();
        let v = vs.variables();
        let w = &v["enc.1.conv1.weight"]; // [16, 8, 3, 3]
        let bound = (6.0 / ((16 + 8) * 9) as f64).sqrt();
        let (lo, hi) = (w.min().double_value(&[]), w.max().double_value(&[]));
        assert!(lo >= -bound && hi <= bound && hi > 0.8 * bound && lo < -0.8 * bound, "{lo} {hi} {bound}");
        // Uniform on ±b has variance b²/3 = 2 / (fan_in + fan_out).
        let var = w.var(true).double_value(&[]);
        assert!((var - bound * bound / 3.0).abs() < 0.15 * bound * bound / 3.0, "{var}");
        assert_eq!(v["se.0.fc1.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(v["enc.0.norm1.weight"].min().double_value(&[]), 1.0, "normalisation scales stay 1");
        // The paper: 300 epochs, ×0.2 after 180.
        assert_eq!(learning_rate(179, 300), 0.002);
        assert!((learning_rate(180, 300) - 0.0004).abs() < 1e-12);
    }

    fn count(vs: &nn::VarStore) -> usize {
        vs.trainable_variables().iter().map(|t| t.numel()).sum()
    }

    fn built(config: &Config) -> (nn::VarStore, SegNet) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = SegNet::new(&vs.root(), config).unwrap();
        (vs, net)
    }

    /// Table 3: UNet 31.04 M, SLNet 33.84 M, SLNet w/o SE 31.04 M, SLNet w/o SN 33.84 M.
    #[test]
    fn parameter_counts_match_table_3() {
        let millions = |c: &Config| (count(&built(c).0) as f64 / 1e6 * 100.0).round() / 100.0;
        assert_eq!(count(&built(&Config::UNET).0), 31_038_274);
        assert_eq!(count(&built(&Config::SLNET).0), 33_835_822);
        assert_eq!(millions(&Config::UNET), 31.04);
        assert_eq!(millions(&Config::SLNET), 33.84);
        assert_eq!(millions(&Config { se: false, ..Config::SLNET }), 31.04);
        assert_eq!(millions(&Config { norm: Norm::Batch, ..Config::SLNET }), 33.84);
        // The SE paper's usual r = 16 would not match Table 3.
        assert_eq!(millions(&Config { se_reduction: 16, ..Config::SLNET }), 31.22);
    }

    /// The same networks defined in PyTorch (benches/slnet_params.py) wrote every state_dict
    /// name and shape; ours must match.
    #[test]
    fn state_dict_matches_the_pytorch_definition() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/slnet/state_dict.json");
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (name, config) in [("unet", Config::UNET), ("slnet", Config::SLNET)] {
            let f = &fixture[name];
            let (vs, _) = built(&config);
            let ours = vs.variables();
            let expected = f["tensors"].as_object().unwrap();
            assert_eq!(ours.len(), expected.len(), "{name}: tensor count");
            for (t, shape) in expected {
                let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(ours.get(t).map(|x| x.size()), Some(shape), "{name}: {t}");
            }
            assert_eq!(f["trainable_parameters"], count(&vs), "{name}");
        }
    }

    /// Switchable normalisation against a hand computation: with the mixing weights put all on
    /// one normaliser it is exactly that normaliser.
    #[test]
    fn switchable_norm_reduces_to_instance_layer_and_batch_norm() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let sn = SwitchNorm2d::new(vs.root() / "sn", 2);
        let x = Tensor::from_slice(&[
            1.0f32, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 0.0, 0.0, 2.0, 2.0, 5.0, 5.0, 5.0, 9.0,
        ])
        .reshape([2, 2, 2, 2]);
        let put = |w: [f32; 3]| {
            tch::no_grad(|| {
                let mut m = sn.mean_weight.shallow_clone();
                m.copy_(&Tensor::from_slice(&w));
                let mut v = sn.var_weight.shallow_clone();
                v.copy_(&Tensor::from_slice(&w));
            })
        };
        let big = 60.0f32;
        // Instance norm: each (sample, channel) over its 4 pixels, unbiased variance.
        put([big, 0.0, 0.0]);
        let y = sn.forward(&x, true).unwrap();
        let first: Vec<f32> = Vec::try_from(y.get(0).get(0).flatten(0, -1)).unwrap();
        let (m, v) = (2.5f32, (2.25 + 0.25 + 0.25 + 2.25) / 3.0);
        for (a, b) in first.iter().zip([1.0f32, 2.0, 3.0, 4.0]) {
            assert!((a - (b - m) / (v + 1e-5f32).sqrt()).abs() < 1e-4, "{a}");
        }
        // Batch norm: channel 0 over both samples' 8 pixels, variance E[x²] − mean² of the
        // per-instance statistics (the reference code's formula).
        put([0.0, 0.0, big]);
        let y = sn.forward(&x, true).unwrap();
        let vals = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 2.0, 2.0];
        let mean = vals.iter().sum::<f32>() / 8.0;
        let inst_var = [(2.25f32 + 0.25 + 0.25 + 2.25) / 3.0, 4.0 / 3.0];
        let inst_mean = [2.5f32, 1.0];
        let var = (inst_var[0] + inst_mean[0].powi(2) + inst_var[1] + inst_mean[1].powi(2)) / 2.0 - mean * mean;
        let got = y.double_value(&[1, 0, 1, 0]) as f32;
        assert!((got - (2.0 - mean) / (var + 1e-5).sqrt()).abs() < 1e-4, "{got}");
        // The moving averages moved towards the batch statistics.
        assert!(sn.running_mean.double_value(&[0, 0, 0]) > 0.0);
    }

    /// Switchable normalisation against the PyTorch reference on the same input: the training
    /// output and the inference output after that one moving-average update, within 1e-5.
    #[test]
    fn switchable_norm_matches_the_reference_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/slnet/state_dict.json");
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let f = &fixture["switchnorm"];
        let floats =
            |k: &str| -> Vec<f32> { f[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
        let shape: Vec<i64> = f["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let x = Tensor::from_slice(&floats("input")).reshape(shape.as_slice());
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let sn = SwitchNorm2d::new(vs.root() / "sn", shape[1] as usize);
        for (train, key) in [(true, "train"), (false, "eval")] {
            let y: Vec<f32> = Vec::try_from(sn.forward(&x, train).unwrap().flatten(0, -1)).unwrap();
            for (a, b) in y.iter().zip(floats(key)) {
                assert!((a - b).abs() < 1e-5, "{key}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn forward_shapes_and_bad_shapes() {
        let c = Config { base_width: 4, ..Config::SLNET };
        let (_vs, net) = built(&c);
        let kind = (Kind::Float, tch::Device::Cpu);
        let y = net.forward(&Tensor::rand([2, 4, 32, 48], kind), true).unwrap();
        assert_eq!(y.size(), [2, 2, 32, 48]);
        let y = net.forward(&Tensor::rand([1, 4, 32, 48], kind), false).unwrap();
        assert_eq!(y.size(), [1, 2, 32, 48]);
        assert!(net.forward(&Tensor::zeros([1, 4, 24, 32], kind), false).is_err());
        assert!(net.forward(&Tensor::zeros([1, 3, 32, 32], kind), false).is_err());
        assert!(Config { se_reduction: 3, ..c }.validate().is_err());
    }
}
