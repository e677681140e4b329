//! Keeping the state folder bounded over months: pruning `received/` by retention and disk
//! pressure, compacting the journal, and the start-up sweeps of what an interrupted run left.

use super::*;

impl<F: FreeSpace> Service<F> {
    /// Prune `received/` (what the DICOM receiver stored): a series folder whose content has
    /// its final result is deleted once that result is older than `retention_days`, and, while
    /// the state disk is below its floor, oldest result first until it is not. Never a series
    /// without its result (`Machine::handled`). At most once an hour, or every tick while the
    /// disk is low, so a look costs nothing more as history grows.
    pub(super) fn maybe_prune_received(&mut self, now: Duration) {
        const EVERY: Duration = Duration::from_secs(3600);
        let low = self.machine.disk_low();
        if !low && self.pruned_at.is_some_and(|t| now.saturating_sub(t) < EVERY) {
            return;
        }
        self.pruned_at = Some(now);
        let Some(id) = self
            .config
            .dicom
            .as_ref()
            .map(|_| layout::drop_id(&self.layout.received()))
        else {
            return;
        };
        let root = self.layout.received();
        let mut done: Vec<(u64, Option<bool>, Place)> = self
            .machine
            .handled(&id)
            .into_iter()
            .filter_map(|p| {
                let r = self.layout.result_file(&p.drop, &p.patient_os(), &p.series_os());
                let text = std::fs::read_to_string(r).ok()?;
                let v: ServiceResult = serde_json::from_str(&text).ok()?;
                Some((v.source.written_at, v.source.clock_synchronised, p))
            })
            .collect();
        done.sort();
        let wall = crate::clock::unix_secs();
        let now_synchronised = (self.clock_synchronised)();
        let retention = self.config.retention.as_secs();
        for (at, stamp_synchronised, place) in done {
            // A stamp taken before NTP set a clock-less board's time says nothing about age.
            let expired = crate::clock::age_is_trusted(stamp_synchronised, now_synchronised)
                && wall.saturating_sub(at) > retention;
            let pressed = low
                && self
                    .free
                    .free_bytes(&self.config.state)
                    .map_or(true, |f| f < self.config.min_free_bytes);
            if !expired && !pressed {
                continue;
            }
            let series = root.join(place.patient_os()).join(place.series_os());
            match std::fs::remove_dir_all(&series) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(root.join(place.patient_os()));
                    log::info!(
                        "received/{}: removed ({}; its result stays)",
                        place.label(),
                        if expired {
                            "older than retention_days"
                        } else {
                            "state disk below min_free_mb"
                        }
                    );
                }
                Err(e) => log::warn!("received/{}: cannot remove: {e}", place.label()),
            }
        }
    }

    /// Compact the journal after the first full look, whenever it holds far more lines than
    /// replay needs, and (looked for at start and then hourly) when it holds records of places
    /// gone for longer than `retention_days`, so neither its size nor the replay at restart
    /// grows with the appliance's history.
    pub(super) fn maybe_compact(&mut self, now: Duration) {
        const EVERY: Duration = Duration::from_secs(3600);
        let (lines, keep) = self.journal.size();
        let bloated = if self.compacted {
            lines > 2 * keep + 1000
        } else {
            lines > 2 * keep + 100
        };
        // Only when every drop folder was listed: a pulled stick's series are not "gone".
        let look = self.machine.all_listed() && self.expiry_looked_at.is_none_or(|t| now.saturating_sub(t) >= EVERY);
        let expired = look && {
            self.expiry_looked_at = Some(now);
            self.journal.expired(
                &self.machine.present(),
                crate::clock::unix_secs(),
                self.config.retention.as_secs(),
            ) > 0
        };
        self.compacted = true;
        if !bloated && !expired {
            return;
        }
        match self.journal.compact(
            &self.machine.present(),
            crate::clock::unix_secs(),
            self.config.retention.as_secs(),
        ) {
            Ok(n) => log::info!("journal compacted: {n} line(s) removed"),
            Err(e) => {
                log::error!("journal compaction failed (will retry): {e}");
                self.expiry_looked_at = None;
            }
        }
    }
}

/// Remove the snapshot copies an interrupted run left (they are redone from the drop folder).
pub(super) fn sweep_work(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else { return };
    for e in entries.flatten() {
        let p = e.path();
        match std::fs::remove_dir_all(&p) {
            Ok(()) => log::info!("{}: removed the copy of an interrupted run", p.display()),
            Err(err) => log::error!("{}: cannot remove: {err}", p.display()),
        }
    }
}

/// True when the last run stopped cleanly; the marker is removed (durably) either way, so a
/// kill of this run makes the next start sweep.
pub(super) fn consume_clean_stop(layout: &Layout) -> bool {
    let marker = layout.clean_stop();
    match std::fs::remove_file(&marker) {
        Ok(()) => match std::fs::File::open(marker.parent().unwrap_or(Path::new("."))).and_then(|d| d.sync_all()) {
            Ok(()) => true,
            // Not durably gone: a power cut could bring it back after an unclean end.
            Err(e) => {
                log::warn!(
                    "{}: cannot sync after removing the clean-stop marker: {e}",
                    marker.display()
                );
                false
            }
        },
        Err(_) => false,
    }
}

/// Remove the temporary files of atomic writes that a stop interrupted (`.<name>.tmp-…`, see
/// `fsys::write_atomic`; never a result, a quarantine copy or a marker) wherever the service
/// itself writes them: anywhere under `results/` and `quarantine/`, and in the state folder
/// itself (the journal's compaction, the clean-stop marker). Not `received/` or `outbox/`:
/// the DICOM receiver and the sender own those and sweep their own (`.part`) temporaries.
pub(super) fn sweep_stale_temporaries(layout: &Layout) {
    sweep_temporaries_in(&layout.results(), true);
    sweep_temporaries_in(&layout.quarantine(), true);
    sweep_temporaries_in(&layout.state, false);
}

fn sweep_temporaries_in(dir: &Path, recurse: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if recurse {
                sweep_temporaries_in(&p, true);
            }
            continue;
        }
        let name = ingest::name_of(&p);
        if name.starts_with('.') && name.contains(".tmp-") {
            match std::fs::remove_file(&p) {
                Ok(()) => log::warn!("{}: removed the temporary file of an interrupted write", p.display()),
                Err(e) => log::error!("{}: cannot remove stale temporary file: {e}", p.display()),
            }
        }
    }
}
