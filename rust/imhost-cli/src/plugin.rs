//! `imhost plugin new|check|test`: what a plugin author runs.
//!
//! - `new NAME --lang c|cpp|rust` writes a buildable skeleton (CMake or Cargo) with its manifest,
//!   a README and a test: a generated CT (`test/input.nii.gz`) and its truth (`test/expected/`);
//! - `check PATH` loads a plugin as a host does (trust rules, ABI, entry symbol, manifest), runs
//!   each model on a generated input of the kind its manifest declares — in an isolated worker,
//!   then in process — and checks the outputs against the manifest and against each other;
//! - `test PATH --input … --expect DIR` compares a run's outputs with expected ones, for the
//!   author's own CI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use imhost_core::io::write_volume;
use imhost_core::registry::{InputSpec, Manifest, OutputKind, Registry, convert};
use imhost_core::{
    AnyVolume, AnyVolumeView, DType, Error, FrameTimes, Geometry, Result, RunControl, TimeSource, Volume,
};
use imhost_registry::{RegistryOptions, open};
use ndarray::{Array4, ShapeBuilder};
use serde_json::Value;

/// `imhost plugin …`.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write a buildable plugin skeleton: manifest, source, build file, README and a test.
    New(NewArgs),
    /// Load a plugin as a host does and run each model on a generated input of its declared kind.
    Check(CheckArgs),
    /// Run a plugin's model on inputs and compare the outputs with expected ones.
    Test(TestArgs),
}

/// The language of a skeleton.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// C99, built with CMake.
    C,
    /// C++17 with imhost_plugin.hpp, built with CMake.
    Cpp,
    /// Rust with imhost-plugin-sdk, built with Cargo.
    Rust,
}

/// Arguments of `imhost plugin new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and '-', starting with a letter (e.g.
    /// acme-bright). It names the folder, the library and, unless --id says otherwise, the model.
    pub name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "c")]
    pub lang: Lang,
    /// The folder to write (default: ./NAME); it must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The model's id (default: NAME; prefix your organisation, e.g. acme.bright).
    #[arg(long)]
    pub id: Option<String>,
    /// Rust: the imhost-plugin-sdk crate folder to depend on (default: this imhost's source
    /// tree when it has one, else the git repository).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// Arguments of `imhost plugin check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The plugin library (.so) or model package folder.
    pub path: PathBuf,
    /// Longest a model may take on the generated input, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

/// Arguments of `imhost plugin test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// The plugin library (.so) or model package folder.
    pub path: PathBuf,
    /// The model (needed when the plugin has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Input image(s) in the manifest's order (NIfTI or DICOM folder; repeatable).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// The expected outputs: a folder as `imhost run` writes it (result.json with "scores",
    /// NAME.nii.gz per volume); only what is there is compared.
    #[arg(long)]
    pub expect: PathBuf,
    /// Model option as key=value (repeatable).
    #[arg(long = "option", short = 'o')]
    pub options: Vec<String>,
    /// Relative tolerance of scores and maps (label maps must match exactly).
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
    /// Run in an isolated worker instead of in process.
    #[arg(long)]
    pub isolate: bool,
}

/// Run one `imhost plugin` command.
pub fn run(command: &PluginCommand) -> Result<()> {
    match command {
        PluginCommand::New(args) => new(args),
        PluginCommand::Check(args) => check(args),
        PluginCommand::Test(args) => test(args),
    }
}

// ---------------------------------------------------------------------------------------------
// A generated CT with known content: the skeleton's test input and `check`'s input.

/// The sample CT's grid.
const SAMPLE_SHAPE: [usize; 3] = [40, 36, 14];
const SAMPLE_SPACING: [f64; 3] = [0.8, 0.8, 2.0];
/// HU of air, the head and the bright sphere.
const AIR: f64 = -1000.0;
const HEAD: f64 = 40.0;
const SPHERE: f64 = 400.0;

