//! Example imhost plugin in Rust: a 3-D box smoothing filter, written with the SDK's safe
//! `Model` trait. `docs/plugins.md` walks through this file.

use imhost_plugin_sdk::{Error, Host, Level, Model, Run, export_plugin};

/// Box mean filter.
pub struct Smooth;

impl Model for Smooth {
    fn manifest() -> String {
        include_str!("manifest.json").into()
    }

    fn create(host: &Host<'_>) -> Result<Self, Error> {
        host.log(Level::Debug, "box smoothing ready");
        Ok(Smooth)
    }

    fn run(&mut self, run: &Run<'_>) -> Result<(), Error> {
        let input = run.input(0)?;
        let x = input.view::<f32>()?; // the caller's memory, no copy
        let r = run.option_f64("radius")? as isize;
        let [ni, nj, nk, _] = input.shape();
        let mut out = run.output::<f32>("smoothed", input.spatial_shape())?;
        let mut total = 0.0f64;
        for k in 0..nk {
            run.progress(k as f64 / nk as f64, "smoothing")?;
            for j in 0..nj {
                for i in 0..ni {
                    total += f64::from(x[[i, j, k, 0]]);
                    let (mut sum, mut n) = (0.0f64, 0u32);
                    for dk in -r..=r {
                        for dj in -r..=r {
                            for di in -r..=r {
                                let (a, b, c) = (i as isize + di, j as isize + dj, k as isize + dk);
                                if a >= 0
                                    && b >= 0
                                    && c >= 0
                                    && (a as usize) < ni
                                    && (b as usize) < nj
                                    && (c as usize) < nk
                                {
                                    sum += f64::from(x[[a as usize, b as usize, c as usize, 0]]);
                                    n += 1;
                                }
                            }
                        }
                    }
                    out[[i, j, k, 0]] = (sum / f64::from(n)) as f32;
                }
            }
        }
        run.set_score("input_mean", total / (ni * nj * nk) as f64)?;
        run.progress(1.0, "smoothing")
    }
}

export_plugin!(name: "example-rust-smooth", version: "1.0.0", models: [Smooth]);
