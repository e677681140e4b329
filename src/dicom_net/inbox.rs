//! Where received instances go: `<inbox>/<patient>~<study>/<series>_<instance>.dcm`, durably,
//! once (`<patient>` the PatientID made safe, `<study>` and `<series>` short hashes of the
//! Study and Series Instance UIDs).
//!
//! Why this shape: the service already turns a folder that stops changing into exactly one
//! result, so the receiver only has to make every acknowledged instance a durable file in a
//! folder the service watches, and to say when a folder is known to be incomplete. One folder
//! per patient and study, holding all its series, makes the service judge the patient as
//! `scan` does: the series are grouped by SeriesInstanceUID inside the folder, each keeps its
//! own result, and the verdict pools them (an aborted push of any of them holds the verdict).
//!
//! Promises (tests/dicom_receiver.rs drives each with a real client; the crash test drops
//! unsynced writes):
//! - **durable before acknowledged**: an instance is written under a temporary name unique to
//!   its association, fsynced, published with `link` (never replacing a file), and the folder
//!   fsynced; every folder it created is fsynced into its parent up to the inbox. Only then does
//!   [`Inbox::store`] return success;
//! - **identified**: a request without an Affected SOP Instance UID, or whose data set's SOP
//!   Instance UID or SOP Class UID differs from the request's, is refused and nothing is stored;
//! - **idempotent**: the same instance again is a success with nothing written; different bytes
//!   under a UID already held keep the first copy, with a warning status and a log line;
//! - **incomplete until released**: the first instance an association stores of a series
//!   first creates a push marker in the study folder ([`PUSH_MARKER_PREFIX`], a dot-file the service
//!   reads as "copy in progress"). A-RELEASE removes it; an abort, a lost connection or a kill
//!   leaves it, so the study waits for the scanner to send it again (and the service gives
//!   `undetermined` after `resend_wait_s`). A later association that ends with A-RELEASE
//!   removes the markers of the series it sent (left by associations no longer open), never
//!   another series' (one marker per series and association);
//! - **one series, one folder**: a series is filed under the folder of its first instance,
//!   whatever PatientID or StudyInstanceUID later instances carry (ingest then names the
//!   conflict), also across restarts (the series hash leads every file name);
//! - **storage commitment**: an instance is reported committed only when its file is held
//!   ([`Inbox::commitment`]), so a scanner may delete its copy on our word. A commitment is
//!   also the scanner saying it has sent what it meant to send: the study folder gets a commit
//!   marker ([`COMMIT_MARKER_PREFIX`]`<n>`, listing the `n` instance files committed so far);
//!   when `n` equals the instances in the folder and no push is open, the service classifies
//!   the study at once instead of waiting for the folder to stay unchanged (`stability_s`);
//! - **bounded**: the free space of the inbox's disk is checked before each instance (Out of
//!   Resources below the floor); names come from [`crate::names::safe_name`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dicom_object::FileMetaTableBuilder;

use super::dimse::status;
use super::scp::{StoreRequest, CT_IMAGE_STORAGE};
use crate::fsys::{Fs, RealFs};
use crate::ingest::dicom as dcm;
use crate::names::safe_name;

/// Push markers are named `<prefix><association id>`.
pub const PUSH_MARKER_PREFIX: &str = ".ctsentinel-push-";

/// Commit markers are named `<prefix><n>`, `n` the instance files of the folder committed so
/// far (the file lists them, one name a line). Written only after every instance it lists is
/// held; a larger union replaces a smaller marker (the new one first).
pub const COMMIT_MARKER_PREFIX: &str = ".ctsentinel-committed-";

/// The number of committed instances a commit marker's name states.
pub fn commit_marker_count(name: &str) -> Option<usize> {
    name.strip_prefix(COMMIT_MARKER_PREFIX)?.parse().ok()
}

/// Free bytes under a path (injected so the floor can be tested).
pub type FreeBytes = dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync;

/// The inbox folder, shared by every association; on the real file system unless a test gives
/// it a simulated one (`fsys::sim::SimFs`).
pub struct Inbox<F: Fs = RealFs> {
    fs: F,
    root: PathBuf,
    min_free_bytes: u64,
    free: Box<FreeBytes>,
    /// Associations open now (their markers are not removed by another's release).
    open: Mutex<HashSet<String>>,
    /// Series hash (see [`series_tag`]) → its folder (filled from the file names at start).
    homes: Mutex<HashMap<String, PathBuf>>,
    /// Instance file name (`<instance>.dcm`, without the series tag) → its path.
    held: Mutex<HashMap<String, PathBuf>>,
}

