//! HD95 and NSD of a 512×512×300 mask pair (issue 14's target: ≤ 1 s on the 2-core machine).
//!
//! The pair is `benches/score_surface.py`'s: two ellipsoids on a 0.8×0.8×1.0 mm grid (the truth
//! with semi-axes 150, 120, 100 voxels; the prediction moved by (3, −2, 1) voxels with semi-axes
//! 147, 123, 98), masks in memory. Measured:
//!
//! - `score_surface/hd95_nsd`: `score::surface` (both surfaces, both directed transforms, HD95,
//!   NSD at 1 mm and the rest of the surface group);
//! - `score_surface/overlap`: `score::overlap` on the same pair, for reference.
//!
//! The script times MONAI and MedPy on the same pair in one run and checks the values agree.
//! Run: `cargo bench -p imhost-core --bench score_surface`; figures go to BENCHMARKS.md.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use imhost_core::score::{Mask, overlap, surface};

const SHAPE: [usize; 3] = [512, 512, 300];
const SPACING: [f64; 3] = [0.8, 0.8, 1.0];

fn ellipsoid(centre: [f64; 3], axes: [f64; 3]) -> Mask {
    let mut data = Vec::with_capacity(SHAPE.iter().product());
    // The same float32 arithmetic as the script's numpy expression.
    let term = |c: usize| -> Vec<f32> {
        (0..SHAPE[c]).map(|v| ((v as f32 - centre[c] as f32) / axes[c] as f32).powi(2)).collect()
    };
    let (ti, tj, tk) = (term(0), term(1), term(2));
    for &k in &tk {
        for &j in &tj {
            for &i in &ti {
                data.push(i + j + k <= 1.0);
            }
        }
    }
    Mask::new(data, SHAPE, SPACING).unwrap()
}

fn bench(c: &mut Criterion) {
    let centre = [256.0, 256.0, 150.0];
    let truth = ellipsoid(centre, [150.0, 120.0, 100.0]);
    let pred = ellipsoid([centre[0] + 3.0, centre[1] - 2.0, centre[2] + 1.0], [147.0, 123.0, 98.0]);
    let s = surface(&pred, &truth, 1.0).unwrap();
    println!(
        "surface voxels {} / {}; hd95 {:.6} mm, hd95_pooled {:.6} mm, nsd {:.6}",
        s.surface_voxels_prediction, s.surface_voxels_truth, s.hd95, s.hd95_pooled, s.nsd
    );
    let mut g = c.benchmark_group("score_surface");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("hd95_nsd", |b| b.iter(|| black_box(surface(&pred, &truth, 1.0).unwrap())));
    g.bench_function("overlap", |b| b.iter(|| black_box(overlap(&pred, &truth).unwrap())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
