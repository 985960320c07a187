//! imhost's model runtime on LibTorch (`tch` 0.24 = PyTorch 2.11): device and precision choice
//! ([`runtime`]), model folders with a manifest and verified weights ([`manifest`],
//! [`package`]), the architectures (one file per paper: [`unet`]) and their training
//! ([`train`]).
//!
//! The core crate never sees LibTorch: models implement `imhost_core`'s traits
//! (`PerfusionMapModel`), and every LibTorch error becomes an `imhost_core::Error` of kind
//! `Model` through the fallible `f_*` ops — nothing on a library path panics on input.

pub mod cac;
pub mod cac_unet;
pub mod multiresunet;
pub mod nuclei;
pub mod package;
pub mod packages;
pub mod runtime;
pub mod slnet;
pub mod stroke;
pub mod stroke_loss;
pub mod torchscript;
pub mod train;
pub mod unet;

/// Model folders' manifests (`imhost-model/1`), read without LibTorch by `imhost-registry`.
pub use imhost_registry::network as manifest;
pub use manifest::Manifest;
pub use package::{LoadOptions, PerfusionModel};
pub use runtime::Precision;
