//! The display task: the service publishes [`Event`]s, this thread shows the newest as a
//! [`Screen`]. A latest-value slot ([`Display`]) means rendering never blocks processing and
//! the newest screen always wins: a screen the display had no time for is replaced by the
//! next, never the other way round. A failing panel is logged, never fatal.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::config::Config;
use super::event::Event;
use crate::present::display::{self, Backend, Framebuffer, Screen};

/// The screen an event leads to (`None`: keep the current one).
pub fn screen_for(e: &Event, idle: &Screen) -> Option<Screen> {
    let split = |s: &str| {
        s.split_once('/')
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .unwrap_or((s.to_string(), String::new()))
    };
    Some(match e {
        Event::Receiving { series, files } => Screen::Receiving {
            patient: split(series).0,
            files: *files,
        },
        Event::Processing { series } => {
            let (patient, series) = split(series);
            Screen::Processing {
                patient,
                series,
                done: 0,
                of: 0,
                elapsed_s: 0,
            }
        }
        Event::Progress {
            series,
            done,
            of,
            elapsed_s,
        } => {
            let (patient, series) = split(series);
            Screen::Processing {
                patient,
                series,
                done: *done,
                of: *of,
                elapsed_s: *elapsed_s,
            }
        }
        Event::Refused { path, reason } => Screen::Fault {
            reason: format!("not read: {path}: {reason}"),
        },
        Event::Retry { what, reason, .. } => Screen::Fault {
            reason: format!("{what}: {reason} (will retry)"),
        },
        Event::Result {
            patient,
            verdict,
            covid_fraction,
            selected,
            thumbnail,
            ..
        } => {
            let model = match idle {
                Screen::Idle { model, .. } => model.clone(),
                _ => String::new(),
            };
            let time = humantime_now();
            Screen::Result {
                patient: patient.clone(),
                verdict: *verdict,
                covid_fraction: *covid_fraction,
                selected: *selected,
                model,
                time,
                thumbnail: thumbnail.clone(),
            }
        }
        // The series' result names its bad files; the screen keeps showing progress.
        Event::Quarantined { .. } => return None,
        Event::DiskLow {
            free_bytes,
            floor_bytes,
        } => Screen::Fault {
            reason: format!(
                "disk low: {} MiB free, floor {} MiB: not accepting new series",
                free_bytes >> 20,
                floor_bytes >> 20
            ),
        },
        Event::Fault { reason } => Screen::Fault { reason: reason.clone() },
        Event::Incomplete { series, reason } => Screen::Fault {
            reason: format!("{series} incomplete: {reason}"),
        },
        Event::DiskOk | Event::DropReadable { .. } => idle.clone(),
    })
}

fn humantime_now() -> String {
    let secs = crate::clock::unix_secs();
    if crate::clock::synchronised() == Some(false) {
        // A board without a clock battery before NTP: a time that may be years off is no time.
        return "clock not set".into();
    }
    format!("{:02}:{:02} UTC", (secs / 3600) % 24, (secs / 60) % 60)
}

/// The backend the configuration asks for. A panel that cannot be opened is logged and the
/// service goes on without a display.
pub fn backend(config: &Config) -> Backend {
    let d = &config.board.display;
    match config.display_backend.as_str() {
        // Headless: the current screen as <state>/display/screen.png.
        "png" => Backend::Png {
            dir: config.state.join("display"),
        },
        "framebuffer" => {
            let dev = PathBuf::from(d.device.clone().unwrap_or_else(|| "/dev/fb0".into()));
            let sys = PathBuf::from("/sys/class/graphics").join(dev.file_name().unwrap_or_default());
            match Framebuffer::open(&dev, &sys) {
                Ok(fb) => Backend::Framebuffer(fb),
                Err(e) => {
                    log::error!("display: {e}; continuing without a display");
                    Backend::None
                }
            }
        }
        "spi" => match crate::present::spi_panel::open_linux(d) {
            Ok(panel) => Backend::Spi(Box::new(panel)),
            Err(e) => {
                log::error!("display: {e}; continuing without a display");
                Backend::None
            }
        },
        _ => Backend::None,
    }
}

/// The display thread's mailbox: one slot holding the newest screen. Offering a screen
/// replaces whatever the thread has not taken yet, so the newest always wins (a result is
/// never lost behind a stale progress screen) and the service never waits for the panel.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    pending: Option<(u64, Screen)>,
    /// The last screen offered, shown or not (what the results page reports as "now").
    latest: Option<Screen>,
    offered: u64,
    shown: u64,
}

/// The service's handle on the display thread (cheap to clone).
#[derive(Clone)]
pub struct Display {
    slot: Arc<Slot>,
}

impl Display {
    /// A display whose screens nobody shows (tests, `display = "none"` before spawning).
    pub fn detached() -> Display {
        Display {
            slot: Arc::new(Slot::default()),
        }
    }

    /// Show `screen` as soon as the thread is free; replaces a screen not yet shown.
    pub fn show(&self, screen: Screen) {
        let mut st = lock(&self.slot.state);
        st.offered += 1;
        st.latest = Some(screen.clone());
        st.pending = Some((st.offered, screen));
        self.slot.changed.notify_all();
    }

    /// The screen waiting to be shown, if the thread has not taken it yet (for tests).
    pub fn pending(&self) -> Option<Screen> {
        lock(&self.slot.state).pending.as_ref().map(|(_, s)| s.clone())
    }

    /// The last screen offered (the results page's "now").
    pub fn current(&self) -> Option<Screen> {
        lock(&self.slot.state).latest.clone()
    }

    /// Wait until the last offered screen was shown, at most `timeout`; true if it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.slot.state);
        while st.shown < st.offered {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = match self.slot.changed.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

fn lock(m: &Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    // A panic while holding the lock cannot leave the slot inconsistent (plain values).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start the display thread on `backend`.
pub fn spawn(mut backend: Backend, width: u32, height: u32) -> Display {
    let display = Display::detached();
    if let Backend::Png { dir } = &backend {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::error!("display: {}: {e}", dir.display());
        }
    }
    let slot = display.slot.clone();
    std::thread::Builder::new()
        .name("display".into())
        .spawn(move || loop {
            let (seq, screen) = {
                let mut st = lock(&slot.state);
                loop {
                    if let Some(p) = st.pending.take() {
                        break p;
                    }
                    st = slot.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            if let Err(e) = backend.show(&display::render(&screen, width, height)) {
                log::error!("display: {e}");
            }
            let mut st = lock(&slot.state);
            st.shown = st.shown.max(seq);
            slot.changed.notify_all();
        })
        .map_err(|e| log::error!("display thread: {e}"))
        .ok();
    display
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_screen_wins_when_the_display_is_busy() {
        let d = Display::detached();
        d.show(Screen::Booting);
        d.show(Screen::Fault { reason: "x".into() });
        assert_eq!(d.pending(), Some(Screen::Fault { reason: "x".into() }));
        assert!(!d.flush(Duration::from_millis(10)), "nobody shows a detached display");
    }

    #[test]
    fn progress_events_become_processing_screens_with_counts() {
        let idle = Screen::Booting;
        let s = screen_for(
            &Event::Progress {
                series: "p/SR_1".into(),
                done: 3,
                of: 9,
                elapsed_s: 4,
            },
            &idle,
        );
        assert_eq!(
            s,
            Some(Screen::Processing {
                patient: "p".into(),
                series: "SR_1".into(),
                done: 3,
                of: 9,
                elapsed_s: 4
            })
        );
    }
}
