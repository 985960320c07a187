//! Typed 3-D and 4-D images with their geometry and frame times.
//!
//! Pixels live in an `ndarray` array indexed `[i, j, k, t]`. A 3-D volume has a time axis of
//! length 1 and no frame times; a 4-D volume has one time in seconds per frame (CT perfusion
//! is often sampled non-uniformly, e.g. every 1 s during the bolus and every 3 s after it).
//! Volumes created by imhost use the NIfTI memory order (`i` fastest, `t` slowest); views may
//! have any non-negative strides.

use std::borrow::Cow;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis, ShapeBuilder};

use crate::dtype::{DType, Voxel};
use crate::error::{Error, Result};
use crate::geometry::Geometry;

/// Where a volume's frame times came from (reported so a user can tell assumed timing apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The image header (NIfTI `pixdim[4]`, `toffset`, `xyzt_units`).
    Header,
    /// A JSON sidecar's `"FrameTimes"`.
    Sidecar,
    /// Given by the caller (C ABI view, generated data).
    Caller,
    /// Not known: frames were assumed 1 s apart. Results that depend on time are suspect.
    Assumed,
}

impl TimeSource {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            TimeSource::Header => "header",
            TimeSource::Sidecar => "sidecar",
            TimeSource::Caller => "caller",
            TimeSource::Assumed => "assumed",
        }
    }

    /// The source called `name` ([`TimeSource::name`]).
    pub fn from_name(name: &str) -> Option<TimeSource> {
        [TimeSource::Header, TimeSource::Sidecar, TimeSource::Caller, TimeSource::Assumed]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// Acquisition time of each frame of a 4-D volume, in seconds from an arbitrary zero.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameTimes {
    times: Vec<f64>,
    source: TimeSource,
}

impl FrameTimes {
    /// Validated frame times: finite and strictly increasing.
    pub fn new(times: Vec<f64>, source: TimeSource) -> Result<Self> {
        validate_frame_times(&times)?;
        Ok(FrameTimes { times, source })
    }

    /// `n` frames `interval` seconds apart starting at `start`.
    pub fn uniform(n: usize, start: f64, interval: f64, source: TimeSource) -> Result<Self> {
        if !interval.is_finite() || interval <= 0.0 {
            return Err(Error::geometry(format!("frame interval {interval} s must be a finite number > 0")));
        }
        FrameTimes::new((0..n).map(|t| start + interval * t as f64).collect(), source)
    }

    /// The times in seconds.
    pub fn as_slice(&self) -> &[f64] {
        &self.times
    }

    /// Where the times came from.
    pub fn source(&self) -> TimeSource {
        self.source
    }

    /// The common interval when the frames are uniformly spaced (within 1 ms), else `None`.
    pub fn uniform_interval(&self) -> Option<f64> {
        uniform_interval(&self.times)
    }
}

/// The common interval of uniformly spaced times (within 1 ms); a single frame has none.
pub fn uniform_interval(times: &[f64]) -> Option<f64> {
    if times.len() < 2 {
        return None;
    }
    let dt = (times[times.len() - 1] - times[0]) / (times.len() - 1) as f64;
    times.windows(2).all(|w| ((w[1] - w[0]) - dt).abs() < 1e-3).then_some(dt)
}

fn validate_frame_times(times: &[f64]) -> Result<()> {
    if times.is_empty() {
        return Err(Error::geometry("a 4-D volume needs at least one frame time"));
    }
    if let Some(t) = times.iter().find(|t| !t.is_finite()) {
        return Err(Error::geometry(format!("frame time {t} is not finite")));
    }
    if let Some(w) = times.windows(2).find(|w| w[1] <= w[0]) {
        return Err(Error::geometry(format!(
            "frame times must increase strictly, but {} s is followed by {} s",
            w[0], w[1]
        )));
    }
    Ok(())
}

/// An owned 3-D or 4-D image of pixel type `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    data: Array4<T>,
    geometry: Geometry,
    frame_times: Option<FrameTimes>,
}

impl<T: Voxel> Volume<T> {
    /// A volume from its parts. `frame_times` is `None` for a 3-D volume (time axis of length 1)
    /// and holds one time per frame for a 4-D one.
    pub fn from_parts(data: Array4<T>, geometry: Geometry, frame_times: Option<FrameTimes>) -> Result<Self> {
        check_parts(data.dim(), &geometry, frame_times.as_ref().map(|f| f.as_slice()))?;
        Ok(Volume { data, geometry, frame_times })
    }

