//! JSON sidecars holding per-frame acquisition times.
//!
//! A sidecar sits next to the image with the same name and the extension `.json`
//! (`ctp.nii.gz` → `ctp.json`), as in BIDS. imhost reads `"FrameTimes"` (seconds, one per frame)
//! and, failing that, BIDS-PET's `"FrameTimesStart"`. On write it sets `"FrameTimes"` and keeps
//! every other key of an existing sidecar.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Sidecars are small; a larger one is refused rather than read.
pub const MAX_SIDECAR_BYTES: u64 = 16 << 20;

/// The sidecar path of an image path: `.nii`/`.nii.gz` replaced by `.json`.
pub fn sidecar_path(image: &Path) -> PathBuf {
    let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).unwrap_or(&name);
    image.with_file_name(format!("{stem}.json"))
}

/// Frame times from the sidecar of `image`, `None` if there is no sidecar or it has no times.
pub fn read_frame_times(image: &Path) -> Result<Option<Vec<f64>>> {
    let path = sidecar_path(image);
    let text = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_SIDECAR_BYTES => {
            return Err(Error::too_large(format!("sidecar is over {} MiB", MAX_SIDECAR_BYTES >> 20)).in_file(&path));
        }
        Ok(_) => std::fs::read_to_string(&path).map_err(|e| Error::from(e).in_file(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from(e).in_file(&path)),
    };
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(format!("sidecar is not valid JSON: {e}")).in_file(&path))?;
    let Some(times) = json.get("FrameTimes").or_else(|| json.get("FrameTimesStart")) else {
        return Ok(None);
    };
    let values = times
        .as_array()
        .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
        .ok_or_else(|| Error::format("\"FrameTimes\" must be an array of numbers (seconds)").in_file(&path))?;
    Ok(Some(values))
}

/// Write `times` as `"FrameTimes"` into the sidecar of `image`, keeping other keys.
pub fn write_frame_times(image: &Path, times: &[f64]) -> Result<()> {
    let path = sidecar_path(image);
    let mut object = match crate::io::output::read_existing(&path, MAX_SIDECAR_BYTES)? {
        Some(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(Error::format("existing sidecar is not a JSON object; not overwriting it").in_file(&path));
            }
        },
        None => Map::new(),
    };
    object.insert("FrameTimes".into(), Value::from(times.to_vec()));
    let text = serde_json::to_string_pretty(&Value::Object(object)).map_err(|e| Error::internal(e.to_string()))?;
    crate::io::output::write_text(&path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        assert_eq!(sidecar_path(Path::new("/d/ctp.nii.gz")), Path::new("/d/ctp.json"));
        assert_eq!(sidecar_path(Path::new("ctp.nii")), Path::new("ctp.json"));
        assert_eq!(sidecar_path(Path::new("a.b.nii")), Path::new("a.b.json"));
    }

    #[test]
    fn writing_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.nii.gz");
        std::fs::write(dir.path().join("x.json"), r#"{"Manufacturer": "GE", "FrameTimes": [9]}"#).unwrap();
        write_frame_times(&image, &[0.0, 1.5, 4.0]).unwrap();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("x.json")).unwrap()).unwrap();
        assert_eq!(json["Manufacturer"], "GE");
        assert_eq!(read_frame_times(&image).unwrap(), Some(vec![0.0, 1.5, 4.0]));
    }

    #[test]
    fn malformed_times_are_an_error_naming_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("y.nii");
        std::fs::write(dir.path().join("y.json"), r#"{"FrameTimes": [0, "one"]}"#).unwrap();
        let err = read_frame_times(&image).unwrap_err();
        assert!(err.to_string().contains("y.json"), "{err}");
    }
}
