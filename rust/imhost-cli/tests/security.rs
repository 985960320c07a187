//! Security: every attack of the review of plugin loading, the isolated worker and output files,
//! run by an unprivileged local user against imhost running as root, and shown refused.
//!
//! The attacker is a user this test creates (`imhost-attacker`, with `useradd` where it exists,
//! else a bare user id with no account); creating one needs root, as CI runs. Run as another
//! user, the tests that need the attacker print "SKIPPED" and pass — run them as root to check.
//! The attacker's tools are in `tests/security/`: a library whose constructor leaves a marker
//! (`evil_plugin.c`), a `renameat2(RENAME_EXCHANGE)` loop (`swap_loop.c`) and a hostile worker
//! (`fake_worker.py`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imhost_core::io::nifti::{WriteOptions, write_any};
use imhost_core::{AnyVolume, FrameTimes, Geometry, TimeSource, Volume};
use imhost_plugin_host::testing::{build_test_plugins, repo_root};
use ndarray::{Array4, ShapeBuilder};

// ---- the attacker ------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Attacker {
    uid: u32,
    gid: u32,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The unprivileged attacker, or `None` (with a note) when this test cannot create one.
fn attacker() -> Option<Attacker> {
    static ONCE: OnceLock<Option<Attacker>> = OnceLock::new();
    *ONCE.get_or_init(|| {
        if !is_root() {
            eprintln!("SKIPPED: the security tests create an unprivileged attacker user and need root");
            return None;
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "imhost-attacker"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        if id("-u").is_none() {
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "imhost-attacker"])
                .status();
        }
        Some(match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Attacker { uid, gid },
            // No useradd here: a user id without an account is just as unprivileged.
            _ => Attacker { uid: 64_123, gid: 64_123 },
        })
    })
}

impl Attacker {
    /// `sh -c script` as the attacker.
    fn command(self, script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script).uid(self.uid).gid(self.gid).env_clear().env("PATH", "/usr/bin:/bin");
        c
    }

    fn sh(self, script: &str) -> Output {
        self.command(script).output().expect("run the attacker's shell")
    }

    fn chown(self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).unwrap();
    }
}

// ---- the victim's side ---------------------------------------------------------------------------

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder everyone can traverse (as the attacker must), owned by root.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    dir
}

fn imhost() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imhost"));
    c.env_remove("IMHOST_PLUGIN_PATH").env("IMHOST_PLUGIN_CONFIG", "/nonexistent/plugins.json").arg("-q");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run imhost")
}

/// A failure with status 1 and one line on stderr (no signal, no panic, no abort).
fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status 1 (not a signal) — stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("imhost: error: "), "{stderr}");
    lines[0].to_string()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A float32 image whose every voxel is `value`: its bytes are easy to recognise.
fn marked_image(path: &Path, value: f32, shape: [usize; 4]) {
    let data = Array4::<f32>::from_elem(shape.f(), value);
    let times = (shape[3] > 1).then(|| FrameTimes::uniform(shape[3], 0.0, 1.0, TimeSource::Header).unwrap());
    let v = Volume::from_parts(data, Geometry::identity(), times).unwrap();
    write_any(&AnyVolume::from(v), path, &WriteOptions::default()).unwrap();
}

fn security_file(name: &str) -> PathBuf {
    repo_root().join("tests/security").join(name)
}

fn compile(source: &Path, out: &Path, extra: &[String]) {
    let status = Command::new("cc")
        .args(["-O1", "-Wall"])
        .args(extra)
        .arg(source)
        .arg("-o")
        .arg(out)
        .status()
        .expect("a C compiler");
    assert!(status.success(), "compiling {}", source.display());
}

/// The attacker's library, whose constructor creates `marker`.
fn evil_library(out: &Path, marker: &Path) {
    compile(
        &security_file("evil_plugin.c"),
        out,
        &["-shared".into(), "-fPIC".into(), format!("-DMARKER=\"{}\"", marker.display())],
    );
}

/// The real test plugins in a root-owned folder others can read.
fn test_plugins(stems: &[&str]) -> tempfile::TempDir {
    let dir = workspace();
    build_test_plugins(dir.path(), stems);
    dir
}

