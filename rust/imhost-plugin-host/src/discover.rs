//! Where plugins come from, and which of them may be loaded.
//!
//! Sources, in order: explicit paths (API, `--plugin`), the `IMHOST_PLUGIN_PATH` entries
//! (`:`-separated), the per-user folder (`$XDG_DATA_HOME/imhost/plugins`, else
//! `~/.local/share/imhost/plugins`). A source is a plugin library (`*.so`, `*.dylib`, `*.dll`),
//! a model package folder (holding `manifest.json`), or a folder scanned for both:
//!
//! ```text
//! plugins/libacme_bright.so          a plugin library
//! plugins/acme-lesion/manifest.json  a model package (+ its weights)
//! plugins/acme/libacme.so            a plugin in a folder of its own, beside its data and the
//! plugins/acme/weights.bin           libraries it links (found through -rpath '$ORIGIN'): the
//! plugins/acme/libonnxruntime.so     folder's plugin is lib<folder>.so or <folder>.so, or its
//!                                    only library
//! ```
//!
//! Deeper than that nothing is loaded, and a library found there is reported, not ignored in
//! silence. The same file reached twice is loaded once.
//!
//! Permissions: [`crate::trust`] — a plugin file, a package folder or the folder holding either
//! must not be writable by group or others and must belong to the current user or root, and no
//! folder above them may let another user swap them (writable without the sticky bit) — on a
//! shared workstation nobody else may drop a library into a folder Slicer loads from. Relative
//! entries in `IMHOST_PLUGIN_PATH` are refused: they would load from whatever folder the host
//! happens to run in.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One thing to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// A shared library.
    Library(PathBuf),
    /// A model package folder (`manifest.json` + weights), run by the host.
    Package(PathBuf),
}

impl Candidate {
    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            Candidate::Library(p) | Candidate::Package(p) => p,
        }
    }
}

/// What to search.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Files or folders given explicitly.
    pub paths: Vec<PathBuf>,
    /// Read `IMHOST_PLUGIN_PATH`.
    pub use_env: bool,
    /// Scan the per-user folder.
    pub use_user_dir: bool,
}

impl Discovery {
    /// Explicit paths plus the environment and the per-user folder.
    pub fn standard(paths: Vec<PathBuf>) -> Self {
        Discovery { paths, use_env: true, use_user_dir: true }
    }

    /// Only these paths.
    pub fn only(paths: Vec<PathBuf>) -> Self {
        Discovery { paths, use_env: false, use_user_dir: false }
    }

    /// The candidates found, and the paths that could not be used (with why).
    pub fn find(&self) -> (Vec<Candidate>, Vec<(PathBuf, String)>) {
        let mut sources: Vec<PathBuf> = self.paths.clone();
        let (mut found, mut problems) = (Vec::new(), Vec::new());
        if self.use_env
            && let Some(list) = std::env::var_os("IMHOST_PLUGIN_PATH")
        {
            for entry in std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()) {
                if entry.is_absolute() {
                    sources.push(entry);
                } else {
                    problems.push((
                        entry.clone(),
                        format!(
                            "refused: IMHOST_PLUGIN_PATH entry {:?} is relative, so it would load plugins from whatever folder the host runs in; give an absolute path",
                            entry.display().to_string()
                        ),
                    ));
                }
            }
        }
        if self.use_user_dir
            && let Some(dir) = user_plugin_dir()
            && dir.is_dir()
        {
            sources.push(dir);
        }
        for source in sources {
            if is_package(&source) || is_library(&source) {
                push(&mut found, &source);
            } else if source.is_dir() {
                match std::fs::read_dir(&source) {
                    Ok(entries) => {
                        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                        children.sort();
                        for child in &children {
                            if is_library(child) || is_package(child) {
                                push(&mut found, child);
                            } else if child.is_dir() {
                                match plugin_folder(child) {
                                    Ok(Some(library)) => push(&mut found, &library),
                                    Ok(None) => {}
                                    Err(message) => problems.push((child.clone(), message)),
                                }
                            }
                        }
                    }
                    Err(e) => problems.push((source.clone(), format!("cannot read the folder: {e}"))),
                }
            } else if !source.exists() {
                problems.push((source.clone(), "no such file or folder".into()));
            } else {
                problems.push((source.clone(), "neither a plugin library nor a model package folder".into()));
            }
        }
        (found, problems)
    }
}

fn sorted_children(dir: &Path) -> Vec<PathBuf> {
    let mut children: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    children.sort();
    children
}

