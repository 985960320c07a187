//! # imhost-core
//!
//! The pure-Rust core of imhost: typed 3-D/4-D volumes with patient geometry, NIfTI I/O, run
//! control (progress and cancellation), and the operations built on them. It has **no `unsafe`
//! code and no LibTorch**; the C ABI (`imhost` crate) and the model runtime build on it, never
//! the other way round.
//!
//! Conventions, documented where they live:
//! - patient coordinates are LPS millimetres ([`geometry`]);
//! - pixels are indexed `[i, j, k, t]`, `i` fastest in memory for volumes imhost creates
//!   ([`volume`]);
//! - every fallible function returns [`Error`], whose [`ErrorKind`] maps onto the C status codes.

#![forbid(unsafe_code)]

pub mod cac;
pub mod control;
pub mod dtype;
pub mod error;
pub mod geometry;
pub mod io;
pub mod memory;
pub mod ops;
pub mod perfusion;
pub mod phantom;
pub mod preview;
pub mod registry;
pub mod score;
pub mod seg2d;
pub mod volume;

pub use control::{CancelToken, RunControl};
pub use dtype::{DType, Voxel};
pub use error::{Error, ErrorKind, Result};
pub use geometry::Geometry;
pub use volume::{AnyVolume, AnyVolumeView, FrameTimes, TimeSource, Volume, VolumeView};
