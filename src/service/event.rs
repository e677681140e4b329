//! What the service tells the display and the log. One type, produced by the state machine
//! (what it decided) and the executor (what it did), consumed by the display task.

use std::path::PathBuf;

use crate::decide::Verdict;
use crate::present::display::Thumbnail;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A series appeared or changed; it is processed once it has been stable long enough.
    Receiving {
        series: String,
        files: usize,
    },
    /// Stable but holding temporary names (a copy in progress or interrupted).
    Incomplete {
        series: String,
        reason: String,
    },
    /// Something in a drop folder is not followed or not read (links, stray files), once per
    /// path while it stays there.
    Refused {
        path: String,
        reason: String,
    },
    Processing {
        series: String,
    },
    /// A selected slice was classified (for the display's progress bar).
    Progress {
        series: String,
        done: usize,
        of: usize,
        elapsed_s: u64,
    },
    Result {
        series: String,
        /// As the result names the patient: the PatientID for DICOM, the folder for TIFF.
        patient: String,
        verdict: Verdict,
        covid_fraction: Option<f64>,
        selected: usize,
        file: PathBuf,
        /// The selected slice with the highest P(COVID), for the result screen.
        thumbnail: Option<Thumbnail>,
    },
    /// A copy of a file that is not an acceptable slice was put in quarantine (the drop
    /// folder keeps the original).
    Quarantined {
        series: String,
        file: String,
        reason: String,
    },
    DiskLow {
        free_bytes: u64,
        floor_bytes: u64,
    },
    DiskOk,
    /// A drop folder that could not be listed can be again (its `Retry` is over).
    DropReadable {
        drop: String,
    },
    /// Something failed that will be retried (a drop folder gone, the state folder not
    /// writable): work goes on with the next series.
    Retry {
        what: String,
        reason: String,
        in_s: u64,
    },
    /// A fault that needs a person (a series that crashed the service, a panic).
    Fault {
        reason: String,
    },
}

impl Event {
    /// Log the event at the level it deserves. Patient-naming detail stays at `info` and
    /// below, as every line of this appliance's log stays on the box.
    pub fn log(&self) {
        match self {
            Event::Fault { reason } => log::error!("{reason}"),
            Event::Retry { what, reason, in_s } => log::warn!("{what}: {reason}; retrying in {in_s} s"),
            Event::Quarantined { series, file, reason } => {
                log::warn!("{series}: {file} is not an acceptable slice ({reason}); a copy is in quarantine")
            }
            Event::Refused { path, reason } => log::warn!("{path}: {reason}"),
            Event::DiskLow {
                free_bytes,
                floor_bytes,
            } => log::error!("disk low: {free_bytes} bytes free, floor {floor_bytes}: not starting new series"),
            Event::Incomplete { series, reason } => log::warn!("{series}: incomplete, not processed: {reason}"),
            Event::Progress { .. } => log::debug!("{self:?}"),
            Event::DropReadable { drop } => log::info!("drop folder {drop} readable again"),
            Event::Result { .. } => {}
            other => log::info!("{other:?}"),
        }
    }
}