/// The plugin library of a plugin's own folder (`plugins/acme/`): `libacme.so` or `acme.so`,
/// else its only library; `None` when it holds no library (a data folder); an error when it
/// holds several and none is named for the folder, or when libraries lie a level deeper.
fn plugin_folder(dir: &Path) -> Result<Option<PathBuf>, String> {
    let children = sorted_children(dir);
    let libraries: Vec<&PathBuf> = children.iter().filter(|c| is_library(c)).collect();
    let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let named = libraries.iter().find(|l| {
        let stem = l.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        stem == folder || stem.strip_prefix("lib") == Some(folder)
    });
    match (named, libraries.as_slice()) {
        (Some(library), _) => Ok(Some((*library).clone())),
        (None, [only]) => Ok(Some((*only).clone())),
        (None, []) => {
            let deeper = children
                .iter()
                .filter(|c| c.is_dir())
                .find_map(|sub| sorted_children(sub).into_iter().find(|f| is_library(f) || is_package(f)));
            match deeper {
                Some(file) => Err(format!(
                    "not scanned: {} lies two folders below a plugin folder; imhost loads plugins/NAME.so, plugins/NAME/libNAME.so and package folders plugins/NAME/manifest.json (or give the path with --plugin / IMHOST_PLUGIN_PATH)",
                    file.display()
                )),
                None => Ok(None),
            }
        }
        (None, many) => Err(format!(
            "holds {} libraries and none is named lib{folder}.so or {folder}.so: name the plugin so, and the others are taken for libraries it links",
            many.len()
        )),
    }
}

fn push(found: &mut Vec<Candidate>, path: &Path) {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let candidate = if is_package(&canonical) { Candidate::Package(canonical) } else { Candidate::Library(canonical) };
    if !found.contains(&candidate) {
        found.push(candidate);
    }
}

fn is_library(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
}

fn is_package(path: &Path) -> bool {
    path.is_dir() && path.join("manifest.json").is_file()
}

/// The per-user plugin folder: `$XDG_DATA_HOME/imhost/plugins`, else
/// `$HOME/.local/share/imhost/plugins`.
pub fn user_plugin_dir() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("imhost/plugins"))
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Per-plugin settings (`$XDG_CONFIG_HOME/imhost/plugins.json`, else
/// `~/.config/imhost/plugins.json`, or the file `IMHOST_PLUGIN_CONFIG` names):
///
/// ```json
/// {"plugins": {"libacme_seg.so": {"isolate": true}}}
/// ```
///
/// Keys are plugin file names (with or without the extension) — known before the library is
/// opened, which an isolated plugin never is in the host process.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginConfig {
    /// Settings by plugin file name.
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, PluginSettings>,
}

/// Settings of one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginSettings {
    /// Run its models in a child worker process.
    #[serde(default)]
    pub isolate: bool,
}

/// `plugins.json` is a few lines; a bigger file is refused rather than read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl PluginConfig {
    /// Read the user's config file; a missing file is an empty config; one that is unreadable,
    /// over [`MAX_CONFIG_BYTES`], writable by others (it decides isolation) or not a
    /// `{"plugins": {…}}` object is an error naming it. Unknown keys are warned about.
    pub fn load_user() -> Result<PluginConfig, String> {
        let path = std::env::var_os("IMHOST_PLUGIN_CONFIG").map(PathBuf::from).or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .map(|c| c.join("imhost/plugins.json"))
        });
        match path {
            Some(p) if p.exists() => Self::load(&p),
            _ => Ok(PluginConfig::default()),
        }
    }

    /// Read a config file (see [`load_user`](Self::load_user)).
    pub fn load(path: &Path) -> Result<PluginConfig, String> {
        use std::io::Read;
        let (_, mut file) = crate::trust::open_file(path).map_err(|m| format!("plugin config: {m}"))?;
        if file.meta.len() > MAX_CONFIG_BYTES {
            return Err(format!("{}: the plugin config is over {} KiB", path.display(), MAX_CONFIG_BYTES >> 10));
        }
        let mut text = String::new();
        (&mut file.file)
            .take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|m| format!("{}: {m}", path.display()))
    }

    /// Parse a config text: a JSON object whose `plugins` is an object of per-file settings.
    pub fn parse(text: &str) -> Result<PluginConfig, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid plugin config: {e}"))?;
        let Some(object) = value.as_object() else {
            return Err(format!(
                "the plugin config must be an object like {{\"plugins\": {{\"libx.so\": {{\"isolate\": true}}}}}}, not {}",
                kind_of(&value)
            ));
        };
        for key in object.keys().filter(|k| *k != "plugins") {
            tracing::warn!("plugin config: unknown key {key:?} ignored (known: \"plugins\")");
        }
        if let Some(plugins) = object.get("plugins") {
            let Some(plugins) = plugins.as_object() else {
                return Err(format!("\"plugins\" must be an object of file name → settings, not {}", kind_of(plugins)));
            };
            for (name, settings) in plugins {
                let Some(settings) = settings.as_object() else {
                    return Err(format!("the settings of {name:?} must be an object, not {}", kind_of(settings)));
                };
                for key in settings.keys().filter(|k| *k != "isolate") {
                    tracing::warn!("plugin config: unknown setting {key:?} of {name:?} ignored (known: \"isolate\")");
                }
            }
        }
        serde_json::from_value(value).map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// Whether the library at `path` is to run isolated.
    pub fn isolate(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
        [name, stem].iter().any(|k| self.plugins.get(*k).is_some_and(|s| s.isolate))
    }
}