    /// A 3-D volume.
    pub fn new_3d(data: Array3<T>, geometry: Geometry) -> Result<Self> {
        Volume::from_parts(data.insert_axis(Axis(3)), geometry, None)
    }

    /// A 4-D volume.
    pub fn new_4d(data: Array4<T>, geometry: Geometry, frame_times: FrameTimes) -> Result<Self> {
        Volume::from_parts(data, geometry, Some(frame_times))
    }

    /// A volume of `shape` filled with `value`, in NIfTI memory order (`i` fastest).
    pub fn filled(shape: [usize; 4], value: T, geometry: Geometry, frame_times: Option<FrameTimes>) -> Result<Self> {
        let data = Array4::from_elem(shape.f(), value);
        Volume::from_parts(data, geometry, frame_times)
    }

    /// The pixels, indexed `[i, j, k, t]`.
    pub fn data(&self) -> &Array4<T> {
        &self.data
    }

    /// The pixels, mutably. The shape cannot change through this reference.
    pub fn data_mut(&mut self) -> &mut Array4<T> {
        &mut self.data
    }

    /// The pixels, by value.
    pub fn into_data(self) -> Array4<T> {
        self.data
    }

    /// Spatial geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Frame times of a 4-D volume; `None` for 3-D.
    pub fn frame_times(&self) -> Option<&FrameTimes> {
        self.frame_times.as_ref()
    }

    /// `[ni, nj, nk, nt]`; `nt` is 1 for a 3-D volume.
    pub fn shape(&self) -> [usize; 4] {
        let (a, b, c, d) = self.data.dim();
        [a, b, c, d]
    }

    /// Whether the volume has a time axis.
    pub fn is_4d(&self) -> bool {
        self.frame_times.is_some()
    }

    /// A borrowed view of the whole volume.
    pub fn view(&self) -> VolumeView<'_, T> {
        VolumeView {
            data: self.data.view(),
            geometry: self.geometry,
            frame_times: self.frame_times.as_ref().map(|f| (Cow::Borrowed(f.as_slice()), f.source)),
        }
    }
}

/// A borrowed 3-D or 4-D image: the form every operation takes its input in, so pixels owned by
/// a caller (a C buffer, a Slicer volume node) are read in place.
#[derive(Debug, Clone)]
pub struct VolumeView<'a, T> {
    data: ArrayView4<'a, T>,
    geometry: Geometry,
    frame_times: Option<(Cow<'a, [f64]>, TimeSource)>,
}

impl<'a, T: Voxel> VolumeView<'a, T> {
    /// A validated view. `frame_times` must be given exactly when the volume is 4-D.
    pub fn new(
        data: ArrayView4<'a, T>,
        geometry: Geometry,
        frame_times: Option<(Cow<'a, [f64]>, TimeSource)>,
    ) -> Result<Self> {
        check_parts(data.dim(), &geometry, frame_times.as_ref().map(|(f, _)| &**f))?;
        Ok(VolumeView { data, geometry, frame_times })
    }

    /// The same view, borrowed for a shorter lifetime (no copy).
    pub fn reborrow(&self) -> VolumeView<'_, T> {
        VolumeView {
            data: self.data.view(),
            geometry: self.geometry,
            frame_times: self.frame_times.as_ref().map(|(f, s)| (Cow::Borrowed(&**f), *s)),
        }
    }

    /// The pixels, indexed `[i, j, k, t]`.
    pub fn data(&self) -> &ArrayView4<'a, T> {
        &self.data
    }

    /// Spatial geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Frame times in seconds of a 4-D view; `None` for 3-D.
    pub fn frame_times(&self) -> Option<&[f64]> {
        self.frame_times.as_ref().map(|(f, _)| &**f)
    }

    /// Where the frame times came from.
    pub fn time_source(&self) -> Option<TimeSource> {
        self.frame_times.as_ref().map(|(_, s)| *s)
    }

    /// `[ni, nj, nk, nt]`.
    pub fn shape(&self) -> [usize; 4] {
        let (a, b, c, d) = self.data.dim();
        [a, b, c, d]
    }

    /// Whether the view has a time axis.
    pub fn is_4d(&self) -> bool {
        self.frame_times.is_some()
    }

    /// Frame `t` as a 3-D view.
    pub fn frame(&self, t: usize) -> ArrayView3<'_, T> {
        self.data.index_axis(Axis(3), t)
    }

    /// An owned copy in NIfTI memory order.
    pub fn to_volume(&self) -> Volume<T> {
        let mut data = Array4::from_elem(self.data.dim().f(), T::default());
        data.assign(&self.data);
        Volume {
            data,
            geometry: self.geometry,
            frame_times: self.frame_times.as_ref().map(|(f, s)| FrameTimes { times: f.to_vec(), source: *s }),
        }
    }
}

