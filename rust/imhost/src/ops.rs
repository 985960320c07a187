//! Operations: run options (progress, cancellation) and the operations themselves.

use std::ffi::{CString, c_char, c_void};
use std::time::Instant;

use imhost_core::{AnyVolume, RunControl, with_view};

use crate::cancel::imh_cancel_token;
use crate::context::{context_arg, imh_context};
use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status};
use crate::view::{imh_view, view_from_c};
use crate::volume::{hand_out, imh_volume};

/// Receives progress: `fraction` of the whole operation done (0 to 1, non-decreasing) and the
/// current stage's name (valid only during the call). Return true to continue, false to cancel
/// (the operation then returns `IMH_STATUS_CANCELLED`).
///
/// Called on the thread that made the imhost call. Must return normally.
#[allow(non_camel_case_types)]
pub type imh_progress_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, fraction: f64, stage: *const c_char) -> bool>;

/// Options common to every long-running operation.
///
/// Size-prefixed so it can grow: set `struct_size = sizeof(imh_run_options)` and zero the rest,
/// e.g. `imh_run_options o = {sizeof o};`. Fields beyond a caller's `struct_size` take their
/// defaults, so code compiled against an older header keeps working. Passing NULL instead of
/// a struct means all defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct imh_run_options {
    /// `sizeof(imh_run_options)` as the caller compiled it.
    pub struct_size: u32,
    /// Progress callback, or NULL.
    pub progress: imh_progress_fn,
    /// Passed back to `progress` unchanged.
    pub progress_user_data: *mut c_void,
    /// Cancellation flag to watch, or NULL.
    pub cancel: *const imh_cancel_token,
    /// Time limit of the run in seconds, or 0 for the model's own (its manifest's
    /// `limits.timeout_s`, else one hour). A model run in an isolated worker that exceeds it is
    /// stopped and the call returns `IMH_STATUS_TIMED_OUT`. Negative, NaN or infinite values are
    /// refused with `IMH_STATUS_INVALID_ARGUMENT`.
    pub timeout_s: f64,
}

impl Default for imh_run_options {
    fn default() -> Self {
        imh_run_options {
            struct_size: size_of::<imh_run_options>() as u32,
            progress: None,
            progress_user_data: std::ptr::null_mut(),
            cancel: std::ptr::null(),
            timeout_s: 0.0,
        }
    }
}

impl imh_run_options {
    /// The run's time limit (`None`: the model's own).
    pub(crate) fn time_limit(&self) -> Option<std::time::Duration> {
        (self.timeout_s > 0.0).then(|| std::time::Duration::from_secs_f64(self.timeout_s))
    }
}

/// Read a size-prefixed options struct: the caller's prefix (its first `struct_size` bytes) over
/// `defaults`. A declared size below `minimum` bytes is an error naming the struct.
///
/// # Safety
/// `ptr` is NULL or points to at least `struct_size` readable bytes starting with a `u32`
/// struct_size, as the header documents; every field of `T` is valid for any bit pattern the C
/// type allows (integers, floats, nullable pointers, nullable function pointers).
pub(crate) unsafe fn read_size_prefixed<T: Copy>(
    ptr: *const T,
    defaults: T,
    minimum: usize,
    name: &str,
) -> FfiResult<T> {
    let mut options = defaults;
    if ptr.is_null() {
        return Ok(options);
    }
    // SAFETY: a non-NULL options pointer starts with its u32 size (header contract).
    let declared = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    if declared < minimum {
        return Err(FfiError::new(
            imh_status::InvalidArgument,
            format!("{name}.struct_size is {declared}; set it to sizeof({name})"),
        ));
    }
    let n = declared.min(size_of::<T>());
    // SAFETY: the caller's struct has at least `declared` >= n readable bytes; ours is n bytes or
    // more; every field is valid for any bit pattern (contract above); no overlap.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&raw mut options).cast::<u8>(), n) };
    Ok(options)
}

/// Read `imh_run_options` (see [`read_size_prefixed`]).
///
/// # Safety
/// As for [`read_size_prefixed`].
pub(crate) unsafe fn read_run_options(ptr: *const imh_run_options) -> FfiResult<imh_run_options> {
    let minimum = std::mem::offset_of!(imh_run_options, progress);
    // SAFETY: forwarded contract; imh_run_options holds only integers and nullable pointers.
    let mut options = unsafe { read_size_prefixed(ptr, imh_run_options::default(), minimum, "imh_run_options") }?;
    options.struct_size = size_of::<imh_run_options>() as u32;
    if !(options.timeout_s.is_finite() && options.timeout_s >= 0.0 && options.timeout_s <= 1e9) {
        return Err(FfiError::new(
            imh_status::InvalidArgument,
            format!("imh_run_options.timeout_s is {}; give seconds (0 for the model's own limit)", options.timeout_s),
        ));
    }
    Ok(options)
}

/// The caller's progress callback and user data, made shareable for the core's `Sync` bound.
struct ProgressTarget {
    callback: unsafe extern "C" fn(*mut c_void, f64, *const c_char) -> bool,
    user_data: *mut c_void,
}
// SAFETY: the core calls progress only on the thread that made the imhost call (no operation
// spawns threads that report), so the caller's pointers are only used where the caller used them.
unsafe impl Sync for ProgressTarget {}

