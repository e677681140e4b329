//! DICOM C-STORE receiver (issue 14, step 3): the scanner pushes a series to the box.
//!
//! Why it is built this way: the service already knows how to turn a folder that stops
//! changing into exactly one result (stability, journal, snapshots, atomic results). So the
//! receiver only has to put every received instance, durably and atomically, into a folder
//! that the service watches like any drop folder: `<state>/received/<patient>/<series>/`.
//! A series is processed once no instance has arrived for `stability_s`; a late instance
//! changes the folder and the series is processed again, its result replaced atomically.
//!
//! Promises, each tested in `tests/dicom_receiver.rs` with a real DICOM client:
//! - only the configured called AE title and calling AE titles (`allowed_callers`) get an
//!   association; any other is rejected (A-ASSOCIATE-RJ) and logged;
//! - an instance is acknowledged (status 0x0000) only after it is on disk for good: written
//!   under a temporary name, fsynced, renamed, and the folder fsynced. A connection cut
//!   mid-instance leaves nothing (no temporary is left behind either), so a kill of the
//!   service during a push loses no acknowledged instance and keeps no half of one;
//! - bounded: at most `max_associations` at once (more are refused at once), instances up to
//!   `max_instance_mb`, PDUs up to 16 KiB (dicom-ul's strict mode), `idle_timeout_s` without a
//!   PDU ends the association, and no association is accepted while the state disk has less
//!   than `min_free_mb`;
//! - names come from UIDs and the PatientID through `layout::safe_name`: nothing received can
//!   name a path outside `<state>/received`;
//! - an instance whose data set cannot be read (or is not CT Image Storage) is answered with
//!   an error status (0xC000 / 0xA900) and not stored.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use dicom_ul::{Pdu, ServerAssociationOptions};

use super::config::DicomReceive;
use super::layout::safe_name;
use super::run::{FreeSpace, StatVfs};
use crate::ingest::dicom as dcm;

const VERIFICATION: &str = "1.2.840.10008.1.1";
/// What a scanner may send us, stored as received (ingest decodes it later).
const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];
const MAX_PDU: u32 = 16 * 1024;
pub(crate) const MAX_COMMAND_BYTES: usize = 64 * 1024;

const STATUS_SUCCESS: u16 = 0x0000;
const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;

