//! `imh_context`: per-caller settings (for now the log callback) passed to every operation.
//!
//! Log records are `tracing` events. While an operation runs, the context's subscriber is the
//! calling thread's default, so every event emitted on that thread — by the ABI layer and by the
//! core — reaches the context's callback, and two contexts used on two threads never see each
//! other's records.

use std::ffi::{CString, c_char, c_void};
use std::fmt::Write as _;
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

use crate::status::{FfiError, FfiResult, arg_out, arg_ref, ffi_boundary, imh_status};

/// Severity of a log record (`IMH_LOG_*`).
#[allow(non_camel_case_types)]
pub type imh_log_level = u32;
/// Errors only.
pub const IMH_LOG_ERROR: imh_log_level = 1;
/// Warnings and errors.
pub const IMH_LOG_WARN: imh_log_level = 2;
/// Progress milestones, timings, and the above.
pub const IMH_LOG_INFO: imh_log_level = 3;
/// Details useful when reporting a problem.
pub const IMH_LOG_DEBUG: imh_log_level = 4;
/// Everything.
pub const IMH_LOG_TRACE: imh_log_level = 5;

/// Receives log records. `target` names the module that logged (e.g. `imhost_core::io`),
/// `message` is one line of UTF-8 including any structured fields as `key=value`. Both strings
/// are valid only during the call.
///
/// Called on the thread that made the imhost call, possibly concurrently from several threads
/// if the context is shared. Must return normally (no exception, no longjmp).
#[allow(non_camel_case_types)]
pub type imh_log_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: imh_log_level, target: *const c_char, message: *const c_char),
>;

/// Per-caller state shared by operations: the log callback. Create with `imh_context_new`.
///
/// Thread safety: a context may be used by several threads at once, including while another
/// thread replaces its log callback.
#[allow(non_camel_case_types)]
pub struct imh_context {
    dispatch: RwLock<Dispatch>,
}

impl imh_context {
    fn new() -> Self {
        // tracing-core computes a call site's interest from the calling thread's default
        // subscriber alone while at most one dispatcher is registered, and caches the answer for
        // every thread. A permanently registered second dispatcher makes it ask every registered
        // one instead, so a context without a callback cannot silence another context's.
        static SENTINEL: OnceLock<Dispatch> = OnceLock::new();
        SENTINEL.get_or_init(|| Dispatch::new(CallbackSubscriber { sink: None }));
        imh_context { dispatch: RwLock::new(Dispatch::new(CallbackSubscriber { sink: None })) }
    }

    /// Run `f` with this context's log subscriber as the thread's default.
    pub(crate) fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let dispatch = self.dispatch.read().map(|d| d.clone()).unwrap_or_else(|p| p.into_inner().clone());
        tracing::dispatcher::with_default(&dispatch, f)
    }
}

/// The caller's `user_data`, which the caller promises is usable from the threads it calls from.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: the header states that the log callback runs on whichever thread calls into imhost
// with this context; by installing it the caller takes responsibility for user_data being
// usable from those threads. imhost itself never dereferences it.
unsafe impl Send for UserData {}
// SAFETY: as above; imhost only passes the pointer back to the caller's callback.
unsafe impl Sync for UserData {}

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, imh_log_level, *const c_char, *const c_char),
    user_data: UserData,
    max_level: Level,
}

/// A subscriber that formats each event as one line and hands it to the caller's callback.
/// It ignores spans, and tells tracing to ask `enabled` at every event (interest "sometimes"),
/// so that contexts with different callbacks and levels coexist.
struct CallbackSubscriber {
    sink: Option<Sink>,
}

#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

fn level_code(level: &Level) -> imh_log_level {
    match *level {
        Level::ERROR => IMH_LOG_ERROR,
        Level::WARN => IMH_LOG_WARN,
        Level::INFO => IMH_LOG_INFO,
        Level::DEBUG => IMH_LOG_DEBUG,
        Level::TRACE => IMH_LOG_TRACE,
    }
}

impl Subscriber for CallbackSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.sink.map_or(LevelFilter::OFF, |s| LevelFilter::from_level(s.max_level)))
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.sink.is_some_and(|s| *metadata.level() <= s.max_level)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let Some(sink) = self.sink else { return };
        let mut line = Line::default();
        event.record(&mut line);
        let message = CString::new(line.0.replace(['\0', '\n'], " ")).unwrap_or_default();
        let target = CString::new(event.metadata().target().replace('\0', " ")).unwrap_or_default();
        // SAFETY: the callback was supplied by the caller for exactly this purpose; both strings
        // outlive the call.
        unsafe {
            (sink.callback)(sink.user_data.0, level_code(event.metadata().level()), target.as_ptr(), message.as_ptr())
        };
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Create a context. Write it to `*out`; free it with `imh_context_free`.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_context_new(out: *mut *mut imh_context) -> imh_status {
    ffi_boundary!("imh_context_new", {
        let out = arg_out!(out, "out");
        let context = Box::new(imh_context::new());
        // SAFETY: `out` is non-NULL and, per the header, points to writable storage for a pointer.
        unsafe { out.write(Box::into_raw(context)) };
        Ok(())
    })
}

/// Free a context created by `imh_context_new`. NULL is a no-op. No call may be using the
/// context concurrently, and it must not be used afterwards.
///
/// Thread safety: may be called from any thread, once no other call uses the context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_context_free(context: *mut imh_context) {
    ffi_boundary!("imh_context_free", default = (), {
        if !context.is_null() {
            // SAFETY: a non-NULL context came from imh_context_new (Box::into_raw) and is freed
            // once, as the header requires.
            drop(unsafe { Box::from_raw(context) });
        }
    })
}

/// Send the context's log records of `max_level` and more severe (`IMH_LOG_*`) to `callback`,
/// with `user_data` passed back unchanged. A NULL callback stops logging. Replaces any previous
/// callback; calls already running on other threads keep the callback and user_data they started
/// with, so keep the previous user_data valid until those calls have returned.
///
/// Thread safety: may be called while other threads use the context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_context_set_log_callback(
    context: *mut imh_context,
    callback: imh_log_fn,
    user_data: *mut c_void,
    max_level: imh_log_level,
) -> imh_status {
    ffi_boundary!("imh_context_set_log_callback", {
        let context = arg_ref!(context, "context");
        let max_level = match max_level {
            IMH_LOG_ERROR => Level::ERROR,
            IMH_LOG_WARN => Level::WARN,
            IMH_LOG_INFO => Level::INFO,
            IMH_LOG_DEBUG => Level::DEBUG,
            IMH_LOG_TRACE => Level::TRACE,
            other => {
                return Err(FfiError::new(
                    imh_status::InvalidArgument,
                    format!("max_level {other} is not an IMH_LOG_* value (1..=5)"),
                ));
            }
        };
        let sink = callback.map(|callback| Sink { callback, user_data: UserData(user_data), max_level });
        let dispatch = Dispatch::new(CallbackSubscriber { sink });
        let mut slot = context.dispatch.write().unwrap_or_else(|p| p.into_inner());
        *slot = dispatch;
        Ok(())
    })
}

/// Resolve a context argument, for the other modules.
pub(crate) fn context_arg<'a>(context: *const imh_context) -> FfiResult<&'a imh_context> {
    Ok(arg_ref!(context, "context"))
}
