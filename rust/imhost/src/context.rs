//! `imh_context`: per-caller settings passed to every operation — the log callback, the number of
//! worker threads, a memory limit.
//!
//! Log records are `tracing` events. While an operation runs, the context's subscriber is the
//! calling thread's default, so every event emitted on that thread — by the ABI layer and by the
//! core — reaches the context's callback, and two contexts used on two threads never see each
//! other's records. The threads an operation uses besides the caller's (the helper that runs it
//! while the caller relays progress, the context's worker pool) have a second subscriber of the
//! same context that queues records; the calling thread hands them to the callback while it
//! relays progress and before the call returns. So every record of a call reaches its context's
//! callback, always on a thread that is inside a call with that context.
//!
//! Threads: each context has its own rayon pool (built when first needed, `imh_context_set_threads`
//! sets its size; default all cores), and operations run inside it, so two jobs of a host — two
//! Orthanc jobs, say — with a context each never use more threads than their two counts.

use std::collections::VecDeque;
use std::ffi::{CString, c_char, c_void};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

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
/// Called on the thread that made the imhost call — also for records the library's own worker
/// threads and isolated plugins emitted during the call, which are handed over to that thread
/// while the call runs and before it returns — possibly concurrently from several threads if the
/// context is shared. Must return normally (no exception, no longjmp).
#[allow(non_camel_case_types)]
pub type imh_log_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: imh_log_level, target: *const c_char, message: *const c_char),
>;

/// Per-caller state shared by operations: the log callback, the worker threads, the memory
/// limit. Create with `imh_context_new`.
///
/// Thread safety: a context may be used by several threads at once, including while another
/// thread replaces its log callback.
#[allow(non_camel_case_types)]
pub struct imh_context {
    /// The calling thread's subscriber (calls the callback at once).
    dispatch: RwLock<Dispatch>,
    /// The other threads' subscriber (queues records for the calling thread).
    queued: Dispatch,
    shared: Arc<Shared>,
    /// Worker threads (0: all cores) and the pool, built when first needed.
    threads: AtomicUsize,
    pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
    /// Live worker threads of this context's pools, so that freeing the context can wait for
    /// them to end (a host unloading imhost must not find its threads still running).
    live_threads: Arc<(Mutex<usize>, std::sync::Condvar)>,
    /// Bytes an operation may allocate (0: no limit beyond the system's).
    memory_limit: AtomicU64,
}

/// The sink and the queue the two subscribers of a context share.
struct Shared {
    sink: RwLock<Option<Sink>>,
    queue: Mutex<VecDeque<Queued>>,
    dropped: AtomicU64,
}

/// A record from a thread other than the caller's, waiting for it.
struct Queued {
    level: imh_log_level,
    target: CString,
    message: CString,
}

/// Records waiting beyond this are dropped (and counted in one warning): a runaway logger must
/// not exhaust memory.
const MAX_QUEUED: usize = 10_000;

impl imh_context {
    fn new() -> Self {
        // tracing-core computes a call site's interest from the calling thread's default
        // subscriber alone while at most one dispatcher is registered, and caches the answer for
        // every thread. A permanently registered second dispatcher makes it ask every registered
        // one instead, so a context without a callback cannot silence another context's.
        static SENTINEL: OnceLock<Dispatch> = OnceLock::new();
        SENTINEL.get_or_init(|| Dispatch::new(CallbackSubscriber { sink: None }));
        let shared = Arc::new(Shared {
            sink: RwLock::new(None),
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
        });
        imh_context {
            dispatch: RwLock::new(Dispatch::new(CallbackSubscriber { sink: None })),
            queued: Dispatch::new(QueueSubscriber { shared: shared.clone() }),
            shared,
            threads: AtomicUsize::new(0),
            pool: Mutex::new(None),
            live_threads: Arc::new((Mutex::new(0), std::sync::Condvar::new())),
            memory_limit: AtomicU64::new(0),
        }
    }

