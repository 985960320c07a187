//! Temporal maximum intensity projection: `F_l(x) = max_t I(x, t)`.
//!
//! Wang et al., "Automatic ischemic stroke lesion segmentation from computed tomography perfusion
//! images by image synthesis and attention-based deep neural networks", §3.1 (the low-level
//! feature `F_l` of the pseudo-DWI generator). Also the usual way to look at a CTP study's
//! vessels at a glance.
//!
//! NaN handling (float volumes): a NaN in one frame does not hide the other frames; a voxel is
//! NaN only if it is NaN in every frame.

use ndarray::{Array3, ShapeBuilder, Zip};

use crate::control::RunControl;
use crate::dtype::Voxel;
use crate::error::{Error, Result};
use crate::volume::{Volume, VolumeView};

/// Voxels per block in the contiguous path: the running maximum of one block (16 K voxels,
/// at most 128 KiB) stays in the L2 cache while every frame's block streams past it.
const BLOCK: usize = 16 * 1024;

/// The stage name reported to progress callbacks.
pub const STAGE: &str = "temporal MIP";

/// Temporal MIP of a 4-D view; the result is 3-D with the input's spatial geometry.
///
/// Progress is reported about a hundred times; cancellation is honoured at each report.
pub fn temporal_mip<T: Voxel>(input: &VolumeView<'_, T>, control: &RunControl<'_>) -> Result<Volume<T>> {
    if !input.is_4d() {
        return Err(Error::shape("the temporal MIP needs a 4-D volume (with a time axis); this one is 3-D"));
    }
    let [ni, nj, nk, nt] = input.shape();
    crate::memory::check(crate::memory::bytes_of(&[ni, nj, nk], size_of::<T>()), "the temporal MIP's output")?;
    control.report(STAGE, 0.0)?;
    let mut out = Array3::from_elem((ni, nj, nk).f(), T::default());
    let data = input.data();

    if let Some(all) = data.t().to_slice() {
        // NIfTI memory order: frame t is the contiguous run all[t*n .. (t+1)*n].
        let n = ni * nj * nk;
        let out_slice = out.as_slice_memory_order_mut().expect("freshly allocated arrays are contiguous");
        let blocks = n.div_ceil(BLOCK);
        let report_every = blocks.div_ceil(100).max(1);
        for (b, out_block) in out_slice.chunks_mut(BLOCK).enumerate() {
            if b % report_every == 0 {
                control.report(STAGE, b as f64 / blocks as f64)?;
            }
            let start = b * BLOCK;
            out_block.copy_from_slice(&all[start..start + out_block.len()]);
            for t in 1..nt {
                let frame = &all[t * n + start..t * n + start + out_block.len()];
                for (o, &v) in out_block.iter_mut().zip(frame) {
                    *o = o.max_ignoring_nan(v);
                }
            }
        }
    } else {
        // Any other strides (a caller's buffer): frame by frame, in the caller's memory order.
        out.assign(&input.frame(0));
        for t in 1..nt {
            control.report(STAGE, t as f64 / nt as f64)?;
            Zip::from(&mut out).and(&input.frame(t)).for_each(|o, &v| *o = o.max_ignoring_nan(v));
        }
    }
    control.report(STAGE, 1.0)?;
    Volume::new_3d(out, *input.geometry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CancelToken;
    use crate::geometry::Geometry;
    use crate::volume::{FrameTimes, TimeSource};
    use ndarray::Array4;
    use std::sync::Mutex;

    fn volume(data: Array4<f32>) -> Volume<f32> {
        let nt = data.dim().3;
        let g = Geometry::axis_aligned([0.5, 0.5, 2.0], [1.0, 2.0, 3.0]).unwrap();
        Volume::new_4d(data, g, FrameTimes::uniform(nt, 0.0, 1.0, TimeSource::Caller).unwrap()).unwrap()
    }

    #[test]
    fn hand_computed_values_and_geometry() {
        // Two voxels, three frames: maxima 5 and -1 (all negative), by hand.
        let data = Array4::from_shape_vec((2, 1, 1, 3).f(), vec![1.0, -3.0, 5.0, -1.0, 2.0, -2.0]).unwrap();
        let v = volume(data);
        let mip = temporal_mip(&v.view(), &RunControl::none()).unwrap();
        assert_eq!(mip.data().as_slice_memory_order().unwrap(), &[5.0, -1.0]);
        assert_eq!(mip.geometry(), v.geometry());
        assert!(!mip.is_4d());
    }

    #[test]
    fn nan_in_one_frame_does_not_hide_the_others() {
        let data = Array4::from_shape_vec((2, 1, 1, 2).f(), vec![f32::NAN, f32::NAN, 4.0, f32::NAN]).unwrap();
        let mip = temporal_mip(&volume(data).view(), &RunControl::none()).unwrap();
        assert_eq!(mip.data()[[0, 0, 0, 0]], 4.0);
        assert!(mip.data()[[1, 0, 0, 0]].is_nan());
    }

    #[test]
    fn strided_and_contiguous_paths_agree_with_a_naive_maximum() {
        // 40000 voxels spans several blocks; values from a simple LCG.
        let (ni, nj, nk, nt) = (50, 40, 20, 7);
        let mut seed = 12345u64;
        let values: Vec<i16> = (0..ni * nj * nk * nt)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 48) as i16
            })
            .collect();
        let fortran = Array4::from_shape_vec((ni, nj, nk, nt).f(), values).unwrap();
        let g = Geometry::identity();
        let times = FrameTimes::uniform(nt, 0.0, 2.0, TimeSource::Caller).unwrap();
        let contiguous = Volume::new_4d(fortran.clone(), g, times.clone()).unwrap();
        // The same values in C order: a view whose strides the fast path cannot use.
        let mut c_order = Array4::<i16>::zeros((ni, nj, nk, nt));
        c_order.assign(&fortran);
        let view = VolumeView::new(c_order.view(), g, Some((times.as_slice().into(), TimeSource::Caller))).unwrap();

        let fast = temporal_mip(&contiguous.view(), &RunControl::none()).unwrap();
        let slow = temporal_mip(&view, &RunControl::none()).unwrap();
        for i in 0..ni {
            for j in 0..nj {
                for k in 0..nk {
                    let naive = (0..nt).map(|t| fortran[[i, j, k, t]]).max().unwrap();
                    assert_eq!(fast.data()[[i, j, k, 0]], naive);
                    assert_eq!(slow.data()[[i, j, k, 0]], naive);
                }
            }
        }
    }

    #[test]
    fn three_d_input_is_an_error() {
        let v = Volume::new_3d(Array3::<u8>::zeros((2, 2, 2)), Geometry::identity()).unwrap();
        assert_eq!(temporal_mip(&v.view(), &RunControl::none()).unwrap_err().kind(), crate::ErrorKind::Shape);
    }

    #[test]
    fn progress_is_monotone_and_cancellation_stops_midway() {
        let data = Array4::<f32>::zeros((200, 200, 4, 5).f());
        let v = volume(data);
        let seen = Mutex::new(Vec::new());
        let record = |f: f64, _: &str| {
            seen.lock().unwrap().push(f);
            true
        };
        temporal_mip(&v.view(), &RunControl::new(Some(&record), None)).unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert_eq!(seen.first(), Some(&0.0));
        assert_eq!(seen.last(), Some(&1.0));

        let token = CancelToken::new();
        let calls = Mutex::new(0);
        let cancel_at_third = |_: f64, _: &str| {
            let mut c = calls.lock().unwrap();
            *c += 1;
            if *c == 3 {
                token.cancel();
            }
            true
        };
        let err = temporal_mip(&v.view(), &RunControl::new(Some(&cancel_at_third), Some(&token))).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Cancelled);
        assert_eq!(*calls.lock().unwrap(), 3, "stopped at the first check after the request");
    }
}
