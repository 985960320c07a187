//! The coronary-calcium 3D U-Net of Gogin et al. 2021, "Automatic coronary artery calcium
//! scoring from unenhanced-ECG-gated CT using deep learning" (Diagn. Interv. Imaging), §2.3
//! "Model architecture": "a 3D U-Net architecture with a depth of 4 levels and 16 initial
//! filters. Each convolution layer used residual connections, exponential linear unit (ELU)
//! activation and batch normalization. The number of filters was doubled after each max pooling
//! layer in the encoding path, while in the decoding path, the number of filters was
//! symmetrically decreased by a factor 2 after each up-sampling layer."
//!
//! Our reading of it (the paper's Figure 2 is not in the text we have; docs/CAC.md):
//! - four resolution levels of widths `w, 2w, 4w, 8w` (`w` = 16), three 2×2×2 max poolings;
//! - every level is one **residual block**: 3×3×3 conv → BN → ELU → 3×3×3 conv → BN, added to
//!   the block's input (through a 1×1×1 conv + BN where the width changes), then ELU;
//! - decoder: 2×2×2 stride-2 transposed convolution halving the width, concatenation with the
//!   encoder's skip, a residual block; a 1×1×1 convolution to one channel and a sigmoid (the
//!   calcification probability; the loss is Dice on it).
//!
//! Input `[batch, 1, D, H, W]` = `[batch, 1, k, j, i]` (i fastest in memory, as our volumes),
//! each of D, H, W a multiple of 8 ([`CacUNet::MULTIPLE`]). Parameter names mirror a PyTorch
//! `state_dict` (`enc1.conv1.weight`, `enc2.skip.weight`, `up3.weight`, `dec1.bn2.running_var`,
//! `head.bias`).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::runtime::{OrModel, Result};

/// Architecture configuration (the manifest's `architecture.config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Filters of the first level (16 in the paper).
    pub base_width: usize,
    /// Resolution levels (4 in the paper).
    pub levels: usize,
}

impl Config {
    /// The paper's network: 4 levels, 16 initial filters.
    pub const PAPER: Config = Config { base_width: 16, levels: 4 };

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        if !(1..=128).contains(&self.base_width) || !(2..=6).contains(&self.levels) {
            return Err(imhost_core::Error::invalid_argument(format!("invalid CAC U-Net configuration {self:?}")));
        }
        Ok(())
    }

    /// D, H, W must be multiples of this.
    pub fn multiple(&self) -> usize {
        1 << (self.levels - 1)
    }
}

fn conv(p: nn::Path, cin: usize, cout: usize, k: usize) -> nn::Conv3D {
    let padding = (k / 2) as i64;
    nn::conv3d(p, cin as i64, cout as i64, k as i64, nn::ConvConfig { padding, ..Default::default() })
}

fn forward_conv(c: &nn::Conv3D, x: &Tensor, padding: i64) -> Result<Tensor> {
    x.f_conv3d(&c.ws, c.bs.as_ref(), [1, 1, 1], [padding, padding, padding], [1, 1, 1], 1).model()
}

fn forward_bn(b: &nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    x.f_batch_norm(b.ws.as_ref(), b.bs.as_ref(), Some(&b.running_mean), Some(&b.running_var), train, 0.1, 1e-5, true)
        .model()
}

/// conv → BN → ELU → conv → BN, plus the (projected) input, then ELU.
#[derive(Debug)]
struct ResBlock {
    conv1: nn::Conv3D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv3D,
    bn2: nn::BatchNorm,
    skip: Option<(nn::Conv3D, nn::BatchNorm)>,
}

impl ResBlock {
    fn new(p: nn::Path, cin: usize, cout: usize) -> Self {
        let bn = |name: &str| nn::batch_norm3d(&p / name, cout as i64, Default::default());
        ResBlock {
            conv1: conv(&p / "conv1", cin, cout, 3),
            bn1: bn("bn1"),
            conv2: conv(&p / "conv2", cout, cout, 3),
            bn2: bn("bn2"),
            skip: (cin != cout).then(|| (conv(&p / "skip", cin, cout, 1), bn("skip_bn"))),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = forward_bn(&self.bn1, &forward_conv(&self.conv1, x, 1)?, train)?.f_elu().model()?;
        y = forward_bn(&self.bn2, &forward_conv(&self.conv2, &y, 1)?, train)?;
        let shortcut = match &self.skip {
            Some((c, b)) => forward_bn(b, &forward_conv(c, x, 0)?, train)?,
            None => x.shallow_clone(),
        };
        y.f_add(&shortcut).model()?.f_elu().model()
    }
}

/// The network. Build it on a `VarStore`'s root; load weights into that store.
#[derive(Debug)]
pub struct CacUNet {
    config: Config,
    encoders: Vec<ResBlock>,
    ups: Vec<nn::ConvTranspose3D>,
    decoders: Vec<ResBlock>,
    head: nn::Conv3D,
}

impl CacUNet {
    /// D, H and W must be multiples of this for the paper's four levels.
    pub const MULTIPLE: usize = 8;

