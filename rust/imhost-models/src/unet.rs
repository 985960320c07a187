//! The perfusion-map U-Net of Gava et al. 2023, "Neural network-derived perfusion maps: a
//! model-free approach to computed tomography perfusion in patients with acute ischemic stroke"
//! (Front. Neuroinform., doi:10.3389/fninf.2023.852105), §2.3 and Fig. 1.
//!
//! A U-Net (Ronneberger et al. 2015) whose input channels are the T time points of the filtered,
//! registered CTP slice and whose three output channels are CBV, CBF and TTP normalised to
//! [0, 1]. The paper's one change to the U-Net: **average pooling in place of max pooling** ("we
//! do not expect sparse features to be extracted"); the loss is the mean squared error.
//!
//! - Four encoder stages (two 3×3 convolutions + ReLU, then 2×2 average pooling), a bottleneck
//!   of two 3×3 convolutions, four decoder stages (2×2 stride-2 transposed convolution halving
//!   the channels, concatenation with the encoder's skip, two 3×3 convolutions + ReLU), a 1×1
//!   output convolution. Widths `w, 2w, 4w, 8w` and `16w` at the bottleneck; the paper's U-Net is
//!   `w = 64`.
//! - Convolutions are zero-padded ("same"), so the output has the input's size; height and width
//!   must be multiples of 16 ([`PerfusionUNet::MULTIPLE`]) — the runtime pads.
//! - The output is linear: targets live in [0, 1] and the runtime clamps at inference.
//! - `batch_norm` (not in the paper, off by default) adds batch normalisation after each
//!   convolution; it makes the compact default model train in minutes on a CPU.
//!
//! Parameter names mirror a PyTorch `state_dict` (`enc1.conv1.weight`, `up4.weight`,
//! `dec4.bn2.running_mean`, `head.bias`; see `benches/perfusion_unet_eager.py`).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::runtime::{OrModel, Result};

/// Architecture configuration (the manifest's `architecture.config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Input channels = time points of the input grid.
    pub time_points: usize,
    /// Width of the first stage (64 in the paper).
    #[serde(default = "default_width")]
    pub base_width: usize,
    /// Output channels (3: CBV, CBF, TTP).
    #[serde(default = "default_outputs")]
    pub outputs: usize,
    /// Batch normalisation after each convolution (not in the paper).
    #[serde(default)]
    pub batch_norm: bool,
}

fn default_width() -> usize {
    64
}
fn default_outputs() -> usize {
    3
}

impl Config {
    /// The paper's network for `time_points` input channels: width 64, three outputs, no batch norm.
    pub fn paper(time_points: usize) -> Self {
        Config { time_points, base_width: 64, outputs: 3, batch_norm: false }
    }

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1024).contains(&self.time_points) || !(1..=256).contains(&self.base_width) || self.outputs == 0 {
            return Err(imhost_core::Error::invalid_argument(format!("invalid U-Net configuration {self:?}")));
        }
        Ok(())
    }
}

/// 3×3 convolution (+ batch norm) + ReLU, twice.
#[derive(Debug)]
struct DoubleConv {
    conv1: nn::Conv2D,
    bn1: Option<nn::BatchNorm>,
    conv2: nn::Conv2D,
    bn2: Option<nn::BatchNorm>,
}

fn conv(p: nn::Path, cin: usize, cout: usize, k: usize) -> nn::Conv2D {
    let padding = (k / 2) as i64;
    nn::conv2d(p, cin as i64, cout as i64, k as i64, nn::ConvConfig { padding, ..Default::default() })
}

fn forward_conv(c: &nn::Conv2D, x: &Tensor, padding: i64) -> Result<Tensor> {
    x.f_conv2d(&c.ws, c.bs.as_ref(), [1, 1], [padding, padding], [1, 1], 1).model()
}

fn forward_bn(b: &nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    x.f_batch_norm(b.ws.as_ref(), b.bs.as_ref(), Some(&b.running_mean), Some(&b.running_var), train, 0.1, 1e-5, true)
        .model()
}

