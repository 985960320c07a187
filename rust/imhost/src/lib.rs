//! # imhost — the C ABI
//!
//! The library C, C++, 3D Slicer and Orthanc link against: `libimhost.so` / `libimhost.a`, with
//! the header `include/imhost.h` generated from this crate by cbindgen. A thin layer over
//! `imhost-core`: it validates arguments, converts between C and Rust types, routes `tracing`
//! events to the caller's log callback and turns errors and panics into `imh_status` values.
//!
//! One Rust module per C type. Every `extern "C"` function's body is a single
//! [`ffi_boundary!`](status) invocation, so no panic crosses the boundary (checked by
//! `tests/exports.rs`). `unsafe` is confined to dereferencing caller pointers, each block with
//! its `// SAFETY:` reason.
//!
//! Error messages are **per thread**: a failing call stores a one-line message that
//! `imh_last_error_message` returns on the same thread.

// Every export has the same safety contract (non-NULL pointers point to live objects of the
// declared type for the duration of the call; views obey the imh_view contract), stated once in
// the header preamble rather than repeated on each function of the generated header.
#![allow(clippy::missing_safety_doc)]

pub mod cancel;
pub mod context;
pub mod curves;
pub mod dicom;
pub mod geometry;
pub mod model;
pub mod ops;
pub mod perfusion;
pub mod registry;
pub mod score;
pub mod status;
pub mod version;
pub mod view;
pub mod volume;

pub use cancel::*;
pub use context::*;
pub use curves::*;
pub use geometry::*;
pub use ops::*;
pub use perfusion::*;
pub use registry::*;
pub use score::*;
pub use status::imh_status;
pub use version::*;
pub use view::*;
pub use volume::*;
