//! Which files imhost may run code or read weights from — checked on the descriptors that are
//! then used, never on a path that is looked up again.
//!
//! The rules (what "trusted" means for plugin libraries and model package files):
//! - the file is a regular file owned by the effective user or root, not writable by group or
//!   others;
//! - the folder holding it is owned by the effective user or root and not writable by group or
//!   others (sticky or not: a shared drop folder is no place for code);
//! - every folder above it, up to `/`, is owned by the effective user or root and, if group- or
//!   world-writable, has the sticky bit (as `/tmp`: others may add entries there but cannot rename
//!   or replace ours). A world-writable folder without it anywhere above a plugin lets another
//!   user swap the whole subtree between a check and a load.
//!
//! How the check and the use are tied together: the path is resolved once (`canonicalize`, so a
//! symbolic link is followed once and its target is what is judged), the folder is opened and
//! checked, and the file is opened *relative to that open folder* with `O_NOFOLLOW` and checked
//! with `fstat`. Libraries are then loaded as `/proc/self/fd/<folder>/<name>`: the name is looked
//! up in the very folder that was checked (whose entries only its trusted owner can change), and
//! `$ORIGIN` of the plugin still names its folder, so dependencies it ships beside itself load.
//! (Loading the file descriptor itself, `/proc/self/fd/<file>`, would break `$ORIGIN`.) The
//! folder descriptor stays open for the life of the process, as the library stays mapped, so its
//! number — part of the library's name for the dynamic loader — is never reused; one descriptor
//! is kept per folder, however often plugins are loaded from it.

use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open folder that passed the rules.
#[derive(Debug)]
pub struct TrustedDir {
    dir: File,
    path: PathBuf,
}

/// An open file in a [`TrustedDir`] that passed the rules.
#[derive(Debug)]
pub struct TrustedFile {
    /// The open file (read-only).
    pub file: File,
    /// Its resolved path (for messages).
    pub path: PathBuf,
    /// Its name in the folder.
    pub name: String,
    /// `fstat` of the open file.
    pub meta: Metadata,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn describe_writer(mode: u32) -> &'static str {
    if mode & 0o002 != 0 { "every user" } else { "its group" }
}

/// Owner and mode of one entry: `what` ("file", "folder") and its path for messages.
fn check_entry(meta: &Metadata, what: &str, path: &Path, strict: bool, below: Option<&Path>) -> Result<(), String> {
    let mode = meta.mode();
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "refused: the {what} {}{} belongs to user {}, not to you ({me}) or root; that user could change it",
            path.display(),
            below.map(|b| format!(" (above {})", b.display())).unwrap_or_default(),
            meta.uid()
        ));
    }
    let writable = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if writable && (strict || !sticky) {
        return Err(match below {
            None => format!(
                "refused: the {what} {} is writable by {} (mode {:o}); anyone could replace the plugin. Fix with: chmod go-w {}",
                path.display(),
                describe_writer(mode),
                mode & 0o7777,
                path.display()
            ),
            Some(below) => format!(
                "refused: the folder {} above {} is writable by {} (mode {:o}) without the sticky bit; anyone could swap the folders below it. Fix with: chmod go-w {} (or chmod +t), or move the plugins",
                path.display(),
                below.display(),
                describe_writer(mode),
                mode & 0o7777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// Check every folder above `dir` (not `dir` itself) up to `/`.
fn check_ancestors(dir: &Path) -> Result<(), String> {
    let mut current = dir.parent();
    while let Some(ancestor) = current {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| format!("cannot check the permissions of {}: {e}", ancestor.display()))?;
        check_entry(&meta, "folder", ancestor, false, Some(dir))?;
        current = ancestor.parent();
    }
    Ok(())
}

impl TrustedDir {
    /// Resolve `path` (a folder), open it and check it and every folder above it.
    pub fn open(path: &Path) -> Result<TrustedDir, String> {
        let canonical = path.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        check_ancestors(&canonical)?;
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&canonical)
            .map_err(|e| format!("cannot open the folder {}: {e}", canonical.display()))?;
        let meta =
            dir.metadata().map_err(|e| format!("cannot check the permissions of {}: {e}", canonical.display()))?;
        check_entry(&meta, "folder", &canonical, true, None)?;
        Ok(TrustedDir { dir, path: canonical })
    }

    /// Its resolved path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open folder.
    pub fn as_file(&self) -> &File {
        &self.dir
    }

    /// Open `name` (one path component) inside this folder without following a link, and check
    /// it: a regular file, owned by you or root, not writable by group or others.
    pub fn open_file(&self, name: &str) -> Result<TrustedFile, String> {
        let path = self.path.join(name);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!("{}: {name:?} is not a file name", self.path.display()));
        }
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::NOCTTY;
        let fd: OwnedFd = rustix::fs::openat(&self.dir, name, flags, rustix::fs::Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                format!("refused: {} is a symbolic link (give the file it points to)", path.display())
            } else {
                format!("cannot open {}: {e}", path.display())
            }
        })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| format!("cannot check the permissions of {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("refused: {} is not a regular file", path.display()));
        }
        check_entry(&meta, "file", &path, true, None)?;
        Ok(TrustedFile { file, path, name: name.to_string(), meta })
    }

    /// Keep the folder open until the process exits (its descriptor number becomes part of a
    /// loaded library's name) and return the kept folder. One descriptor is kept per folder:
    /// when this very folder (same device and inode, which the kept descriptor holds on to, so
    /// neither can be reused) is already kept, that descriptor is used and this one closed, so
    /// loading plugins again and again from one folder does not use up descriptors.
    pub fn keep_open(self) -> KeptDir {
        use std::sync::Mutex;
        static KEPT: Mutex<Vec<((u64, u64), File)>> = Mutex::new(Vec::new());
        let id = self.dir.metadata().map(|meta| (meta.dev(), meta.ino()));
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, file)) = id.as_ref().ok().and_then(|id| kept.iter().find(|(k, _)| k == id)) {
            return KeptDir { fd: file.as_raw_fd(), path: self.path };
        }
        let fd = self.dir.as_raw_fd();
        match id {
            Ok(id) => kept.push((id, self.dir)),
            // Cannot say which folder this is: keep this descriptor on its own.
            Err(_) => std::mem::forget(self.dir),
        }
        KeptDir { fd, path: self.path }
    }

    /// A folder received as descriptor `fd` (the isolated worker): checked again by `fstat`
    /// (its ancestors were checked by the host that opened it).
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<TrustedDir, String> {
        let dir = File::from(fd);
        let meta = dir.metadata().map_err(|e| format!("cannot check the permissions of {}: {e}", path.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a folder", path.display()));
        }
        check_entry(&meta, "folder", &path, true, None)?;
        Ok(TrustedDir { dir, path })
    }
}

