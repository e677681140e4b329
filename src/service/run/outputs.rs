//! What a finished scan leaves: the result JSON (the record), the report sheet, the DICOM SR
//! and Secondary Capture (queued for the PACS), quarantine copies of unusable files, and the
//! result event for the display.

use super::*;

impl<F: FreeSpace> Service<F> {
    /// A copy of every unusable file (and a reason beside it) in the quarantine folder of
    /// this snapshot. The drop folder keeps the original.
    pub(super) fn quarantine_copies(
        &mut self,
        place: &Place,
        key: &str,
        snap: &Snapshot,
        report: &ScanReport,
    ) -> Result<(), AttemptError> {
        let bad: Vec<&FileProblem> = report.series.iter().flat_map(|s| s.unreadable.iter()).collect();
        if bad.is_empty() {
            return Ok(());
        }
        let qdir = self
            .layout
            .quarantine_dir(&place.drop, &place.patient_os(), &place.series_os(), key);
        let mut events = Vec::new();
        for p in bad {
            let safe = layout::safe_name(std::ffi::OsStr::new(&p.file));
            let copy = snap.files.iter().find(|f| ingest::name_of(f) == p.file);
            if let Some(src) = copy {
                copy_into(src, &qdir.join(&safe))?;
            }
            let note = format!(
                "{}/{}: {}{}\n",
                place.label(),
                p.file,
                p.reason,
                if copy.is_some() {
                    ""
                } else {
                    " (not copied: not a regular file)"
                }
            );
            write_file(&qdir.join(format!("{safe}.reason.txt")), note.as_bytes())?;
            events.push(Event::Quarantined {
                series: place.label(),
                file: p.file.clone(),
                reason: p.reason.clone(),
            });
        }
        for e in events {
            self.publish(e);
        }
        Ok(())
    }

