//! MultiResUNet as the internship report gives it ("Architecture-3 MultiResUNet report",
//! `../shared/papers/multiresunet-report.txt`, after Ibtehaz & Rahman 2019, arXiv:1902.04049),
//! written from the report's Keras code, function by function:
//!
//! - `conv_block(x, n, k, act)`: k×k convolution ('same', **no bias**) → batch norm → ReLU when
//!   `act`;
//! - `multires_block(x, n, alpha = 1.67)`: with `W = n·α`, three chained 3×3 conv blocks of
//!   `int(W·0.167)`, `int(W·0.333)`, `int(W·0.5)` filters (the 1/6, 1/3, 1/2 split),
//!   concatenated and batch-normalised, plus a 1×1 conv block (no ReLU) of the input to the same
//!   width; ReLU of the sum, then batch norm. Its width is the sum of the three;
//! - `res_path(x, n, length)`: `length` steps of (3×3 conv block without ReLU) + (1×1 conv block
//!   without ReLU), ReLU, batch norm — lengths 4, 3, 2, 1 from the top level down;
//! - `encoder_block(x, n, length)`: a MultiRes block; the skip is its residual path, the next
//!   level gets the 2×2 max pool of the **block's** output (not of the residual path);
//! - `decoder_block(x, skip, n)`: 2×2 stride-2 transposed convolution to `n` filters (with bias),
//!   concatenated with the skip, a MultiRes block;
//! - `build_multiresunet`: encoders of 32, 64, 128, 256 filters, a bridge MultiRes block of 512,
//!   four decoders back up, a 1×1 convolution (with bias) to one channel and a sigmoid.
//!
//! Batch norms use Keras' defaults (ε = 1e-3, moving-average momentum 0.99, i.e. PyTorch's
//! 0.01). [`MultiResUNet::forward`] returns logits: the caller applies the sigmoid (training
//! uses binary cross-entropy on the logits, which is the report's loss computed stably).
//!
//! Input `[batch, C, H, W]` (C = 3 in the report: images read as colour), H and W multiples of
//! 16. Parameter names mirror the PyTorch definition in `benches/multiresunet_params.py`
//! (`encoders.0.mres.c1.conv.weight`, `encoders.0.res.3.shortcut.bn.running_var`,
//! `bridge.out_bn.weight`, `decoders.3.up.bias`, `head.weight`).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::runtime::{OrModel, Result};

/// The report's α.
pub const ALPHA: f64 = 1.67;
/// Keras' batch norm epsilon.
const BN_EPS: f64 = 1e-3;
/// Keras' momentum 0.99 as PyTorch's update weight.
const BN_MOMENTUM: f64 = 0.01;

/// Architecture configuration (the manifest's `architecture.config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Input channels (3 in the report).
    pub in_channels: usize,
    /// Filters of the first encoder (32 in the report; the others are 2×, 4×, 8×, the bridge 16×).
    pub base_width: usize,
}

impl Config {
    /// The report's network on colour images.
    pub const REPORT: Config = Config { in_channels: 3, base_width: 32 };
    /// H and W must be multiples of this (four 2×2 poolings).
    pub const MULTIPLE: usize = 16;

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        if !(1..=16).contains(&self.in_channels) || !(4..=64).contains(&self.base_width) {
            return Err(imhost_core::Error::invalid_argument(format!("invalid MultiResUNet configuration {self:?}")));
        }
        Ok(())
    }
}

/// The report's filter split of a MultiRes block of `n` filters: `int(W·0.167)`, `int(W·0.333)`,
/// `int(W·0.5)` with `W = n·1.67`, in the same floating-point order as the Keras code.
pub fn split(n: usize) -> [usize; 3] {
    let w = n as f64 * ALPHA;
    [(w * 0.167) as usize, (w * 0.333) as usize, (w * 0.5) as usize]
}

fn bn(p: nn::Path, c: usize) -> nn::BatchNorm {
    nn::batch_norm2d(p, c as i64, nn::BatchNormConfig { eps: BN_EPS, momentum: BN_MOMENTUM, ..Default::default() })
}

fn forward_bn(b: &nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    x.f_batch_norm(
        b.ws.as_ref(),
        b.bs.as_ref(),
        Some(&b.running_mean),
        Some(&b.running_var),
        train,
        BN_MOMENTUM,
        BN_EPS,
        true,
    )
    .model()
}

/// `conv_block`: conv (no bias) → BN → ReLU when `act`.
#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    k: i64,
    act: bool,
}