/// Which class voxel (i, j, k) of a grid of `shape` and `spacing` is: 0 air, 1 head, 2 sphere.
/// The head is an ellipsoid filling most of the grid, the sphere (radius 5 mm) lies off centre.
fn class_of(ijk: [usize; 3], shape: [usize; 3], spacing: [f64; 3]) -> u8 {
    let mm = |a: usize, f: f64| (ijk[a] as f64 - f * (shape[a] as f64 - 1.0)) * spacing[a];
    let head: f64 = (0..3)
        .map(|a| {
            let semi = 0.45 * shape[a] as f64 * spacing[a];
            (mm(a, 0.5) / semi).powi(2)
        })
        .sum();
    let sphere = (mm(0, 0.36).powi(2) + mm(1, 0.57).powi(2) + mm(2, 0.45).powi(2)).sqrt();
    if sphere <= 5.0 {
        2
    } else if head <= 1.0 {
        1
    } else {
        0
    }
}

/// A sample of `shape` × `frames` on `spacing`: per class `levels[class]`, and in 4-D a bolus
/// (gamma variate, peak `bolus` at 12 s) added to the head and the sphere.
fn sample(shape: [usize; 3], spacing: [f64; 3], frames: usize, levels: [f64; 3], bolus: f64) -> Result<Volume<f32>> {
    let [ni, nj, nk] = shape;
    let gamma = |t: f64| if t <= 4.0 { 0.0 } else { ((t - 4.0) / 8.0).powi(3) * (3.0 * (1.0 - (t - 4.0) / 8.0)).exp() };
    let data = Array4::from_shape_fn((ni, nj, nk, frames).f(), |(i, j, k, t)| {
        let class = class_of([i, j, k], shape, spacing);
        let enhancement = if frames > 1 && class > 0 { bolus * gamma(t as f64) } else { 0.0 };
        (levels[class as usize] + enhancement) as f32
    });
    let geometry = Geometry {
        spacing,
        origin: [-(ni as f64) * spacing[0] / 2.0, -(nj as f64) * spacing[1] / 2.0, -20.0],
        ..Geometry::identity()
    };
    let times = if frames > 1 {
        Some(FrameTimes::new((0..frames).map(|t| t as f64).collect(), TimeSource::Caller)?)
    } else {
        None
    };
    Volume::from_parts(data, geometry, times)
}

/// The generated input for one manifest input: a CT-, PET- or MR-like head of the declared
/// dimensionality, spacing and first pixel type (int16 CT when the manifest lists none, so that
/// the host's conversion is exercised).
fn generated_input(spec: &InputSpec) -> Result<AnyVolume> {
    let spacing = spec.spacing_mm.unwrap_or(SAMPLE_SPACING);
    let (shape, frames) = match spec.dims {
        4 => ([32, 28, 6], spec.min_frames.unwrap_or(0).max(40)),
        _ => (SAMPLE_SHAPE, 1),
    };
    let (levels, bolus) = match spec.modality.as_str() {
        "PT" | "NM" => ([0.05, 1.0, 8.0], 2.0),
        "MR" => ([0.0, 300.0, 900.0], 200.0),
        _ => ([AIR, HEAD, SPHERE], 60.0),
    };
    let volume = AnyVolume::F32(sample(shape, spacing, frames, levels, bolus)?);
    let dtype = spec.dtypes.first().and_then(|d| DType::from_name(d)).unwrap_or(match spec.modality.as_str() {
        "PT" | "NM" | "MR" => DType::F32,
        _ => DType::I16,
    });
    if dtype == DType::F32 { Ok(volume) } else { convert(&volume.view(), dtype) }
}

// ---------------------------------------------------------------------------------------------
// imhost plugin new

fn valid_plugin_name(name: &str) -> bool {
    (2..=48).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
}

fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(template.to_string(), |text, (key, value)| text.replace(&format!("{{{{{key}}}}}"), value))
}

