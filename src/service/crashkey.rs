//! What our panic hook knows: the keys being worked on right now (a series being processed, a
//! DICOMDIR being parsed), each with the crash-marker path the hook writes for it.
//!
//! Why: with `panic = "abort"` a panic ends the service and systemd starts it again. Without a
//! record of what it was doing, a file that makes a parser panic would do so at every start (a
//! crash loop that keeps the appliance down while the file sits in the drop folder). The hook
//! writes `<state>/crash` naming the key; the next start journals it as `crashed`
//! (`run::record_crash`), and whoever owns the key decides what a crash means: a series is set
//! aside after three, a DICOMDIR is not parsed again (`dropfs::DicomdirGuard`). Outside kills
//! never write the marker, so they never count.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::present::write_atomic;

/// Keys being processed right now, with their crash-marker path: what our panic hook records.
static IN_PROGRESS: Mutex<Vec<(PathBuf, String, String)>> = Mutex::new(Vec::new());

/// Install (once per process) the panic hook that writes `<state>/crash` for the key being
/// processed, then runs the previous hook. With `panic = "abort"` (the shipped profile) the
/// process ends right after; systemd restarts it and the next start journals the crash.
pub(crate) fn install_crash_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: never deadlock in a panic; a poisoned lock still holds plain data.
            let guard = match IN_PROGRESS.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(g) = guard {
                for (marker, key, series) in g.iter() {
                    let text = serde_json::json!({"key": key, "series": series, "panic": info.to_string()});
                    let _ = write_atomic(marker, format!("{text}\n").as_bytes());
                }
            }
            previous(info);
        }));
    });
}

fn in_progress_lock() -> std::sync::MutexGuard<'static, Vec<(PathBuf, String, String)>> {
    IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a key as being processed for as long as it lives.
pub(crate) struct InProgress {
    marker: PathBuf,
    key: String,
}

impl InProgress {
    pub(crate) fn new(marker: PathBuf, key: &str, series: &str) -> InProgress {
        in_progress_lock().push((marker.clone(), key.to_string(), series.to_string()));
        InProgress {
            marker,
            key: key.to_string(),
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        in_progress_lock().retain(|(m, k, _)| !(m == &self.marker && k == &self.key));
    }
}
