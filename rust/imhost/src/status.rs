//! `imh_status`, the per-thread error message, and the panic boundary every export runs behind.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use imhost_core::{Error, ErrorKind};

/// Result of every imhost call that can fail.
///
/// The numbers are stable: a value is never reused for another meaning, and retired values stay
/// reserved. Callers should treat unknown values (from a newer library) as generic failures.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum imh_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument is out of range (an option, a struct size, a path).
    InvalidArgument = 2,
    /// The pixel type is unknown or not accepted by the operation.
    DataType = 3,
    /// Shape, strides or dimensionality are invalid or do not fit the operation.
    Shape = 4,
    /// Spacing, origin, direction cosines or frame times are invalid.
    Geometry = 5,
    /// The operating system refused a read or write.
    Io = 6,
    /// A file is corrupt, truncated or not in the format it claims.
    Format = 7,
    /// Well-formed input this version does not handle.
    Unsupported = 8,
    /// The input needs more memory than allowed.
    TooLarge = 9,
    /// The operation was cancelled through a cancel token or the progress callback.
    Cancelled = 10,
    /// A bug inside imhost (including a caught Rust panic). The message says where.
    Internal = 11,
    /// The model runtime failed (a LibTorch error, a missing device).
    Model = 12,
    /// A run exceeded its time limit (`imh_run_options.timeout_s`, else the model's manifest
    /// `limits.timeout_s`) and was stopped; an isolated plugin's worker was killed.
    TimedOut = 13,
    /// A plugin, model package or configuration file fails the trust rules (writable by group
    /// or others, owned by another user, a link to such a file, or under a folder another user
    /// could swap). The message names the file and the fix.
    Untrusted = 14,
}

impl imh_status {
    /// The status a core error maps onto.
    pub fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => imh_status::InvalidArgument,
            ErrorKind::DataType => imh_status::DataType,
            ErrorKind::Shape => imh_status::Shape,
            ErrorKind::Geometry => imh_status::Geometry,
            ErrorKind::Io => imh_status::Io,
            ErrorKind::Format => imh_status::Format,
            ErrorKind::Unsupported => imh_status::Unsupported,
            ErrorKind::TooLarge => imh_status::TooLarge,
            ErrorKind::Cancelled => imh_status::Cancelled,
            ErrorKind::Model => imh_status::Model,
            ErrorKind::TimedOut => imh_status::TimedOut,
            ErrorKind::Untrusted => imh_status::Untrusted,
            _ => imh_status::Internal,
        }
    }

    /// The C name of the value, e.g. `"IMH_STATUS_FORMAT"`.
    pub fn name(code: u32) -> &'static CStr {
        match code {
            0 => c"IMH_STATUS_OK",
            1 => c"IMH_STATUS_NULL_ARGUMENT",
            2 => c"IMH_STATUS_INVALID_ARGUMENT",
            3 => c"IMH_STATUS_DATA_TYPE",
            4 => c"IMH_STATUS_SHAPE",
            5 => c"IMH_STATUS_GEOMETRY",
            6 => c"IMH_STATUS_IO",
            7 => c"IMH_STATUS_FORMAT",
            8 => c"IMH_STATUS_UNSUPPORTED",
            9 => c"IMH_STATUS_TOO_LARGE",
            10 => c"IMH_STATUS_CANCELLED",
            11 => c"IMH_STATUS_INTERNAL",
            12 => c"IMH_STATUS_MODEL",
            13 => c"IMH_STATUS_TIMED_OUT",
            14 => c"IMH_STATUS_UNTRUSTED",
            _ => c"IMH_STATUS_UNKNOWN",
        }
    }
}

