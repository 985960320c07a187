//! Operations on volumes. Each takes its input as a [`VolumeView`](crate::VolumeView) and a
//! [`RunControl`](crate::RunControl) for progress and cancellation.

pub mod mip;

pub use mip::temporal_mip;
