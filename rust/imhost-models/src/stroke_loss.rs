//! The losses of the stroke-lesion paper (Wang et al., §3.2–3.4), equation by equation, and the
//! context encoder Φ_c of the high-level similarity loss.
//!
//! - eq. 9: the attention map `A` ([`attention_map`]): `w` inside the lesion, else
//!   `0.5 + e^(−d/D) / (e^(−d/D) + 1)` with `d` the Euclidean distance to the lesion (pixels of
//!   the 2-D slice, as the paper works on slices); 0.5 everywhere on a slice without lesion;
//! - eq. 7: the weighted pixel loss `ℓ_l = ‖A·(I_g − I_d)‖₂`, here **normalised** as the mean
//!   of the squared weighted differences (the squared norm over N: the same minimiser, and a
//!   scale that does not grow with the image; PSNR is a function of it);
//! - eq. 8: the contextual loss `ℓ_h = ‖Φ_c(I_g) − Φ_c(I_d)‖₁`, normalised as the mean absolute
//!   difference of the two 16-vectors;
//! - eq. 6: `L_g = ℓ_l + γ·ℓ_h` (γ = 1.2);
//! - eq. 12: the weighted cross-entropy `L_WCE = Σ_i A_i (−Σ_c Y log P) / Σ_i A_i`;
//! - eq. 14: the generalised Dice loss with `m_c = 1/(Σ_i Y_i^c)²` (Sudre et al. 2017); a class
//!   absent from the batch gets the largest weight of the present classes (as MONAI's
//!   `GeneralizedDiceLoss` replaces an infinite weight), so an empty lesion class neither
//!   divides by zero nor swamps the loss;
//! - eq. 13: the hardness-aware `L_HGD = −log(1 − L_GD)`;
//! - eq. 11: `L_s = L_WCE + L_HGD`;
//! - eq. 15: `L = L_s + α·L_g(I_g, I_d) + β·L_g(F_h, I_d)` (α = β = 1).
//!
//! Φ_c (§3.2, Fig. 4): "five convolutional layers and two adaptive average pooling layers …
//! output a vector of length 16", 3×3 kernels of stride 2. The figure's widths are not in the
//! text we have; ours: 1 → 16 → 32 → 64 (ReLU after each), adaptive average pool to 8×8,
//! 64 → 32 → 16 (ReLU between), adaptive average pool to 1×1 → 16 values.

use tch::{Kind, Reduction, Tensor, nn};

use crate::runtime::{OrModel, Result};

/// The paper's constants (§4.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// α of eq. 15.
    pub alpha: f64,
    /// β of eq. 15.
    pub beta: f64,
    /// γ of eq. 6.
    pub gamma: f64,
    /// w of eq. 9.
    pub w: f64,
    /// D of eq. 9 (pixels).
    pub d: f64,
}

impl LossWeights {
    /// α = 1, β = 1, γ = 1.2, w = 1.5, D = 50.
    pub const PAPER: LossWeights = LossWeights { alpha: 1.0, beta: 1.0, gamma: 1.2, w: 1.5, d: 50.0 };
}

/// Eq. 9 on one `ni`×`nj` slice (`i` fastest): `w` on lesion pixels, else
/// `0.5 + σ(−d/D)` with `d` the distance in pixels to the nearest lesion pixel.
pub fn attention_map(lesion: &[bool], ni: usize, nj: usize, w: f64, d: f64) -> Vec<f32> {
    let queries: Vec<usize> = (0..lesion.len()).filter(|&p| !lesion[p]).collect();
    let dist = imhost_core::score::edt::distances_to(lesion, [ni, nj, 1], [1.0, 1.0, 1.0], &queries);
    let mut a = vec![w as f32; lesion.len()];
    for (&p, &e) in queries.iter().zip(&dist) {
        let x = (-e / d).exp();
        a[p] = (0.5 + x / (x + 1.0)) as f32;
    }
    a
}

/// Eq. 7 (normalised): mean over pixels of `(A·(I_g − I_d))²`.
pub fn weighted_l2(ig: &Tensor, id: &Tensor, a: &Tensor) -> Result<Tensor> {
    ig.f_sub(id).model()?.f_mul(a).model()?.f_square().model()?.f_mean(Kind::Float).model()
}

