//! `imhost-model-worker`: runs a model package (the perfusion CNN's folder, a TorchScript
//! package) on LibTorch for a host that does not load LibTorch itself (`libimhost.so`), through
//! the protocol of `imhost_plugin_host::isolated`. Not meant to be started by hand.

fn main() {
    std::process::exit(imhost_plugin_host::worker::main_with(Some(imhost_models::packages::open_for_worker)));
}
