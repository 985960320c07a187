//! A progress bar on stderr for long operations (hidden when stderr is not a terminal or with
//! --quiet), fed by the core's progress callback.

use imhost_core::RunControl;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Run `work` with a progress bar wired to its `RunControl`; the bar is cleared afterwards.
pub fn with_bar<R>(quiet: bool, work: impl FnOnce(&RunControl<'_>) -> R) -> R {
    let bar = Bar::new(quiet);
    let callback = bar.callback();
    let control = RunControl::new(Some(&callback), None);
    work(&control)
}

/// A progress bar in per-mille.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar that draws only on a terminal, and never when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(Some(1000), target);
        bar.set_style(
            ProgressStyle::with_template("{msg:>14} [{bar:40}] {percent:>3}% {elapsed}")
                .expect("static template")
                .progress_chars("=> "),
        );
        Bar(bar)
    }

    /// The callback to hand to `RunControl::new`: updates the bar, never cancels.
    pub fn callback(&self) -> impl Fn(f64, &str) -> bool + Sync + '_ {
        move |fraction, stage| {
            self.0.set_message(stage.to_owned());
            self.0.set_position((fraction * 1000.0) as u64);
            true
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
