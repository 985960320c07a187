//! `imh_cancel_token`: a flag another thread (a UI's Cancel button) sets to stop a running call.

use imhost_core::CancelToken;

use crate::status::{arg_out, arg_ref, ffi_boundary, imh_status};

/// A cancellation flag. Pass it in `imh_run_options.cancel`; a running operation stops with
/// `IMH_STATUS_CANCELLED` at its next check (at least once per frame or slice) after
/// `imh_cancel_token_cancel`.
///
/// Thread safety: every function on a token may be called from any thread at any time, except
/// `imh_cancel_token_free`, which needs all other use to have ended.
#[allow(non_camel_case_types)]
pub struct imh_cancel_token {
    pub(crate) token: CancelToken,
}

/// Create a token that is not cancelled. Free with `imh_cancel_token_free`.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_cancel_token_new(out: *mut *mut imh_cancel_token) -> imh_status {
    ffi_boundary!("imh_cancel_token_new", {
        let out = arg_out!(out, "out");
        let token = Box::new(imh_cancel_token { token: CancelToken::new() });
        // SAFETY: `out` is non-NULL and points to writable storage for a pointer (header).
        unsafe { out.write(Box::into_raw(token)) };
        Ok(())
    })
}

/// Request cancellation of every operation watching this token.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_cancel_token_cancel(token: *const imh_cancel_token) -> imh_status {
    ffi_boundary!("imh_cancel_token_cancel", {
        arg_ref!(token, "token").token.cancel();
        Ok(())
    })
}

/// Clear the flag, so the token can serve the next run.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_cancel_token_reset(token: *const imh_cancel_token) -> imh_status {
    ffi_boundary!("imh_cancel_token_reset", {
        arg_ref!(token, "token").token.reset();
        Ok(())
    })
}

/// Whether the token is cancelled. A NULL token is never cancelled.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_cancel_token_is_cancelled(token: *const imh_cancel_token) -> bool {
    ffi_boundary!("imh_cancel_token_is_cancelled", default = false, {
        // SAFETY: a non-NULL token points to a live imh_cancel_token (header).
        unsafe { token.as_ref() }.is_some_and(|t| t.token.is_cancelled())
    })
}

/// Free a token. NULL is a no-op.
///
/// Thread safety: may be called from any thread once no other call uses the token.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_cancel_token_free(token: *mut imh_cancel_token) {
    ffi_boundary!("imh_cancel_token_free", default = (), {
        if !token.is_null() {
            // SAFETY: a non-NULL token came from imh_cancel_token_new and is freed once.
            drop(unsafe { Box::from_raw(token) });
        }
    })
}
