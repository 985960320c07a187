//! The cost of running the perfusion CNN in `imhost-model-worker` (how every host of
//! libimhost.so runs it) against running it in the calling process (the `imhost` command): the
//! whole `perfusion-cnn` registry model on an anatomical phantom, first run (worker start,
//! LibTorch and weights loaded) and the median of the next `repeats`. JSON on stdout.
//!
//! ```text
//! cargo run --release -p imhost-models --example bench_worker -- MODEL_DIR [--size 256]
//!     [--slices 16] [--repeats 5] [--device cpu]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use imhost_core::phantom::ctp::{self, PhantomKind, PhantomOptions};
use imhost_core::{AnyVolume, RunControl};
use imhost_registry::{RegistryOptions, open};
use serde_json::Map;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().ok_or("usage: bench_worker MODEL_DIR [--size N] [--slices K] [--repeats R]")?);
    let size: usize = arg(&args, "--size", "256").parse()?;
    let slices: usize = arg(&args, "--slices", "16").parse()?;
    let repeats: usize = arg(&args, "--repeats", "5").parse()?;
    let device = arg(&args, "--device", "cpu");
    let mut options = PhantomOptions::new(PhantomKind::Anatomical);
    options.shape = Some([size, size, slices]);
    let phantom = ctp::generate(&options)?;
    let input = AnyVolume::from(phantom.ctp);
    for in_process in [true, false] {
        let registry = open(&RegistryOptions {
            paths: vec![dir.clone()],
            device: Some(device.clone()),
            in_process: in_process
                .then_some(imhost_models::packages::open_in_process as imhost_registry::InProcessOpener),
            ..Default::default()
        });
        let mut times = Vec::new();
        for _ in 0..=repeats {
            let started = Instant::now();
            registry.run("perfusion-cnn", &[input.view()], &Map::new(), &RunControl::none())?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let first = times.remove(0);
        times.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "where": if in_process { "in process" } else { "imhost-model-worker" },
                "shape": input.shape(), "first_run_ms": first, "median_ms": times[times.len() / 2],
                "min_ms": times[0], "repeats": repeats, "threads": rayon::current_num_threads(),
            })
        );
    }
    Ok(())
}
