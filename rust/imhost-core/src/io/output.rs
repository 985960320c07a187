//! Writing outputs so that nobody else's file is touched and nothing half-written is left.
//!
//! Every file imhost writes goes through [`write_atomically`]: a temporary file with an
//! unpredictable name is created next to the target with `O_CREAT | O_EXCL` (which never follows
//! a symbolic link and never opens a file someone else planted), written, flushed to disk and
//! renamed over the target. `rename` replaces a symbolic link at the target instead of writing
//! through it, so a link planted where an output will go cannot redirect the write.
//!
//! A command that writes a folder of outputs uses [`StagedDir`]: everything goes into a fresh
//! sibling folder, which replaces the target only once every file is complete, so a folder always
//! holds one complete run (never new maps next to a previous study's report). A folder that
//! already holds files is replaced only when asked (`overwrite`) and only when imhost wrote it
//! (it carries the [`MARKER`] file): `--out ~ --overwrite` cannot delete a home folder.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};

/// The file every output folder imhost writes carries (hidden, a few bytes of JSON).
pub const MARKER: &str = ".imhost-output";

/// Sixteen hex digits nobody else can predict: keyed by the process's random hash keys, a
/// counter and the time.
pub fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Create a new file in `dir` with an unpredictable name (`O_CREAT | O_EXCL`, so never through
/// a planted link or into someone else's file).
fn create_temp(dir: &Path, prefix: &str) -> Result<(PathBuf, File)> {
    for _ in 0..16 {
        let path = dir.join(format!("{prefix}{}", random_name()));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::from(e).in_file(dir)),
        }
    }
    Err(Error::new(ErrorKind::Io, "cannot create a temporary file (16 names taken)").in_file(dir))
}

/// Write `path` through `write`: into a new temporary file next to it, flushed to disk, then
/// renamed over `path`. On failure the temporary file is removed and `path` is as it was.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(Error::new(ErrorKind::Io, format!("folder '{}' does not exist", dir.display())));
    }
    let (temp, file) = create_temp(&dir, ".imhost-partial-")?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        write(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        // Ours: created above with O_EXCL.
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e: Error| e.in_file(path))
}

/// [`write_atomically`] for a text (JSON, Markdown).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, |w| w.write_all(text.as_bytes()).map_err(Error::from))
}

/// [`write_text`] of pretty-printed JSON with a final newline.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::internal(e.to_string()))?;
    write_text(path, &(text + "\n"))
}

/// Read a small existing file that imhost is about to update (a sidecar), without following a
/// symbolic link in its last component: a link planted there could make imhost copy a file the
/// planter cannot read into one they can. `None` when there is no such file.
pub fn read_existing(path: &Path, max_bytes: u64) -> Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(
                Error::invalid_argument("is a symbolic link; imhost does not update files through links").in_file(path)
            );
        }
        Err(e) => return Err(Error::from(e).in_file(path)),
    };
    let meta = file.metadata().map_err(|e| Error::from(e).in_file(path))?;
    if !meta.is_file() {
        return Err(Error::invalid_argument("is not a regular file").in_file(path));
    }
    if meta.len() > max_bytes {
        return Err(Error::too_large(format!("is over {max_bytes} bytes")).in_file(path));
    }
    let mut text = String::new();
    file.take(max_bytes).read_to_string(&mut text).map_err(|e| Error::from(e).in_file(path))?;
    Ok(Some(text))
}

/// The directory entry a write to `path` replaces: its folder resolved, its own name kept (the
/// rename of [`write_atomically`] replaces a link there rather than what it points to).
fn replaced_entry(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    Some(folder_of(path).canonicalize().ok()?.join(name))
}

