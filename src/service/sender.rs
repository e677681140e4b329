//! DICOM results out (issue 14, step 4): the SR and the Secondary Capture written beside every
//! DICOM result are sent by C-STORE to the hospital's PACS (`[dicom] send_to = "AE@host:port"`).
//!
//! Why an outbox folder: a PACS is down for maintenance, unplugged, or refuses for a while, and
//! the box is restarted or killed meanwhile. So sending is never done in the service's loop:
//! the service links each file into `<state>/outbox/` (atomically, folder fsynced) when the
//! result is written, and this thread sends whatever is in the outbox, oldest first, and
//! removes a file only after the PACS answered success (or a warning) for it. The outbox is the
//! durable queue: a restart picks up where the last run stopped, with no journal of its own.
//!
//! Promises, each tested in `tests/dicom_send.rs` against a real DICOM peer:
//! - at least once: a file leaves the outbox only after a success status for it (a kill
//!   between that answer and the removal sends it once more; a PACS keys on the SOP Instance
//!   UID, so that is harmless, and it is the only case);
//! - a PACS that cannot be reached, or answers "out of resources" (0xA7xx), is retried with a
//!   backoff from 2 s doubling to 5 minutes, forever, saying so in the log each time;
//! - a file the PACS refuses for good (a failure status other than 0xA7xx, or a SOP class it
//!   did not accept) is moved to `<state>/outbox/refused/` with a `.reason.txt`, logged as an
//!   error, and not retried; the result on the box is untouched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;

/// Where and as whom results are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SendTo {
    /// `AE@host:port` of the PACS (the called AE title, then the address).
    pub address: String,
    /// Our calling AE title.
    pub calling_ae: String,
}

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Files sent per association.
const BATCH: usize = 32;
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another try later: no connection, association refused, transport broken,
    /// or the PACS is out of resources.
    #[error("{0}")]
    Transient(String),
}

/// Queue `file` for sending: a hard link (or, across file systems, a copy renamed into place)
/// under `outbox`, named so that the outbox sorts oldest first; the folder is fsynced. The name's
/// stamp is the wall clock in microseconds, but always above every stamp already queued: a
/// clock stepped back (a board without a clock battery meeting NTP) never sends a new file
/// before an older one, nor lets two files share a name.
pub fn enqueue(outbox: &Path, file: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(outbox)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "result.dcm".into());
    let last = pending(outbox).iter().filter_map(|p| stamp_of(p)).max();
    let stamp = crate::clock::unix_micros().max(last.map_or(0, |s| s + 1));
    let dest = outbox.join(format!("{stamp:020}-{name}"));
    if std::fs::hard_link(file, &dest).is_err() {
        let tmp = outbox.join(format!(".{stamp:020}-{name}.part"));
        std::fs::copy(file, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
    }
    std::fs::File::open(outbox)?.sync_all()?;
    Ok(dest)
}

/// The stamp an [`enqueue`]d file's name starts with.
fn stamp_of(p: &Path) -> Option<u128> {
    let n = p.file_name()?.to_str()?;
    n.get(..20)
        .filter(|_| n.as_bytes().get(20) == Some(&b'-'))?
        .parse()
        .ok()
}

/// The files waiting in `outbox`, oldest first (temporaries and the refused folder left out).
pub fn pending(outbox: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(outbox)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .filter(|p| {
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    !n.starts_with('.') && n.ends_with(".dcm")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Remove the copies a kill interrupted inside [`enqueue`] (`.<stamp>-<name>.part`): never
/// renamed into place, so never queued; the series they belong to had no final result yet and
/// is processed again, which queues its files anew.
/// A temporary that cannot be removed is left and said: it is never sent, and it must not keep
/// the results that are queued from going out.
fn sweep_temporaries(outbox: &Path) {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return; // start() just created it; the send loop reports an unreadable outbox
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') && n.ends_with(".part") && e.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => log::warn!("PACS outbox: removed {n}, a copy interrupted by a stop"),
                Err(err) => log::error!("PACS outbox: cannot remove {n} (a copy interrupted by a stop): {err}"),
            }
        }
    }
}