fn new(args: &NewArgs) -> Result<()> {
    let name = args.name.as_str();
    if !valid_plugin_name(name) {
        return Err(Error::invalid_argument(format!(
            "plugin name '{name}': use 2-48 of a-z 0-9 and '-', starting with a letter (e.g. acme-bright)"
        )));
    }
    let id = args.id.clone().unwrap_or_else(|| name.to_string());
    if !imhost_core::registry::manifest::valid_id(&id) {
        return Err(Error::invalid_argument(format!(
            "model id '{id}': use 1-64 of a-z 0-9 . - _, starting with a letter or digit"
        )));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map_err(|e| Error::from(e).in_file(&dir))?.next().is_some() {
        return Err(Error::invalid_argument(format!("{} exists and is not empty: give another --dir", dir.display())));
    }
    let ident = name.replace('-', "_");
    let title: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let library = match args.lang {
        Lang::Rust => format!("target/release/lib{ident}.so"),
        _ => format!("build/lib{ident}.so"),
    };
    let (language, source) = match args.lang {
        Lang::C => ("C", format!("{ident}.c")),
        Lang::Cpp => ("C++", format!("{ident}.cpp")),
        Lang::Rust => ("Rust", "src/lib.rs".to_string()),
    };
    let check_and_test = format!(
        "imhost plugin check {library}\nimhost plugin test {library} --input test/input.nii.gz --expect test/expected"
    );
    let build = match args.lang {
        Lang::Rust => format!("```sh\ncargo build --release\n{check_and_test}\n```"),
        _ => format!(
            "```sh\ncmake -S . -B build -DCMAKE_PREFIX_PATH=/where/imhost/is/installed   # find_package(imhost)\ncmake --build build\nctest --test-dir build --output-on-failure    # runs the two commands below\n{check_and_test}\n```\n\nWithout CMake: `cc -std=c99 -O2 -shared -fPIC -fvisibility=hidden $(pkg-config --cflags imhost-plugin) …`\n(generate `manifest.h` as CMakeLists.txt does)."
        ),
    };
    let sdk_dependency = match &args.sdk {
        Some(path) => {
            let path = path.canonicalize().map_err(|e| Error::from(e).in_file(path))?;
            format!("imhost-plugin-sdk = {{ path = {:?} }}", path.display().to_string())
        }
        None => {
            let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../imhost-plugin-sdk");
            match here.canonicalize() {
                Ok(path) if path.join("Cargo.toml").is_file() => {
                    format!("imhost-plugin-sdk = {{ path = {:?} }}", path.display().to_string())
                }
                _ => format!(
                    "# The SDK from imhost's repository (or `path = \"…/imhost/rust/imhost-plugin-sdk\"`).\nimhost-plugin-sdk = {{ git = \"{}\", tag = \"v{}\" }}",
                    env!("CARGO_PKG_REPOSITORY"),
                    env!("CARGO_PKG_VERSION")
                ),
            }
        }
    };
    let (cmake_language, cmake_target) = match args.lang {
        Lang::Cpp => ("CXX", "imhost::plugin_cpp"),
        _ => ("C", "imhost::plugin"),
    };
    let pairs = [
        ("name", name),
        ("id", id.as_str()),
        ("ident", ident.as_str()),
        ("title", title.as_str()),
        ("language", language),
        ("source", source.as_str()),
        ("library", library.as_str()),
        ("build", build.as_str()),
        ("sdk_dependency", sdk_dependency.as_str()),
        ("cmake_language", cmake_language),
        ("cmake_target", cmake_target),
    ];
    let mut files: Vec<(String, String)> = vec![
        ("manifest.json".into(), fill(include_str!("../templates/plugin/manifest.json"), &pairs)),
        ("README.md".into(), fill(include_str!("../templates/plugin/README.md"), &pairs)),
    ];
    match args.lang {
        Lang::C | Lang::Cpp => {
            let code = if args.lang == Lang::C {
                include_str!("../templates/plugin/plugin.c")
            } else {
                include_str!("../templates/plugin/plugin.cpp")
            };
            files.push((source.clone(), fill(code, &pairs)));
            files.push(("CMakeLists.txt".into(), fill(include_str!("../templates/plugin/CMakeLists.txt"), &pairs)));
            files.push((".gitignore".into(), "/build/\n".into()));
        }
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(include_str!("../templates/plugin/Cargo.toml"), &pairs)));
            files.push(("src/lib.rs".into(), fill(include_str!("../templates/plugin/lib.rs"), &pairs)));
            files.push((".gitignore".into(), "/target/\n".into()));
        }
    }
    // The manifest must be one this imhost accepts, without warnings.
    let manifest = Manifest::from_json(&files[0].1)?;
    debug_assert!(manifest.warnings.is_empty(), "{:?}", manifest.warnings);
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::from(e).in_file(parent))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::from(e).in_file(&path))?;
    }
    write_test_data(&dir.join("test"))?;
    println!("Wrote a {language} plugin skeleton in {}/ (research use only). Next:", dir.display());
    println!("  cd {}", dir.display());
    for line in build.lines().filter(|l| !l.starts_with("```") && !l.is_empty()).take(5) {
        println!("  {line}");
    }
    Ok(())
}

