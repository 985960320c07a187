//! Agreement of paired numbers and classification/ranking scores.
//!
//! Every function returns NaN where its value is undefined (fewer than two pairs, a constant
//! sample, one class only) and an error only for inputs of different lengths or non-finite
//! values.

use serde::Serialize;

use super::Confusion;
use crate::{Error, Result};

fn check_pairs(a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::shape(format!("{} values are paired with {}", a.len(), b.len())));
    }
    if let Some(x) = a.iter().chain(b).find(|x| !x.is_finite()) {
        return Err(Error::invalid_argument(format!("{x} is not a finite number")));
    }
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Pearson's r (NaN when either sample is constant or has fewer than two values).
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pairs(a, b)?;
    if a.len() < 2 {
        return Ok(f64::NAN);
    }
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    Ok(if saa == 0.0 || sbb == 0.0 { f64::NAN } else { (sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0) })
}

/// Ranks 1…n with ties given their average rank (scipy's `rankdata(method="average")`).
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut s = 0;
    while s < order.len() {
        let mut e = s + 1;
        while e < order.len() && v[order[e]] == v[order[s]] {
            e += 1;
        }
        let avg = (s + e + 1) as f64 / 2.0;
        for &o in &order[s..e] {
            r[o] = avg;
        }
        s = e;
    }
    r
}

/// Spearman's ρ: Pearson's r of the average ranks (scipy `spearmanr`).
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pairs(a, b)?;
    pearson(&ranks(a), &ranks(b))
}

/// Intraclass correlations of two raters (the truth and the prediction) over n subjects, from
/// the two-way ANOVA (Shrout & Fleiss 1979; McGraw & Wong 1996).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Icc {
    /// ICC(2,1) = ICC(A,1): two-way random effects, absolute agreement, single rater. A
    /// systematic offset of the prediction lowers it.
    pub icc2_1: f64,
    /// ICC(3,1) = ICC(C,1): two-way mixed effects, consistency, single rater. Blind to an offset.
    pub icc3_1: f64,
}

/// ICC(2,1) and ICC(3,1) of `truth` and `pred` (pingouin `intraclass_corr` ICC(A,1) and ICC(C,1)).
pub fn icc(truth: &[f64], pred: &[f64]) -> Result<Icc> {
    check_pairs(truth, pred)?;
    let n = truth.len();
    if n < 2 {
        return Ok(Icc { icc2_1: f64::NAN, icc3_1: f64::NAN });
    }
    let k = 2.0;
    let nf = n as f64;
    let grand = (truth.iter().sum::<f64>() + pred.iter().sum::<f64>()) / (k * nf);
    let (mt, mp) = (mean(truth), mean(pred));
    let ssr: f64 = truth.iter().zip(pred).map(|(a, b)| ((a + b) / k - grand).powi(2)).sum::<f64>() * k;
    let ssc = nf * ((mt - grand).powi(2) + (mp - grand).powi(2));
    let sst: f64 = truth.iter().chain(pred).map(|x| (x - grand).powi(2)).sum();
    let sse = sst - ssr - ssc;
    let msr = ssr / (nf - 1.0);
    let msc = ssc / (k - 1.0);
    let mse = sse / ((nf - 1.0) * (k - 1.0));
    let icc2 = (msr - mse) / (msr + (k - 1.0) * mse + k * (msc - mse) / nf);
    let icc3 = (msr - mse) / (msr + (k - 1.0) * mse);
    let finite = |x: f64| if x.is_finite() { x } else { f64::NAN };
    Ok(Icc { icc2_1: finite(icc2), icc3_1: finite(icc3) })
}

/// Bland–Altman agreement of `pred` with `truth`: differences pred − truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BlandAltman {
    /// Mean difference.
    pub bias: f64,
    /// Sample standard deviation of the differences (n − 1).
    pub sd: f64,
    /// bias − 1.96 sd.
    pub lower_limit: f64,
    /// bias + 1.96 sd.
    pub upper_limit: f64,
}

/// Bland–Altman bias and 95 % limits of agreement (Bland & Altman 1986, 1.96 sd).
pub fn bland_altman(truth: &[f64], pred: &[f64]) -> Result<BlandAltman> {
    check_pairs(truth, pred)?;
    let d: Vec<f64> = pred.iter().zip(truth).map(|(p, t)| p - t).collect();
    let bias = if d.is_empty() { f64::NAN } else { mean(&d) };
    let sd = if d.len() < 2 {
        f64::NAN
    } else {
        (d.iter().map(|x| (x - bias).powi(2)).sum::<f64>() / (d.len() - 1) as f64).sqrt()
    };
    Ok(BlandAltman { bias, sd, lower_limit: bias - 1.96 * sd, upper_limit: bias + 1.96 * sd })
}

