//! Write the seed inputs of the fuzz targets into `fuzz/corpus/<target>/` (small valid inputs
//! each target's fuzzer mutates): `cargo run -p imhost-fuzz --example make_seeds`.
//! `scripts/fuzz.sh` adds `tests/data/must-fail/` to the NIfTI target's corpus.

use std::path::{Path, PathBuf};

use imhost_core::io::nifti::{WriteOptions, write_any};
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use ndarray::{Array4, ShapeBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let dir = |name: &str| -> std::io::Result<PathBuf> {
        let d = corpus.join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let scratch = std::env::temp_dir().join(format!("imhost-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    // NIfTI: a 3-D float and a 4-D int16 volume with frame times, plain and gzip'd.
    let g = Geometry { spacing: [0.8, 0.9, 3.0], origin: [10.0, -20.0, 5.0], ..Geometry::identity() };
    let f = Volume::from_parts(
        Array4::from_shape_fn((3, 2, 2, 1).f(), |(i, j, k, _)| (i + 2 * j + 4 * k) as f32),
        g,
        None,
    )?;
    let times = FrameTimes::new(vec![0.0, 1.5, 3.0, 4.5], TimeSource::Header)?;
    let s = Volume::from_parts(
        Array4::from_shape_fn((2, 2, 2, 4).f(), |(i, j, k, t)| (i * 100 + j * 10 + k + t) as i16),
        g,
        Some(times),
    )?;
    let nifti = dir("nifti")?;
    for (name, volume) in [("float3d", AnyVolume::F32(f)), ("int16-4d", AnyVolume::I16(s.clone()))] {
        for ext in ["nii", "nii.gz"] {
            let path = scratch.join(format!("{name}.{ext}"));
            write_any(&volume, &path, &WriteOptions::default())?;
            std::fs::copy(&path, nifti.join(format!("{name}.{ext}")))?;
        }
    }

    // DICOM: a 2-frame series of two 2×2 slices, its files joined by the separator.
    let series = scratch.join("dicom");
    imhost_core::io::dicom::write_dicom_series(&s, &series, "1.2.826.0.1.3680043.10.1")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&series)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    let mut joined = Vec::new();
    for (n, file) in files.iter().take(4).enumerate() {
        if n > 0 {
            joined.extend_from_slice(imhost_fuzz::FILE_SEPARATOR);
        }
        joined.extend(std::fs::read(file)?);
    }
    std::fs::write(dir("dicom")?.join("series"), &joined)?;
    std::fs::write(dir("dicom")?.join("one-file"), std::fs::read(&files[0])?)?;

    // Manifests: the built-in ones with an options object, the committed packages'.
    let manifests = dir("manifest")?;
    for model in imhost_core::registry::builtin::core_models(None).iter().take(2) {
        let m = model.manifest();
        let mut bytes = m.to_json().into_bytes();
        bytes.push(0);
        bytes.extend_from_slice(br#"{"age_years": 70, "aif_i": 3, "bilateral_filter": false}"#);
        std::fs::write(manifests.join(&m.id), bytes)?;
    }
    let repo = root.join("..");
    for (name, path) in [
        ("perfusion-cnn", "models/perfusion-cnn/manifest.json"),
        ("ts-lesion", "tests/fixtures/packages/ts-lesion/manifest.json"),
    ] {
        std::fs::copy(repo.join(path), manifests.join(name))?;
    }

    // A plugin descriptor: full size, ABI 1.1, one model (the MIP's manifest) with a run function.
    let mip = imhost_core::registry::builtin::core_models(None)[0].manifest().to_json();
    let mut d = vec![0u8, 1, 1, 1, 0];
    d.extend_from_slice(&[0; 16]);
    d.extend_from_slice(&[1, 1, 1, 1]);
    d.extend_from_slice(b"seed-plugin\x001.0.0\x00");
    d.extend_from_slice(mip.as_bytes());
    std::fs::write(dir("plugin_descriptor")?.join("one-model"), d)?;
    std::fs::remove_dir_all(&scratch)?;
    println!("seeds written to {}", corpus.display());
    Ok(())
}