/// Eq. 8 (normalised): mean absolute difference of the two codes.
pub fn contextual_l1(code_g: &Tensor, code_d: &Tensor) -> Result<Tensor> {
    code_g.f_l1_loss(code_d, Reduction::Mean).model()
}

/// Eq. 12: `probs` `[N, C, H, W]` (softmax output), `onehot` the same shape, `a` `[N, 1, H, W]`.
pub fn weighted_ce(probs: &Tensor, onehot: &Tensor, a: &Tensor) -> Result<Tensor> {
    let log_p = probs.f_clamp_min(1e-7).model()?.f_log().model()?;
    let per_pixel = onehot.f_mul(&log_p).model()?.f_sum_dim_intlist(1, true, Kind::Float).model()?.f_neg().model()?;
    let num = per_pixel.f_mul(a).model()?.f_sum(Kind::Float).model()?;
    let den = a.f_sum(Kind::Float).model()?.f_expand_as(&num).model()?;
    num.f_div(&den).model()
}

/// Eq. 14: the generalised Dice loss of `probs` against `onehot` (`[N, C, H, W]`).
pub fn generalised_dice(probs: &Tensor, onehot: &Tensor) -> Result<Tensor> {
    let dims = [0i64, 2, 3];
    let y_sum = onehot.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float).model()?;
    // m_c = 1 / (Σ Y)²; an absent class takes the largest weight of the present ones.
    let present = y_sum.f_gt(0.0).model()?;
    let m = y_sum.f_clamp_min(1.0).model()?.f_square().model()?.f_reciprocal().model()?;
    let m_present = m.f_where_self(&present, &m.f_zeros_like().model()?).model()?;
    let largest = m_present.f_max().model()?;
    let m = m.f_where_self(&present, &largest.f_expand_as(&m).model()?).model()?.f_detach().model()?;
    let inter = onehot.f_mul(probs).model()?.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float).model()?;
    let total = onehot.f_add(probs).model()?.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float).model()?;
    let num = m.f_mul(&inter).model()?.f_sum(Kind::Float).model()?;
    let den = m.f_mul(&total).model()?.f_sum(Kind::Float).model()?.f_clamp_min(1e-12).model()?;
    num.f_div(&den).model()?.f_mul_scalar(-2.0).model()?.f_add_scalar(1.0).model()
}

/// Eq. 13: `−log(1 − L_GD)` (L_GD kept below 1 − 1e-6).
pub fn hardness_aware_dice(probs: &Tensor, onehot: &Tensor) -> Result<Tensor> {
    let gd = generalised_dice(probs, onehot)?.f_clamp_max(1.0 - 1e-6).model()?;
    gd.f_neg().model()?.f_add_scalar(1.0).model()?.f_log().model()?.f_neg().model()
}

/// Eq. 11: `L_WCE + L_HGD`.
pub fn segmentation_loss(probs: &Tensor, onehot: &Tensor, a: &Tensor) -> Result<Tensor> {
    weighted_ce(probs, onehot, a)?.f_add(&hardness_aware_dice(probs, onehot)?).model()
}

/// The context encoder Φ_c (see the module text for its widths).
#[derive(Debug)]
pub struct ContextEncoder {
    convs: Vec<nn::Conv2D>,
}

impl ContextEncoder {
    /// Variables `conv.0..4` under `p`.
    pub fn new(p: &nn::Path) -> Self {
        let c = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
        let widths = [(1, 16), (16, 32), (32, 64), (64, 32), (32, 16)];
        ContextEncoder {
            convs: widths.iter().enumerate().map(|(n, &(i, o))| nn::conv2d(p / "conv" / n, i, o, 3, c)).collect(),
        }
    }

    /// `x` `[N, 1, H, W]` → `[N, 16]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.shallow_clone();
        for (n, c) in self.convs.iter().enumerate() {
            y = y.f_conv2d(&c.ws, c.bs.as_ref(), [2, 2], [1, 1], [1, 1], 1).model()?;
            if n < 4 {
                y = y.f_relu().model()?;
            }
            if n == 2 {
                y = y.f_adaptive_avg_pool2d([8, 8]).model()?;
            }
        }
        y.f_adaptive_avg_pool2d([1, 1]).model()?.f_flatten(1, -1).model()
    }
}