/// Weights of Cohen's κ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KappaWeights {
    /// Unweighted: every disagreement counts 1.
    None,
    /// |i − j| / (K − 1) over the category indices.
    Linear,
    /// (i − j)² / (K − 1)².
    Quadratic,
}

/// Cohen's κ of two ratings over the categories `labels` (all categories that exist, in order:
/// leaving an unused one out changes a weighted κ). scikit-learn `cohen_kappa_score(labels=…)`.
pub fn cohen_kappa(a: &[i64], b: &[i64], labels: &[i64], weights: KappaWeights) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::shape(format!("{} ratings are paired with {}", a.len(), b.len())));
    }
    let index = |x: i64| {
        labels
            .iter()
            .position(|&l| l == x)
            .ok_or_else(|| Error::invalid_argument(format!("{x} is not in the category list {labels:?}")))
    };
    let k = labels.len();
    let mut m = vec![0.0f64; k * k];
    for (&x, &y) in a.iter().zip(b) {
        m[index(x)? * k + index(y)?] += 1.0;
    }
    let n: f64 = m.iter().sum();
    if n == 0.0 {
        return Ok(f64::NAN);
    }
    let row: Vec<f64> = (0..k).map(|i| (0..k).map(|j| m[i * k + j]).sum()).collect();
    let col: Vec<f64> = (0..k).map(|j| (0..k).map(|i| m[i * k + j]).sum()).collect();
    let w = |i: usize, j: usize| -> f64 {
        let d = (i as f64 - j as f64).abs();
        match weights {
            KappaWeights::None => f64::from(u8::from(i != j)),
            KappaWeights::Linear => d,
            KappaWeights::Quadratic => d * d,
        }
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            observed += w(i, j) * m[i * k + j];
            expected += w(i, j) * row[i] * col[j] / n;
        }
    }
    Ok(if expected == 0.0 { f64::NAN } else { 1.0 - observed / expected })
}