fn check_parts(dim: (usize, usize, usize, usize), geometry: &Geometry, frame_times: Option<&[f64]>) -> Result<()> {
    let (ni, nj, nk, nt) = dim;
    if ni == 0 || nj == 0 || nk == 0 || nt == 0 {
        return Err(Error::shape(format!("volume shape {ni}×{nj}×{nk}×{nt} has a zero-length axis")));
    }
    geometry.validate()?;
    match frame_times {
        None if nt != 1 => Err(Error::shape(format!("a volume with {nt} frames needs frame times"))),
        None => Ok(()),
        Some(times) if times.len() != nt => {
            Err(Error::shape(format!("{} frame times given for a volume with {nt} frames", times.len())))
        }
        Some(times) => validate_frame_times(times),
    }
}

/// A volume of any supported pixel type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum AnyVolume {
    U8(Volume<u8>),
    I16(Volume<i16>),
    U16(Volume<u16>),
    I32(Volume<i32>),
    F32(Volume<f32>),
    F64(Volume<f64>),
}

/// A view of any supported pixel type.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum AnyVolumeView<'a> {
    U8(VolumeView<'a, u8>),
    I16(VolumeView<'a, i16>),
    U16(VolumeView<'a, u16>),
    I32(VolumeView<'a, i32>),
    F32(VolumeView<'a, f32>),
    F64(VolumeView<'a, f64>),
}

/// Run an expression on the typed volume (or view) inside an [`AnyVolume`] / [`AnyVolumeView`]:
/// `with_volume!(any, v => v.shape())`.
#[macro_export]
macro_rules! with_volume {
    ($any:expr, $v:ident => $body:expr) => {
        match $any {
            $crate::AnyVolume::U8($v) => $body,
            $crate::AnyVolume::I16($v) => $body,
            $crate::AnyVolume::U16($v) => $body,
            $crate::AnyVolume::I32($v) => $body,
            $crate::AnyVolume::F32($v) => $body,
            $crate::AnyVolume::F64($v) => $body,
        }
    };
}

/// Like [`with_volume!`] for an [`AnyVolumeView`].
#[macro_export]
macro_rules! with_view {
    ($any:expr, $v:ident => $body:expr) => {
        match $any {
            $crate::AnyVolumeView::U8($v) => $body,
            $crate::AnyVolumeView::I16($v) => $body,
            $crate::AnyVolumeView::U16($v) => $body,
            $crate::AnyVolumeView::I32($v) => $body,
            $crate::AnyVolumeView::F32($v) => $body,
            $crate::AnyVolumeView::F64($v) => $body,
        }
    };
}

impl AnyVolume {
    /// The pixel type.
    pub fn dtype(&self) -> DType {
        with_volume!(self, v => dtype_of(v))
    }
    /// `[ni, nj, nk, nt]`.
    pub fn shape(&self) -> [usize; 4] {
        with_volume!(self, v => v.shape())
    }
    /// Spatial geometry.
    pub fn geometry(&self) -> &Geometry {
        with_volume!(self, v => v.geometry())
    }
    /// Frame times of a 4-D volume.
    pub fn frame_times(&self) -> Option<&FrameTimes> {
        with_volume!(self, v => v.frame_times())
    }
    /// Whether the volume has a time axis.
    pub fn is_4d(&self) -> bool {
        with_volume!(self, v => v.is_4d())
    }
    /// A borrowed view.
    pub fn view(&self) -> AnyVolumeView<'_> {
        match self {
            AnyVolume::U8(v) => AnyVolumeView::U8(v.view()),
            AnyVolume::I16(v) => AnyVolumeView::I16(v.view()),
            AnyVolume::U16(v) => AnyVolumeView::U16(v.view()),
            AnyVolume::I32(v) => AnyVolumeView::I32(v.view()),
            AnyVolume::F32(v) => AnyVolumeView::F32(v.view()),
            AnyVolume::F64(v) => AnyVolumeView::F64(v.view()),
        }
    }
}

impl AnyVolumeView<'_> {
    /// The same view, borrowed for a shorter lifetime (no copy).
    pub fn reborrow(&self) -> AnyVolumeView<'_> {
        match self {
            AnyVolumeView::U8(v) => AnyVolumeView::U8(v.reborrow()),
            AnyVolumeView::I16(v) => AnyVolumeView::I16(v.reborrow()),
            AnyVolumeView::U16(v) => AnyVolumeView::U16(v.reborrow()),
            AnyVolumeView::I32(v) => AnyVolumeView::I32(v.reborrow()),
            AnyVolumeView::F32(v) => AnyVolumeView::F32(v.reborrow()),
            AnyVolumeView::F64(v) => AnyVolumeView::F64(v.reborrow()),
        }
    }

    /// The pixel type.
    pub fn dtype(&self) -> DType {
        with_view!(self, v => view_dtype_of(v))
    }
    /// `[ni, nj, nk, nt]`.
    pub fn shape(&self) -> [usize; 4] {
        with_view!(self, v => v.shape())
    }
    /// Spatial geometry.
    pub fn geometry(&self) -> &Geometry {
        with_view!(self, v => v.geometry())
    }
    /// Whether the view has a time axis.
    pub fn is_4d(&self) -> bool {
        with_view!(self, v => v.is_4d())
    }
}

fn dtype_of<T: Voxel>(_: &Volume<T>) -> DType {
    T::DTYPE
}

fn view_dtype_of<T: Voxel>(_: &VolumeView<'_, T>) -> DType {
    T::DTYPE
}

macro_rules! impl_from_volume {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<Volume<$t>> for AnyVolume {
            fn from(v: Volume<$t>) -> Self { AnyVolume::$variant(v) }
        }
        impl<'a> From<VolumeView<'a, $t>> for AnyVolumeView<'a> {
            fn from(v: VolumeView<'a, $t>) -> Self { AnyVolumeView::$variant(v) }
        }
    )*};
}
impl_from_volume!(u8 => U8, i16 => I16, u16 => U16, i32 => I32, f32 => F32, f64 => F64);

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn shapes_and_time_are_checked() {
        let g = Geometry::identity();
        let data = Array4::<i16>::zeros((2, 3, 4, 5).f());
        assert!(Volume::from_parts(data.clone(), g, None).is_err(), "5 frames without times");
        let times = FrameTimes::uniform(4, 0.0, 1.0, TimeSource::Caller).unwrap();
        assert!(Volume::new_4d(data.clone(), g, times).is_err(), "4 times for 5 frames");
        let times = FrameTimes::uniform(5, 0.0, 1.5, TimeSource::Caller).unwrap();
        let v = Volume::new_4d(data, g, times).unwrap();
        assert_eq!(v.shape(), [2, 3, 4, 5]);
        assert!(v.is_4d());
        let zero = Array4::<u8>::zeros((0, 3, 4, 1));
        assert_eq!(Volume::from_parts(zero, g, None).unwrap_err().kind(), crate::ErrorKind::Shape);
    }

    #[test]
    fn frame_times_must_increase() {
        assert!(FrameTimes::new(vec![0.0, 1.0, 1.0], TimeSource::Caller).is_err());
        assert!(FrameTimes::new(vec![0.0, f64::NAN], TimeSource::Caller).is_err());
        assert!(FrameTimes::uniform(3, 0.0, 0.0, TimeSource::Caller).is_err());
        let nonuniform = FrameTimes::new(vec![0.0, 1.0, 2.0, 4.0], TimeSource::Caller).unwrap();
        assert_eq!(nonuniform.uniform_interval(), None);
        assert_eq!(FrameTimes::uniform(4, 2.0, 0.5, TimeSource::Caller).unwrap().uniform_interval(), Some(0.5));
    }

    #[test]
    fn view_round_trips_to_an_owned_fortran_volume() {
        let g = Geometry::axis_aligned([1.0, 2.0, 3.0], [0.0; 3]).unwrap();
        let mut c_order = Array4::<f32>::zeros((2, 3, 4, 1));
        c_order[[1, 2, 3, 0]] = 7.0;
        let view = VolumeView::new(c_order.view(), g, None).unwrap();
        let owned = view.to_volume();
        assert_eq!(owned.data()[[1, 2, 3, 0]], 7.0);
        assert!(owned.data().t().is_standard_layout(), "owned copies use i-fastest order");
        assert_eq!(AnyVolume::from(owned).dtype(), DType::F32);
    }
}
