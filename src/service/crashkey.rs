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
//!
//! Whose panic it is: a series' work fans out to helper threads (tract's matrix products, the
//! parallel slices), so a panic on any thread while a series is processed is that series'. A
//! DICOMDIR is parsed on the watching thread alone, so only a panic there is the DICOMDIR's: a
//! panic in the receiver, the sender or the display while a DICOMDIR happens to be parsed must
//! not set that DICOMDIR aside ([`Scope`]). Nor is a panic of those long-lived threads (named in
//! [`NOT_A_SERIES_THREAD`]) ever a series' fault, whichever series is being processed: a
//! receiver bug must not set a patient aside.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::fsys::write_atomic;

/// Threads that never work for a series: the DICOM receiver's, the sender's, the display's.
pub(crate) const NOT_A_SERIES_THREAD: &[&str] = &["dicom-listener", "dicom-assoc", "dicom-send", "display"];

/// Which panics a key in progress owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A panic on any thread (a series: its work runs on helper threads too).
    AnyThread,
    /// Only a panic on the thread that marked it (a DICOMDIR being parsed).
    ThisThread,
}

/// One key being processed: its crash-marker path, key, label for the marker, and whose panics
/// it owns.
struct Entry {
    marker: PathBuf,
    key: String,
    label: String,
    scope: Scope,
    thread: std::thread::ThreadId,
}

/// Keys being processed right now: what our panic hook records.
static IN_PROGRESS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

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
                let current = std::thread::current();
                let here = current.id();
                let foreign = current.name().is_some_and(|n| NOT_A_SERIES_THREAD.contains(&n));
                for e in g
                    .iter()
                    .filter(|e| e.thread == here || (e.scope == Scope::AnyThread && !foreign))
                {
                    let text = serde_json::json!({"key": e.key, "series": e.label, "panic": info.to_string()});
                    let _ = write_atomic(&e.marker, format!("{text}\n").as_bytes());
                }
            }
            previous(info);
        }));
    });
}

fn in_progress_lock() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a key as being processed for as long as it lives.
pub(crate) struct InProgress {
    marker: PathBuf,
    key: String,
}

impl InProgress {
    pub(crate) fn new(marker: PathBuf, key: &str, label: &str, scope: Scope) -> InProgress {
        in_progress_lock().push(Entry {
            marker: marker.clone(),
            key: key.to_string(),
            label: label.to_string(),
            scope,
            thread: std::thread::current().id(),
        });
        InProgress {
            marker,
            key: key.to_string(),
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        in_progress_lock().retain(|e| !(e.marker == self.marker && e.key == self.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_on_a_helper_thread() {
        let _ = std::thread::spawn(|| panic!("a helper thread's own fault")).join();
    }

    #[test]
    fn a_dicomdir_owns_only_panics_of_its_own_thread_and_a_series_those_of_every_thread() {
        install_crash_hook();
        let t = tempfile::tempdir().unwrap();
        let (dd, series) = (t.path().join("dicomdir.crash"), t.path().join("series.crash"));
        {
            let _parsing = InProgress::new(dd.clone(), "dicomdir:d/DICOMDIR@1:2", "DICOMDIR", Scope::ThisThread);
            panic_on_a_helper_thread();
            assert!(!dd.exists(), "another thread's panic is not the DICOMDIR's");
            let _ = std::panic::catch_unwind(|| panic!("the parser's fault"));
            let text = std::fs::read_to_string(&dd).expect("a panic of the parsing thread is recorded");
            assert!(text.contains("dicomdir:d/DICOMDIR@1:2"), "{text}");
        }
        {
            let _processing = InProgress::new(series.clone(), "series-key", "PAT/SR_1", Scope::AnyThread);
            panic_on_a_helper_thread();
            let text = std::fs::read_to_string(&series).expect("a helper thread's panic is the series'");
            assert!(text.contains("series-key"), "{text}");
        }
    }

    #[test]
    fn a_panic_in_the_receiver_or_the_display_is_never_charged_to_the_series_being_processed() {
        install_crash_hook();
        let t = tempfile::tempdir().unwrap();
        let series = t.path().join("series.crash");
        let _processing = InProgress::new(series.clone(), "series-key-2", "PAT/SR_2", Scope::AnyThread);
        for name in NOT_A_SERIES_THREAD {
            let _ = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(|| panic!("the receiver's own fault"))
                .unwrap()
                .join();
            assert!(!series.exists(), "a panic on {name} was charged to the series");
        }
    }
}
