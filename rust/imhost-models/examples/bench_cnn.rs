//! Time CNN inference on one study through our runtime: `[slices, T, size, size]` random input
//! (T of the model), median of `repeats` runs after one warm-up, as JSON on stdout.
//!
//! ```text
//! cargo run --release -p imhost-models --example bench_cnn -- MODEL_DIR [--device cpu|cuda]
//!     [--precision f32|bf16|f16] [--slices 16] [--size 512] [--repeats 5]
//! ```
//! `benches/perfusion_unet_eager.py bench MODEL_DIR` times PyTorch eager on the same weights;
//! `scripts/bench-cnn.sh` runs both and BENCHMARKS.md records the figures.

use std::time::Instant;

use imhost_core::RunControl;
use imhost_models::{LoadOptions, PerfusionModel, Precision};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: bench_cnn MODEL_DIR [--device D] [--precision P] [--slices N] [--size S] [--repeats R]")?;
    let device = arg(&args, "--device", "auto");
    let precision = Precision::from_name(&arg(&args, "--precision", "f32"))?;
    let slices: usize = arg(&args, "--slices", "16").parse()?;
    let size: usize = arg(&args, "--size", "512").parse()?;
    let repeats: usize = arg(&args, "--repeats", "5").parse()?;
    let info = imhost_models::runtime::init().clone();
    let model = PerfusionModel::load(std::path::Path::new(dir), &LoadOptions::new(Some(device), precision))?;
    let t = model.manifest().inputs.spec.time_points;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let input: Vec<f32> = (0..slices * t * size * size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 500.0 - 1.0
        })
        .collect();
    let shape = [slices, t, size, size];
    model.predict_slices(&input, shape, &RunControl::none())?;
    let mut times = Vec::new();
    for _ in 0..repeats {
        let start = Instant::now();
        let out = model.predict_slices(&input, shape, &RunControl::none())?;
        times.push(start.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "runtime": "imhost (tch 0.24 / LibTorch 2.11)", "device": imhost_models::runtime::device_name(model.device()),
            "precision": precision.name(), "slices": slices, "size": size, "time_points": t,
            "batch_slices": model.batch_slices(size, size, slices),
            "median_s": times[times.len() / 2], "min_s": times[0], "cuda_library_loaded": info.cuda_library_loaded,
            "cuda_available": info.cuda_available, "cpu_threads": info.cpu_threads,
        })
    );
    Ok(())
}