impl ProgressTarget {
    fn report(&self, fraction: f64, stage: &str) -> bool {
        let stage = CString::new(stage.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller supplied this callback for exactly this call, and the string lives
        // across the call.
        unsafe { (self.callback)(self.user_data, fraction, stage.as_ptr()) }
    }
}

/// Run an operation on the calling thread with the options' progress and cancellation wired into
/// a `RunControl`, under the context's memory limit (for single-threaded operations).
pub(crate) fn with_control<R>(
    context: &imh_context,
    options: &imh_run_options,
    f: impl FnOnce(&RunControl<'_>) -> R,
) -> FfiResult<R> {
    // SAFETY: a non-NULL cancel token points to a live imh_cancel_token for the call (header).
    let cancel = unsafe { options.cancel.as_ref() }.map(|t| &t.token);
    let target = options.progress.map(|callback| ProgressTarget { callback, user_data: options.progress_user_data });
    let report = |fraction: f64, stage: &str| target.as_ref().is_none_or(|t| t.report(fraction, stage));
    let control = RunControl::new(Some(&report), cancel).with_time_limit(options.time_limit());
    Ok(imhost_core::memory::with_limit(context.memory_limit(), || f(&control)))
}

/// Temporal maximum intensity projection of a 4-D view: `out(i,j,k) = max_t in(i,j,k,t)` (Wang
/// et al., §3.1). The result is a 3-D volume of the input's pixel type and spatial geometry. For
/// floats, NaN in some frames is ignored. Reports progress about a hundred times and honours
/// cancellation at each report.
///
/// Thread safety: may be called from any thread, concurrently with other calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_mip(
    context: *const imh_context,
    input: *const imh_view,
    options: *const imh_run_options,
    out: *mut *mut imh_volume,
) -> imh_status {
    ffi_boundary!("imh_mip", {
        let context = context_arg(context)?;
        let input = arg_ref!(input, "input");
        let out = arg_out!(out, "out");
        // SAFETY: header contract for the options struct.
        let options = unsafe { read_run_options(options) }?;
        let result = context.scope(|| -> FfiResult<AnyVolume> {
            // SAFETY: the header's imh_view contract holds for the duration of this call.
            let view = unsafe { view_from_c(input) }?;
            let started = Instant::now();
            let mip = with_control(context, &options, |control| {
                with_view!(&view, v => imhost_core::ops::temporal_mip(v, control).map(AnyVolume::from))
            })??;
            tracing::info!(shape = ?view.shape(), dtype = %view.dtype(), ms = started.elapsed().as_secs_f64() * 1e3, "temporal MIP done");
            Ok(mip)
        })?;
        hand_out(result, out);
        Ok(())
    })
}

/// Like [`with_control`] for operations that work on many threads: the operation runs in the
/// context's worker pool while the calling thread relays its progress to the caller's callback
/// and hands over the log records of the other threads (about every 20 ms and at the end), so
/// both callbacks are only ever called on the thread that made the imhost call. A callback
/// returning false cancels the operation (at its next check; the first report, at 0, comes
/// before any work).
pub(crate) fn with_control_relayed<R: Send>(
    context: &imh_context,
    options: &imh_run_options,
    f: impl FnOnce(&RunControl<'_>) -> R + Send,
) -> FfiResult<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // SAFETY: a non-NULL cancel token points to a live imh_cancel_token for the call (header).
    let cancel = unsafe { options.cancel.as_ref() }.map(|t| &t.token);
    let time_limit = options.time_limit();
    let target = options.progress.map(|callback| ProgressTarget { callback, user_data: options.progress_user_data });
    let fraction = AtomicU64::new(0f64.to_bits());
    let stage = Mutex::new(String::from("starting"));
    let stop = AtomicBool::new(false);
    let report = |f: f64, s: &str| {
        let previous = f64::from_bits(fraction.load(Ordering::Relaxed));
        if f > previous {
            fraction.store(f.to_bits(), Ordering::Relaxed);
            if let Ok(mut g) = stage.lock() {
                g.clear();
                g.push_str(s);
            }
        }
        !stop.load(Ordering::Relaxed)
    };
    let mut last_sent = -1.0f64;
    let relay = |last_sent: &mut f64| {
        let f = f64::from_bits(fraction.load(Ordering::Relaxed));
        if let Some(t) = &target
            && f > *last_sent
        {
            *last_sent = f;
            let s = stage.lock().map(|g| g.clone()).unwrap_or_default();
            if !t.report(f, &s) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    // The caller may cancel before any work starts.
    if let Some(t) = &target
        && !t.report(0.0, "starting")
    {
        return Ok(f(&RunControl::new(Some(&|_: f64, _: &str| false), cancel).with_time_limit(time_limit)));
    }
    let queued = context.queued_dispatch();
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            tracing::dispatcher::with_default(&queued, || {
                context.in_pool(|| {
                    let control = RunControl::new(Some(&report), cancel).with_time_limit(time_limit);
                    f(&control)
                })
            })
        });
        while !worker.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            relay(&mut last_sent);
            context.deliver_queued();
        }
        worker.join()
    });
    relay(&mut last_sent);
    context.deliver_queued();
    outcome.map_err(|_| {
        FfiError::new(imh_status::Internal, "internal error: the operation panicked (a bug; please report it)")
    })
}