/// `test/input.nii.gz` (the sample CT as int16) and `test/expected/` (its truth for the
/// skeleton's model: the sphere's voxels at or above 300 HU, and their volume).
fn write_test_data(dir: &Path) -> Result<()> {
    let ct = AnyVolume::F32(sample(SAMPLE_SHAPE, SAMPLE_SPACING, 1, [AIR, HEAD, SPHERE], 0.0)?);
    let expected = dir.join("expected");
    std::fs::create_dir_all(&expected).map_err(|e| Error::from(e).in_file(&expected))?;
    write_volume(&convert(&ct.view(), DType::I16)?, &dir.join("input.nii.gz"))?;
    let [ni, nj, nk] = SAMPLE_SHAPE;
    let mask = Array4::from_shape_fn((ni, nj, nk, 1).f(), |(i, j, k, _)| {
        u8::from(class_of([i, j, k], SAMPLE_SHAPE, SAMPLE_SPACING) == 2)
    });
    let voxels = mask.iter().filter(|&&v| v == 1).count();
    let volume_ml = voxels as f64 * SAMPLE_SPACING.iter().product::<f64>() / 1000.0;
    write_volume(&AnyVolume::U8(Volume::from_parts(mask, *ct.geometry(), None)?), &expected.join("mask.nii.gz"))?;
    let result = serde_json::json!({
        "schema": "imhost-run-result/1",
        "research_use_only": true,
        "about": format!("The truth of the generated input for the skeleton's model at lower = 300 HU: the {voxels} voxels of the 400 HU sphere (written by `imhost plugin new`; replace with your model's reviewed outputs)."),
        "scores": {"volume_ml": volume_ml},
    });
    imhost_core::io::output::write_json(&expected.join("result.json"), &result)
}

// ---------------------------------------------------------------------------------------------
// imhost plugin check / test

fn registry_of(path: &Path, isolate: bool) -> Registry {
    open(&RegistryOptions {
        paths: vec![path.to_path_buf()],
        standard_locations: false,
        isolate_all: isolate,
        device: None,
        registration: Some(Arc::new(crate::motion::ItkRigid)),
        #[cfg(feature = "learned")]
        in_process: Some(imhost_models::packages::open_in_process),
        #[cfg(not(feature = "learned"))]
        in_process: None,
    })
}

/// The models of `registry` that came from the plugin (not the built-ins).
fn plugin_models(registry: &Registry) -> Vec<Manifest> {
    registry
        .models()
        .map(|m| m.manifest().clone())
        .filter(|m| m.source.as_ref().is_some_and(|s| s.kind != "builtin"))
        .collect()
}

/// What a run gave, in one line.
fn describe(manifest: &Manifest, output: &imhost_core::registry::ModelOutput) -> String {
    let mut parts = Vec::new();
    for (name, volume) in &output.volumes {
        let kind = manifest.output(name).map(|o| o.kind);
        let text = imhost_core::with_volume!(volume, v => {
            let values: Vec<f64> = v.data().iter().map(|x| imhost_core::Voxel::to_f64(*x)).collect();
            if kind == Some(OutputKind::Labelmap) {
                let labelled = values.iter().filter(|&&x| x != 0.0).count();
                format!("{name}: {labelled} labelled voxels")
            } else {
                let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
                let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                let bad = values.len() - finite.len();
                format!("{name}: {lo:.4}..{hi:.4}{}", if bad > 0 { format!(", {bad} not finite") } else { String::new() })
            }
        });
        parts.push(text);
    }
    for (name, value) in &output.scores {
        parts.push(format!("{name} = {value:.6}"));
    }
    parts.join("; ")
}