/// The running listener; stops (and joins its threads) when dropped.
pub struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listen on `cfg.listen` and store into `inbox` (created if missing).
    pub fn start(cfg: &DicomReceive, inbox: &Path, min_free_bytes: u64) -> std::io::Result<Receiver> {
        std::fs::create_dir_all(inbox)?;
        sweep_temporaries(inbox);
        let listener = TcpListener::bind(&cfg.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context {
            cfg: cfg.clone(),
            inbox: inbox.to_path_buf(),
            min_free_bytes,
            active: AtomicUsize::new(0),
        });
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dicom-listener".into())
            .spawn(move || accept_loop(listener, ctx, s))?;
        log::info!(
            "DICOM receiver listening on {addr} as AE {:?}, accepting calls from {:?}",
            cfg.ae_title,
            cfg.allowed_callers
        );
        Ok(Receiver {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (port 0 in the config picks a free one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Context {
    cfg: DicomReceive,
    inbox: PathBuf,
    min_free_bytes: u64,
    active: AtomicUsize,
}

fn accept_loop(listener: TcpListener, ctx: Arc<Context>, stop: Arc<AtomicBool>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        workers.retain(|w| !w.is_finished());
        match listener.accept() {
            Ok((stream, peer)) => {
                if ctx.active.load(Ordering::SeqCst) >= ctx.cfg.max_associations {
                    log::warn!(
                        "DICOM: {peer}: refused, {} associations already open (max_associations)",
                        ctx.cfg.max_associations
                    );
                    drop(stream);
                    continue;
                }
                match StatVfs.free_bytes(&ctx.inbox) {
                    Ok(free) if free < ctx.min_free_bytes => {
                        log::error!(
                            "DICOM: {peer}: refused, only {} MiB free on the state disk (min_free_mb {})",
                            free >> 20,
                            ctx.min_free_bytes >> 20
                        );
                        drop(stream);
                        continue;
                    }
                    _ => {}
                }
                ctx.active.fetch_add(1, Ordering::SeqCst);
                let c = ctx.clone();
                let st = stop.clone();
                let spawned = std::thread::Builder::new().name("dicom-assoc".into()).spawn(move || {
                    serve(stream, peer, &c, &st);
                    c.active.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => {
                        ctx.active.fetch_sub(1, Ordering::SeqCst);
                        log::error!("DICOM: {peer}: cannot start a thread: {e}");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                log::warn!("DICOM: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Calling and called AE titles must both be the configured ones.
struct Allowed {
    callers: Vec<String>,
}

impl AccessControl for Allowed {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            log::warn!("DICOM: association for called AE {called_ae_title:?} refused (this is {this_ae_title:?})");
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.callers.iter().any(|c| c == calling_ae_title.trim()) {
            log::warn!("DICOM: association from calling AE {calling_ae_title:?} refused (not in allowed_callers)");
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, ctx: &Context, stop: &AtomicBool) {
    let cfg = &ctx.cfg;
    let _ = stream.set_nodelay(true);
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Allowed {
            callers: cfg.allowed_callers.clone(),
        })
        .ae_title(cfg.ae_title.clone())
        .max_pdu_length(MAX_PDU)
        .strict(true)
        .read_timeout(cfg.idle_timeout)
        .write_timeout(cfg.idle_timeout)
        .with_abstract_syntax(dcm::CT_IMAGE_STORAGE)
        .with_abstract_syntax(VERIFICATION);
    for ts in TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*ts);
    }
    let mut assoc = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            log::warn!("DICOM: {peer}: no association: {e}");
            return;
        }
    };
    let caller = dicom_ul::association::Association::peer_ae_title(&assoc).to_string();
    log::info!("DICOM: association from {caller} ({peer})");
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .map(|pc| (pc.id, pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
        .collect();
    let mut command: Vec<u8> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut pending: Option<Request> = None;
    let mut stored = 0usize;
    let max_instance = cfg.max_instance_bytes as usize;
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = assoc.abort();
            log::info!("DICOM: {caller}: aborted for shutdown after {stored} instances");
            return;
        }
        let pdu = match assoc.receive() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("DICOM: {caller}: association ended: {e} ({stored} instances stored; a partial instance is discarded)");
                return;
            }
        };
        match pdu {
            Pdu::PData { data: values } => {
                for v in values {
                    match v.value_type {
                        PDataValueType::Command => {
                            if command.len() + v.data.len() > MAX_COMMAND_BYTES {
                                log::warn!("DICOM: {caller}: command set too large; aborting");
                                let _ = assoc.abort();
                                return;
                            }
                            command.extend_from_slice(&v.data);
                            if !v.is_last {
                                continue;
                            }
                            let parsed = parse_command(&command);
                            command.clear();
                            match parsed {
                                Ok(Command::Echo { message_id }) => {
                                    let rsp = response(0x8030, message_id, VERIFICATION, None, STATUS_SUCCESS);
                                    if send(&mut assoc, v.presentation_context_id, rsp).is_err() {
                                        return;
                                    }
                                }
                                Ok(Command::Store(r)) => {
                                    data.clear();
                                    pending = Some(r);
                                }
                                Err(why) => {
                                    log::warn!("DICOM: {caller}: unreadable command ({why}); aborting");
                                    let _ = assoc.abort();
                                    return;
                                }
                            }
                        }
                        PDataValueType::Data => {
                            let Some(req) = pending.as_ref() else {
                                log::warn!("DICOM: {caller}: data without a C-STORE request; aborting");
                                let _ = assoc.abort();
                                return;
                            };
                            if data.len() + v.data.len() > max_instance {
                                log::warn!(
                                    "DICOM: {caller}: instance {} larger than max_instance_mb; aborting",
                                    req.instance_uid
                                );
                                let _ = assoc.abort();
                                return;
                            }
                            data.extend_from_slice(&v.data);
                            if !v.is_last {
                                continue;
                            }
                            let req = pending.take().expect("checked above");
                            let ts = contexts
                                .iter()
                                .find(|(id, _, _)| *id == v.presentation_context_id)
                                .map(|(_, _, ts)| ts.clone());
                            let status = match ts {
                                None => STATUS_CANNOT_UNDERSTAND,
                                Some(_) if req.class_uid != dcm::CT_IMAGE_STORAGE => STATUS_SOP_CLASS_NOT_SUPPORTED,
                                Some(ts) => match store(&ctx.inbox, &req, &ts, &data) {
                                    Ok(path) => {
                                        stored += 1;
                                        log::debug!("DICOM: {caller}: stored {}", path.display());
                                        STATUS_SUCCESS
                                    }
                                    Err(StoreError::Unreadable(why)) => {
                                        log::warn!("DICOM: {caller}: instance {} not stored: {why}", req.instance_uid);
                                        STATUS_CANNOT_UNDERSTAND
                                    }
                                    Err(StoreError::Io(e)) => {
                                        log::error!("DICOM: {caller}: instance {} not stored: {e}", req.instance_uid);
                                        STATUS_OUT_OF_RESOURCES
                                    }
                                },
                            };
                            data.clear();
                            let rsp = response(0x8001, req.message_id, &req.class_uid, Some(&req.instance_uid), status);
                            if send(&mut assoc, v.presentation_context_id, rsp).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                log::info!("DICOM: {caller}: released after {stored} instances");
                return;
            }
            Pdu::AbortRQ { .. } => {
                log::warn!("DICOM: {caller}: aborted by the peer after {stored} instances");
                return;
            }
            other => {
                log::warn!("DICOM: {caller}: unexpected {}; aborting", other.short_description());
                let _ = assoc.abort();
                return;
            }
        }
    }
}

struct Request {
    message_id: u16,
    class_uid: String,
    instance_uid: String,
}

enum Command {
    Echo { message_id: u16 },
    Store(Request),
}

fn parse_command(bytes: &[u8]) -> Result<Command, String> {
    // dicom-rs allocates from declared lengths: a 2 GB one in a 40 KB command set was found by
    // the dicom_peer fuzz target (fuzz/regressions/dicom_peer/).
    dcm::check_implicit_dataset(bytes).map_err(|e| format!("command set: {e}"))?;
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|e| e.to_string())?;
    let int = |tag| -> Result<u16, String> {
        obj.element(tag)
            .map_err(|e| e.to_string())?
            .to_int::<u16>()
            .map_err(|e| e.to_string())
    };
    let text = |tag| -> String {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    let message_id = int(tags::MESSAGE_ID)?;
    match int(tags::COMMAND_FIELD)? {
        0x0030 => Ok(Command::Echo { message_id }),
        0x0001 => Ok(Command::Store(Request {
            message_id,
            class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
            instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
        })),
        other => Err(format!("command field {other:#06x} is not C-STORE or C-ECHO")),
    }
}

fn response(field: u16, message_id: u16, class_uid: &str, instance_uid: Option<&str>, status: u16) -> Vec<u8> {
    let mut elements = vec![
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class_uid)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(message_id),
        ),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0101u16)),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
    ];
    if let Some(i) = instance_uid {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(i),
        ));
    }
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    // Writing a small command set into memory cannot fail but for a bug: answer with nothing.
    if let Err(e) = obj.write_dataset_with_ts(&mut out, &ts) {
        log::error!("DICOM: cannot encode a response: {e}");
    }
    out
}

/// One P-DATA PDU carrying a whole command set on presentation context `pc` (both directions:
/// this receiver's answers and the sender's requests).
pub(super) fn command_pdu(pc: u8, command: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    }
}

fn send(assoc: &mut dicom_ul::ServerAssociation<TcpStream>, pc: u8, command: Vec<u8>) -> Result<(), ()> {
    assoc
        .send(&command_pdu(pc, command))
        .map_err(|e| log::warn!("DICOM: cannot answer: {e}"))
}

enum StoreError {
    Unreadable(String),
    Io(std::io::Error),
}

/// Durably store one instance: `<inbox>/<patient>/<series>/<instance>.dcm`.
fn store(inbox: &Path, req: &Request, ts: &str, dataset: &[u8]) -> Result<PathBuf, StoreError> {
    let (file, h) = instance_file(req, ts, dataset)?;
    let patient = if h.patient_id.is_empty() {
        "unknown-patient".to_string()
    } else {
        h.patient_id.clone()
    };
    let dir = inbox
        .join(safe_name(std::ffi::OsStr::new(&patient)))
        .join(safe_name(std::ffi::OsStr::new(&h.series_uid)));
    std::fs::create_dir_all(&dir).map_err(StoreError::Io)?;
    let name = format!("{}.dcm", safe_name(std::ffi::OsStr::new(&req.instance_uid)));
    let dest = dir.join(&name);
    // A temporary name the service never reads as a slice (dot-file), then rename.
    let tmp = dir.join(format!(".{name}.part"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&file)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &dest)?;
        std::fs::File::open(&dir)?.sync_all()?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::Io(e)
    })?;
    Ok(dest)
}