    /// Run `f` with this context's log subscriber as the thread's default; then hand the records
    /// other threads queued to the callback, on this thread.
    pub(crate) fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let dispatch = self.dispatch.read().map(|d| d.clone()).unwrap_or_else(|p| p.into_inner().clone());
        let result = tracing::dispatcher::with_default(&dispatch, f);
        self.deliver_queued();
        result
    }

    /// Hand queued records to the callback (call on a thread inside a call with this context).
    pub(crate) fn deliver_queued(&self) {
        let records: Vec<Queued> = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.drain(..).collect()
        };
        let sink = *self.shared.sink.read().unwrap_or_else(|p| p.into_inner());
        let Some(sink) = sink else { return };
        for r in records {
            // SAFETY: the caller's callback for this context; the strings outlive the call.
            unsafe { (sink.callback)(sink.user_data.0, r.level, r.target.as_ptr(), r.message.as_ptr()) };
        }
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 && sink.max_level >= Level::WARN {
            let message = CString::new(format!("{dropped} log records were dropped (more than {MAX_QUEUED} waiting)"))
                .unwrap_or_default();
            // SAFETY: as above.
            unsafe { (sink.callback)(sink.user_data.0, IMH_LOG_WARN, c"imhost".as_ptr(), message.as_ptr()) };
        }
    }

    /// The subscriber for threads other than the caller's.
    pub(crate) fn queued_dispatch(&self) -> Dispatch {
        self.queued.clone()
    }

    /// The memory limit of an operation (`None`: the system's).
    pub(crate) fn memory_limit(&self) -> Option<u64> {
        Some(self.memory_limit.load(Ordering::Relaxed)).filter(|&l| l > 0)
    }

    /// Run `f` in this context's worker pool (its parallel work uses the pool's threads, whose
    /// records are queued for the caller), under the context's memory limit.
    pub(crate) fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let limit = self.memory_limit();
        match self.pool() {
            Some(pool) => pool.install(|| imhost_core::memory::with_limit(limit, f)),
            None => imhost_core::memory::with_limit(limit, f),
        }
    }

    /// The pool, built with the current thread count on first use (`None` if the system refuses
    /// threads: the work then runs on the calling thread).
    fn pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        let mut slot = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let queued = self.queued.clone();
            let (started, ended) = (self.live_threads.clone(), self.live_threads.clone());
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads.load(Ordering::Relaxed))
                .thread_name(|n| format!("imhost-worker-{n}"))
                .start_handler(move |_| {
                    *started.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    // For the thread's life: its records go to this context's queue.
                    std::mem::forget(tracing::dispatcher::set_default(&queued));
                })
                .exit_handler(move |_| {
                    let mut live = ended.0.lock().unwrap_or_else(|p| p.into_inner());
                    *live = live.saturating_sub(1);
                    ended.1.notify_all();
                })
                .build();
            match built {
                Ok(pool) => *slot = Some(Arc::new(pool)),
                Err(e) => tracing::warn!("cannot start the context's worker threads ({e}); working on one thread"),
            }
        }
        slot.clone()
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

impl Drop for imh_context {
    /// Stop the worker threads and wait (up to 5 s) until they have ended.
    fn drop(&mut self) {
        drop(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        let (lock, ended) = &*self.live_threads;
        let live = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = ended.wait_timeout_while(live, std::time::Duration::from_secs(5), |n| *n > 0);
    }
}

/// The subscriber of a context's other threads: formats each record and queues it for the
/// calling thread ([`imh_context::deliver_queued`]).
struct QueueSubscriber {
    shared: Arc<Shared>,
}

impl QueueSubscriber {
    fn max_level(&self) -> Option<Level> {
        self.shared.sink.read().unwrap_or_else(|p| p.into_inner()).map(|s| s.max_level)
    }
}

impl Subscriber for QueueSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        // The callback may change while the pool lives: never let tracing cache "off".
        Some(LevelFilter::TRACE)
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max_level().is_some_and(|max| *metadata.level() <= max)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let record = Queued {
            level: level_code(event.metadata().level()),
            target: CString::new(event.metadata().target().replace('\0', " ")).unwrap_or_default(),
            message: CString::new(line.0.replace(['\0', '\n'], " ")).unwrap_or_default(),
        };
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_QUEUED {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            queue.push_back(record);
        }
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
        *context.shared.sink.write().unwrap_or_else(|p| p.into_inner()) = sink;
        Ok(())
    })
}

/// Use `threads` worker threads for this context's operations (0: one per core, the default),
/// LibTorch's CPU threads included: a host running several jobs at once gives each its own
/// context and count, so that together they use the cores it means them to. Takes effect for
/// operations that start afterwards.
///
/// LibTorch's intra-op thread count is one setting per process: imhost sets it to the context's
/// count when a learned model starts a run on the CPU, so concurrent learned-model runs of
/// contexts with different counts share the count of whichever started last.
///
/// Thread safety: may be called while other threads use the context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_context_set_threads(context: *mut imh_context, threads: u32) -> imh_status {
    ffi_boundary!("imh_context_set_threads", {
        let context = arg_ref!(context, "context");
        if threads > 4096 {
            return Err(FfiError::new(imh_status::InvalidArgument, format!("{threads} threads: at most 4096")));
        }
        context.threads.store(threads as usize, Ordering::Relaxed);
        // Built again at the next operation; running ones keep the pool they have.
        *context.pool.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    })
}

/// Let operations of this context allocate at most `bytes` (0: no limit beyond what the system
/// allows, the default). An input that would need more fails with `IMH_STATUS_TOO_LARGE` before
/// the allocation. The system's own limits always apply as well: available memory, `ulimit -v`
/// (`RLIMIT_AS`, `RLIMIT_DATA`) and the memory cgroup (a container's or a systemd unit's
/// `MemoryMax=`).
///
/// Thread safety: may be called while other threads use the context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn imh_context_set_memory_limit(context: *mut imh_context, bytes: u64) -> imh_status {
    ffi_boundary!("imh_context_set_memory_limit", {
        let context = arg_ref!(context, "context");
        context.memory_limit.store(bytes, Ordering::Relaxed);
        Ok(())
    })
}

/// Resolve a context argument, for the other modules.
pub(crate) fn context_arg<'a>(context: *const imh_context) -> FfiResult<&'a imh_context> {
    Ok(arg_ref!(context, "context"))
}