/// Whether two runs gave the same outputs (volumes bit for bit, scores exactly).
fn same_outputs(a: &imhost_core::registry::ModelOutput, b: &imhost_core::registry::ModelOutput) -> Option<String> {
    for (name, volume) in &a.volumes {
        let Some(other) = b.volume(name) else { return Some(format!("'{name}' is missing")) };
        let equal = volume.dtype() == other.dtype()
            && volume.shape() == other.shape()
            && imhost_core::with_volume!(volume, v => v.data().iter().map(|x| imhost_core::Voxel::to_f64(*x)).collect::<Vec<_>>())
                == imhost_core::with_volume!(other, v => v.data().iter().map(|x| imhost_core::Voxel::to_f64(*x)).collect::<Vec<_>>());
        if !equal {
            return Some(format!("'{name}' differs"));
        }
    }
    for (name, value) in &a.scores {
        if b.score(name) != Some(*value) {
            return Some(format!("score '{name}' is {value} in one and {:?} in the other", b.score(name)));
        }
    }
    None
}

struct Tally {
    failed: usize,
    passed: usize,
    warnings: usize,
}

impl Tally {
    fn ok(&mut self, what: &str) {
        self.passed += 1;
        println!("  ok    {what}");
    }
    fn fail(&mut self, what: &str) {
        self.failed += 1;
        println!("  FAIL  {what}");
    }
    fn warn(&mut self, what: &str) {
        self.warnings += 1;
        println!("  warn  {what}");
    }
}

fn check(args: &CheckArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(Error::invalid_argument(format!("--timeout {}: give seconds above 0", args.timeout)));
    }
    if !args.path.exists() {
        return Err(Error::invalid_argument(format!("{}: no such file or folder", args.path.display())));
    }
    println!("imhost plugin check {} (research use only)", args.path.display());
    let mut tally = Tally { failed: 0, passed: 0, warnings: 0 };
    // Isolated first: a plugin that crashes on the generated input is reported, not fatal.
    let isolated = registry_of(&args.path, true);
    for problem in isolated.problems() {
        tally.fail(&format!("load: {}", problem.message));
    }
    let manifests = plugin_models(&isolated);
    if manifests.is_empty() {
        if tally.failed == 0 {
            tally.fail("load: the plugin declares no models");
        }
        return Err(Error::invalid_argument(format!(
            "plugin check: {} cannot be loaded (see above)",
            args.path.display()
        )));
    }
    let source = manifests[0].source.clone();
    let native = source.as_ref().is_some_and(|s| s.kind == "plugin");
    tally.ok(&format!(
        "load: trust rules, entry symbol, ABI major {} and {} manifest(s) accepted{}",
        imhost_plugin_abi_major(),
        manifests.len(),
        source.and_then(|s| s.plugin).map(|p| format!(" (plugin {p})")).unwrap_or_default()
    ));
    let in_process = if native { Some(registry_of(&args.path, false)) } else { None };
    let limit = Some(Duration::from_secs_f64(args.timeout));
    for manifest in &manifests {
        println!("model {} {} — {}", manifest.id, manifest.version, manifest.name);
        if manifest.warnings.is_empty() {
            tally.ok("manifest: valid imhost-manifest/1, no unknown keys");
        } else {
            for w in &manifest.warnings {
                tally.warn(&format!("manifest: {w}"));
            }
        }
        let inputs: Vec<AnyVolume> = match manifest.inputs.iter().map(generated_input).collect::<Result<_>>() {
            Ok(v) => v,
            Err(e) => {
                tally.fail(&format!("generating an input: {e}"));
                continue;
            }
        };
        let views: Vec<AnyVolumeView<'_>> = inputs.iter().map(AnyVolume::view).collect();
        let kinds: Vec<String> = inputs
            .iter()
            .zip(&manifest.inputs)
            .map(|(v, s)| format!("{} {} {:?} {}", s.name, s.modality, v.shape(), v.dtype()))
            .collect();
        let options = serde_json::Map::new();
        let mut runs = Vec::new();
        let modes: Vec<(&str, &Registry)> = match &in_process {
            Some(r) => vec![("isolated", &isolated), ("in process", r)],
            None => vec![("run", &isolated)],
        };
        for (mode, registry) in modes {
            let control = RunControl::none().with_time_limit(limit);
            let started = Instant::now();
            match registry.run(&manifest.id, &views, &options, &control) {
                Ok(output) => {
                    tally.ok(&format!(
                        "{mode} on {} with the default options, {:.2} s: {}",
                        kinds.join(", "),
                        started.elapsed().as_secs_f64(),
                        describe(manifest, &output)
                    ));
                    runs.push(output);
                }
                Err(e) => {
                    tally.fail(&format!("{mode} on {}: {e}", kinds.join(", ")));
                    if mode == "isolated" {
                        break; // what crashed its worker would take this process with it
                    }
                }
            }
        }
        if let [a, b] = runs.as_slice() {
            match same_outputs(a, b) {
                None => tally.ok("isolated and in process give the same outputs"),
                Some(d) => tally.fail(&format!(
                    "isolated and in process differ: {d} (memory read uninitialised or out of bounds?)"
                )),
            }
        }
    }
    println!(
        "{} passed, {} failed, {} warning(s): {}",
        tally.passed,
        tally.failed,
        tally.warnings,
        if tally.failed == 0 { "the plugin is ready to ship" } else { "fix the failures above" }
    );
    if tally.failed > 0 {
        return Err(Error::invalid_argument(format!("plugin check: {} check(s) failed", tally.failed)));
    }
    Ok(())
}