/// What one association touched.
#[derive(Debug, Default)]
pub struct Session {
    pub id: String,
    /// (study folder, series tag) of every series this association stored into; each has its
    /// push marker `<prefix><series tag>-<association id>` in the folder.
    pub touched: Vec<(PathBuf, String)>,
    pub stored: usize,
}

/// The outcome of one store: the DIMSE status and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub note: String,
}

impl Inbox<RealFs> {
    /// Open (create) the inbox on the real file system.
    pub fn open(root: &Path, min_free_bytes: u64, free: Box<FreeBytes>) -> std::io::Result<Inbox> {
        Inbox::open_on(RealFs, root, min_free_bytes, free)
    }
}

impl<F: Fs> Inbox<F> {
    /// Open (create) the inbox on `fs`, sweep temporaries no association owns (a kill
    /// mid-write) and learn where the series already received live.
    pub fn open_on(fs: F, root: &Path, min_free_bytes: u64, free: Box<FreeBytes>) -> std::io::Result<Inbox<F>> {
        fs.create_dir_all(root)?;
        let (mut homes, mut held) = (HashMap::new(), HashMap::new());
        // One listing per study folder, no file read: start-up cost follows what is kept (see
        // the service's pruning), not what was ever received.
        for study in fs.list(root)? {
            let study = root.join(study);
            let Ok(files) = fs.list(&study) else {
                continue;
            };
            for n in files {
                if n.starts_with('.') && n.ends_with(".part") {
                    let _ = fs.remove_file(&study.join(&n));
                } else if let Some((tag, instance)) = n.split_once('_').filter(|_| n.ends_with(".dcm")) {
                    homes.entry(tag.to_string()).or_insert_with(|| study.clone());
                    held.insert(instance.to_string(), study.join(&n));
                }
            }
        }
        Ok(Inbox {
            fs,
            root: root.to_path_buf(),
            min_free_bytes,
            free,
            open: Mutex::new(HashSet::new()),
            homes: Mutex::new(homes),
            held: Mutex::new(held),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Below the free-space floor now (an association is then refused).
    pub fn disk_low(&self) -> bool {
        (self.free)(&self.root).map_or(true, |f| f < self.min_free_bytes)
    }

    /// A new association's session (its id is unique in this process and across restarts).
    pub fn begin(&self, peer: &str) -> Session {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = crate::clock::unix_nanos();
        let id = format!("{}-{t:x}-{n}", std::process::id());
        lock(&self.open).insert(id.clone());
        log::debug!("DICOM: session {id} for {peer}");
        Session {
            id,
            ..Session::default()
        }
    }

    /// Store one instance durably; the status to answer with.
    pub fn store(&self, session: &mut Session, req: &StoreRequest) -> Stored {
        let fail = |status, note: String| Stored { status, note };
        let cmd = &req.command;
        if cmd.instance_uid.is_empty() {
            return fail(
                status::NO_INSTANCE_UID,
                "the C-STORE request has no Affected SOP Instance UID: refused, nothing stored".into(),
            );
        }
        if cmd.class_uid != CT_IMAGE_STORAGE || req.abstract_syntax != CT_IMAGE_STORAGE {
            return fail(
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {} is not CT Image Storage", cmd.class_uid),
            );
        }
        match (self.free)(&self.root) {
            Ok(f) if f >= self.min_free_bytes => {}
            Ok(f) => {
                return fail(
                    status::OUT_OF_RESOURCES,
                    format!("only {} MiB free (min_free_mb {})", f >> 20, self.min_free_bytes >> 20),
                )
            }
            Err(e) => return fail(status::OUT_OF_RESOURCES, format!("free space unknown: {e}")),
        }
        let (file, h) = match instance_file(req) {
            Ok(x) => x,
            Err(why) => return fail(status::CANNOT_UNDERSTAND, why),
        };
        if h.sop_instance_uid != cmd.instance_uid {
            return fail(
                status::INSTANCE_UID_MISMATCH,
                format!(
                    "the data set's SOP Instance UID {:?} is not the request's {:?}: refused, nothing stored",
                    h.sop_instance_uid, cmd.instance_uid
                ),
            );
        }
        if h.sop_class != cmd.class_uid {
            return fail(
                status::DATASET_DOES_NOT_MATCH_SOP_CLASS,
                format!(
                    "the data set's SOP class {} is not the request's {}",
                    h.sop_class, cmd.class_uid
                ),
            );
        }
        match self.write(session, &h, &cmd.instance_uid, &file) {
            Ok(s) => s,
            Err(e) => fail(status::OUT_OF_RESOURCES, format!("not stored: {e}")),
        }
    }

    fn write(&self, session: &mut Session, h: &dcm::Header, uid: &str, file: &[u8]) -> std::io::Result<Stored> {
        let tag = series_tag(&h.series_uid);
        let dir = {
            let mut homes = lock(&self.homes);
            homes
                .entry(tag.clone())
                .or_insert_with(|| {
                    let patient = if h.patient_id.is_empty() {
                        "unknown-patient"
                    } else {
                        h.patient_id.as_str()
                    };
                    let study = crate::classify::sha256_hex(h.study_uid.as_bytes());
                    self.root
                        .join(format!("{}~{}", safe_name(patient.as_ref()), &study[..12]))
                })
                .clone()
        };
        self.create_dirs_durably(&dir)?;
        let touched = (dir.clone(), tag.clone());
        if !session.touched.contains(&touched) {
            // The marker first: from now on the folder reads as incomplete until A-RELEASE.
            let marker = dir.join(format!("{PUSH_MARKER_PREFIX}{tag}-{}", session.id));
            let text = format!("association {} storing since this file's mtime\n", session.id);
            self.fs.write_synced(&marker, text.as_bytes())?;
            self.fs.sync_dir(&dir)?;
            session.touched.push(touched);
        }
        let instance = format!("{}.dcm", safe_name(uid.as_ref()));
        let dest = dir.join(format!("{tag}_{instance}"));
        let tmp = dir.join(format!(".{tag}_{instance}.{}.part", session.id));
        let publish = || -> std::io::Result<bool> {
            self.fs.write_synced(&tmp, file)?;
            // `link` never replaces: of two associations sending one instance, the first wins.
            let fresh = match self.fs.hard_link(&tmp, &dest) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            };
            self.fs.remove_file(&tmp)?;
            self.fs.sync_dir(&dir)?;
            Ok(fresh)
        };
        let fresh = publish().inspect_err(|_| {
            let _ = self.fs.remove_file(&tmp);
        })?;
        session.stored += 1;
        lock(&self.held).insert(instance, dest.clone());
        if fresh {
            return Ok(Stored {
                status: status::SUCCESS,
                note: format!("stored {}", dest.display()),
            });
        }
        let held = self.fs.read(&dest)?;
        Ok(if held == file {
            Stored {
                status: status::SUCCESS,
                note: format!("instance {uid} received again, same bytes: nothing written"),
            }
        } else {
            log::warn!("DICOM: instance {uid} received again with different content; the first copy is kept");
            Stored {
                status: status::DUPLICATE_DIFFERENT,
                note: format!("instance {uid} already held with different content: the first copy is kept"),
            }
        })
    }

    /// Storage Commitment: of the instances a peer asks about, those held durably here
    /// (committed) and the others (failed), each as (SOP class, SOP instance). An instance is
    /// held when its file is in the folder of some series received since start or found at
    /// start; only CT Image Storage is ever held.
    ///
    /// Each study folder holding committed instances then gets its commit marker (see
    /// [`COMMIT_MARKER_PREFIX`]); a marker that cannot be written only costs the shortcut (the
    /// study is classified once it stays unchanged), so that is logged, not reported.
    pub fn commitment(&self, req: &super::dimse::CommitmentRequest) -> (Vec<(String, String)>, Vec<(String, String)>) {
        let mut folders: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        let (committed, failed) = {
            let held = lock(&self.held);
            req.instances.iter().cloned().partition(|(class, uid)| {
                if class != CT_IMAGE_STORAGE || uid.is_empty() {
                    return false;
                }
                let Some(p) = held.get(&format!("{}.dcm", safe_name(uid.as_ref()))) else {
                    return false;
                };
                if !self.fs.is_file(p) {
                    return false;
                }
                if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
                    folders
                        .entry(dir.to_path_buf())
                        .or_default()
                        .insert(name.to_string_lossy().into_owned());
                }
                true
            })
        };
        for (dir, names) in folders {
            if let Err(e) = self.mark_committed(&dir, names) {
                log::error!(
                    "DICOM: {}: cannot write the commit marker ({e}); the study is classified once it stays unchanged",
                    dir.display()
                );
            }
        }
        (committed, failed)
    }

    /// Record that `names` (instance files of `dir`) are committed: the union with the folder's
    /// current marker, written (synced) before the smaller marker is removed.
    fn mark_committed(&self, dir: &Path, mut names: HashSet<String>) -> std::io::Result<()> {
        let old: Vec<String> = self
            .fs
            .list(dir)?
            .into_iter()
            .filter(|n| commit_marker_count(n).is_some())
            .collect();
        for m in &old {
            if let Ok(text) = self.fs.read(&dir.join(m)) {
                names.extend(String::from_utf8_lossy(&text).lines().map(str::to_string));
            }
        }
        let marker = format!("{COMMIT_MARKER_PREFIX}{}", names.len());
        if old.contains(&marker) {
            return Ok(());
        }
        let mut list: Vec<String> = names.into_iter().collect();
        list.sort();
        // Whole or absent: written under a temporary name (swept at start), then linked.
        let tmp = dir.join(format!(".{marker}.part"));
        self.fs
            .write_synced(&tmp, format!("{}\n", list.join("\n")).as_bytes())?;
        match self.fs.hard_link(&tmp, &dir.join(&marker)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        self.fs.remove_file(&tmp)?;
        self.fs.sync_dir(dir)?;
        for m in &old {
            self.fs.remove_file(&dir.join(m))?;
        }
        if !old.is_empty() {
            self.fs.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Create `dir` (below the root) and every missing folder between; each new folder's
    /// entry is fsynced into its parent, so a power cut cannot lose a folder holding
    /// acknowledged files.
    fn create_dirs_durably(&self, dir: &Path) -> std::io::Result<()> {
        let rel = dir
            .strip_prefix(&self.root)
            .map_err(|_| std::io::Error::other("inbox path outside the inbox"))?;
        let mut at = self.root.clone();
        for c in rel.components() {
            let parent = at.clone();
            at.push(c);
            match self.fs.create_dir(&at) {
                Ok(()) => self.fs.sync_dir(&parent)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The association ended; `released` when by A-RELEASE. A release removes the markers of
    /// the series it sent, its own and those of associations no longer open (a resend completes
    /// an aborted push of the same series); never the marker of another series, so an aborted
    /// series still holds its study when the next series of the study arrives whole. Any other
    /// end keeps its markers (the study waits for a resend).
    pub fn finish(&self, session: &Session, released: bool) {
        let mut open = lock(&self.open);
        open.remove(&session.id);
        if !released {
            for (d, _) in &session.touched {
                log::warn!(
                    "DICOM: {}: push not completed (no A-RELEASE); the series waits for the scanner to send it again",
                    d.display()
                );
            }
            return;
        }
        for (d, tag) in &session.touched {
            let Ok(entries) = self.fs.list(d) else { continue };
            let mut removed = false;
            let of_series = format!("{PUSH_MARKER_PREFIX}{tag}-");
            for n in entries {
                if let Some(id) = n.strip_prefix(&of_series) {
                    if !open.contains(id) && self.fs.remove_file(&d.join(&n)).is_ok() {
                        removed = true;
                    }
                }
            }
            if removed {
                if let Err(e) = self.fs.sync_dir(d) {
                    log::error!("DICOM: {}: cannot sync after removing push markers: {e}", d.display());
                }
            }
        }
    }
}

/// The short hash of a SeriesInstanceUID that leads its instances' file names.
pub fn series_tag(series_uid: &str) -> String {
    crate::classify::sha256_hex(series_uid.as_bytes())[..10].to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Part 10 file of a received instance (file meta from the request, then the data set as
/// received) and its header, checked as ingest checks a file (bounds pre-scan included).
pub fn instance_file(req: &StoreRequest) -> Result<(Vec<u8>, dcm::Header), String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(req.command.class_uid.as_str())
        .media_storage_sop_instance_uid(req.command.instance_uid.as_str())
        .transfer_syntax(req.transfer_syntax.as_str())
        .build()
        .map_err(|e| format!("file meta: {e}"))?;
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    meta.write(&mut file).map_err(|e| format!("file meta: {e}"))?;
    file.extend_from_slice(&req.dataset);
    if file.len() as u64 > crate::ingest::MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, more than the {} a slice file may have",
            file.len(),
            crate::ingest::MAX_FILE_BYTES
        ));
    }
    let h = dcm::header_of(&file).map_err(|e| e.to_string())?;
    if h.series_uid.is_empty() {
        return Err("no SeriesInstanceUID".into());
    }
    Ok((file, h))
}
