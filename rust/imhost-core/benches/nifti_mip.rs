//! NIfTI read throughput and temporal-MIP time on a CT-perfusion-sized study.
//!
//! The study is the CNN paper's protocol (perfusion-cnn-gava2023: 512×512 in-plane, 16 slices,
//! 89 volumes), int16, written once as an uncompressed `.nii` (746 MB) into
//! `IMHOST_BENCH_DIR` (default: the system temp folder). Three measurements:
//!
//! - `nifti_read/uncompressed_warm`: read the file from the page cache (header validation, one
//!   allocation, one read); target ≥ 1 GB/s;
//! - `nifti_read/uncompressed_cold`: the same after dropping the page cache before every read
//!   (needs write access to /proc/sys/vm/drop_caches, i.e. root; skipped otherwise);
//! - `one_pass/sum_u64`: one pass over the same bytes in memory (a wrapping sum of 64-bit words,
//!   which the compiler vectorises, so it runs at memory bandwidth) — the reference;
//! - `temporal_mip/contiguous`: the MIP on the in-memory study; target within 2× of one pass.
//!
//! Run: `cargo bench -p imhost-core --bench nifti_mip`; figures go to BENCHMARKS.md.

#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imhost_core::io::nifti::{ReadOptions, WriteOptions, read_nifti, write_any};
use imhost_core::ops::temporal_mip;
use imhost_core::{AnyVolume, FrameTimes, Geometry, RunControl, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};

const SHAPE: [usize; 4] = [512, 512, 16, 89];

fn study() -> Volume<i16> {
    let [ni, nj, nk, nt] = SHAPE;
    // Realistic-looking values: a baseline that varies in space plus a bolus-like bump in time.
    let data = Array4::from_shape_fn((ni, nj, nk, nt).f(), |(i, j, k, t)| {
        let base = ((i * 7 + j * 13 + k * 31) % 80) as i16 - 10;
        let bump = if (20..35).contains(&t) { ((t as i16 - 20) * (35 - t as i16)) / 2 } else { 0 };
        base + bump
    });
    let times = FrameTimes::uniform(nt, 0.0, 0.5, TimeSource::Caller).unwrap();
    Volume::new_4d(data, Geometry::axis_aligned([0.45, 0.45, 2.5], [0.0; 3]).unwrap(), times).unwrap()
}

fn benches(c: &mut Criterion) {
    let dir = std::env::var_os("IMHOST_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let path = dir.join("imhost-bench-512x512x16x89.nii");
    let volume = study();
    let bytes = (SHAPE.iter().product::<usize>() * 2) as u64;
    write_any(&AnyVolume::from(volume.clone()), &path, &WriteOptions::default()).unwrap();

    let mut group = c.benchmark_group("nifti_read");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Bytes(bytes));
    let read = || {
        let (v, _) = read_nifti(black_box(&path), &ReadOptions::default()).unwrap();
        black_box(v.shape())
    };
    group.bench_function("uncompressed_warm", |b| b.iter(read));
    let drop_caches = || std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    if drop_caches() {
        group.bench_function("uncompressed_cold", |b| {
            b.iter_batched(|| assert!(drop_caches()), |()| read(), criterion::BatchSize::PerIteration)
        });
    } else {
        eprintln!("nifti_read/uncompressed_cold skipped: cannot write /proc/sys/vm/drop_caches");
    }
    group.finish();

    let words: &[u64] = bytemuck::cast_slice(volume.data().as_slice_memory_order().unwrap());
    let mut group = c.benchmark_group("one_pass");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(bytes));
    group.bench_function("sum_u64", |b| b.iter(|| black_box(words).iter().fold(0u64, |acc, &w| acc.wrapping_add(w))));
    group.finish();

    let mut group = c.benchmark_group("temporal_mip");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(bytes));
    group.bench_function("contiguous", |b| {
        b.iter(|| black_box(temporal_mip(&black_box(&volume).view(), &RunControl::none()).unwrap()))
    });
    group.finish();

    let _ = std::fs::remove_file(&path);
}

criterion_group!(nifti_mip, benches);
criterion_main!(nifti_mip);
