//! {{name}}: an imhost model plugin in Rust (written by `imhost plugin new`). Research use only.
//!
//! The model: voxels at or above the option `lower` (HU) become label 1 of the output `mask`,
//! and their volume is the score `volume_ml`. Its manifest is `manifest.json`. Replace `run`
//! with your model; see docs/plugins.md. A panic is caught by the SDK and becomes an error.

use imhost_plugin_sdk::{Error, Host, Model, Run, export_plugin};

/// The model (one instance per load; `run` is never called concurrently on it).
pub struct Bright;

impl Model for Bright {
    fn manifest() -> String {
        include_str!("../manifest.json").into()
    }

    fn create(_host: &Host<'_>) -> Result<Self, Error> {
        // Load weights here: `_host.plugin_dir()` is the folder this library was loaded from.
        Ok(Bright)
    }

    fn run(&mut self, run: &Run<'_>) -> Result<(), Error> {
        let input = run.input(0)?;
        // The manifest lists "dtypes": ["f32"], so the host converts any input to float32.
        let x = input.view::<f32>()?; // [i, j, k, t], the caller's memory, no copy
        let lower = run.option_f64("lower")?;
        let mut mask = run.output::<u8>("mask", input.spatial_shape())?;
        let mut count = 0usize;
        let nk = x.shape()[2];
        for k in 0..nk {
            run.progress(k as f64 / nk as f64, "thresholding")?; // an error when cancelled
            for j in 0..x.shape()[1] {
                for i in 0..x.shape()[0] {
                    if f64::from(x[[i, j, k, 0]]) >= lower {
                        mask[[i, j, k, 0]] = 1;
                        count += 1;
                    }
                }
            }
        }
        let [si, sj, sk] = input.spacing();
        run.set_score("volume_ml", count as f64 * si * sj * sk / 1000.0)
    }
}

export_plugin!(name: "{{name}}", version: "0.1.0", models: [Bright]);