impl ConvBlock {
    fn new(p: nn::Path, cin: usize, cout: usize, k: usize, act: bool) -> Self {
        let config = nn::ConvConfig { padding: (k / 2) as i64, bias: false, ..Default::default() };
        ConvBlock {
            conv: nn::conv2d(&p / "conv", cin as i64, cout as i64, k as i64, config),
            bn: bn(&p / "bn", cout),
            k: k as i64,
            act,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let pad = self.k / 2;
        let y = x.f_conv2d(&self.conv.ws, None::<Tensor>, [1, 1], [pad, pad], [1, 1], 1).model()?;
        let y = forward_bn(&self.bn, &y, train)?;
        if self.act { y.f_relu().model() } else { Ok(y) }
    }
}

/// `multires_block`.
#[derive(Debug)]
struct MultiResBlock {
    c1: ConvBlock,
    c2: ConvBlock,
    c3: ConvBlock,
    bn: nn::BatchNorm,
    shortcut: ConvBlock,
    out_bn: nn::BatchNorm,
    width: usize,
}

impl MultiResBlock {
    fn new(p: nn::Path, cin: usize, n: usize) -> Self {
        let [f1, f2, f3] = split(n);
        let width = f1 + f2 + f3;
        MultiResBlock {
            c1: ConvBlock::new(&p / "c1", cin, f1, 3, true),
            c2: ConvBlock::new(&p / "c2", f1, f2, 3, true),
            c3: ConvBlock::new(&p / "c3", f2, f3, 3, true),
            bn: bn(&p / "bn", width),
            shortcut: ConvBlock::new(&p / "shortcut", cin, width, 1, false),
            out_bn: bn(&p / "out_bn", width),
            width,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x1 = self.c1.forward(x, train)?;
        let x2 = self.c2.forward(&x1, train)?;
        let x3 = self.c3.forward(&x2, train)?;
        let xc = forward_bn(&self.bn, &Tensor::f_cat(&[x1, x2, x3], 1).model()?, train)?;
        let sum = xc.f_add(&self.shortcut.forward(x, train)?).model()?.f_relu().model()?;
        forward_bn(&self.out_bn, &sum, train)
    }
}

/// One step of `res_path`.
#[derive(Debug)]
struct ResStep {
    main: ConvBlock,
    shortcut: ConvBlock,
    bn: nn::BatchNorm,
}

impl ResStep {
    fn new(p: nn::Path, cin: usize, n: usize) -> Self {
        ResStep {
            main: ConvBlock::new(&p / "main", cin, n, 3, false),
            shortcut: ConvBlock::new(&p / "shortcut", cin, n, 1, false),
            bn: bn(&p / "bn", n),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let sum = self.main.forward(x, train)?.f_add(&self.shortcut.forward(x, train)?).model()?.f_relu().model()?;
        forward_bn(&self.bn, &sum, train)
    }
}

#[derive(Debug)]
struct Encoder {
    mres: MultiResBlock,
    res: Vec<ResStep>,
}

#[derive(Debug)]
struct Decoder {
    up: nn::ConvTranspose2D,
    mres: MultiResBlock,
}

/// The network. Build it on a `VarStore`'s root; load weights into that store.
#[derive(Debug)]
pub struct MultiResUNet {
    config: Config,
    encoders: Vec<Encoder>,
    bridge: MultiResBlock,
    decoders: Vec<Decoder>,
    head: nn::Conv2D,
}

impl MultiResUNet {
    /// Create the variables under `p`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let widths: Vec<usize> = (0..4).map(|l| config.base_width << l).collect();
        let mut cin = config.in_channels;
        let mut encoders = Vec::new();
        for (l, &n) in widths.iter().enumerate() {
            let ep = p / "encoders" / l;
            let mres = MultiResBlock::new(&ep / "mres", cin, n);
            let mut c = mres.width;
            let res = (0..4 - l)
                .map(|s| {
                    let step = ResStep::new(&ep / "res" / s, c, n);
                    c = n;
                    step
                })
                .collect();
            cin = mres.width;
            encoders.push(Encoder { mres, res });
        }
        let bridge = MultiResBlock::new(p / "bridge", cin, config.base_width << 4);
        let mut c = bridge.width;
        let mut decoders = Vec::new();
        for (d, &n) in widths.iter().rev().enumerate() {
            let dp = p / "decoders" / d;
            let config = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
            let up = nn::conv_transpose2d(&dp / "up", c as i64, n as i64, 2, config);
            // The skip of this level is its residual path: n channels.
            let mres = MultiResBlock::new(&dp / "mres", 2 * n, n);
            c = mres.width;
            decoders.push(Decoder { up, mres });
        }
        let head = nn::conv2d(p / "head", c as i64, 1, 1, Default::default());
        Ok(MultiResUNet { config: *config, encoders, bridge, decoders, head })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `x`: `[batch, C, H, W]` → logits `[batch, 1, H, W]` (the report's output is their sigmoid).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        let m = Config::MULTIPLE as i64;
        if size.len() != 4
            || size[1] != self.config.in_channels as i64
            || size[2..].iter().any(|&s| s % m != 0 || s == 0)
        {
            return Err(imhost_core::Error::shape(format!(
                "MultiResUNet takes [batch, {}, H, W] with H, W multiples of {m}; got {size:?}",
                self.config.in_channels
            )));
        }
        let mut skips = Vec::with_capacity(4);
        let mut y = x.shallow_clone();
        for e in &self.encoders {
            let block = e.mres.forward(&y, train)?;
            let mut s = block.shallow_clone();
            for step in &e.res {
                s = step.forward(&s, train)?;
            }
            skips.push(s);
            y = block.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).model()?;
        }
        y = self.bridge.forward(&y, train)?;
        for (d, s) in self.decoders.iter().zip(skips.iter().rev()) {
            let u = y.f_conv_transpose2d(&d.up.ws, d.up.bs.as_ref(), [2, 2], [0, 0], [0, 0], 1, [1, 1]).model()?;
            y = d.mres.forward(&Tensor::f_cat(&[&u, s], 1).model()?, train)?;
        }
        y.f_conv2d(&self.head.ws, self.head.bs.as_ref(), [1, 1], [0, 0], [1, 1], 1).model()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(vs: &nn::VarStore) -> usize {
        vs.trainable_variables().iter().map(|t| t.numel()).sum()
    }