/// A copy of a plugin file under another name in `dir` (the fake worker reads its mode from it).
fn fake_plugin(dir: &Path, mode: &str) -> PathBuf {
    let plugins = test_plugins(&["test_good"]);
    let target = dir.join(format!("libfake_{mode}.so"));
    std::fs::copy(plugins.path().join("libtest_good.so"), &target).unwrap();
    chmod(&target, 0o755);
    target
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

// ---- High 1: the check and the load are one lookup -----------------------------------------------

#[test]
fn swapping_folders_between_the_check_and_the_load_never_runs_the_attackers_code() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let marker = shared.join("pwned");
    let good = shared.join("plugins");
    let evil = shared.join("evil");
    std::fs::create_dir(&good).unwrap();
    chmod(&good, 0o755);
    build_test_plugins(&good, &["test_good"]);
    std::fs::create_dir(&evil).unwrap();
    evil_library(&evil.join("libtest_good.so"), &marker);
    for p in [&evil, &evil.join("libtest_good.so")] {
        a.chown(p);
    }
    let swap_loop = top.path().join("swap_loop");
    compile(&security_file("swap_loop.c"), &swap_loop, &[]);
    let target = good.join("libtest_good.so");

    for (layout, mode) in [("world-writable", 0o777), ("sticky like /tmp", 0o1777)] {
        chmod(&shared, mode);
        let swapper = a
            .command(&format!("exec '{}' '{}' '{}' 3", swap_loop.display(), good.display(), evil.display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut loaded, mut refused) = (0, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            match imhost_plugin_host::native::load(&target) {
                Ok(p) => {
                    assert_eq!(p.name, "test-good", "{layout}: only the genuine plugin may load");
                    loaded += 1;
                }
                Err(e) => {
                    // Refused by the folder above, or caught mid-swap by a lookup that failed.
                    assert!(
                        ["without the sticky bit", "belongs to user", "cannot"].iter().any(|w| e.message().contains(w)),
                        "{layout}: {e}"
                    );
                    refused += 1;
                }
            }
        }
        let swaps = String::from_utf8_lossy(&swapper.wait_with_output().unwrap().stdout).into_owned();
        // Put the folders back in place for the next layout (an odd number of swaps).
        if std::fs::symlink_metadata(&good).unwrap().uid() != 0 {
            let aside = top.path().join("aside");
            std::fs::rename(&good, &aside).unwrap();
            std::fs::rename(&evil, &good).unwrap();
            std::fs::rename(&aside, &evil).unwrap();
        }
        assert!(!marker.exists(), "{layout}: the attacker's constructor ran ({swaps})");
        eprintln!("{layout}: {loaded} loads, {refused} refusals; attacker: {swaps}");
        if mode == 0o777 {
            assert_eq!(loaded, 0, "under a world-writable folder nothing loads ({swaps})");
            assert!(swaps.contains("swaps") && !swaps.starts_with("swaps 0 "), "the attack ran: {swaps}");
        } else {
            assert_eq!(refused, 0, "the safe layout loads every time");
            assert!(swaps.starts_with("swaps 0 "), "the sticky bit stops the swap: {swaps}");
        }
    }
}

#[test]
fn files_of_other_users_and_links_to_them_are_refused() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let plugins = top.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    chmod(&plugins, 0o755);
    let marker = top.path().join("pwned");
    // The attacker's own library, copied into root's folder with its owner kept.
    evil_library(&plugins.join("libtheirs.so"), &marker);
    a.chown(&plugins.join("libtheirs.so"));
    // A link in root's folder to a library in the attacker's folder.
    let theirs = top.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    evil_library(&theirs.join("libevil.so"), &marker);
    a.chown(&theirs);
    a.chown(&theirs.join("libevil.so"));
    std::os::unix::fs::symlink(theirs.join("libevil.so"), plugins.join("liblinked.so")).unwrap();
    let out = run(imhost().args(["models", "list", "--json", "--plugin"]).arg(&plugins));
    ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = list["problems"].to_string();
    assert!(
        problems.contains("libtheirs.so") && problems.contains(&format!("belongs to user {}", a.uid)),
        "{problems}"
    );
    assert!(problems.contains("libevil.so"), "the link is judged by its target: {problems}");
    assert!(!marker.exists(), "nothing of the attacker's was loaded");
}

