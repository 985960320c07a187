// Shared by the build scripts of imhost-models and imhost-cli (`include!`d).

/// Emit `-rpath` link arguments for LibTorch: the folder torch-sys built against (from
/// `DEP_TCH_LIBTORCH_LIB` or `DEP_IMHOST_MODELS_RPATH_LIBTORCH_LIB`), then the GPU machines'
/// PyTorch install, so one binary runs on both. `LD_LIBRARY_PATH` still wins.
fn libtorch_rpath() -> Vec<String> {
    const GPU_MACHINE_TORCH_LIB: &str = "/opt/torch/.venv/lib/python3.12/site-packages/torch/lib";
    let mut dirs = Vec::new();
    for var in ["DEP_TCH_LIBTORCH_LIB", "DEP_IMHOST_MODELS_RPATH_LIBTORCH_LIB"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(dir) = std::env::var(var) {
            if !dir.is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.push(GPU_MACHINE_TORCH_LIB.to_string());
    for dir in &dirs {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    dirs
}