/// Area under the ROC curve: the Mann–Whitney probability that a positive scores above a
/// negative, ties counted ½ (scikit-learn `roc_auc_score`). NaN with one class only.
pub fn roc_auc(positive: &[bool], score: &[f64]) -> Result<f64> {
    if positive.len() != score.len() {
        return Err(Error::shape(format!("{} labels are paired with {} scores", positive.len(), score.len())));
    }
    if let Some(x) = score.iter().find(|x| !x.is_finite()) {
        return Err(Error::invalid_argument(format!("score {x} is not a finite number")));
    }
    let r = ranks(score);
    let np = positive.iter().filter(|&&p| p).count() as f64;
    let nn = positive.len() as f64 - np;
    if np == 0.0 || nn == 0.0 {
        return Ok(f64::NAN);
    }
    let rank_sum: f64 = r.iter().zip(positive).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    Ok((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// A binary decision at a threshold: positive when `score ≥ threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// The threshold.
    pub threshold: f64,
    /// Case counts.
    #[serde(flatten)]
    pub counts: Confusion,
    /// TP / (TP + FN).
    pub sensitivity: f64,
    /// TN / (TN + FP).
    pub specificity: f64,
    /// Positive predictive value TP / (TP + FP).
    pub ppv: f64,
    /// Negative predictive value TN / (TN + FN).
    pub npv: f64,
    /// (TP + TN) / n.
    pub accuracy: f64,
}

/// Sensitivity, specificity, PPV and NPV with positives at `score ≥ threshold`.
pub fn operating_point(positive: &[bool], score: &[f64], threshold: f64) -> Result<OperatingPoint> {
    if positive.len() != score.len() {
        return Err(Error::shape(format!("{} labels are paired with {} scores", positive.len(), score.len())));
    }
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    for (&p, &s) in positive.iter().zip(score) {
        match (p, s >= threshold) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let r = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    Ok(OperatingPoint {
        threshold,
        counts: Confusion { tp, fp, fn_, tn },
        sensitivity: r(tp, tp + fn_),
        specificity: r(tn, tn + fp),
        ppv: r(tp, tp + fp),
        npv: r(tn, tn + fn_),
        accuracy: r(tp + tn, tp + fp + fn_ + tn),
    })
}

/// Harrell's C-index of a risk score against survival times with event flags (lifelines
/// `concordance_index(time, -risk, event)`): a pair is comparable when the shorter time is an
/// event, or when the times tie and only one of them is an event (the censored subject is taken
/// to have lived longer); two events at the same time are not comparable. It is concordant when that subject has the higher
/// risk; tied risks count ½. NaN when no pair is comparable. O(n²).
pub fn harrell_c(time: &[f64], event: &[bool], risk: &[f64]) -> Result<f64> {
    check_pairs(time, risk)?;
    if event.len() != time.len() {
        return Err(Error::shape(format!("{} event flags for {} times", event.len(), time.len())));
    }
    let (mut comparable, mut concordant) = (0.0f64, 0.0f64);
    for i in 0..time.len() {
        if !event[i] {
            continue;
        }
        for j in 0..time.len() {
            if time[i] < time[j] || (time[i] == time[j] && !event[j]) {
                comparable += 1.0;
                if risk[i] > risk[j] {
                    concordant += 1.0;
                } else if risk[i] == risk[j] {
                    concordant += 0.5;
                }
            }
        }
    }
    Ok(if comparable == 0.0 { f64::NAN } else { concordant / comparable })
}

/// C-index of an ordinal prediction against ordinal truth (the CAC risk categories): Harrell's
/// C with every subject an event, so pairs with different true categories are comparable,
/// concordant when the prediction orders them the same way, ½ for tied predictions. This is
/// the reading of Gogin et al. (2021) that gives 1 for a perfect prediction; their formula
/// taken literally (over all n(n−1)/2 pairs, ties never concordant) is
/// [`c_index_all_pairs`].
pub fn c_index_ordinal(truth: &[f64], pred: &[f64]) -> Result<f64> {
    harrell_c(truth, &vec![true; truth.len()], &pred.iter().map(|p| -p).collect::<Vec<_>>())
}

/// #{(i, j): pᵢ < pⱼ and tᵢ < tⱼ} / (n choose 2): Gogin et al.'s formula to the letter. Pairs
/// tied in the truth can never count, so its maximum is below 1 whenever categories repeat.
pub fn c_index_all_pairs(truth: &[f64], pred: &[f64]) -> Result<f64> {
    check_pairs(truth, pred)?;
    let n = truth.len();
    if n < 2 {
        return Ok(f64::NAN);
    }
    let mut count = 0u64;
    for i in 0..n {
        for j in 0..n {
            count += u64::from(pred[i] < pred[j] && truth[i] < truth[j]);
        }
    }
    Ok(count as f64 / (n * (n - 1) / 2) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of shared/notes/metrics.md, values from lifelines / scikit-learn.
    #[test]
    fn harrell_c_test_vector() {
        let t = [1., 2., 2., 3., 4., 4., 5., 6., 6., 7., 8., 9.];
        let e = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1].map(|x| x == 1);
        let r = [3., 3., 2., 2., 3., 1., 1., 2., 0., 0., 1., 0.];
        assert!((harrell_c(&t, &e, &r).unwrap() - 0.8617021).abs() < 1e-7);
    }

    #[test]
    fn kappa_test_vectors() {
        let a = [0, 1, 2, 3, 3, 2, 1, 0, 1, 2];
        let b = [0, 1, 1, 3, 2, 2, 1, 1, 1, 3];
        let l = [0, 1, 2, 3];
        assert!((cohen_kappa(&a, &b, &l, KappaWeights::Linear).unwrap() - 0.6296296).abs() < 1e-7);
        assert!((cohen_kappa(&a, &b, &l, KappaWeights::None).unwrap() - 0.4520548).abs() < 1e-7);
        assert!((cohen_kappa(&a, &b, &l, KappaWeights::Quadratic).unwrap() - 0.7894737).abs() < 1e-7);
    }

    #[test]
    fn auc_test_vector_and_one_class() {
        let y = [0, 0, 1, 1, 0, 1, 1, 0, 1, 0].map(|x| x == 1);
        let s = [1., 2., 2., 3., 1., 3., 2., 0., 1., 1.];
        assert!((roc_auc(&y, &s).unwrap() - 0.86).abs() < 1e-12);
        assert!(roc_auc(&[true, true], &[0.1, 0.2]).unwrap().is_nan());
    }

    #[test]
    fn ordinal_c_index_is_one_for_a_perfect_prediction() {
        let t = [0., 0., 1., 2., 2., 3., 4.];
        assert_eq!(c_index_ordinal(&t, &t).unwrap(), 1.0);
        assert!(c_index_all_pairs(&t, &t).unwrap() < 1.0);
        let reversed: Vec<f64> = t.iter().map(|x| -x).collect();
        assert_eq!(c_index_ordinal(&t, &reversed).unwrap(), 0.0);
    }

    #[test]
    fn icc_penalises_an_offset_and_consistency_does_not() {
        let t = [1., 2., 3., 4., 5.];
        let p = [3., 4., 5., 6., 7.];
        let i = icc(&t, &p).unwrap();
        assert!((i.icc3_1 - 1.0).abs() < 1e-12);
        assert!(i.icc2_1 < 0.8);
        let ba = bland_altman(&t, &p).unwrap();
        assert_eq!((ba.bias, ba.sd), (2.0, 0.0));
    }
}