/// Eq. 6: `ℓ_l(I_g, I_d) + γ·ℓ_h(I_g, I_d)`.
pub fn synthesis_loss(ig: &Tensor, id: &Tensor, a: &Tensor, phi_c: &ContextEncoder, gamma: f64) -> Result<Tensor> {
    let l = weighted_l2(ig, id, a)?;
    let h = contextual_l1(&phi_c.forward(ig)?, &phi_c.forward(id)?)?;
    l.f_add(&h.f_mul_scalar(gamma).model()?).model()
}

/// Eq. 15: `L_s + α·L_g(I_g, I_d) + β·L_g(F_h, I_d)`.
#[allow(clippy::too_many_arguments)]
pub fn total_loss(
    probs: &Tensor,
    onehot: &Tensor,
    a: &Tensor,
    ig: &Tensor,
    fh: &Tensor,
    id: &Tensor,
    phi_c: &ContextEncoder,
    k: &LossWeights,
) -> Result<Tensor> {
    let ls = segmentation_loss(probs, onehot, a)?;
    let lg = synthesis_loss(ig, id, a, phi_c, k.gamma)?;
    let le = synthesis_loss(fh, id, a, phi_c, k.gamma)?;
    ls.f_add(&lg.f_mul_scalar(k.alpha).model()?).model()?.f_add(&le.f_mul_scalar(k.beta).model()?).model()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    fn close(a: &Tensor, b: f64, label: &str) {
        let v = a.double_value(&[]);
        assert!((v - b).abs() < 1e-5, "{label}: {v} vs {b}");
    }

    #[test]
    fn attention_map_eq_9_by_hand() {
        // A 4×1 row with the lesion at i = 0: distances 1, 2, 3 pixels.
        let a = attention_map(&[true, false, false, false], 4, 1, 1.5, 50.0);
        assert_eq!(a[0], 1.5);
        for (i, &v) in a.iter().enumerate().skip(1) {
            let x = (-(i as f64) / 50.0).exp();
            assert!((f64::from(v) - (0.5 + x / (x + 1.0))).abs() < 1e-6, "{i}: {v}");
        }
        assert!(a[1] > a[2] && a[2] > a[3] && a[3] > 0.5, "decays away from the lesion: {a:?}");
        // No lesion: 0.5 everywhere.
        assert!(attention_map(&[false; 6], 3, 2, 1.5, 50.0).iter().all(|&v| v == 0.5));
    }

    #[test]
    fn pixel_and_contextual_losses_eq_7_8_6_by_hand() {
        let ig = t(&[0.0, 1.0, 0.5, 0.5], &[1, 1, 2, 2]);
        let id = t(&[0.0, 0.0, 1.0, 0.5], &[1, 1, 2, 2]);
        let a = t(&[1.5, 1.5, 1.0, 0.5], &[1, 1, 2, 2]);
        // ((0)² + (1.5·1)² + (1·(−0.5))² + 0²) / 4 = (2.25 + 0.25) / 4.
        close(&weighted_l2(&ig, &id, &a).unwrap(), 2.5 / 4.0, "eq. 7");
        close(&contextual_l1(&t(&[1.0, -2.0], &[1, 2]), &t(&[0.0, 1.0], &[1, 2])).unwrap(), 2.0, "eq. 8");
        // Eq. 6 on identical images is 0 whatever Φ_c is.
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let phi = ContextEncoder::new(&(vs.root() / "phi"));
        let img = Tensor::rand([2, 1, 32, 32], (Kind::Float, tch::Device::Cpu));
        close(&synthesis_loss(&img, &img, &img.ones_like(), &phi, 1.2).unwrap(), 0.0, "eq. 6 at I_g = I_d");
        assert_eq!(phi.forward(&img).unwrap().size(), [2, 16], "Φ_c gives a 16-vector");
        let n: i64 = vs.trainable_variables().iter().map(|v| v.numel() as i64).sum();
        assert_eq!(
            n,
            (9 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 32 + 32) + (9 * 32 * 16 + 16)
        );
    }

    #[test]
    fn weighted_cross_entropy_eq_12_by_hand() {
        // Two pixels, two classes: pixel 0 is lesion (P = 0.8), pixel 1 background (P_bg = 0.6).
        let probs = t(&[0.2, 0.6, 0.8, 0.4], &[1, 2, 1, 2]);
        let onehot = t(&[0.0, 1.0, 1.0, 0.0], &[1, 2, 1, 2]);
        let a = t(&[1.5, 0.75], &[1, 1, 1, 2]);
        let want = (1.5 * -(0.8f64.ln()) + 0.75 * -(0.6f64.ln())) / 2.25;
        close(&weighted_ce(&probs, &onehot, &a).unwrap(), want, "eq. 12");
    }

    #[test]
    fn generalised_and_hardness_aware_dice_eq_14_13_11_by_hand() {
        let probs = t(&[0.2, 0.6, 0.9, 0.8, 0.4, 0.1], &[1, 2, 1, 3]);
        let onehot = t(&[0.0, 1.0, 1.0, 1.0, 0.0, 0.0], &[1, 2, 1, 3]);
        // Class 0 (background): ΣY = 2, m = 1/4; Σ Y·P = 0.6 + 0.9; Σ (Y + P) = 2 + 1.7.
        // Class 1 (lesion): ΣY = 1, m = 1; Σ Y·P = 0.8; Σ (Y + P) = 1 + 1.3.
        let num = 0.25 * 1.5 + 1.0 * 0.8;
        let den = 0.25 * 3.7 + 1.0 * 2.3;
        let gd = 1.0 - 2.0 * num / den;
        close(&generalised_dice(&probs, &onehot).unwrap(), gd, "eq. 14");
        close(&hardness_aware_dice(&probs, &onehot).unwrap(), -(1.0 - gd).ln(), "eq. 13");
        let a = t(&[1.0, 1.0, 1.0], &[1, 1, 1, 3]);
        let ce = -(0.8f64.ln() + 0.6f64.ln() + 0.9f64.ln()) / 3.0;
        close(&segmentation_loss(&probs, &onehot, &a).unwrap(), ce - (1.0 - gd).ln(), "eq. 11");
        // A perfect prediction has L_GD = 0 and L_HGD = 0.
        close(&hardness_aware_dice(&onehot, &onehot).unwrap(), 0.0, "perfect");
        // No lesion in the batch: the empty class takes the background's weight, no NaN.
        let probs = t(&[0.9, 0.7, 0.1, 0.3], &[1, 2, 1, 2]);
        let onehot = t(&[1.0, 1.0, 0.0, 0.0], &[1, 2, 1, 2]);
        let m = 0.25;
        let gd = 1.0 - 2.0 * (m * 1.6) / (m * 3.6 + m * 0.4);
        close(&generalised_dice(&probs, &onehot).unwrap(), gd, "empty lesion class");
    }

    #[test]
    fn total_loss_eq_15_adds_the_terms() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let phi = ContextEncoder::new(&(vs.root() / "phi"));
        let kind = (Kind::Float, tch::Device::Cpu);
        let probs = Tensor::rand([1, 2, 16, 16], kind).softmax(1, Kind::Float);
        let onehot = Tensor::cat(&[Tensor::ones([1, 1, 16, 16], kind), Tensor::zeros([1, 1, 16, 16], kind)], 1);
        let a = Tensor::ones([1, 1, 16, 16], kind);
        let (ig, fh, id) = (
            Tensor::rand([1, 1, 16, 16], kind),
            Tensor::rand([1, 1, 16, 16], kind),
            Tensor::rand([1, 1, 16, 16], kind),
        );
        let k = LossWeights::PAPER;
        let total = total_loss(&probs, &onehot, &a, &ig, &fh, &id, &phi, &k).unwrap().double_value(&[]);
        let parts = segmentation_loss(&probs, &onehot, &a).unwrap().double_value(&[])
            + k.alpha * synthesis_loss(&ig, &id, &a, &phi, k.gamma).unwrap().double_value(&[])
            + k.beta * synthesis_loss(&fh, &id, &a, &phi, k.gamma).unwrap().double_value(&[]);
        assert!((total - parts).abs() < 1e-5, "{total} vs {parts}");
        assert_eq!(k, LossWeights { alpha: 1.0, beta: 1.0, gamma: 1.2, w: 1.5, d: 50.0 });
    }
}