    /// Create the variables under `p`: `enc1..encL` (encL the bottom level), `upL-1..up1`,
    /// `decL-1..dec1`, `head`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let widths: Vec<usize> = (0..config.levels).map(|l| config.base_width << l).collect();
        let mut encoders = Vec::new();
        let mut cin = 1;
        for (l, &w) in widths.iter().enumerate() {
            encoders.push(ResBlock::new(p / format!("enc{}", l + 1), cin, w));
            cin = w;
        }
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for l in (0..config.levels - 1).rev() {
            let (deep, here) = (widths[l + 1], widths[l]);
            let up = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
            ups.push(nn::conv_transpose3d(p / format!("up{}", l + 1), deep as i64, here as i64, 2, up));
            decoders.push(ResBlock::new(p / format!("dec{}", l + 1), 2 * here, here));
        }
        let head = conv(p / "head", config.base_width, 1, 1);
        Ok(CacUNet { config: *config, encoders, ups, decoders, head })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `x`: `[batch, 1, D, H, W]` → logits `[batch, 1, D, H, W]` (apply a sigmoid for the
    /// probability).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        let m = self.config.multiple() as i64;
        if size.len() != 5 || size[1] != 1 || size[2..].iter().any(|&s| s % m != 0 || s == 0) {
            return Err(imhost_core::Error::shape(format!(
                "the CAC U-Net takes [batch, 1, D, H, W] with D, H, W multiples of {m}; got {size:?}"
            )));
        }
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut y = x.shallow_clone();
        for (l, e) in self.encoders.iter().enumerate() {
            y = e.forward(&y, train)?;
            if l + 1 < self.encoders.len() {
                let pooled = y.f_max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false).model()?;
                skips.push(std::mem::replace(&mut y, pooled));
            }
        }
        for ((up, dec), skip) in self.ups.iter().zip(&self.decoders).zip(skips.iter().rev()) {
            let u =
                y.f_conv_transpose3d(&up.ws, up.bs.as_ref(), [2, 2, 2], [0, 0, 0], [0, 0, 0], 1, [1, 1, 1]).model()?;
            y = dec.forward(&Tensor::f_cat(&[skip, &u], 1).model()?, train)?;
        }
        forward_conv(&self.head, &y, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights + bias of a k×k×k 3-D convolution.
    fn conv3(cin: usize, cout: usize, k: usize) -> usize {
        cin * cout * k * k * k + cout
    }

    /// Trainable parameters of a batch norm (scale and shift).
    fn bn(c: usize) -> usize {
        2 * c
    }

    fn block(cin: usize, cout: usize) -> usize {
        let skip = if cin != cout { conv3(cin, cout, 1) + bn(cout) } else { 0 };
        conv3(cin, cout, 3) + bn(cout) + conv3(cout, cout, 3) + bn(cout) + skip
    }

    /// The architecture counted by hand, level by level.
    fn by_hand(w: usize, levels: usize) -> usize {
        let mut n = 0;
        let mut cin = 1;
        for l in 0..levels {
            n += block(cin, w << l);
            cin = w << l;
        }
        for l in (0..levels - 1).rev() {
            n += conv3(w << (l + 1), w << l, 2) + block(2 * (w << l), w << l);
        }
        n + conv3(w, 1, 1)
    }

    fn count(vs: &nn::VarStore) -> usize {
        vs.trainable_variables().iter().map(|t| t.numel()).sum()
    }

    #[test]
    fn parameter_count_matches_the_hand_count() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = CacUNet::new(&vs.root(), &Config::PAPER).unwrap();
        assert_eq!(count(&vs), by_hand(16, 4));
        // The paper's network, written out: 1,424,545 trainable parameters (the same definition
        // in PyTorch, benches/cac_unet_params.py, prints this number).
        assert_eq!(by_hand(16, 4), 1_424_545);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = CacUNet::new(&vs.root(), &Config { base_width: 8, levels: 3 }).unwrap();
        assert_eq!(count(&vs), by_hand(8, 3));
    }

    #[test]
    fn state_dict_names_mirror_pytorch() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = CacUNet::new(&vs.root(), &Config::PAPER).unwrap();
        let names = vs.variables();
        for n in [
            "enc1.conv1.weight",
            "enc1.skip.weight",
            "enc1.skip_bn.running_mean",
            "enc4.bn2.running_var",
            "up3.weight",
            "up1.bias",
            "dec1.conv2.weight",
            "dec3.skip.weight",
            "head.weight",
        ] {
            assert!(names.contains_key(n), "{n} missing");
        }
        assert_eq!(names["up3.weight"].size(), [128, 64, 2, 2, 2], "ConvTranspose3d weight is [in, out, k, k, k]");
        assert_eq!(names["dec3.conv1.weight"].size(), [64, 128, 3, 3, 3]);
        assert_eq!(names["head.weight"].size(), [1, 16, 1, 1, 1]);
    }

    /// The same network defined in PyTorch (benches/cac_unet_params.py) wrote every state_dict
    /// name and shape into this fixture; ours must match it exactly.
    #[test]
    fn state_dict_matches_the_pytorch_definition() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/cac/unet_state_dict.json");
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let expected = fixture["tensors"].as_object().unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = CacUNet::new(&vs.root(), &Config::PAPER).unwrap();
        let ours = vs.variables();
        assert_eq!(ours.len(), expected.len(), "tensor count");
        for (name, shape) in expected {
            let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(ours.get(name).map(|t| t.size()), Some(shape), "{name}");
        }
        assert_eq!(fixture["trainable_parameters"], count(&vs));
    }

    #[test]
    fn forward_shapes_and_bad_shapes() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = CacUNet::new(&vs.root(), &Config { base_width: 4, levels: 4 }).unwrap();
        let kind = (tch::Kind::Float, tch::Device::Cpu);
        let y = net.forward(&Tensor::zeros([2, 1, 8, 16, 24], kind), false).unwrap();
        assert_eq!(y.size(), [2, 1, 8, 16, 24]);
        let e = net.forward(&Tensor::zeros([1, 1, 8, 12, 16], kind), false).unwrap_err();
        assert!(e.message().contains("multiples of 8"), "{e}");
        assert!(Config { base_width: 16, levels: 1 }.validate().is_err());
    }
}