impl DoubleConv {
    fn new(p: nn::Path, cin: usize, cout: usize, batch_norm: bool) -> Self {
        let bn = |name: &str| batch_norm.then(|| nn::batch_norm2d(&p / name, cout as i64, Default::default()));
        DoubleConv {
            conv1: conv(&p / "conv1", cin, cout, 3),
            bn1: bn("bn1"),
            conv2: conv(&p / "conv2", cout, cout, 3),
            bn2: bn("bn2"),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = forward_conv(&self.conv1, x, 1)?;
        if let Some(b) = &self.bn1 {
            y = forward_bn(b, &y, train)?;
        }
        y = y.f_relu().model()?;
        y = forward_conv(&self.conv2, &y, 1)?;
        if let Some(b) = &self.bn2 {
            y = forward_bn(b, &y, train)?;
        }
        y.f_relu().model()
    }
}

/// The network. Build it on a `VarStore`'s root; load weights into that store.
#[derive(Debug)]
pub struct PerfusionUNet {
    config: Config,
    encoders: Vec<DoubleConv>,
    bottleneck: DoubleConv,
    ups: Vec<nn::ConvTranspose2D>,
    decoders: Vec<DoubleConv>,
    head: nn::Conv2D,
}

impl PerfusionUNet {
    /// Height and width must be multiples of this (four 2× poolings).
    pub const MULTIPLE: usize = 16;
    /// Encoder stages.
    pub const STAGES: usize = 4;

