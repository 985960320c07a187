//! Test plugin: a model that panics inside `run` and one that returns an error. The SDK must
//! turn the panic into an error status; the host must stay up and keep other models usable.

use imhost_plugin_sdk::{Error, Host, Model, Run, export_plugin};

fn manifest(id: &str) -> String {
    format!(
        r#"{{"format": "imhost-manifest/1", "id": "{id}", "name": "{id}", "version": "0.0.1",
            "inputs": [{{"name": "image", "dims": 3}}],
            "outputs": [{{"name": "out", "kind": "map"}}]}}"#
    )
}

/// Panics in run.
pub struct Panics;
impl Model for Panics {
    fn manifest() -> String {
        manifest("test.rust-panic")
    }
    fn create(_: &Host<'_>) -> Result<Self, Error> {
        Ok(Panics)
    }
    fn run(&mut self, _: &Run<'_>) -> Result<(), Error> {
        let v: Vec<u8> = Vec::new();
        panic!("index out of range on purpose: {}", v.len());
    }
}

/// Returns an error from run.
pub struct Fails;
impl Model for Fails {
    fn manifest() -> String {
        manifest("test.rust-error")
    }
    fn create(_: &Host<'_>) -> Result<Self, Error> {
        Ok(Fails)
    }
    fn run(&mut self, _: &Run<'_>) -> Result<(), Error> {
        Err(Error::invalid_input("this model refuses every input (test)"))
    }
}

export_plugin!(name: "test-rust-misbehaving", version: "0.0.1", models: [Panics, Fails]);
