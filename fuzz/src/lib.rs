//! The fuzzing harnesses of imhost's parsers of untrusted bytes. Each takes any byte string and
//! must return — with an error or a value, never a panic, an abort or an allocation beyond
//! [`MEMORY_LIMIT`]:
//! - [`nifti`]: a `.nii` / `.nii.gz` file (header, layout, geometry, scaling, data);
//! - [`dicom`]: up to four DICOM instances in memory, now and then in a folder (series
//!   assembly);
//! - [`manifest`]: a model manifest and an options object (both JSON), the network and
//!   TorchScript package manifests;
//! - [`plugin_descriptor`]: the descriptor a plugin's entry returns, built from the bytes
//!   (sizes, versions, names, model manifests, missing functions).
//!
//! `fuzz/libfuzzer` runs them under libFuzzer (`scripts/fuzz.sh`); `fuzz/tests/corpus.rs` replays
//! the committed corpus `fuzz/corpus/<target>/` through them in `cargo test`, so every finding
//! stays fixed.

use std::path::PathBuf;
use std::sync::OnceLock;

use imhost_core::io::dicom::{DicomReadOptions, read_dicom_series};
use imhost_core::io::nifti::{ReadOptions, read_nifti};
use imhost_core::registry::Manifest;

/// The most any harness may allocate for pixels (the inputs' own claims are checked against it).
pub const MEMORY_LIMIT: u64 = 64 << 20;

/// Separates the files of a [`dicom`] input.
pub const FILE_SEPARATOR: &[u8] = b"\n--imhost-fuzz-next-file--\n";

/// This process's private scratch folder (created once, mode 0700).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("imhost-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("its mode");
        dir
    })
}

/// A NIfTI file: `.nii.gz` when the bytes start with gzip's magic, else `.nii`.
pub fn nifti(data: &[u8]) {
    let name = if data.starts_with(&[0x1f, 0x8b]) { "input.nii.gz" } else { "input.nii" };
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("the scratch file");
    let mut options = ReadOptions::default();
    options.max_bytes = MEMORY_LIMIT;
    options.use_sidecar = false;
    let read = imhost_core::memory::with_limit(Some(MEMORY_LIMIT), || read_nifti(&path, &options));
    if let Ok((volume, _)) = read {
        // What was read is a valid volume: its geometry converts both ways.
        let _ = volume.geometry().ijk_to_ras();
    }
    // The header parsers on the raw bytes too (the reader may have stopped earlier).
    if data.len() >= 4 {
        let first4 = [data[0], data[1], data[2], data[3]];
        if let Ok((version, endian)) = imhost_core::io::nifti::header::detect(first4) {
            let header = match version {
                imhost_core::io::nifti::NiftiVersion::Nifti1 => imhost_core::io::nifti::header::parse_nifti1(data),
                imhost_core::io::nifti::NiftiVersion::Nifti2 => {
                    imhost_core::io::nifti::header::parse_nifti2(data, endian)
                }
            };
            if let Ok(h) = header {
                let _ = imhost_core::io::nifti::header::layout(&h);
                let _ = imhost_core::io::nifti::header::geometry(&h);
                let _ = imhost_core::io::nifti::header::scaling(&h);
            }
        }
    }
}

