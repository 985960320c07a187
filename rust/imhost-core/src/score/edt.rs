//! Exact Euclidean distance transform with anisotropic spacing (Felzenszwalb & Huttenlocher,
//! "Distance transforms of sampled functions", 2012): one pass per axis over squared distances.
//!
//! The grid is `[ni, nj, nk]`, `i` fastest. Only the distances at a list of query voxels are
//! returned: the last pass reads them off each `k` line instead of writing a whole volume back.

use rayon::prelude::*;

/// Squared distance of "no feature on this line yet".
const INF: f64 = f64::INFINITY;

/// Squared distance along one line to the nearest feature (`true`), `w2` = spacing².
fn binary_line(features: &[bool], w2: f64, out: &mut [f64]) {
    let mut last: Option<usize> = None;
    for (p, &f) in features.iter().enumerate() {
        if f {
            last = Some(p);
        }
        out[p] = last.map_or(INF, |q| ((p - q) as f64).powi(2) * w2);
    }
    let mut next: Option<usize> = None;
    for p in (0..features.len()).rev() {
        if features[p] {
            next = Some(p);
        }
        if let Some(q) = next {
            out[p] = out[p].min(((q - p) as f64).powi(2) * w2);
        }
    }
}

/// Scratch space of one line's lower envelope.
#[derive(Default)]
struct Envelope {
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Envelope {
    /// `out[p] = min_q f[q] + w2 (p − q)²` over the finite `f[q]`.
    fn transform(&mut self, f: &[f64], w2: f64, out: &mut [f64]) {
        let n = f.len();
        self.v.clear();
        self.z.clear();
        for (q, &fq) in f.iter().enumerate() {
            if fq == INF {
                continue;
            }
            let qf = q as f64;
            loop {
                let Some(&vk) = self.v.last() else {
                    self.v.push(q);
                    self.z.push(-INF);
                    break;
                };
                let vf = vk as f64;
                let s = ((fq + w2 * qf * qf) - (f[vk] + w2 * vf * vf)) / (2.0 * w2 * (qf - vf));
                if s <= *self.z.last().expect("z has one entry per v") {
                    self.v.pop();
                    self.z.pop();
                    continue;
                }
                self.v.push(q);
                self.z.push(s);
                break;
            }
        }
        if self.v.is_empty() {
            out[..n].fill(INF);
            return;
        }
        let mut j = 0;
        for (p, o) in out.iter_mut().enumerate().take(n) {
            let pf = p as f64;
            while j + 1 < self.v.len() && self.z[j + 1] < pf {
                j += 1;
            }
            let d = pf - self.v[j] as f64;
            *o = w2 * d * d + f[self.v[j]];
        }
    }
}

/// Euclidean distances (mm) from each voxel of `queries` (linear indices, `i` fastest) to the
/// nearest `true` voxel of `features` on the grid `dims` with `spacing`. `+inf` when there is
/// no feature at all.
pub fn distances_to(features: &[bool], dims: [usize; 3], spacing: [f64; 3], queries: &[usize]) -> Vec<f64> {
    let [ni, nj, nk] = dims;
    debug_assert_eq!(features.len(), ni * nj * nk);
    if queries.is_empty() {
        return Vec::new();
    }
    let [w0, w1, w2] = spacing.map(|s| s * s);
    let slab = ni * nj;
    let mut sq = vec![INF; features.len()];
    // Passes along i and j, slab by slab.
    sq.par_chunks_mut(slab).zip(features.par_chunks(slab)).for_each(|(out, feat)| {
        if !feat.iter().any(|&f| f) {
            return;
        }
        for j in 0..nj {
            let row = &feat[j * ni..(j + 1) * ni];
            binary_line(row, w0, &mut out[j * ni..(j + 1) * ni]);
        }
        if nj > 1 {
            let mut env = Envelope::default();
            let (mut line, mut res) = (vec![0.0; nj], vec![0.0; nj]);
            for i in 0..ni {
                for j in 0..nj {
                    line[j] = out[i + j * ni];
                }
                env.transform(&line, w1, &mut res);
                for j in 0..nj {
                    out[i + j * ni] = res[j];
                }
            }
        }
    });
    // Pass along k, read off at the queries: group the queries by their (i, j) line.
    let mut by_line: Vec<(usize, usize)> = queries.iter().map(|&q| (q % slab, q / slab)).collect();
    by_line.sort_unstable();
    let groups: Vec<&[(usize, usize)]> = by_line.chunk_by(|a, b| a.0 == b.0).collect();
    groups
        .par_iter()
        .map_init(
            || (Envelope::default(), vec![0.0; nk], vec![0.0; nk]),
            |(env, line, res), group| {
                let ij = group[0].0;
                for (k, l) in line.iter_mut().enumerate() {
                    *l = sq[ij + k * slab];
                }
                if nk > 1 {
                    env.transform(line, w2, res);
                } else {
                    res.copy_from_slice(line);
                }
                group.iter().map(|&(_, k)| res[k].sqrt()).collect::<Vec<f64>>()
            },
        )
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: every query against every feature.
    fn brute(features: &[bool], dims: [usize; 3], spacing: [f64; 3], q: usize) -> f64 {
        let at = |n: usize| [n % dims[0], (n / dims[0]) % dims[1], n / (dims[0] * dims[1])];
        let a = at(q);
        features
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(n, _)| {
                let b = at(n);
                (0..3).map(|c| ((a[c] as f64 - b[c] as f64) * spacing[c]).powi(2)).sum::<f64>().sqrt()
            })
            .fold(INF, f64::min)
    }

    #[test]
    fn equals_brute_force_on_random_anisotropic_grids() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for &(dims, spacing, density) in &[
            ([9, 7, 5], [0.8, 0.8, 2.5], 0.05),
            ([1, 13, 4], [1.0, 0.5, 3.0], 0.1),
            ([6, 1, 1], [0.7, 1.0, 1.0], 0.2),
            ([8, 8, 8], [1.0, 1.0, 1.0], 0.01),
            ([5, 6, 7], [2.0, 0.3, 1.1], 0.0),
        ] {
            let n = dims[0] * dims[1] * dims[2];
            let features: Vec<bool> = (0..n).map(|_| rnd() < density).collect();
            let queries: Vec<usize> = (0..n).collect();
            let got = distances_to(&features, dims, spacing, &queries);
            let mut pairs: Vec<(usize, usize)> = queries.iter().map(|&q| (q % (dims[0] * dims[1]), q)).collect();
            pairs.sort_unstable();
            for (d, (_, q)) in got.iter().zip(&pairs) {
                let want = brute(&features, dims, spacing, *q);
                assert!(d == &want || (d - want).abs() < 1e-9, "{dims:?} voxel {q}: {d} vs {want}");
            }
        }
    }
}
