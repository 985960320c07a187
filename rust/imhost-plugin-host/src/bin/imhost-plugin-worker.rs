//! `imhost-plugin-worker PLUGIN`: runs one plugin's models on behalf of a host that isolates
//! it (see `imhost_plugin_host::isolated`). Not meant to be started by hand.

fn main() {
    std::process::exit(imhost_plugin_host::worker::main());
}