/// Up to four DICOM instances: `data` split at [`FILE_SEPARATOR`], read from memory
/// (`read_dicom_buffers`, the reader of folders too) and, every 16th input, from a folder.
pub fn dicom(data: &[u8]) {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        match find(rest, FILE_SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + FILE_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    let mut options = DicomReadOptions::default();
    options.max_bytes = MEMORY_LIMIT;
    let _ = imhost_core::memory::with_limit(Some(MEMORY_LIMIT), || {
        imhost_core::io::dicom::read_dicom_buffers(&parts, &options)
    });
    if data.first().is_some_and(|b| b % 16 == 0) {
        let dir = scratch().join("dicom");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the scratch folder");
        for (n, part) in parts.iter().enumerate() {
            std::fs::write(dir.join(format!("{n}.dcm")), part).expect("a scratch file");
        }
        let _ = imhost_core::memory::with_limit(Some(MEMORY_LIMIT), || read_dicom_series(&dir, &options));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A manifest and, after the first NUL byte, an options object: the registry manifest
/// (validated, options resolved and parsed as `k=v`), and the same text as a network
/// (`imhost-model/1`) and a TorchScript package manifest.
pub fn manifest(data: &[u8]) {
    let (text, options) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    if let Ok(m) = Manifest::from_json(text) {
        let _ = m.validate();
        let _ = m.to_json();
        if let Ok(serde_json::Value::Object(given)) = serde_json::from_slice::<serde_json::Value>(options) {
            let _ = m.resolve_options(&given);
        }
        if let Ok(pairs) = std::str::from_utf8(options) {
            let pairs: Vec<String> = pairs.split('\n').map(str::to_string).collect();
            let _ = m.parse_options(&pairs);
        }
    }
    if let Ok(network) = serde_json::from_str::<imhost_registry::network::Manifest>(text) {
        let _ = network.check();
        let _ = network.output_scale();
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = serde_json::from_value::<imhost_registry::torchscript::RuntimeSpec>(value["runtime"].clone());
    }
}

/// A plugin descriptor built from `data` — struct sizes, ABI version, names, up to four models
/// with their manifests (NUL-separated texts at the end of `data`) and run functions present
/// or not — read by the host's descriptor reader.
pub fn plugin_descriptor(data: &[u8]) {
    use imhost_plugin_abi::{imhp_model, imhp_plugin};
    let mut bytes = Bytes(data);
    let plugin_size = size_of::<imhp_plugin>() as u32;
    let struct_size = match bytes.u8() % 4 {
        0 => plugin_size,
        1 => plugin_size - 8,
        2 => plugin_size + 64,
        _ => bytes.u32() % (plugin_size + 16),
    };
    let abi_major = if bytes.u8() % 8 == 0 { bytes.u32() } else { imhost_plugin_abi::IMHP_ABI_MAJOR };
    let abi_minor = u32::from(bytes.u8() % 4);
    let n_models = match bytes.u8() {
        255 => imhost_plugin_host::native::MAX_MODELS + 1,
        b => u32::from(b % 5),
    };
    let model_size = size_of::<imhp_model>();
    let stride = match bytes.u8() % 4 {
        0 | 1 => model_size,
        2 => model_size + 8,
        _ => 8,
    };
    let flags: Vec<u32> = (0..4).map(|_| bytes.u32()).collect();
    let runs: Vec<bool> = (0..4).map(|_| bytes.u8() % 8 != 0).collect();
    let mut texts: Vec<std::ffi::CString> =
        bytes.rest().split(|&b| b == 0).map(|t| std::ffi::CString::new(t).expect("split at NUL")).collect();
    texts.resize(6, std::ffi::CString::default());
    let string = |t: &std::ffi::CString| if t.as_bytes() == b"NULL" { std::ptr::null() } else { t.as_ptr() };
    unsafe extern "C" fn run(
        _: *mut std::ffi::c_void,
        _: *const imhost_plugin_abi::imhp_run_args,
    ) -> imhost_plugin_abi::imhp_status {
        0
    }
    let real_models = n_models.min(4) as usize;
    let mut table = vec![0u8; real_models * stride.max(model_size) + model_size];
    for n in 0..real_models {
        let model = imhp_model {
            struct_size: model_size as u32,
            flags: flags[n],
            manifest_json: string(&texts[2 + n]),
            create: None,
            run: if runs[n] { Some(run) } else { None },
            destroy: None,
        };
        // SAFETY: element n lies inside `table` (sized for real_models elements of the larger
        // stride plus one struct); unaligned write of plain data.
        unsafe { table.as_mut_ptr().add(n * stride).cast::<imhp_model>().write_unaligned(model) };
    }
    let descriptor = imhp_plugin {
        struct_size,
        abi_major,
        abi_minor,
        model_struct_size: stride as u32,
        name: string(&texts[0]),
        version: string(&texts[1]),
        n_models,
        models: if real_models == 0 && n_models == 0 { std::ptr::null() } else { table.as_ptr().cast() },
        unload: None,
    };
    if n_models as usize > real_models && n_models <= imhost_plugin_host::native::MAX_MODELS {
        return; // a descriptor that lies about its memory is outside the contract.
    }
    // SAFETY: `descriptor` is a full struct, its models table holds `n_models` elements of
    // `stride` bytes (or the reader refuses the count first), and every string is a CString
    // above or NULL.
    let _ = unsafe { imhost_plugin_host::native::read_descriptor(&descriptor, std::path::Path::new("fuzz.so")) };
}

/// A reader of the leading bytes of a fuzz input (zeros once they run out).
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn rest(&self) -> &'a [u8] {
        self.0
    }
}
