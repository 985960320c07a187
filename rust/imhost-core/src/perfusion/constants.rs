//! Physical constants of the indicator-dilution model (documented in `docs/VALIDATION.md`).

/// Hematocrit correction k_H = (1 − H_large)/(1 − H_small) with H_large = 0.45 (large vessels) and
/// H_small = 0.25 (capillaries): ≈ 0.733 (Fieselmann et al. 2011).
pub const K_H: f64 = (1.0 - 0.45) / (1.0 - 0.25);

/// Brain tissue density ρ in g/ml: 1.05, as in the open implementations (PyPeT, `pct`, SPPINN).
/// (Fieselmann 2011 uses 1.04; the difference scales CBF and CBV by 1 %.)
pub const RHO: f64 = 1.05;

/// Converts `max k(t)` (1/s, the flow-scaled residue function) into CBF in ml/100 g/min:
/// CBF = (k_H/ρ)·max k·6000.
pub const CBF_SCALE: f64 = K_H / RHO * 6000.0;

/// Converts the area ratio ∫C_t/∫C_a into CBV in ml/100 g: CBV = (k_H/ρ)·100·∫C_t/∫C_a.
pub const CBV_SCALE: f64 = K_H / RHO * 100.0;
