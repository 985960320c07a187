//! Version, status names and the per-thread error message.

use std::ffi::c_char;

use crate::status::{ffi_boundary, imh_status, last_error_ptr};

/// Major version of this header. Checked against Cargo.toml by `tests/header.rs`; compare with
/// `imh_version()` at run time to detect a header/library mismatch.
pub const IMH_VERSION_MAJOR: u32 = 0;
/// Minor version of this header.
pub const IMH_VERSION_MINOR: u32 = 1;
/// Patch version of this header.
pub const IMH_VERSION_PATCH: u32 = 0;

/// The library's version as "MAJOR.MINOR.PATCH" (static storage; never free it).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn imh_version() -> *const c_char {
    ffi_boundary!("imh_version", default = c"".as_ptr(), { concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast() })
}

/// The name of a status value, e.g. "IMH_STATUS_FORMAT" ("IMH_STATUS_UNKNOWN" for values this
/// version does not know). Static storage; never free it.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn imh_status_name(status: u32) -> *const c_char {
    ffi_boundary!("imh_status_name", default = c"IMH_STATUS_UNKNOWN".as_ptr(), { imh_status::name(status).as_ptr() })
}

/// The message of the most recent failing imhost call **on the calling thread**, one line of
/// UTF-8 starting with the kind of failure and naming the function and the file or argument at
/// fault, e.g. "format: imh_volume_read: 'a.nii': file is truncated: ...". Empty if no call
/// has failed on this thread. Owned by the library: valid until the next failing imhost call on
/// this thread; copy it to keep it. Successful calls leave it unchanged.
///
/// Thread safety: may be called from any thread; each thread has its own message.
#[unsafe(no_mangle)]
pub extern "C" fn imh_last_error_message() -> *const c_char {
    ffi_boundary!("imh_last_error_message", default = c"".as_ptr(), { last_error_ptr() })
}
