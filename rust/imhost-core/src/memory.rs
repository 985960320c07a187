//! How much memory this process may still allocate, so that an input can be refused with
//! [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) before an allocation the system would
//! refuse by aborting the process (or by the OOM killer).
//!
//! The budget is the least of:
//! - `MemAvailable` of `/proc/meminfo` (what the machine can give without swapping);
//! - what `RLIMIT_AS` leaves (`ulimit -v` less the current `VmSize`) and what `RLIMIT_DATA`
//!   leaves (less `VmData`), from `/proc/self/limits` and `/proc/self/status`;
//! - the memory cgroup's limit less its usage (cgroup v2 `memory.max` − `memory.current`, walking
//!   up to the root; cgroup v1 `memory.limit_in_bytes` − `memory.usage_in_bytes`), which is what a
//!   container or a systemd service (Orthanc's `MemoryMax=`) enforces.
//!
//! - a limit the caller set for the work running on this thread ([`with_limit`]: the C ABI sets
//!   a context's `imh_context_set_memory_limit` there).
//!
//! Everything is read from `/proc` and `/sys`, so the core needs no `unsafe`; where none of them
//! exists the budget is unknown and callers use their own default.

use std::cell::Cell;
use std::path::{Path, PathBuf};

thread_local! {
    static CALLER_LIMIT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Run `f` with `limit` bytes as the most an allocation may take on this thread (`None`: only
/// the system's limits), restoring the previous limit afterwards (also if `f` panics).
pub fn with_limit<R>(limit: Option<u64>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALLER_LIMIT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(CALLER_LIMIT.with(|l| l.replace(limit)));
    f()
}

/// The limit [`with_limit`] set on this thread (to hand on to worker threads).
pub fn caller_limit() -> Option<u64> {
    CALLER_LIMIT.with(Cell::get)
}

/// The budget and which limit set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes this process may still allocate.
    pub bytes: u64,
    /// `"MemAvailable"`, `"RLIMIT_AS"`, `"RLIMIT_DATA"`, `"cgroup"` or `"caller"`.
    pub set_by: &'static str,
}

/// The memory this process may still allocate (see the module documentation), or `None` when
/// no limit can be read.
pub fn budget() -> Option<Budget> {
    let mut candidates: Vec<Budget> = Vec::new();
    if let Some(bytes) = meminfo_available() {
        candidates.push(Budget { bytes, set_by: "MemAvailable" });
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (limit, used, name) in
        [("Max address space", "VmSize:", "RLIMIT_AS"), ("Max data size", "VmData:", "RLIMIT_DATA")]
    {
        if let Some(max) = soft_limit(&limits, limit) {
            let used = status_kib(&status, used).unwrap_or(0).saturating_mul(1024);
            candidates.push(Budget { bytes: max.saturating_sub(used), set_by: name });
        }
    }
    if let Some(bytes) = cgroup_headroom() {
        candidates.push(Budget { bytes, set_by: "cgroup" });
    }
    if let Some(bytes) = CALLER_LIMIT.with(Cell::get) {
        candidates.push(Budget { bytes, set_by: "caller" });
    }
    candidates.into_iter().min_by_key(|b| b.bytes)
}

/// Refuse `bytes` (what `what` needs) with [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge)
/// when it exceeds the budget; `None` bytes means the size overflowed.
pub fn check(bytes: Option<u64>, what: &str) -> crate::Result<()> {
    let Some(bytes) = bytes else {
        return Err(crate::Error::too_large(format!("{what}: the size overflows")));
    };
    match budget() {
        Some(b) if bytes > b.bytes => Err(crate::Error::too_large(format!(
            "{what} needs {} MiB; {} MiB may be allocated (limit: {})",
            bytes >> 20,
            b.bytes >> 20,
            b.set_by
        ))),
        _ => Ok(()),
    }
}

/// `count` elements of `size` bytes, checked for overflow.
pub fn bytes_of(count: &[usize], size: usize) -> Option<u64> {
    count.iter().try_fold(size as u64, |a, &n| a.checked_mul(n as u64))
}

/// [`budget`] in bytes, or `default` when unknown.
pub fn available_bytes_or(default: u64) -> u64 {
    budget().map_or(default, |b| b.bytes)
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    status_kib(&text, "MemAvailable:").map(|k| k.saturating_mul(1024))
}

/// The `N kB` value of a `/proc` line starting with `key`.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The soft limit of a `/proc/self/limits` row, `None` when unlimited or absent.
fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let row = limits.lines().find_map(|l| l.strip_prefix(name))?;
    row.split_whitespace().next()?.parse().ok()
}

/// The least headroom (limit − usage) of this process's memory cgroup and its ancestors.
fn cgroup_headroom() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut least: Option<u64> = None;
    let mut consider = |limit: Option<u64>, usage: Option<u64>| {
        if let Some(limit) = limit {
            let room = limit.saturating_sub(usage.unwrap_or(0));
            least = Some(least.map_or(room, |l| l.min(room)));
        }
    };
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: every level from ours up to the root may set memory.max.
            let root = Path::new("/sys/fs/cgroup");
            let mut dir: PathBuf = root.join(path);
            loop {
                consider(read_limit(&dir.join("memory.max")), read_limit(&dir.join("memory.current")));
                if dir == root || !dir.pop() {
                    break;
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            // cgroup v1 (inside a container the mount shows our group at the root).
            for dir in [Path::new("/sys/fs/cgroup/memory").join(path), PathBuf::from("/sys/fs/cgroup/memory")] {
                let limit = read_limit(&dir.join("memory.limit_in_bytes")).filter(|&l| l < (1 << 62));
                consider(limit, read_limit(&dir.join("memory.usage_in_bytes")));
            }
        }
    }
    least
}

/// A number from a cgroup file (`max` and missing files are `None`).
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_rows_are_parsed() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max data size             unlimited            unlimited            bytes\n\
                      Max address space         4294967296           unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max address space"), Some(4 << 30));
        assert_eq!(soft_limit(limits, "Max data size"), None);
        assert_eq!(status_kib("Name:\tx\nVmSize:\t  123456 kB\n", "VmSize:"), Some(123456));
    }

    #[test]
    fn this_process_has_a_budget() {
        let b = budget().expect("Linux has /proc/meminfo");
        assert!(b.bytes > 0, "{b:?}");
        assert!(["MemAvailable", "RLIMIT_AS", "RLIMIT_DATA", "cgroup"].contains(&b.set_by));
    }

    #[test]
    fn a_caller_limit_applies_on_its_thread_only_and_is_restored() {
        let outside = budget().unwrap().bytes;
        let inside = with_limit(Some(1 << 20), || {
            std::thread::scope(|s| assert!(s.spawn(|| budget().unwrap().bytes).join().unwrap() > (1 << 20)));
            budget().unwrap()
        });
        assert_eq!(inside, Budget { bytes: 1 << 20, set_by: "caller" });
        assert!(budget().unwrap().bytes > (1 << 20) && outside > (1 << 20));
    }
}