    /// Create the variables under `p` (names as in PyTorch: `enc1..4`, `bottleneck`, `up4..1`,
    /// `dec4..1`, `head`).
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let w = config.base_width;
        let widths: Vec<usize> = (0..=Self::STAGES).map(|s| w << s).collect();
        let mut encoders = Vec::new();
        let mut cin = config.time_points;
        for (s, &cout) in widths[..Self::STAGES].iter().enumerate() {
            encoders.push(DoubleConv::new(p / format!("enc{}", s + 1), cin, cout, config.batch_norm));
            cin = cout;
        }
        let bottleneck = DoubleConv::new(p / "bottleneck", cin, widths[Self::STAGES], config.batch_norm);
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for s in (0..Self::STAGES).rev() {
            let (deep, here) = (widths[s + 1], widths[s]);
            let up_config = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
            ups.push(nn::conv_transpose2d(p / format!("up{}", s + 1), deep as i64, here as i64, 2, up_config));
            decoders.push(DoubleConv::new(p / format!("dec{}", s + 1), 2 * here, here, config.batch_norm));
        }
        let head = conv(p / "head", w, config.outputs, 1);
        Ok(PerfusionUNet { config: *config, encoders, bottleneck, ups, decoders, head })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `x`: `[batch, time_points, H, W]` with H, W multiples of 16 → `[batch, outputs, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4
            || size[1] != self.config.time_points as i64
            || size[2] % Self::MULTIPLE as i64 != 0
            || size[3] % Self::MULTIPLE as i64 != 0
        {
            return Err(imhost_core::Error::shape(format!(
                "the U-Net takes [batch, {}, H, W] with H and W multiples of {}; got {size:?}",
                self.config.time_points,
                Self::MULTIPLE
            )));
        }
        let mut skips = Vec::with_capacity(Self::STAGES);
        let mut y = x.shallow_clone();
        for e in &self.encoders {
            let s = e.forward(&y, train)?;
            y = s.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>).model()?;
            skips.push(s);
        }
        y = self.bottleneck.forward(&y, train)?;
        for ((up, dec), skip) in self.ups.iter().zip(&self.decoders).zip(skips.iter().rev()) {
            let u = y.f_conv_transpose2d(&up.ws, up.bs.as_ref(), [2, 2], [0, 0], [0, 0], 1, [1, 1]).model()?;
            let cat = Tensor::f_cat(&[skip, &u], 1).model()?;
            y = dec.forward(&cat, train)?;
        }
        forward_conv(&self.head, &y, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of a 3×3 (or k×k) convolution with bias, by hand.
    fn conv_params(cin: usize, cout: usize, k: usize) -> usize {
        cin * cout * k * k + cout
    }

    /// The standard U-Net of Ronneberger et al. (1 input channel, 2 classes, width 64, no batch
    /// norm) counted layer by layer from its figure: 31,030,658 parameters.
    fn standard_unet_params(cin: usize, classes: usize, w: usize) -> usize {
        let mut n = 0;
        let mut c = cin;
        for s in 0..4 {
            n += conv_params(c, w << s, 3) + conv_params(w << s, w << s, 3);
            c = w << s;
        }
        n += conv_params(c, w << 4, 3) + conv_params(w << 4, w << 4, 3);
        for s in (0..4).rev() {
            n += conv_params(w << (s + 1), w << s, 2); // up-convolution 2×2
            n += conv_params(2 * (w << s), w << s, 3) + conv_params(w << s, w << s, 3);
        }
        n + conv_params(w, classes, 1)
    }

    fn count(vs: &nn::VarStore) -> usize {
        vs.trainable_variables().iter().map(|t| t.numel()).sum()
    }

    #[test]
    fn parameter_count_matches_the_standard_unet_with_the_papers_changes() {
        assert_eq!(standard_unet_params(1, 2, 64), 31_030_658, "the standard U-Net's count");
        // The paper's changes: T input channels (the first convolution gains 9·64·(T−1)
        // weights), three outputs (the head gains 64 + 1), average pooling (no parameters).
        for t in [1, 32, 89] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let _net = PerfusionUNet::new(&vs.root(), &Config::paper(t)).unwrap();
            let expected = 31_030_658 + 9 * 64 * (t - 1) + 65;
            assert_eq!(count(&vs), expected, "T = {t}");
            assert_eq!(count(&vs), standard_unet_params(t, 3, 64));
        }
        assert_eq!(31_030_658 + 9 * 64 * 31 + 65, 31_048_579, "T = 32, the default grid");
    }

    #[test]
    fn state_dict_names_mirror_pytorch() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = Config { time_points: 4, base_width: 4, outputs: 3, batch_norm: true };
        let _net = PerfusionUNet::new(&vs.root(), &cfg).unwrap();
        let names = vs.variables();
        for n in [
            "enc1.conv1.weight",
            "enc4.bn2.running_var",
            "bottleneck.conv2.bias",
            "up4.weight",
            "up1.bias",
            "dec1.conv1.weight",
            "head.weight",
        ] {
            assert!(names.contains_key(n), "{n} missing from {:?}", names.keys().collect::<Vec<_>>());
        }
        assert_eq!(names["up4.weight"].size(), [64, 32, 2, 2], "ConvTranspose2d weight is [in, out, k, k]");
        assert_eq!(names["dec4.conv1.weight"].size(), [32, 64, 3, 3]);
    }

    #[test]
    fn forward_shapes_and_bad_shapes() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = Config { time_points: 5, base_width: 4, outputs: 3, batch_norm: false };
        let net = PerfusionUNet::new(&vs.root(), &cfg).unwrap();
        let y = net.forward(&Tensor::zeros([2, 5, 48, 32], (tch::Kind::Float, tch::Device::Cpu)), false).unwrap();
        assert_eq!(y.size(), [2, 3, 48, 32]);
        let e = net.forward(&Tensor::zeros([1, 5, 40, 32], (tch::Kind::Float, tch::Device::Cpu)), false).unwrap_err();
        assert!(e.message().contains("multiples of 16"), "{e}");
        let e = net.forward(&Tensor::zeros([1, 4, 32, 32], (tch::Kind::Float, tch::Device::Cpu)), false).unwrap_err();
        assert!(e.message().contains("[batch, 5, H, W]"), "{e}");
        assert!(Config { time_points: 0, base_width: 4, outputs: 3, batch_norm: false }.validate().is_err());
    }
}