/// The Part 10 file of a received instance (file meta from the request, then the dataset as
/// received) and its header, checked the way ingest checks a file (bounds pre-scan included)
/// before anything is kept. The fuzz targets' entry point for received datasets.
fn instance_file(req: &Request, ts: &str, dataset: &[u8]) -> Result<(Vec<u8>, dcm::Header), StoreError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(req.class_uid.as_str())
        .media_storage_sop_instance_uid(req.instance_uid.as_str())
        .transfer_syntax(ts)
        .build()
        .map_err(|e| StoreError::Unreadable(format!("file meta: {e}")))?;
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    meta.write(&mut file)
        .map_err(|e| StoreError::Unreadable(format!("file meta: {e}")))?;
    file.extend_from_slice(dataset);
    // The same checks ingest applies (bounds pre-scan included) before anything is kept.
    let h = dcm::header_of(&file).map_err(|e| StoreError::Unreadable(e.to_string()))?;
    if h.series_uid.is_empty() {
        return Err(StoreError::Unreadable("no SeriesInstanceUID".into()));
    }
    Ok((file, h))
}

/// Temporaries of instances that were never acknowledged (a kill mid-write).
fn sweep_temporaries(inbox: &Path) {
    let Ok(patients) = std::fs::read_dir(inbox) else { return };
    for p in patients.flatten() {
        let Ok(series) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for s in series.flatten() {
            let Ok(files) = std::fs::read_dir(s.path()) else {
                continue;
            };
            for f in files.flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') && n.ends_with(".part") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

/// Fuzz harness of what the receiver reads from a peer, after association: a stream of PDUs
/// (dicom-ul's reader with the receiver's maximum length, strict), their command sets
/// (`parse_command`) and the datasets they carry assembled into instances (`instance_file`),
/// with the receiver's bounds. Nothing is written. Returns how many instances were accepted.
#[doc(hidden)]
pub fn fuzz_received(mut bytes: &[u8], max_instance: usize) -> usize {
    let mut command = Vec::new();
    let mut data = Vec::new();
    let mut pending: Option<Request> = None;
    let mut accepted = 0;
    while let Ok(Some(pdu)) = dicom_ul::pdu::read_pdu(&mut bytes, MAX_PDU, true) {
        let Pdu::PData { data: values } = pdu else { continue };
        for v in values {
            match v.value_type {
                PDataValueType::Command => {
                    if command.len() + v.data.len() > MAX_COMMAND_BYTES {
                        return accepted;
                    }
                    command.extend_from_slice(&v.data);
                    if v.is_last {
                        match parse_command(&command) {
                            Ok(Command::Store(r)) => pending = Some(r),
                            Ok(Command::Echo { .. }) => {}
                            Err(_) => return accepted,
                        }
                        command.clear();
                        data.clear();
                    }
                }
                PDataValueType::Data => {
                    let Some(req) = pending.as_ref() else { return accepted };
                    if data.len() + v.data.len() > max_instance {
                        return accepted;
                    }
                    data.extend_from_slice(&v.data);
                    if v.is_last {
                        for ts in TRANSFER_SYNTAXES {
                            accepted += usize::from(instance_file(req, ts, &data).is_ok());
                        }
                        pending = None;
                        data.clear();
                    }
                }
            }
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_set_declaring_more_than_it_holds_is_refused_before_dicom_rs_allocates() {
        // (0000,0002) Affected SOP Class UID declaring 2 GB in a 16-byte command set.
        let mut cmd = vec![0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x7B];
        cmd.extend_from_slice(b"1.2.840\0");
        let Err(e) = parse_command(&cmd) else {
            panic!("accepted")
        };
        assert!(
            e.contains("command set") && e.contains("declares 2063597568 bytes"),
            "{e}"
        );
        // The fuzz finding as the peer sends it: one P-DATA-TF, refused, nothing accepted.
        let pdu = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/dicom_peer/command-set-declares-2-gb"
        ))
        .unwrap();
        assert_eq!(fuzz_received(&pdu, 1 << 20), 0);
    }
}
