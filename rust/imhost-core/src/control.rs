//! Progress and cancellation for long operations.
//!
//! Every operation that can take more than a moment takes a [`RunControl`]: it reports progress
//! as a fraction in [0, 1] with a stage name, and stops with [`ErrorKind::Cancelled`] at its next
//! check once the [`CancelToken`] is set or the progress callback asks to stop. Checks happen at
//! least once per frame or slice, so cancellation takes effect within one unit of work.
//!
//! [`ErrorKind::Cancelled`]: crate::ErrorKind::Cancelled

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// A flag any thread may set to ask running operations to stop. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Ask every operation watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Clear the flag so the token can be reused for the next run.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called since the last reset.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Signature of a progress callback: `(fraction in [0, 1], stage name) -> keep going?`.
/// Returning `false` cancels the operation.
pub type ProgressFn<'a> = dyn Fn(f64, &str) -> bool + Sync + 'a;

/// What an operation consults to report progress and to learn it should stop.
#[derive(Clone, Copy, Default)]
pub struct RunControl<'a> {
    progress: Option<&'a ProgressFn<'a>>,
    cancel: Option<&'a CancelToken>,
    range: (f64, f64),
    time_limit: Option<std::time::Duration>,
}

impl<'a> RunControl<'a> {
    /// No progress reporting and no cancellation.
    pub fn none() -> Self {
        RunControl { progress: None, cancel: None, range: (0.0, 1.0), time_limit: None }
    }

    /// A control with an optional progress callback and an optional cancel token.
    pub fn new(progress: Option<&'a ProgressFn<'a>>, cancel: Option<&'a CancelToken>) -> Self {
        RunControl { progress, cancel, range: (0.0, 1.0), time_limit: None }
    }

    /// The same control with a time limit for the run. Models that run in a worker process
    /// (isolated plugins) stop it and fail with [`crate::ErrorKind::TimedOut`] once it passes;
    /// without one they use their manifest's `limits.timeout_s`.
    pub fn with_time_limit(self, limit: Option<std::time::Duration>) -> Self {
        RunControl { time_limit: limit, ..self }
    }

    /// The run's time limit, if the caller set one.
    pub fn time_limit(&self) -> Option<std::time::Duration> {
        self.time_limit
    }

    /// A control for one stage of a pipeline that occupies `range` of the overall progress:
    /// the stage reports 0..1 and the callback sees `range.start..range.end`.
    pub fn sub(&self, range: Range<f64>) -> RunControl<'a> {
        let (a, b) = self.range;
        let w = b - a;
        RunControl { range: (a + w * range.start, a + w * range.end), ..*self }
    }

    /// `Err(Cancelled)` once cancellation was requested.
    pub fn check(&self) -> Result<()> {
        match self.cancel {
            Some(token) if token.is_cancelled() => Err(Error::cancelled()),
            _ => Ok(()),
        }
    }

    /// Report `fraction` (0..1) of this stage done, then check for cancellation.
    pub fn report(&self, stage: &str, fraction: f64) -> Result<()> {
        if let Some(progress) = self.progress {
            let (a, b) = self.range;
            let overall = a + (b - a) * fraction.clamp(0.0, 1.0);
            if !progress(overall, stage) {
                if let Some(token) = self.cancel {
                    token.cancel();
                }
                return Err(Error::cancelled());
            }
        }
        self.check()
    }
}

impl std::fmt::Debug for RunControl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel.map(|c| c.is_cancelled()))
            .field("range", &self.range)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn sub_ranges_map_onto_the_overall_fraction() {
        let seen = Mutex::new(Vec::new());
        let cb = |f: f64, s: &str| {
            seen.lock().unwrap().push((f, s.to_owned()));
            true
        };
        let ctl = RunControl::new(Some(&cb), None);
        let second_half = ctl.sub(0.5..1.0);
        second_half.report("b", 0.0).unwrap();
        second_half.sub(0.0..0.5).report("b1", 1.0).unwrap();
        second_half.report("b", 1.0).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![(0.5, "b".into()), (0.75, "b1".into()), (1.0, "b".into())]);
    }

    #[test]
    fn a_callback_returning_false_cancels() {
        let token = CancelToken::new();
        let stop = |_: f64, _: &str| false;
        let ctl = RunControl::new(Some(&stop), Some(&token));
        assert_eq!(ctl.report("x", 0.1).unwrap_err().kind(), crate::ErrorKind::Cancelled);
        assert!(token.is_cancelled(), "the token records the request for other stages");
        token.reset();
        assert!(RunControl::new(None, Some(&token)).check().is_ok());
    }
}