#[test]
fn a_relative_plugin_path_does_not_load_from_the_current_folder() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let marker = top.path().join("pwned");
    a.sh(&format!("mkdir '{0}/drop'", shared.display()));
    let drop = shared.join("drop");
    // The attacker plants a library where root will run imhost from.
    evil_library(&drop.join("libplanted.so"), &marker);
    a.chown(&drop.join("libplanted.so"));
    for entry in [".", "drop", ""] {
        let out =
            run(imhost().current_dir(&shared).env("IMHOST_PLUGIN_PATH", entry).args(["models", "list", "--json"]));
        ok(&out);
        if !entry.is_empty() {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(list["problems"].to_string().contains("is relative"), "{entry}: {}", list["problems"]);
        }
    }
    assert!(!marker.exists());
}

#[test]
fn package_files_the_attacker_can_write_are_refused() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let pkg = top.path().join("ts-lesion");
    std::fs::create_dir(&pkg).unwrap();
    chmod(&pkg, 0o755);
    let src = repo_root().join("tests/fixtures/packages/ts-lesion");
    for f in ["manifest.json", "model.pt"] {
        std::fs::copy(src.join(f), pkg.join(f)).unwrap();
        chmod(&pkg.join(f), 0o644);
    }
    let ct = top.path().join("ct.nii.gz");
    marked_image(&ct, 80.0, [8, 8, 4, 1]);
    let run_package = |out: &str| {
        run(imhost()
            .args(["run", "test.ts-lesion", "--device", "cpu", "--plugin"])
            .arg(&pkg)
            .arg("--input")
            .arg(&ct)
            .arg("--out")
            .arg(top.path().join(out)))
    };
    ok(&run_package("first"));
    // A 0666 weights file, which the attacker then rewrites.
    chmod(&pkg.join("model.pt"), 0o666);
    assert!(a.sh(&format!("printf x >> '{}'", pkg.join("model.pt").display())).status.success());
    let line = one_line_error(&run_package("second"));
    assert!(line.contains("model.pt") && line.contains("writable by every user"), "{line}");
    assert!(!top.path().join("second").exists(), "no output folder for a refused run");
}

// ---- High 2: the host creates and removes only its own files --------------------------------------