/// An error on its way out through the C ABI.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: imh_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: imh_status, message: impl Into<String>) -> Self {
        FfiError { status, message: message.into() }
    }

    pub fn null(argument: &str) -> Self {
        FfiError::new(imh_status::NullArgument, format!("argument '{argument}' is NULL"))
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError { status: imh_status::from_kind(e.kind()), message: e.to_string() }
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Record a failure's message for [`crate::imh_last_error_message`] on this thread.
pub(crate) fn set_last_error(status: imh_status, message: &str) {
    let text = format!("{}: {}", status_word(status), message.replace('\n', " "));
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_word(status: imh_status) -> &'static str {
    match status {
        imh_status::Ok => "ok",
        imh_status::NullArgument => "null argument",
        imh_status::InvalidArgument => "invalid argument",
        imh_status::DataType => "data type",
        imh_status::Shape => "shape",
        imh_status::Geometry => "geometry",
        imh_status::Io => "i/o",
        imh_status::Format => "format",
        imh_status::Unsupported => "unsupported",
        imh_status::TooLarge => "too large",
        imh_status::Cancelled => "cancelled",
        imh_status::Internal => "internal error",
        imh_status::Model => "model",
        imh_status::TimedOut => "timed out",
        imh_status::Untrusted => "untrusted",
    }
}

/// Pointer to this thread's last error message (valid until the next failing call here).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Run the body of a status-returning export: errors become a status plus the thread's message,
/// a panic becomes [`imh_status::Internal`]. Used only through [`ffi_boundary!`].
pub(crate) fn guard_status(function: &str, body: impl FnOnce() -> FfiResult) -> imh_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => imh_status::Ok,
        Ok(Err(e)) => {
            set_last_error(e.status, &format!("{function}: {}", e.message));
            e.status
        }
        Err(payload) => {
            let message = format!("{function}: panic inside imhost (please report): {}", panic_message(&*payload));
            set_last_error(imh_status::Internal, &message);
            imh_status::Internal
        }
    }
}

/// Run the body of an export that returns a value: a panic yields `default`.
pub(crate) fn guard_value<T>(function: &str, default: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let message = format!("{function}: panic inside imhost (please report): {}", panic_message(&*payload));
            set_last_error(imh_status::Internal, &message);
            default
        }
    }
}

/// The panic boundary. Every `extern "C"` function's body is exactly one invocation of this
/// macro (checked by `tests/exports.rs`):
///
/// - `ffi_boundary!(name, { ... })` for functions returning [`imh_status`]; the block returns
///   `FfiResult<()>`;
/// - `ffi_boundary!(name, default = value, { ... })` for functions returning anything else; the
///   block returns the value, and `value` is returned if it panics.
macro_rules! ffi_boundary {
    ($name:literal, $body:block) => {
        $crate::status::guard_status($name, || $body)
    };
    ($name:literal, default = $default:expr, $body:block) => {
        $crate::status::guard_value($name, $default, || $body)
    };
}
pub(crate) use ffi_boundary;

/// Borrow `&T` from a pointer argument, or return `NullArgument` naming it.
macro_rules! arg_ref {
    ($ptr:expr, $name:literal) => {
        // SAFETY: the header documents that a non-NULL pointer argument must point to a valid,
        // live object of the declared type for the duration of the call.
        match unsafe { ($ptr).as_ref() } {
            Some(r) => r,
            None => return Err($crate::status::FfiError::null($name)),
        }
    };
}
pub(crate) use arg_ref;

/// Check an out-parameter is non-NULL; yields the raw pointer to write through on success.
macro_rules! arg_out {
    ($ptr:expr, $name:literal) => {{
        let p = $ptr;
        if p.is_null() {
            return Err($crate::status::FfiError::null($name));
        }
        p
    }};
}
pub(crate) use arg_out;

/// Borrow a NUL-terminated UTF-8 string argument as a path.
pub(crate) fn path_arg<'a>(ptr: *const c_char, name: &str) -> FfiResult<&'a std::path::Path> {
    if ptr.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: the header documents that string arguments are NUL-terminated and stay valid for
    // the duration of the call; NULL was excluded above.
    let text = unsafe { CStr::from_ptr(ptr) };
    let text = text
        .to_str()
        .map_err(|_| FfiError::new(imh_status::InvalidArgument, format!("argument '{name}' is not valid UTF-8")))?;
    Ok(std::path::Path::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        let status = guard_status("imh_test", || panic!("boom"));
        assert_eq!(status, imh_status::Internal);
        // SAFETY: the pointer is this thread's live message.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) }.to_str().unwrap().to_owned();
        assert_eq!(msg, "internal error: imh_test: panic inside imhost (please report): boom");
        assert_eq!(guard_value("imh_test", 7, || -> i32 { panic!("again") }), 7);
    }

    #[test]
    fn every_kind_maps_to_a_distinct_named_status() {
        let kinds = ErrorKind::ALL;
        let statuses: std::collections::HashSet<u32> = kinds.iter().map(|&k| imh_status::from_kind(k) as u32).collect();
        assert_eq!(statuses.len(), kinds.len());
        for s in statuses {
            assert_ne!(imh_status::name(s).to_bytes(), b"IMH_STATUS_UNKNOWN");
        }
        assert_eq!(imh_status::name(99).to_bytes(), b"IMH_STATUS_UNKNOWN");
    }
}
