//! Rigid registration against a known motion (tolerances from ../shared/notes/itk.md: 0.02 rad,
//! 0.3 mm), and a bad buffer refused with an error instead of a crash.

use itk_sys::{Grid, RigidSettings, register_rigid};

/// A head-like analytic image: a skull shell with smooth edges and a few soft blobs (HU).
fn head(p: [f64; 3]) -> f32 {
    let r = ((p[0] / 38.0).powi(2) + (p[1] / 44.0).powi(2) + (p[2] / 26.0).powi(2)).sqrt();
    let shell = 1000.0 / (1.0 + ((r - 0.92).abs() / 0.03).powi(4));
    let blob = |c: [f64; 3], s: f64, a: f64| {
        a * (-((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)) / (2.0 * s * s)).exp()
    };
    (shell
        + blob([10.0, -8.0, 3.0], 6.0, 60.0)
        + blob([-12.0, 14.0, -5.0], 8.0, 40.0)
        + blob([0.0, 20.0, 8.0], 5.0, 80.0)) as f32
}

/// ITK's Euler3D rotation: R = Rz(γ)·Rx(α)·Ry(β).
fn itk_rotation([a, b, g]: [f64; 3]) -> [[f64; 3]; 3] {
    let rx = [[1.0, 0.0, 0.0], [0.0, a.cos(), -a.sin()], [0.0, a.sin(), a.cos()]];
    let ry = [[b.cos(), 0.0, b.sin()], [0.0, 1.0, 0.0], [-b.sin(), 0.0, b.cos()]];
    let rz = [[g.cos(), -g.sin(), 0.0], [g.sin(), g.cos(), 0.0], [0.0, 0.0, 1.0]];
    let mul = |x: [[f64; 3]; 3], y: [[f64; 3]; 3]| -> [[f64; 3]; 3] {
        std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| x[i][k] * y[k][j]).sum()))
    };
    mul(rz, mul(rx, ry))
}

#[test]
fn recovers_a_known_rigid_motion() {
    let size = [48usize, 48, 24];
    let spacing = [2.0, 2.0, 2.5];
    let origin: [f64; 3] = std::array::from_fn(|a| -0.5 * (size[a] - 1) as f64 * spacing[a]);
    let grid = Grid { size, spacing, origin, direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] };
    let (angles, shift) = ([0.03, -0.02, 0.05], [2.5, -1.5, 1.0]);
    let r = itk_rotation(angles);
    let n = size.iter().product::<usize>();
    let mut fixed = vec![0.0f32; n];
    let mut moving = vec![0.0f32; n];
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let p = [
                    origin[0] + i as f64 * spacing[0],
                    origin[1] + j as f64 * spacing[1],
                    origin[2] + k as f64 * spacing[2],
                ];
                let v = i + size[0] * (j + size[1] * k);
                fixed[v] = head(p);
                // The moving image shows the head at T(p) = R·p + t: moving(T(p)) = fixed(p), so
                // moving(q) = head(Rᵀ·(q − t)).
                let d = [p[0] - shift[0], p[1] - shift[1], p[2] - shift[2]];
                let q: [f64; 3] = std::array::from_fn(|a| (0..3).map(|b| r[b][a] * d[b]).sum());
                moving[v] = head(q);
            }
        }
    }
    let mut resampled = vec![0.0f32; n];
    let found = register_rigid(&fixed, &moving, &grid, &RigidSettings::default(), &mut resampled).unwrap();
    for a in 0..3 {
        assert!((found.angles[a] - angles[a]).abs() < 0.02, "angle {a}: {:?} vs {angles:?}", found.angles);
        // The transform's centre is the image centre (the origin here), so t is the shift itself.
        assert!((found.translation[a] - shift[a]).abs() < 0.3, "translation {a}: {:?} vs {shift:?}", found.translation);
    }
    // The resampled moving image is close to the fixed one away from the borders (where the
    // transform reaches outside the moving image, resampling writes air, −1024 HU).
    let interior: Vec<usize> = (0..n)
        .filter(|&v| {
            let (i, j, k) = (v % size[0], (v / size[0]) % size[1], v / (size[0] * size[1]));
            (5..size[0] - 5).contains(&i) && (5..size[1] - 5).contains(&j) && (4..size[2] - 4).contains(&k)
        })
        .collect();
    let mean_abs =
        |x: &[f32]| interior.iter().map(|&v| f64::from((fixed[v] - x[v]).abs())).sum::<f64>() / interior.len() as f64;
    let (before, err) = (mean_abs(&moving), mean_abs(&resampled));
    // Linear interpolation of the ≈ 1 mm skull shell on 2 mm voxels leaves a residual.
    assert!(err < before / 2.5, "mean |difference| {before:.1} → {err:.1} HU");
}

#[test]
fn mismatched_buffers_are_an_error() {
    let grid = Grid {
        size: [4, 4, 4],
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };
    let mut out = vec![0.0f32; 64];
    let e = register_rigid(&[0.0; 10], &[0.0; 64], &grid, &RigidSettings::default(), &mut out).unwrap_err();
    assert!(e.what().contains("does not match"), "{}", e.what());
}