/// The sending thread; stops (and joins) when dropped.
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    pub fn start(cfg: SendTo, outbox: PathBuf) -> std::io::Result<Sender> {
        std::fs::create_dir_all(&outbox)?;
        sweep_temporaries(&outbox);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        log::info!("DICOM: results are sent to {}", cfg.address);
        let thread = std::thread::Builder::new()
            .name("dicom-send".into())
            .spawn(move || send_loop(&cfg, &outbox, &s))?;
        Ok(Sender {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleep up to `d`, waking early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

fn send_loop(cfg: &SendTo, outbox: &Path, stop: &AtomicBool) {
    let mut backoff = FIRST_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        let files = pending(outbox);
        if files.is_empty() {
            nap(Duration::from_millis(500), stop);
            continue;
        }
        let batch = &files[..files.len().min(BATCH)];
        match send_batch(cfg, outbox, batch) {
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(SendError::Transient(why)) => {
                log::warn!(
                    "DICOM: sending to {} failed: {why}; {} file(s) wait in {}, next try in {} s",
                    cfg.address,
                    files.len(),
                    outbox.display(),
                    backoff.as_secs()
                );
                nap(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One file read for sending.
struct Outgoing {
    path: PathBuf,
    class_uid: String,
    instance_uid: String,
    ts: String,
    dataset: Vec<u8>,
}

fn read_outgoing(path: &Path) -> Result<Outgoing, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    let body = bytes.get(128..).ok_or("shorter than a DICOM preamble")?;
    let obj = dicom_object::from_reader(body).map_err(|e| format!("unreadable: {e}"))?;
    let meta = obj.meta();
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    // The data set exactly as written, after the preamble, "DICM" and the file meta group
    // (its group length element is 12 bytes, then the group).
    let start = 128 + 4 + 12 + meta.information_group_length as usize;
    let dataset = bytes
        .get(start..)
        .filter(|d| !d.is_empty())
        .ok_or("no data set after the file meta group")?
        .to_vec();
    Ok(Outgoing {
        path: path.to_path_buf(),
        class_uid: trim(meta.media_storage_sop_class_uid()),
        instance_uid: trim(meta.media_storage_sop_instance_uid()),
        ts: trim(meta.transfer_syntax()),
        dataset,
    })
}

/// Move a file the PACS will never take to `outbox/refused/`, with the reason beside it.
fn refuse(outbox: &Path, path: &Path, reason: &str) {
    let dir = outbox.join("refused");
    let name = path.file_name().unwrap_or_default();
    let moved = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::write(
                dir.join(format!("{}.reason.txt", name.to_string_lossy())),
                format!("{reason}\n"),
            )
        })
        .and_then(|()| std::fs::rename(path, dir.join(name)))
        .and_then(|()| std::fs::File::open(outbox)?.sync_all());
    match moved {
        Ok(()) => log::error!(
            "DICOM: {} refused for good ({reason}); moved to {}",
            path.display(),
            dir.display()
        ),
        Err(e) => log::error!(
            "DICOM: {} refused ({reason}) and could not be set aside: {e}",
            path.display()
        ),
    }
}

fn delivered(path: &Path, outbox: &Path) {
    if let Err(e) = std::fs::remove_file(path).and_then(|()| std::fs::File::open(outbox)?.sync_all()) {
        log::error!(
            "DICOM: {} was sent but could not be removed from the outbox: {e}",
            path.display()
        );
    }
}

fn send_batch(cfg: &SendTo, outbox: &Path, files: &[PathBuf]) -> Result<(), SendError> {
    let mut items = Vec::new();
    for f in files {
        match read_outgoing(f) {
            Ok(o) => items.push(o),
            Err(why) => refuse(outbox, f, &why),
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(cfg.calling_ae.clone())
        .connection_timeout(NETWORK_TIMEOUT)
        .read_timeout(NETWORK_TIMEOUT)
        .write_timeout(NETWORK_TIMEOUT);
    let mut proposed: Vec<(String, String)> = Vec::new();
    for o in &items {
        let pair = (o.class_uid.clone(), o.ts.clone());
        if !proposed.contains(&pair) {
            options = options.with_presentation_context(pair.0.clone(), vec![pair.1.clone()]);
            proposed.push(pair);
        }
    }
    let mut assoc = options
        .establish_with(&cfg.address)
        .map_err(|e| SendError::Transient(format!("no association: {e}")))?;
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
        .collect();
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    for (k, o) in items.iter().enumerate() {
        let Some(pc) = contexts
            .iter()
            .find(|(_, a, t)| trim(a) == o.class_uid && trim(t) == o.ts)
            .map(|(id, _, _)| *id)
        else {
            refuse(
                outbox,
                &o.path,
                &format!("the PACS did not accept SOP class {} in {}", o.class_uid, o.ts),
            );
            continue;
        };
        let status = match store(&mut assoc, pc, k as u16 + 1, o) {
            Ok(s) => s,
            Err(why) => {
                let _ = assoc.abort();
                return Err(SendError::Transient(why));
            }
        };
        match status {
            0x0000 | 0xB000 | 0xB006 | 0xB007 => {
                log::info!(
                    "DICOM: sent {} to {} (status {status:#06x})",
                    o.instance_uid,
                    cfg.address
                );
                delivered(&o.path, outbox);
            }
            s if s & 0xFF00 == 0xA700 => {
                let _ = assoc.release();
                return Err(SendError::Transient(format!(
                    "the PACS is out of resources (status {s:#06x})"
                )));
            }
            s => refuse(outbox, &o.path, &format!("the PACS answered status {s:#06x}")),
        }
    }
    let _ = assoc.release();
    Ok(())
}

/// One C-STORE: the request, the data set, and the status of the response.
fn store(
    assoc: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    pc: u8,
    message_id: u16,
    o: &Outgoing,
) -> Result<u16, String> {
    // command_from_element_iter adds CommandGroupLength (0000,0000), which peers require.
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(o.class_uid.as_str()),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x0001u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0000u16)),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(o.instance_uid.as_str()),
        ),
    ]);
    let mut command = Vec::new();
    cmd.write_dataset_with_ts(&mut command, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("command set: {e}"))?;
    assoc
        .send(&crate::dicom_net::dimse::command_pdu(pc, command))
        .map_err(|e| format!("sending the request: {e}"))?;
    {
        let mut w = assoc.send_pdata(pc);
        w.write_all(&o.dataset)
            .map_err(|e| format!("sending the data set: {e}"))?;
        w.finish().map_err(|e| format!("sending the data set: {e}"))?;
    }
    let mut rsp = Vec::new();
    loop {
        match assoc.receive().map_err(|e| format!("waiting for the response: {e}"))? {
            Pdu::PData { data } => {
                let mut last = false;
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        if rsp.len() + v.data.len() > crate::dicom_net::dimse::MAX_COMMAND_BYTES {
                            return Err(format!(
                                "C-STORE response longer than {} bytes",
                                crate::dicom_net::dimse::MAX_COMMAND_BYTES
                            ));
                        }
                        rsp.extend_from_slice(&v.data);
                        last |= v.is_last;
                    }
                }
                if last {
                    break;
                }
            }
            other => return Err(format!("expected a C-STORE response, got {other:?}")),
        }
    }
    // The PACS is a network peer too: its lengths are checked before dicom-rs allocates.
    crate::ingest::dicom::check_implicit_dataset(&rsp).map_err(|e| format!("unreadable response: {e}"))?;
    let obj = InMemDicomObject::read_dataset_with_ts(&rsp[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("unreadable response: {e}"))?;
    obj.element(tags::STATUS)
        .map_err(|e| format!("response without status: {e}"))?
        .to_int::<u16>()
        .map_err(|e| format!("response status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_interrupted_inside_enqueue_is_swept_at_start_and_queued_files_are_kept() {
        let t = tempfile::tempdir().unwrap();
        let outbox = t.path().join("outbox");
        std::fs::create_dir_all(&outbox).unwrap();
        let result = t.path().join("a.sr.dcm");
        std::fs::write(&result, b"sr").unwrap();
        let queued = enqueue(&outbox, &result).unwrap();
        let stale = outbox.join(".00000000000000000001-b.sr.dcm.part");
        std::fs::write(&stale, b"half a co").unwrap();
        assert_eq!(pending(&outbox), [queued.clone()], "a temporary is never sent");
        // No PACS listens on port 1: the thread only backs off.
        let cfg = SendTo {
            address: "PACS@127.0.0.1:1".into(),
            calling_ae: "CTSENTINEL".into(),
        };
        let sender = Sender::start(cfg, outbox.clone()).unwrap();
        assert!(!stale.exists(), "the interrupted copy is removed");
        drop(sender);
        // The queued file is not swept: still queued, or (it is not DICOM) set aside as refused.
        let refused = outbox.join("refused").join(queued.file_name().unwrap());
        assert!(queued.exists() || refused.exists(), "a queued file is never lost");
    }

    #[test]
    fn a_clock_stepped_back_never_queues_a_new_file_before_an_older_one_nor_over_it() {
        let t = tempfile::tempdir().unwrap();
        let outbox = t.path().join("outbox");
        std::fs::create_dir_all(&outbox).unwrap();
        // Queued while the clock read the year 2100 (a board without a clock battery whose
        // saved time was wrong), before NTP stepped it back to now.
        let year_2100_us: u128 = 4_102_444_800_000_000;
        let older = outbox.join(format!("{year_2100_us:020}-a.sr.dcm"));
        std::fs::write(&older, b"first").unwrap();
        let result = t.path().join("a.sr.dcm");
        std::fs::write(&result, b"second").unwrap();
        let first = enqueue(&outbox, &result).unwrap();
        let second = enqueue(&outbox, &result).unwrap();
        assert_eq!(pending(&outbox), [older.clone(), first.clone(), second.clone()]);
        assert_eq!(std::fs::read(&older).unwrap(), b"first", "not overwritten");
        assert_eq!(stamp_of(&first), Some(year_2100_us + 1));
    }
}