/// A checked folder kept open for the life of the process ([`TrustedDir::keep_open`]).
#[derive(Debug, Clone)]
pub struct KeptDir {
    fd: std::os::fd::RawFd,
    path: PathBuf,
}

impl KeptDir {
    /// The path under which the dynamic loader finds `name` in this very folder (see the module
    /// documentation).
    pub fn proc_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd))
    }

    /// Its resolved path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TrustedFile {
    /// Its whole content, refused over `max` bytes (read by position: the descriptor is the
    /// checked one).
    pub fn read_all(&self, max: u64) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::FileExt;
        let len = self.meta.len();
        if len > max {
            return Err(format!("{} is {} MiB, over the {} MiB allowed", self.path.display(), len >> 20, max >> 20));
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len as usize).map_err(|_| format!("{}: out of memory", self.path.display()))?;
        bytes.resize(len as usize, 0);
        self.file.read_exact_at(&mut bytes, 0).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        Ok(bytes)
    }
}

/// Resolve `path` (a file), open its folder and the file, and check both and every folder
/// above (see the module documentation).
pub fn open_file(path: &Path) -> Result<(TrustedDir, TrustedFile), String> {
    let canonical = path.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let (Some(parent), Some(name)) = (canonical.parent(), canonical.file_name().and_then(|n| n.to_str())) else {
        return Err(format!("{} is not a file", path.display()));
    };
    let dir = TrustedDir::open(parent)?;
    let file = dir.open_file(name)?;
    Ok((dir, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_world_writable_folder_above_without_the_sticky_bit_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let shared = top.path().join("shared");
        let plugins = shared.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::write(plugins.join("libx.so"), b"x").unwrap();
        chmod(&plugins.join("libx.so"), 0o644);
        chmod(&plugins, 0o755);
        chmod(&shared, 0o777);
        let e = open_file(&plugins.join("libx.so")).unwrap_err();
        assert!(e.contains("above") && e.contains("without the sticky bit"), "{e}");
        // Sticky (like /tmp) is fine above the plugin folder…
        chmod(&shared, 0o1777);
        assert!(open_file(&plugins.join("libx.so")).is_ok());
        // …but not as the plugin folder itself.
        chmod(&plugins, 0o1777);
        let e = open_file(&plugins.join("libx.so")).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        chmod(&plugins, 0o755);
    }

    #[test]
    fn links_are_judged_by_their_target_and_links_inside_a_folder_are_refused() {
        let top = tempfile::tempdir().unwrap();
        let real = top.path().join("real");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o755);
        std::fs::write(real.join("w.bin"), b"x").unwrap();
        chmod(&real.join("w.bin"), 0o666);
        std::os::unix::fs::symlink(real.join("w.bin"), top.path().join("link.bin")).unwrap();
        let e = open_file(&top.path().join("link.bin")).unwrap_err();
        assert!(e.contains("w.bin") && e.contains("writable by every user"), "{e}");
        chmod(&real.join("w.bin"), 0o644);
        let (_, f) = open_file(&top.path().join("link.bin")).unwrap();
        assert_eq!(f.path, real.join("w.bin"));
        std::os::unix::fs::symlink(real.join("w.bin"), real.join("inner.bin")).unwrap();
        let dir = TrustedDir::open(&real).unwrap();
        assert!(dir.open_file("inner.bin").unwrap_err().contains("symbolic link"));
        assert!(dir.open_file("../x").is_err());
    }

    #[test]
    fn a_fifo_is_not_a_file() {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o755);
        let fifo = top.path().join("weights.bin");
        assert!(std::process::Command::new("mkfifo").arg("-m").arg("644").arg(&fifo).status().unwrap().success());
        let e = TrustedDir::open(top.path()).unwrap().open_file("weights.bin").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
