//! The appliance's loop around [`Service::tick`]: the real monotonic clock, inotify wake-ups,
//! SIGTERM/SIGINT, and the clean-stop marker.

use super::*;

/// inotify wake-ups for the drop folders: a one-slot channel that gets a message whenever
/// something under them changes (the watcher must be kept alive). `None`, with the reason
/// logged, where inotify is not available; polling goes on regardless.
pub fn inotify_wakeups(drops: &[PathBuf]) -> Option<(std::sync::mpsc::Receiver<()>, notify::RecommendedWatcher)> {
    use notify::Watcher as _;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            log::warn!("inotify unavailable ({e}); polling only");
            return None;
        }
    };
    for d in drops {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::Recursive) {
            log::warn!("inotify cannot watch {} ({e}); polling only there", d.display());
        }
    }
    Some((rx, watcher))
}

/// The appliance loop: tick every poll interval (sooner after an inotify event) until `stop`
/// is set (SIGTERM/SIGINT, see [`stop_on_signals`]). Returns when stopped; the journal is
/// consistent at every instant, so there is nothing to flush.
pub fn run<F: FreeSpace>(mut service: Service<F>, stop: Arc<AtomicBool>) {
    let (poll, stability) = (service.config.poll_interval, service.config.stability);
    let wake = if service.config.inotify {
        inotify_wakeups(&service.config.drop)
    } else {
        None
    };
    let start = Instant::now();
    // Look at the stop flag at least this often while waiting.
    let slice = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        service.tick(start.elapsed());
        let _ = service.drain_events();
        let mut wait = poll;
        let begun = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let left = wait.saturating_sub(begun.elapsed());
            if left.is_zero() {
                break;
            }
            let step = left.min(slice);
            match &wake {
                Some((rx, _watcher)) => {
                    if rx.recv_timeout(step).is_ok() {
                        // Something changed: look again once it can have settled.
                        wait = wait.min(begun.elapsed() + stability + Duration::from_millis(100));
                    }
                }
                None => std::thread::sleep(step),
            }
        }
    }
    if let Err(e) = write_atomic(&service.layout.clean_stop(), b"stopped cleanly\n") {
        log::warn!("cannot record the clean stop ({e}); the next start sweeps the result folders");
    }
    log::info!(
        "stop requested: leaving with the journal consistent (an unfinished series is redone at the next start)"
    );
}

/// Set `stop` on SIGTERM (systemd stop) and SIGINT (Ctrl-C).
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(())
}