fn imhost_plugin_abi_major() -> u32 {
    imhost_plugin_abi::IMHP_ABI_MAJOR
}

fn test(args: &TestArgs) -> Result<()> {
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err(Error::invalid_argument(format!("--tolerance {}: give a number ≥ 0", args.tolerance)));
    }
    let registry = registry_of(&args.path, args.isolate);
    let problems: Vec<&str> = registry.problems().iter().map(|p| p.message.as_str()).collect();
    if !problems.is_empty() {
        return Err(Error::invalid_argument(format!("plugin test: not loaded: {}", problems.join("; "))));
    }
    let manifests = plugin_models(&registry);
    let manifest = match (&args.model, manifests.as_slice()) {
        (Some(id), _) => manifests.iter().find(|m| &m.id == id).ok_or_else(|| {
            let ids: Vec<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
            Error::invalid_argument(format!(
                "plugin test: no model '{id}' in {} (it has: {})",
                args.path.display(),
                ids.join(", ")
            ))
        })?,
        (None, [only]) => only,
        (None, []) => {
            return Err(Error::invalid_argument(format!("plugin test: {} has no models", args.path.display())));
        }
        (None, many) => {
            let ids: Vec<&str> = many.iter().map(|m| m.id.as_str()).collect();
            return Err(Error::invalid_argument(format!("plugin test: give --model (one of {})", ids.join(", "))));
        }
    };
    let options = manifest.parse_options(&args.options)?;
    let expected_json = args.expect.join("result.json");
    let expected: Value = match std::fs::read_to_string(&expected_json) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Error::format(format!("{}: not JSON: {e}", expected_json.display())))?,
        Err(_) if args.expect.is_dir() => Value::Null,
        Err(e) => return Err(Error::from(e).in_file(&expected_json)),
    };
    let mut volumes = Vec::new();
    for path in &args.inputs {
        volumes.push(crate::dicom_out::read_input(path).map_err(|e| e.in_file(path))?.0);
    }
    let views: Vec<AnyVolumeView<'_>> = volumes.iter().map(AnyVolume::view).collect();
    let output = registry.run(&manifest.id, &views, &options, &RunControl::none())?;
    println!(
        "imhost plugin test: {} {} on {} input(s) (research use only)",
        manifest.id,
        manifest.version,
        views.len()
    );
    let mut tally = Tally { failed: 0, passed: 0, warnings: 0 };
    let rel = args.tolerance;
    let mut compared = 0usize;
    for (name, want) in expected["scores"].as_object().into_iter().flatten() {
        compared += 1;
        let Some(want) = want.as_f64() else {
            tally.fail(&format!("score {name}: the expected value {want} is not a number"));
            continue;
        };
        match output.score(name) {
            Some(got) if (got - want).abs() <= rel * want.abs().max(1e-12) => {
                tally.ok(&format!("score {name} = {got} (expected {want})"))
            }
            Some(got) => tally.fail(&format!(
                "score {name} = {got}, expected {want} (off by {:.3e}, relative tolerance {rel:e})",
                (got - want).abs() / want.abs().max(1e-12)
            )),
            None => tally.fail(&format!("score {name}: the model did not produce it")),
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.expect)
        .map_err(|e| Error::from(e).in_file(&args.expect))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz") || p.extension().is_some_and(|e| e == "nii"))
        .collect();
    files.sort();
    for file in files {
        let stem = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = stem.trim_end_matches(".gz").trim_end_matches(".nii");
        compared += 1;
        let want = imhost_core::io::read_volume(&file)?;
        let Some(got) = output.volume(name) else {
            tally.fail(&format!("{name}: the model did not produce it"));
            continue;
        };
        if got.shape() != want.shape() {
            tally.fail(&format!("{name}: shape {:?}, expected {:?}", got.shape(), want.shape()));
            continue;
        }
        let values = |v: &AnyVolume| -> Vec<f64> {
            imhost_core::with_volume!(v, x => x.data().iter().map(|p| imhost_core::Voxel::to_f64(*p)).collect())
        };
        let (g, w) = (values(got), values(&want));
        if manifest.output(name).is_some_and(|o| o.kind == OutputKind::Labelmap) {
            let differ = g.iter().zip(&w).filter(|(a, b)| a != b).count();
            let (both, sum) = g.iter().zip(&w).fold((0usize, 0usize), |(n, s), (a, b)| {
                (n + usize::from(*a != 0.0 && a == b), s + usize::from(*a != 0.0) + usize::from(*b != 0.0))
            });
            let dice = if sum == 0 { 1.0 } else { 2.0 * both as f64 / sum as f64 };
            if differ == 0 {
                tally.ok(&format!(
                    "{name}: every voxel as expected ({} labelled)",
                    w.iter().filter(|&&x| x != 0.0).count()
                ))
            } else {
                tally.fail(&format!("{name}: {differ} voxel(s) differ (Dice {dice:.4})"))
            }
        } else {
            let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
            let worst = g.iter().zip(&w).fold(
                0.0f64,
                |m, (a, b)| {
                    if a.is_nan() && b.is_nan() { m } else { m.max((a - b).abs()) }
                },
            );
            if worst <= rel * scale {
                tally.ok(&format!("{name}: within {rel:e} of the expected map (largest difference {worst:.3e})"))
            } else {
                tally.fail(&format!("{name}: differs by up to {worst:.3e} (tolerance {:.3e})", rel * scale))
            }
        }
    }
    if compared == 0 {
        return Err(Error::invalid_argument(format!(
            "plugin test: {} holds nothing to compare (result.json with \"scores\", NAME.nii.gz)",
            args.expect.display()
        )));
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        return Err(Error::invalid_argument(format!("plugin test: {} of {compared} check(s) failed", tally.failed)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample's sphere has the volume of a 5 mm sphere (within the voxelisation error) and
    /// lies inside the head.
    #[test]
    fn the_sample_sphere_is_a_5_mm_sphere() {
        let [ni, nj, nk] = SAMPLE_SHAPE;
        let mut sphere = 0usize;
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    sphere += usize::from(class_of([i, j, k], SAMPLE_SHAPE, SAMPLE_SPACING) == 2);
                }
            }
        }
        let ml = sphere as f64 * SAMPLE_SPACING.iter().product::<f64>() / 1000.0;
        let truth = 4.0 / 3.0 * std::f64::consts::PI * 125.0 / 1000.0;
        assert!((ml / truth - 1.0).abs() < 0.1, "{ml} ml vs {truth} ml");
        assert_eq!(class_of([0, 0, 0], SAMPLE_SHAPE, SAMPLE_SPACING), 0);
    }

    #[test]
    fn plugin_names_are_checked_and_templates_filled() {
        for good in ["acme-bright", "ab", "x9-y"] {
            assert!(valid_plugin_name(good), "{good}");
        }
        for bad in ["Acme", "-x", "x-", "a.b", "a_b", "9x", "a"] {
            assert!(!valid_plugin_name(bad), "{bad}");
        }
        assert_eq!(fill("{{a}}-{{b}}{{a}}", &[("a", "1"), ("b", "2")]), "1-21");
    }
}