#[test]
fn a_worker_cannot_make_the_host_delete_a_file() {
    let top = workspace();
    let victim = top.path().join("shadow");
    std::fs::write(&victim, "root:$6$secret:19000:0:99999:7:::\n").unwrap();
    chmod(&victim, 0o600);
    let plugin = fake_plugin(top.path(), "delete");
    let ct = top.path().join("ct.nii.gz");
    marked_image(&ct, 1.0, [4, 4, 2, 1]);
    let out = run(imhost()
        .env("IMHOST_PLUGIN_WORKER", security_file("fake_worker.py"))
        .env("FAKE_VICTIM", &victim)
        .args(["run", "fake.delete", "--isolate", "--plugin"])
        .arg(&plugin)
        .arg("--input")
        .arg(&ct)
        .arg("--out")
        .arg(top.path().join("o")));
    let line = one_line_error(&out);
    assert!(line.contains("did not produce its output 'out'"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root:$6$secret:19000:0:99999:7:::\n",
        "the file the worker named is intact"
    );
}

// ---- High 3: no patient pixels where other users can reach them -----------------------------------

/// What the attacker could read that holds the pattern: files in /dev/shm and the temp folder,
/// and descriptors of every process it can see.
fn attacker_finds(a: Attacker, pattern: &[u8]) -> Vec<String> {
    let octal: String = pattern.iter().map(|b| format!("\\{b:03o}")).collect();
    let script = format!(
        "for f in /dev/shm/* /dev/shm/.* /tmp/imhost-* /proc/[0-9]*/fd/*; do \
           [ -f \"$f\" ] || continue; \
           if head -c 67108864 \"$f\" 2>/dev/null | grep -qaF \"$(printf '{octal}')\"; then echo \"$f\"; fi; \
         done"
    );
    let out = a.sh(&script);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn shm_names() -> Vec<String> {
    files_in(Path::new("/dev/shm")).into_iter().filter(|n| n.contains("imhost")).collect()
}

fn worker_of(host: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(host) && String::from_utf8_lossy(&cmdline).contains("imhost-plugin-worker") {
            return Some(pid);
        }
    }
    None
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

#[test]
fn pixels_in_shared_memory_are_out_of_other_users_reach_and_gone_after_kill_9() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let private = top.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let input = private.join("patient.nii");
    let value = 1234.5678f32;
    marked_image(&input, value, [16, 16, 8, 1]);
    let pattern: Vec<u8> = std::iter::repeat_n(value.to_ne_bytes(), 4).flatten().collect();
    let precious = top.path().join("precious");
    std::fs::write(&precious, "precious").unwrap();
    chmod(&precious, 0o644);
    let plugins = test_plugins(&["test_hang"]);
    let plugin = plugins.path().join("libtest_hang.so");
    let before = shm_names();

    // The old names were imhost-<host pid>-<n>.in, created through links: plant links for the
    // process ids the next host will get, pointing at a file the attacker wants overwritten,
    // and regular 0666 files with a second link the attacker keeps.
    let mut probe = Command::new("true").spawn().unwrap();
    let next = probe.id();
    probe.wait().unwrap();
    let keep = top.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    a.chown(&keep);
    let plant = format!(
        "for p in $(seq {} {}); do for n in 0 1 2; do \
           ln -s '{}' /dev/shm/imhost-$p-$n.in 2>/dev/null; \
           : > /dev/shm/imhost-$p-$n.out 2>/dev/null && chmod 666 /dev/shm/imhost-$p-$n.out && ln /dev/shm/imhost-$p-$n.out '{}'/$p-$n 2>/dev/null; \
         done; done",
        next + 1,
        next + 400,
        precious.display(),
        keep.display()
    );
    a.sh(&plant);

    let start_host = |timeout: &str| {
        imhost()
            .args(["run", "test.hang", "--isolate", "--timeout", timeout, "--plugin"])
            .arg(&plugin)
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(top.path().join(format!("out-{timeout}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // 1. During a run, the attacker finds the input pixels nowhere it can read.
    let host = start_host("4");
    let started = Instant::now();
    while worker_of(host.id()).is_none() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worker_of(host.id()).is_some(), "the worker started");
    std::thread::sleep(Duration::from_millis(300));
    let found = attacker_finds(a, &pattern);
    assert!(found.is_empty(), "the attacker read the patient's pixels from {found:?}");
    let line = one_line_error(&host.wait_with_output().unwrap());
    assert!(line.contains("time limit of 4 s") && line.contains("stopped"), "{line}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious", "nothing was written through a planted link");
    let kept = attacker_finds(a, &pattern);
    assert!(kept.is_empty(), "after the run the attacker kept a copy in {kept:?}");
    for f in files_in(&keep) {
        assert_eq!(std::fs::metadata(keep.join(&f)).unwrap().len(), 0, "a planted file received data: {f}");
    }

    // 2. kill -9 of the host: the worker dies with it and nothing is left behind.
    let mut host = start_host("60");
    let started = Instant::now();
    let mut worker = None;
    while worker.is_none() && started.elapsed() < Duration::from_secs(10) {
        worker = worker_of(host.id());
        std::thread::sleep(Duration::from_millis(50));
    }
    let worker = worker.expect("the worker started");
    std::thread::sleep(Duration::from_millis(300));
    host.kill().unwrap();
    let _ = host.wait();
    let killed = Instant::now();
    while alive(worker) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(worker), "the worker outlived its host by 5 s");
    a.sh("rm -f /dev/shm/imhost-*");
    assert_eq!(shm_names(), before, "nothing of imhost's left in /dev/shm");
}

// ---- Medium 4: a broken or hostile worker cannot crash or hang the host ---------------------------

#[test]
fn a_hostile_worker_cannot_crash_or_hang_the_host() {
    let top = workspace();
    let ct = top.path().join("ct.nii.gz");
    marked_image(&ct, 1.0, [4, 4, 2, 1]);
    let cases: &[(&str, &[&str], &str)] = &[
        ("huge", &[], "asked for shape [1125899906842624, 1, 1, 1]"),
        ("overflow", &[], "asked for shape [4294967296, 4294967296, 1, 1]"),
        ("longline", &[], "sent a message over 16777216 bytes"),
        ("bighello", &[], "sent a line over 16777216 bytes"),
        ("hang", &["--timeout", "1.5"], "time limit of 1.5 s"),
        ("garbage", &[], "crashed in its isolated worker"),
    ];
    for (mode, extra, expected) in cases {
        let plugin = fake_plugin(top.path(), mode);
        let started = Instant::now();
        let out = run(imhost()
            .env("IMHOST_PLUGIN_WORKER", security_file("fake_worker.py"))
            .args(["run", &format!("fake.{mode}"), "--isolate", "--plugin"])
            .arg(&plugin)
            .args(*extra)
            .arg("--input")
            .arg(&ct)
            .arg("--out")
            .arg(top.path().join(format!("o-{mode}"))));
        let line = one_line_error(&out);
        assert!(line.contains(expected), "{mode}: {line}");
        assert!(started.elapsed() < Duration::from_secs(30), "{mode} took {:?}", started.elapsed());
    }
}

#[test]
fn a_worker_killed_mid_run_fails_the_run_and_the_next_run_works() {
    // In process: the test itself is the host that must survive.
    // The worker is found next to this test's folder (target/<profile>/imhost-plugin-worker).
    let plugins = test_plugins(&["test_hang"]);
    let mut registry = imhost_core::registry::Registry::new();
    imhost_plugin_host::load_one(&mut registry, &plugins.path().join("libtest_hang.so"), true).unwrap();
    let x = Volume::new_3d(ndarray::Array3::<f32>::from_elem((4, 4, 2), 7.0), Geometry::identity()).unwrap();
    let me = std::process::id();
    let killer = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(w) = worker_of(me) {
                std::thread::sleep(Duration::from_millis(200));
                let _ = Command::new("kill").args(["-9", &w.to_string()]).status();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let e = registry
        .run("test.hang", &[x.view().into()], &serde_json::Map::new(), &imhost_core::RunControl::none())
        .unwrap_err();
    assert!(killer.join().unwrap(), "found the worker");
    assert!(e.message().contains("signal 9 (SIGKILL"), "{e}");
    let out = registry
        .run("test.hang-ok", &[x.view().into()], &serde_json::Map::new(), &imhost_core::RunControl::none())
        .unwrap();
    assert!(out.volume("out").is_some(), "a new worker ran the next model");
}

// ---- Medium 5: frame times cannot ask for hundreds of gigabytes -----------------------------------

#[test]
fn frame_times_from_the_attacker_are_refused_with_a_clear_error() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let shared = top.path().join("incoming");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let study = shared.join("ctp.nii.gz");
    ok(&run(imhost()
        .args(["phantom", "ctp", "--size", "32,32,2", "--frames", "30", "--interval", "1", "--out"])
        .arg(top.path().join("ph"))));
    std::fs::copy(top.path().join("ph/ctp.nii.gz"), &study).unwrap();
    chmod(&study, 0o644);
    let times = |last: &str, step: &str| {
        format!(
            "[{}]",
            (0..30)
                .map(|n| if n == 29 {
                    last.to_string()
                } else {
                    format!("{}", n as f64 * step.parse::<f64>().unwrap())
                })
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    for (label, json, expected) in [
        ("1e300 at the end", times("1e300", "1"), "at most 4096"),
        ("1e12 at the end", times("1e12", "1"), "at most 4096"),
        ("1e-7 s apart", times("0.0000029", "0.0000001"), "are not a CT perfusion series"),
    ] {
        assert!(
            a.sh(&format!("printf '{{\"FrameTimes\": {json}}}' > '{}'", shared.join("ctp.json").display()))
                .status
                .success()
        );
        let line = one_line_error(&run(imhost().arg("perfusion").arg(&study).arg("--out").arg(top.path().join("o"))));
        assert!(line.contains(expected) && line.contains("check the frame times"), "{label}: {line}");
    }
    // A DICOM series with acquisition times 1 µs apart.
    let dicom = top.path().join("dicom-study");
    let made = run(imhost()
        .args(["phantom", "ctp", "--size", "32,32,2", "--frames", "12", "--interval", "0.000001", "--dicom", "--out"])
        .arg(&dicom));
    if made.status.success() {
        let line = one_line_error(&run(imhost()
            .arg("perfusion")
            .arg(dicom.join("dicom"))
            .arg("--out")
            .arg(top.path().join("od"))));
        assert!(line.contains("check the frame times") || line.contains("increase"), "DICOM: {line}");
    }
}

// ---- Medium 6: no output is written through a planted link ----------------------------------------

#[test]
fn outputs_replace_planted_links_instead_of_writing_through_them() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let precious = top.path().join("precious");
    std::fs::write(&precious, "precious").unwrap();
    chmod(&precious, 0o644);
    let input = top.path().join("ctp.nii.gz");
    ok(&run(imhost()
        .args(["phantom", "ctp", "--size", "32,32,2", "--frames", "20", "--interval", "1", "--out"])
        .arg(top.path().join("ph"))));
    std::fs::copy(top.path().join("ph/ctp.nii.gz"), &input).unwrap();
    for mode in [0o777, 0o1777] {
        let shared = top.path().join(format!("shared-{mode:o}"));
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, mode);
        // The outputs' names, and the temporary names the old writer used (.imhost-partial-PID-N).
        let mut child = Command::new("true").spawn().unwrap();
        let probe = child.id();
        child.wait().unwrap();
        let plant = format!(
            "cd '{dir}' && ln -s '{p}' mip.nii.gz && ln -s '{p}' mip.png && \
             for pid in $(seq {a} {b}); do for n in 0 1 2 3; do ln -s '{p}' .imhost-partial-$pid-$n.nii.gz; done; done",
            dir = shared.display(),
            p = precious.display(),
            a = probe + 1,
            b = probe + 200
        );
        assert!(a.sh(&plant).status.success());
        ok(&run(imhost()
            .arg("mip")
            .arg(&input)
            .arg("--out")
            .arg(shared.join("mip.nii.gz"))
            .arg("--preview")
            .arg(shared.join("mip.png"))));
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious", "mode {mode:o}");
        for name in ["mip.nii.gz", "mip.png"] {
            let meta = std::fs::symlink_metadata(shared.join(name)).unwrap();
            assert!(meta.is_file() && meta.uid() == 0, "{name} is root's own file now");
        }
        // An output folder the attacker prepared: links inside, or the folder itself a link.
        assert!(
            a.sh(&format!(
                "mkdir '{0}/result' && ln -s '{1}' '{0}/result/report.json' && ln -s '{2}' '{0}/linked'",
                shared.display(),
                precious.display(),
                top.path().display()
            ))
            .status
            .success()
        );
        for folder in ["result", "linked"] {
            let line = one_line_error(&run(imhost()
                .arg("perfusion")
                .arg(&input)
                .arg("--out")
                .arg(shared.join(folder))
                .arg("--overwrite")));
            assert!(line.contains("did not write") || line.contains("symbolic link"), "{folder}: {line}");
        }
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious");
    }
}

// ---- Medium 7: an output folder always holds one complete run -------------------------------------

#[test]
fn a_run_that_fails_half_way_leaves_the_previous_result_whole() {
    let top = workspace();
    ok(&run(imhost().args(["phantom", "ctp", "--size", "40,40,2", "--out"]).arg(top.path().join("ph"))));
    let study = top.path().join("ph/ctp.nii.gz");
    let out = top.path().join("result");
    ok(&run(imhost().arg("perfusion").arg(&study).arg("--out").arg(&out)));
    let before: Vec<(String, Vec<u8>)> =
        files_in(&out).into_iter().map(|f| (f.clone(), std::fs::read(out.join(&f)).unwrap())).collect();
    assert!(before.iter().any(|(f, _)| f == "preview.png") && before.iter().any(|(f, _)| f == "report.json"));
    // Without --overwrite the folder is refused before any work.
    let line = one_line_error(&run(imhost().arg("perfusion").arg(&study).arg("--out").arg(&out)));
    assert!(line.contains("--overwrite"), "{line}");
    // A disk that fills half-way (a file-size limit: small maps fit, the preview does not).
    let preview_kib = std::fs::metadata(out.join("preview.png")).unwrap().len() / 1024;
    let limit_kib = (preview_kib / 2).max(8);
    let script = format!(
        "trap '' XFSZ; ulimit -f {}; exec '{}' -q perfusion '{}' --out '{}' --overwrite --method bsvd",
        limit_kib * 2,
        env!("CARGO_BIN_EXE_imhost"),
        study.display(),
        out.display()
    );
    let failed =
        Command::new("bash").arg("-c").arg(&script).env("IMHOST_PLUGIN_CONFIG", "/nonexistent").output().unwrap();
    let line = one_line_error(&failed);
    assert!(line.to_lowercase().contains("file too large") || line.contains("i/o"), "{line}");
    let after: Vec<(String, Vec<u8>)> =
        files_in(&out).into_iter().map(|f| (f.clone(), std::fs::read(out.join(&f)).unwrap())).collect();
    assert!(after == before, "the previous result is whole and unchanged");
    assert_eq!(files_in(top.path()), ["ph", "result"], "no staging folder left behind");
}

// ---- Low 8 ------------------------------------------------------------------------------------------

#[test]
fn a_gzip_bomb_is_refused_under_an_address_space_limit() {
    use std::io::Write;
    let top = workspace();
    // A header claiming 5.6 GB of int16 and the data really there: 84 gzip members of 64 MiB of
    // zeros (5.5 MB on disk).
    let shape = [1024usize, 1024, 84, 32];
    let small = top.path().join("header.nii");
    let v = Volume::from_parts(
        Array4::<i16>::zeros([1, 1, 1, 2].f()),
        Geometry::identity(),
        Some(FrameTimes::uniform(2, 0.0, 1.0, TimeSource::Header).unwrap()),
    )
    .unwrap();
    write_any(&AnyVolume::from(v), &small, &WriteOptions::default()).unwrap();
    let mut header = std::fs::read(&small).unwrap()[..352].to_vec();
    for (i, d) in [4i16, shape[0] as i16, shape[1] as i16, shape[2] as i16, shape[3] as i16].iter().enumerate() {
        header[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_ne_bytes());
    }
    let bomb = top.path().join("bomb.nii.gz");
    let mut file = std::fs::File::create(&bomb).unwrap();
    let member = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    file.write_all(&member(&header)).unwrap();
    let zeros = member(&vec![0u8; 64 << 20]);
    let total = shape.iter().product::<usize>() * 2;
    for _ in 0..total.div_ceil(64 << 20) {
        file.write_all(&zeros).unwrap();
    }
    drop(file);
    let script = format!("ulimit -v 4000000 && exec '{}' info '{}'", env!("CARGO_BIN_EXE_imhost"), bomb.display());
    let line = one_line_error(&Command::new("sh").arg("-c").arg(&script).output().unwrap());
    assert!(line.contains("this process may allocate"), "{line}");
}

#[test]
fn plugin_configs_are_bounded_checked_and_must_be_objects() {
    let Some(a) = attacker() else { return };
    let top = workspace();
    let config = top.path().join("plugins.json");
    let list = |expected: &str| {
        let out = run(imhost().env("IMHOST_PLUGIN_CONFIG", &config).args(["models", "list"]));
        ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    };
    std::fs::write(&config, "[]").unwrap();
    list("must be an object");
    std::fs::write(&config, r#"{"plugins": []}"#).unwrap();
    list("\"plugins\" must be an object");
    std::fs::write(&config, format!(r#"{{"plugins": {{}}, "pad": "{}"}}"#, "x".repeat(2 << 20))).unwrap();
    list("over 1024 KiB");
    std::fs::write(&config, r#"{"plugins": {"libx.so": {"isolate": true}}}"#).unwrap();
    chmod(&config, 0o666);
    a.sh(&format!("printf '{{\"plugins\": {{}}}}' > '{}'", config.display()));
    list("writable by every user");
}

#[test]
fn result_json_records_no_input_path_and_mip_cannot_replace_its_input() {
    let top = workspace();
    let named = top.path().join("DOE_JOHN_1950-01-01");
    std::fs::create_dir(&named).unwrap();
    let input = named.join("DOE_JOHN_ctp.nii.gz");
    ok(&run(imhost()
        .args(["phantom", "ctp", "--size", "32,32,2", "--frames", "12", "--interval", "1", "--out"])
        .arg(top.path().join("ph"))));
    std::fs::copy(top.path().join("ph/ctp.nii.gz"), &input).unwrap();
    let out = top.path().join("result");
    ok(&run(imhost().args(["run", "mip", "--input"]).arg(&input).arg("--out").arg(&out)));
    let result = std::fs::read_to_string(out.join("result.json")).unwrap();
    assert!(!result.contains("DOE") && result.contains("\"shape\""), "{result}");
    ok(&run(imhost()
        .args(["run", "mip", "--record-input-paths", "--overwrite", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)));
    assert!(std::fs::read_to_string(out.join("result.json")).unwrap().contains("DOE_JOHN_ctp.nii.gz"), "when asked");
    // mip --out equal to its input, also when the input is named through a link.
    let before = std::fs::read(&input).unwrap();
    let alias = top.path().join("alias.nii.gz");
    std::os::unix::fs::symlink(&input, &alias).unwrap();
    for given in [&input, &alias] {
        let line = one_line_error(&run(imhost().arg("mip").arg(given).arg("--out").arg(&input)));
        assert!(line.contains("is the input"), "{line}");
    }
    // An output that is a link to the input replaces the link, and the input stays.
    ok(&run(imhost().arg("mip").arg(&input).arg("--out").arg(&alias)));
    assert!(std::fs::symlink_metadata(&alias).unwrap().is_file());
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

// ---- What held up: no patient identifier in logs, reports, NIfTI or PNG metadata -------------------

#[test]
fn patient_identifiers_appear_in_no_log_line_and_no_output() {
    let top = workspace();
    let ph = top.path().join("ph");
    ok(&run(imhost().args(["phantom", "ctp", "--size", "40,40,2", "--dicom", "--out"]).arg(&ph)));
    let python = repo_root().join(".cache/python");
    if !python.join("pydicom").is_dir() {
        eprintln!("SKIPPED: pydicom (scripts/setup.sh test installs it) is needed to stamp patient identifiers");
        return;
    }
    let stamp = format!(
        "import glob, pydicom\n\
         for f in glob.glob('{}/*'):\n\
         \x20   d = pydicom.dcmread(f)\n\
         \x20   d.PatientName = 'DOE^JOHNATHAN'; d.PatientID = 'MRN-8675309'; d.PatientBirthDate = '19500101'\n\
         \x20   d.save_as(f)\n",
        ph.join("dicom").display()
    );
    let stamped = Command::new("python3").arg("-c").arg(&stamp).env("PYTHONPATH", &python).status().unwrap();
    assert!(stamped.success());
    let out = top.path().join("result");
    let result = run(imhost()
        .env("IMHOST_LOG", "trace")
        .arg("perfusion")
        .arg(ph.join("dicom"))
        .arg("--out")
        .arg(&out)
        .arg("--no-motion-correction"));
    ok(&result);
    let logs = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    assert!(logs.lines().count() > 3, "trace logging is on: {logs}");
    for id in ["DOE", "JOHNATHAN", "8675309", "19500101"] {
        assert!(!logs.contains(id), "{id} in the logs");
        for f in files_in(&out) {
            let bytes = std::fs::read(out.join(&f)).unwrap();
            let text = if f.ends_with(".gz") {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s).unwrap();
                s
            } else {
                bytes
            };
            assert!(!text.windows(id.len()).any(|w| w == id.as_bytes()), "{id} in {f}");
        }
    }
}