/// Refuse an output file whose write would replace one of the inputs (the same directory entry,
/// also when the input was named through a link).
pub fn refuse_overwriting_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Some(replaced) = replaced_entry(output) else { return Ok(()) };
    for input in inputs {
        if input.canonicalize().is_ok_and(|i| i == replaced) {
            return Err(Error::invalid_argument(format!(
                "the output '{}' is the input '{}'; choose another output name",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// A folder of outputs written aside and swapped in when complete.
///
/// ```no_run
/// # use imhost_core::io::output::StagedDir;
/// # fn f() -> imhost_core::Result<()> {
/// let out = StagedDir::create(std::path::Path::new("result"), false, &[])?;
/// std::fs::write(out.path().join("a.txt"), "…")?; // every output goes into out.path()
/// out.commit("perfusion")?; // result/ now holds this run, and only this run
/// # Ok(()) }
/// ```
///
/// Dropped without `commit`, the staging folder and what was written into it are removed.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    overwrite: bool,
    committed: bool,
}

/// What is at the target of a [`StagedDir`].
enum Existing {
    Nothing,
    EmptyFolder,
    OurOutput,
}

fn existing(target: &Path, overwrite: bool) -> Result<Existing> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::from(e).in_file(target)),
    };
    if meta.file_type().is_symlink() {
        return Err(Error::invalid_argument(
            "the output folder is a symbolic link; give the folder it points to (or a new one)",
        )
        .in_file(target));
    }
    if !meta.is_dir() {
        return Err(Error::invalid_argument("the output exists and is not a folder").in_file(target));
    }
    let mut entries = std::fs::read_dir(target).map_err(|e| Error::from(e).in_file(target))?;
    if entries.next().is_none() {
        return Ok(Existing::EmptyFolder);
    }
    let marked = std::fs::symlink_metadata(target.join(MARKER)).is_ok_and(|m| m.is_file());
    match (marked, overwrite) {
        (true, true) => Ok(Existing::OurOutput),
        (true, false) => Err(Error::invalid_argument(
            "the output folder already holds a result; choose a new folder or pass --overwrite to replace it",
        )
        .in_file(target)),
        (false, _) => Err(Error::invalid_argument(
            "the output folder holds files imhost did not write; choose a new or empty folder",
        )
        .in_file(target)),
    }
}

impl StagedDir {
    /// Prepare to write the folder `target`: refuse it now if it cannot be replaced (it holds
    /// files and `overwrite` is false, it holds files imhost did not write, it is a link or a
    /// file, or one of `inputs` lies inside it and would be deleted), then create a fresh staging
    /// folder beside it (parents created as needed).
    pub fn create(target: &Path, overwrite: bool, inputs: &[&Path]) -> Result<StagedDir> {
        let kind = existing(target, overwrite)?;
        if matches!(kind, Existing::OurOutput) {
            let folder = target.canonicalize().map_err(|e| Error::from(e).in_file(target))?;
            for input in inputs {
                if input.canonicalize().is_ok_and(|i| i.starts_with(&folder)) {
                    return Err(Error::invalid_argument(format!(
                        "the input '{}' lies inside the output folder '{}', which --overwrite would replace; write the result elsewhere",
                        input.display(),
                        target.display()
                    )));
                }
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::invalid_argument(format!("'{}' is not a folder name", target.display())))?;
        let parent = folder_of(target);
        std::fs::create_dir_all(&parent).map_err(|e| Error::from(e).in_file(&parent))?;
        for _ in 0..16 {
            use std::os::unix::fs::DirBuilderExt;
            let staging = parent.join(format!(".{name}.imhost-partial-{}", random_name()));
            // Private while it fills (nobody else can add or read files, whatever the umask);
            // given the usual mode at commit.
            match std::fs::DirBuilder::new().mode(0o700).create(&staging) {
                Ok(()) => return Ok(StagedDir { target: target.to_path_buf(), staging, overwrite, committed: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::from(e).in_file(&parent)),
            }
        }
        Err(Error::new(ErrorKind::Io, "cannot create a staging folder (16 names taken)").in_file(&parent))
    }

    /// Where to write the outputs until [`commit`](Self::commit).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The folder the outputs will be in.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Mark the folder as imhost's (`what` names the command), then put it in place of the
    /// target: a previous imhost result there is replaced (and deleted), an empty folder too.
    pub fn commit(mut self, what: &str) -> Result<()> {
        let marker = serde_json::json!({
            "written_by": format!("imhost {}", env!("CARGO_PKG_VERSION")),
            "command": what,
            "research_use_only": true,
        });
        write_json(&self.staging.join(MARKER), &marker)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = 0o777 & !umask();
            std::fs::set_permissions(&self.staging, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::from(e).in_file(&self.staging))?;
        }
        let parent = folder_of(&self.target);
        let previous = match existing(&self.target, self.overwrite)? {
            Existing::Nothing => None,
            Existing::EmptyFolder => {
                std::fs::remove_dir(&self.target).map_err(|e| Error::from(e).in_file(&self.target))?;
                None
            }
            Existing::OurOutput => {
                let name = self.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let aside = parent.join(format!(".{name}.imhost-old-{}", random_name()));
                std::fs::rename(&self.target, &aside).map_err(|e| Error::from(e).in_file(&self.target))?;
                Some(aside)
            }
        };
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if let Some(aside) = &previous {
                let _ = std::fs::rename(aside, &self.target);
            }
            return Err(Error::from(e).in_file(&self.target));
        }
        self.committed = true;
        if let Some(aside) = previous {
            // Only a folder that still carries our marker (checked above, renamed by us).
            if std::fs::symlink_metadata(aside.join(MARKER)).is_ok_and(|m| m.is_file()) {
                if let Err(e) = std::fs::remove_dir_all(&aside) {
                    tracing::warn!("could not remove the previous result {}: {e}", aside.display());
                }
            }
        }
        Ok(())
    }
}

/// This process's umask (from `/proc/self/status`; 022 where it cannot be read).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            // The folder we created, holding only what this run wrote.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_a_planted_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("report.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_text(&target, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        let debris: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(debris.len(), 2, "no temporary file left: {debris:?}");
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        std::fs::write(&target, "old").unwrap();
        let e = write_atomically(&target, |w| {
            w.write_all(b"half")?;
            Err(Error::new(ErrorKind::Io, "disk full"))
        })
        .unwrap_err();
        assert!(e.message().contains("disk full"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn names_differ_every_time() {
        let names: std::collections::BTreeSet<String> = (0..1000).map(|_| random_name()).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn reading_an_existing_file_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.json"), r#"{"key": 1}"#).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.json"), dir.path().join("x.json")).unwrap();
        let e = read_existing(&dir.path().join("x.json"), 1 << 20).unwrap_err();
        assert!(e.message().contains("symbolic link"), "{e}");
        assert_eq!(read_existing(&dir.path().join("none.json"), 10).unwrap(), None);
        assert!(read_existing(&dir.path().join("secret.json"), 3).is_err(), "size bound");
    }

    #[test]
    fn staged_folders_hold_one_complete_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("result");
        // First run.
        let staged = StagedDir::create(&out, false, &[]).unwrap();
        std::fs::write(staged.path().join("cbf.nii.gz"), "run 1").unwrap();
        std::fs::write(staged.path().join("ttp.nii.gz"), "run 1").unwrap();
        assert!(!out.exists(), "nothing appears before commit");
        staged.commit("test").unwrap();
        assert_eq!(std::fs::read_to_string(out.join("ttp.nii.gz")).unwrap(), "run 1");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o777 & !umask(), "the usual folder mode once committed");
        }
        // A second run is refused without overwrite, before any work.
        let e = StagedDir::create(&out, false, &[]).unwrap_err();
        assert!(e.message().contains("--overwrite"), "{e}");
        // A run that fails half-way leaves the previous result whole and no debris.
        let staged = StagedDir::create(&out, true, &[]).unwrap();
        std::fs::write(staged.path().join("cbf.nii.gz"), "run 2").unwrap();
        drop(staged);
        assert_eq!(std::fs::read_to_string(out.join("cbf.nii.gz")).unwrap(), "run 1");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "staging removed");
        // A complete second run replaces all of the first (no ttp of run 1 next to run 2).
        let staged = StagedDir::create(&out, true, &[]).unwrap();
        std::fs::write(staged.path().join("cbf.nii.gz"), "run 2").unwrap();
        staged.commit("test").unwrap();
        assert_eq!(std::fs::read_to_string(out.join("cbf.nii.gz")).unwrap(), "run 2");
        assert!(!out.join("ttp.nii.gz").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the old run is gone");
    }

    #[test]
    fn folders_imhost_did_not_write_and_inputs_inside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("thesis.tex"), "years of work").unwrap();
        let e = StagedDir::create(&home, true, &[]).unwrap_err();
        assert!(e.message().contains("did not write"), "{e}");
        assert!(home.join("thesis.tex").exists());
        // An empty folder is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        StagedDir::create(&empty, false, &[]).unwrap().commit("test").unwrap();
        assert!(empty.join(MARKER).is_file());
        // The input inside the folder --overwrite would replace.
        std::fs::write(empty.join("ctp.nii.gz"), "study").unwrap();
        let e = StagedDir::create(&empty, true, &[&empty.join("ctp.nii.gz")]).unwrap_err();
        assert!(e.message().contains("lies inside the output folder"), "{e}");
        // A link as the output folder.
        std::os::unix::fs::symlink(&home, dir.path().join("link")).unwrap();
        assert!(
            StagedDir::create(&dir.path().join("link"), true, &[]).unwrap_err().message().contains("symbolic link")
        );
    }

    #[test]
    fn an_output_that_would_replace_the_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.nii");
        std::fs::write(&a, "x").unwrap();
        let link = dir.path().join("b.nii");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(refuse_overwriting_input(&a, &[&a]).is_err());
        assert!(refuse_overwriting_input(&dir.path().join("./a.nii"), &[&a]).is_err());
        assert!(refuse_overwriting_input(&a, &[&link]).is_err(), "the input named through a link");
        // Writing to the link replaces the link, not the input.
        assert!(refuse_overwriting_input(&link, &[&a]).is_ok());
        assert!(refuse_overwriting_input(&dir.path().join("c.nii"), &[&a]).is_ok());
    }
}
