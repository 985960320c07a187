//! `--dicom-out DIR` of `imhost perfusion` and `imhost run`: the results as DICOM (Parametric
//! Maps, Segmentations, a TID 1500 measurement report, the preview as a Secondary Capture)
//! linked to the input's DICOM series.

use std::path::{Path, PathBuf};

use imhost_core::io::dicom::results::{ResultOptions, ResultSource, model_results};
use imhost_core::io::dicom::{DicomReadOptions, read_dicom_folder};
use imhost_core::io::output::{StagedDir, write_json};
use imhost_core::registry::{Manifest, ModelOutput};
use imhost_core::{AnyVolume, Error, Result};

/// The DICOM output flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DicomOutArgs {
    /// Also write the results as DICOM into DIR: one Parametric Map per map, one Segmentation
    /// per label map, a TID 1500 measurement report, the preview as a Secondary Capture; linked
    /// to the input's DICOM series (a NIfTI input starts a new study).
    #[arg(long, value_name = "DIR")]
    pub dicom_out: Option<PathBuf>,
    /// Root of the new DICOM UIDs (default IMHOST_UID_ROOT, else UUID-derived `2.25.…`).
    #[arg(long, value_name = "ROOT", requires = "dicom_out")]
    pub uid_root: Option<String>,
    /// Derive the UIDs from SEED and fix the content date/time (reproducible bytes, for tests).
    #[arg(long, value_name = "SEED", hide = true, requires = "dicom_out")]
    pub dicom_uid_seed: Option<String>,
}

impl DicomOutArgs {
    fn options(&self) -> Result<ResultOptions> {
        let mut options = ResultOptions::default();
        if let Some(root) =
            self.uid_root.clone().or_else(|| std::env::var("IMHOST_UID_ROOT").ok().filter(|r| !r.is_empty()))
        {
            options.uid_root = root;
        }
        if let Some(seed) = &self.dicom_uid_seed {
            options.uid_seed = Some(seed.clone());
            options.content_date_time = Some(("20260101".into(), "120000".into()));
        }
        options.validate().map_err(|e| Error::invalid_argument(format!("--uid-root: {}", e.message())))?;
        Ok(options)
    }

    /// Check the flags and claim the folder before any work: a fresh folder beside it that
    /// replaces it once every file is written.
    pub fn stage(&self, overwrite: bool, inputs: &[&Path]) -> Result<Option<(StagedDir, ResultOptions)>> {
        let Some(dir) = &self.dicom_out else { return Ok(None) };
        let options = self.options()?;
        Ok(Some((StagedDir::create(dir, overwrite, inputs)?, options)))
    }
}

/// Read an input: a DICOM folder keeps its series' identifiers for the results.
pub fn read_input(path: &Path) -> Result<(AnyVolume, Option<ResultSource>)> {
    if path.is_dir() {
        let series = read_dicom_folder(path, &DicomReadOptions::default())?;
        let source = ResultSource::from_series(&series)?;
        Ok((series.volume, Some(source)))
    } else {
        Ok((imhost_core::io::read_volume(path)?, None))
    }
}

/// Write the DICOM results of `output` into the staged folder and commit it; returns how many
/// instances were written.
pub fn write(
    staged: (StagedDir, ResultOptions),
    output: &ModelOutput,
    manifest: &Manifest,
    source: Option<ResultSource>,
    input: &AnyVolume,
    preview: Option<&Path>,
) -> Result<usize> {
    let (staged, options) = staged;
    let source = match source {
        // A 4-D series (CTP) also gets its temporal average, the 3-D image viewers draw the
        // maps on.
        Some(s) => s.with_temporal_average(input)?,
        None => {
            tracing::warn!(
                "the input is not a DICOM series: the DICOM results start a new study with no patient identifiers"
            );
            let [ni, nj, nk, _] = input.shape();
            ResultSource::new_study(*input.geometry(), [ni, nj, nk], &options)
        }
    };
    let png = match preview {
        Some(p) => Some(std::fs::read(p).map_err(|e| Error::from(e).in_file(p))?),
        None => None,
    };
    let results = model_results(output, manifest, &source, png.as_deref(), &options)?;
    results.write_to(staged.path())?;
    let index = results.index_json(manifest, &source);
    write_json(&staged.path().join("dicom-results.json"), &index)?;
    let count = results.instances.len();
    staged.commit("DICOM results")?;
    Ok(count)
}
