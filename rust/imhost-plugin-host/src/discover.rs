//! Where plugins come from, and which of them may be loaded.
//!
//! Sources, in order: explicit paths (API, `--plugin`), the `IMHOST_PLUGIN_PATH` entries
//! (`:`-separated), the per-user folder (`$XDG_DATA_HOME/imhost/plugins`, else
//! `~/.local/share/imhost/plugins`). A source is a plugin library (`*.so`, `*.dylib`, `*.dll`),
//! a model package folder (holding `manifest.json`), or a folder scanned one level deep for
//! both. The same file reached twice is loaded once.
//!
//! Permissions: a plugin file, a package folder or the folder holding either must not be
//! writable by group or others, and must belong to the current user or root — on a shared
//! workstation nobody else may drop a library into a folder Slicer loads from.

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
        if self.use_env
            && let Some(list) = std::env::var_os("IMHOST_PLUGIN_PATH")
        {
            sources.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
        }
        if self.use_user_dir
            && let Some(dir) = user_plugin_dir()
            && dir.is_dir()
        {
            sources.push(dir);
        }
        let (mut found, mut problems) = (Vec::new(), Vec::new());
        for source in sources {
            if is_package(&source) || is_library(&source) {
                push(&mut found, &source);
            } else if source.is_dir() {
                match std::fs::read_dir(&source) {
                    Ok(entries) => {
                        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                        children.sort();
                        for child in children.iter().filter(|c| is_library(c) || is_package(c)) {
                            push(&mut found, child);
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

/// Refuse a plugin file or package folder that someone else could have changed: it, or the
/// folder it lies in, is writable by group or others, or belongs to another user (root aside).
pub fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for (what, p) in [("file", path), ("folder", parent)] {
        let meta = std::fs::metadata(p).map_err(|e| format!("cannot check the permissions of {}: {e}", p.display()))?;
        let mode = meta.mode();
        if mode & 0o002 != 0 || mode & 0o020 != 0 {
            return Err(format!(
                "refused: the {what} {} is writable by {} (mode {:o}); anyone could replace the plugin. Fix with: chmod go-w {}",
                p.display(),
                if mode & 0o002 != 0 { "every user" } else { "its group" },
                mode & 0o7777,
                p.display()
            ));
        }
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "refused: the {what} {} belongs to user {}, not to you ({me}) or root",
                p.display(),
                meta.uid()
            ));
        }
    }
    Ok(())
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

impl PluginConfig {
    /// Read the user's config file; a missing file is an empty config, an unreadable one an
    /// error naming it.
    pub fn load_user() -> Result<PluginConfig, String> {
        let path = std::env::var_os("IMHOST_PLUGIN_CONFIG").map(PathBuf::from).or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .map(|c| c.join("imhost/plugins.json"))
        });
        match path {
            Some(p) if p.is_file() => {
                let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: invalid plugin config: {e}", p.display()))
            }
            _ => Ok(PluginConfig::default()),
        }
    }

    /// Whether the library at `path` is to run isolated.
    pub fn isolate(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
        [name, stem].iter().any(|k| self.plugins.get(*k).is_some_and(|s| s.isolate))
    }
}
