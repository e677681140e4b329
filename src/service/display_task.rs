//! The display task: the service publishes [`Event`]s, this thread turns the newest into a
//! [`Screen`] and shows it. A one-slot channel with `try_send` means rendering never blocks
//! processing (a screen the display had no time for is simply replaced by the next), and a
//! failing panel is logged, never fatal.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use super::config::Config;
use super::watch::Event;
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
        Event::Result {
            series,
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
                patient: split(series).0,
                verdict: *verdict,
                covid_fraction: *covid_fraction,
                selected: *selected,
                model,
                time,
                thumbnail: thumbnail.clone(),
            }
        }
        Event::Quarantined { file, reason, .. } => Screen::Fault {
            reason: format!("quarantined {file}: {reason}"),
        },
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
        Event::DiskOk => idle.clone(),
    })
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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

/// Start the display thread; returns the sender the service loop uses.
pub fn spawn(mut backend: Backend, width: u32, height: u32) -> SyncSender<Screen> {
    let (tx, rx) = sync_channel::<Screen>(1);
    if let Backend::Png { dir } = &backend {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::error!("display: {}: {e}", dir.display());
        }
    }
    std::thread::Builder::new()
        .name("display".into())
        .spawn(move || {
            for screen in rx {
                if let Err(e) = backend.show(&display::render(&screen, width, height)) {
                    log::error!("display: {e}");
                }
            }
        })
        .map_err(|e| log::error!("display thread: {e}"))
        .ok();
    tx
}

/// Offer a screen without waiting: when the display is busy it gets the next one instead.
pub fn offer(tx: &SyncSender<Screen>, screen: Screen) {
    match tx.try_send(screen) {
        Ok(()) | Err(TrySendError::Full(_)) => {}
        Err(TrySendError::Disconnected(_)) => log::debug!("display thread gone"),
    }
}