    pub(super) fn write_result(
        &mut self,
        path: &Path,
        root: &Path,
        place: &Place,
        snap: &Snapshot,
        key: &str,
        scan: ScanReport,
    ) -> Result<(), AttemptError> {
        let result = ServiceResult {
            scan,
            source: ResultSource {
                drop: root.display().to_string(),
                patient: place.patient_os().to_string_lossy().into_owned(),
                series_folder: place.series_os().to_string_lossy().into_owned(),
                key: key.to_string(),
                files: snap.files.len() + snap.refused.len(),
                ignored: snap
                    .ignored
                    .iter()
                    .map(|r| FileProblem {
                        file: r.file.clone(),
                        reason: r.reason.clone(),
                    })
                    .collect(),
                written_at: crate::clock::unix_secs(),
                clock_synchronised: (self.clock_synchronised)(),
            },
        };
        let text = serde_json::to_string_pretty(&result).map_err(|e| AttemptError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_file(path, format!("{text}\n").as_bytes())
    }

    /// The per-patient report sheet (`<series>.png`, see `present::sheet`) beside the result.
    /// The JSON is the result of record: a failure here is logged, not retried.
    pub(super) fn write_sheet_beside(&self, result: &Path, report: &ScanReport, snap: &Snapshot) {
        use crate::present::sheet;
        let time = format!(
            "{}{}",
            sheet::now_text(),
            crate::clock::note((self.clock_synchronised)())
        );
        let input = sheet::SheetInput {
            report,
            threshold: self.classifier.card().output.threshold,
            time: &time,
        };
        let mut decoder = SliceDecoder::new();
        let path = result.with_extension("png");
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                log::error!("{}: the report sheet was not written: {e}", path.display());
                return;
            }
        }
        // The snapshot is flat: a slice's label is its file name there.
        let written = sheet::write(&path, &input, &mut |si, k| {
            let label = &report.series.get(si)?.slices.get(k)?.file;
            let file = snap.files.iter().find(|f| &ingest::name_of(f) == label)?;
            let s = decoder.decode(file).ok()?;
            Some(sheet::tile(report, si, k, input.threshold, s.pixels, s.width, s.height))
        });
        if let Err(e) = written {
            log::error!("{}: the report sheet was not written: {e}", path.display());
        }
    }

    /// For a DICOM series, the result as DICOM beside the JSON, for the hospital's PACS: an SR
    /// (`<series>.sr.dcm`) and a Secondary Capture of the result screen (`<series>.sc.dcm`).
    /// The JSON is the result of record: a failure here is logged, not retried.
    pub(super) fn write_dicom_beside(&self, place: &Place, result: &Path, report: &ScanReport, snap: &Snapshot) {
        use crate::present::sr;
        if !report.series.iter().any(|s| s.info.is_some()) {
            return;
        }
        let sources = ingest::dicom::sources(&snap.files);
        let now = sr::now();
        let path = result.with_extension("sr.dcm");
        match sr::write(&path, report, &sources, &now) {
            Ok(()) => self.send_later(&path),
            Err(e) => log::error!("{}: the DICOM SR was not written: {e}", path.display()),
        }
        let event = Event::Result {
            series: place.label(),
            patient: report.patient.clone(),
            verdict: report.verdict,
            covid_fraction: report.covid_fraction,
            selected: report.selected_slices,
            file: result.to_path_buf(),
            thumbnail: representative_thumbnail(snap, report, self.classifier.card().output.threshold),
        };
        let Some(screen) = display_task::screen_for(&event, &self.idle) else {
            return;
        };
        let canvas = crate::present::display::render(&screen, 800, 480);
        let path = result.with_extension("sc.dcm");
        let written = sr::build_sc(report, &sources, &canvas, &now).and_then(|bytes| {
            write_atomic(&path, &bytes).map_err(|source| sr::SrError::Write {
                path: path.display().to_string(),
                source,
            })
        });
        match written {
            Ok(()) => self.send_later(&path),
            Err(e) => log::error!("{}: the DICOM Secondary Capture was not written: {e}", path.display()),
        }
    }

    /// With `[dicom] send_to`, queue a DICOM result for the PACS (`service::sender` sends it).
    pub(super) fn send_later(&self, file: &Path) {
        if self.config.send_to.is_none() {
            return;
        }
        if let Err(e) = crate::service::sender::enqueue(&self.layout.outbox(), file) {
            log::error!("{}: not queued for the PACS: {e}", file.display());
        }
    }

    pub(super) fn publish_result(&mut self, place: &Place, file: &Path, report: &ScanReport, snap: &Snapshot) {
        let thumbnail = representative_thumbnail(snap, report, self.classifier.card().output.threshold);
        self.idle = match &self.idle {
            Screen::Idle { drop, model, web, .. } => Screen::Idle {
                drop: drop.clone(),
                model: model.clone(),
                last_result: Some(format!("{}: {}", place.label(), report.verdict)),
                web: web.clone(),
            },
            other => other.clone(),
        };
        self.publish(Event::Result {
            series: place.label(),
            patient: report.patient.clone(),
            verdict: report.verdict,
            covid_fraction: report.covid_fraction,
            selected: report.selected_slices,
            file: file.to_path_buf(),
            thumbnail,
        });
    }
}

/// Side of the result screen's thumbnail, before it is scaled to the panel.
const THUMBNAIL_SIDE: u32 = 128;

/// The selected slice with the highest P(COVID), lung-windowed (None if there is none).
fn representative_thumbnail(snap: &Snapshot, report: &ScanReport, threshold: f32) -> Option<Thumbnail> {
    let slice = report
        .series
        .iter()
        .flat_map(|s| s.slices.iter())
        .filter(|sl| sl.p_covid.is_some())
        .max_by(|a, b| a.p_covid.partial_cmp(&b.p_covid).unwrap_or(std::cmp::Ordering::Equal))?;
    let path = snap.files.iter().find(|f| ingest::name_of(f) == slice.file)?;
    let mut decoder = SliceDecoder::new();
    let s = decoder.decode(path).ok()?;
    let t = Thumbnail::from_stored(s.pixels, s.width, s.height, THUMBNAIL_SIDE);
    // The evidence overlay on the screen too, where the model has it and called the slice COVID.
    Some(match &slice.evidence {
        Some(e) if slice.p_covid.is_some_and(|p| p >= threshold) => t.with_evidence(e, s.width, s.height),
        _ => t,
    })
}