    /// The filter split printed in the report's model summary: the first MultiRes block of 32
    /// filters has 8, 17 and 26 (the summary's `conv2d` 3→8 with 216 weights, `conv2d_1` 8→17
    /// with 1224).
    #[test]
    fn filter_split_matches_the_report() {
        assert_eq!(split(32), [8, 17, 26]);
        assert_eq!(split(512), [142, 284, 427]);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = MultiResUNet::new(&vs.root(), &Config::REPORT).unwrap();
        let v = vs.variables();
        assert_eq!(v["encoders.0.mres.c1.conv.weight"].numel(), 216);
        assert_eq!(v["encoders.0.mres.c1.bn.weight"].numel() * 4, 32, "Keras counts 4 numbers per channel");
        assert_eq!(v["encoders.0.mres.c2.conv.weight"].numel(), 1224);
    }

    /// The same network defined in PyTorch (benches/multiresunet_params.py) wrote every
    /// state_dict name and shape, for the report's size and a small one; ours must match.
    #[test]
    fn state_dict_matches_the_pytorch_definition() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/multiresunet/state_dict.json");
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for size in ["report", "small"] {
            let f = &fixture[size];
            let config = Config {
                in_channels: f["in_channels"].as_u64().unwrap() as usize,
                base_width: f["base_width"].as_u64().unwrap() as usize,
            };
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let _net = MultiResUNet::new(&vs.root(), &config).unwrap();
            let ours = vs.variables();
            let expected = f["tensors"].as_object().unwrap();
            assert_eq!(ours.len(), expected.len(), "{size}: tensor count");
            for (name, shape) in expected {
                let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(ours.get(name).map(|t| t.size()), Some(shape), "{size}: {name}");
            }
            assert_eq!(f["trainable_parameters"], count(&vs), "{size}");
            let all: usize = ours.values().map(|t| t.numel()).sum();
            assert_eq!(f["keras_total_parameters"], all, "{size}: Keras total (with moving statistics)");
        }
    }

    #[test]
    fn forward_shapes_and_bad_shapes() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = MultiResUNet::new(&vs.root(), &Config { in_channels: 1, base_width: 4 }).unwrap();
        let kind = (tch::Kind::Float, tch::Device::Cpu);
        let y = net.forward(&Tensor::zeros([2, 1, 32, 48], kind), false).unwrap();
        assert_eq!(y.size(), [2, 1, 32, 48]);
        let e = net.forward(&Tensor::zeros([1, 1, 24, 32], kind), false).unwrap_err();
        assert!(e.message().contains("multiples of 16"), "{e}");
        let e = net.forward(&Tensor::zeros([1, 3, 32, 32], kind), false).unwrap_err();
        assert!(e.message().contains("[batch, 1, H, W]"), "{e}");
        assert!(Config { in_channels: 0, base_width: 32 }.validate().is_err());
    }
}
