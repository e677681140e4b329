//! The C-STORE receiver of `ctsentinel watch`, pushed to by real DICOM clients on 127.0.0.1
//! against the real binary: dicom-ul's SCU (which can abort, trickle and misbehave on purpose)
//! and dcmtk's `storescu` / `echoscu` (a third-party peer, as a scanner's would be).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::dicom_gen::{Slice, CT, EXPLICIT_LE};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

const SERIES: &str = "1.2.840.99.500";

struct Box {
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Box {
    fn new() -> Box {
        Box::with("")
    }

    /// A box whose `[dicom]` table has `extra` lines added.
    fn with(extra: &str) -> Box {
        Box::with_stability(2.0, extra)
    }

    /// A box whose series must stay unchanged `stability_s` before they are classified.
    fn with_stability(stability_s: f64, extra: &str) -> Box {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        let port = free_port();
        let cfg = format!(
            "board = \"generic-x86_64\"\ndrop = [\"{d}/drop\"]\nstate = \"{d}/state\"\nmodels = \"{m}\"\n\
             min_free_mb = 0\nstability_s = {stability_s}\npoll_interval_s = 0.5\ndisplay = \"none\"\n\n\
             [dicom]\nlisten = \"127.0.0.1:{port}\"\nae_title = \"CTSENTINEL\"\nallowed_callers = [\"CT_SCANNER\"]\n\
             max_instance_mb = 4\nidle_timeout_s = 5\npdu_timeout_s = 3\nresend_wait_s = 6\n{extra}\n",
            d = dir.path().display(),
            m = common::models().display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Box { dir, port }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("watch.log"))
            .unwrap();
        let child = common::ctsentinel()
            .args(["watch", "--config"])
            .arg(self.dir.path().join("config.toml"))
            .arg("--boards")
            .arg(common::repo().join("boards"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until("the receiver to listen", Duration::from_secs(120), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        child
    }

    fn received(&self) -> PathBuf {
        self.dir.path().join("state/received")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("watch.log")).unwrap_or_default()
    }

    fn results(&self) -> Vec<PathBuf> {
        common::files_under(&self.dir.path().join("state/results"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect()
    }

    fn connect(&self, calling: &str) -> Result<ClientAssociation<TcpStream>, dicom_ul::association::Error> {
        ClientAssociationOptions::new()
            .calling_ae_title(calling)
            .called_ae_title("CTSENTINEL")
            .with_presentation_context(CT, vec![EXPLICIT_LE])
            .max_pdu_length(16384)
            .establish(("127.0.0.1", self.port))
    }
}

use common::wait_until;

fn kill9(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn slices(n: i32) -> Vec<Slice> {
    (1..=n)
        .map(|i| Slice::ct(SERIES, -50.0 - 6.0 * f64::from(i), i))
        .collect()
}

/// The C-STORE-RQ command set and the data set (explicit VR LE, no file meta) of `s`.
fn request(s: &Slice, message_id: u16) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.dcm");
    s.write(&p);
    let obj = dicom_object::open_file(&p).unwrap();
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    (store_command(&s.instance_uid(), message_id), data)
}

/// A C-STORE-RQ command set naming `uid` as the Affected SOP Instance UID.
fn store_command(uid: &str, message_id: u16) -> Vec<u8> {
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x0001u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(uid)),
    ]);
    let mut c = Vec::new();
    cmd.write_dataset_with_ts(&mut c, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    c
}

fn pc_id(scu: &ClientAssociation<TcpStream>) -> u8 {
    scu.presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .expect("CT Image Storage accepted")
        .id
}

fn pdv(pc: u8, value_type: PDataValueType, is_last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last,
            data,
        }],
    }
}

/// C-STORE one slice; returns the response status.
fn store(scu: &mut ClientAssociation<TcpStream>, s: &Slice, message_id: u16) -> u16 {
    store_as(scu, s, message_id, &s.instance_uid())
}

fn stored_instances(b: &Box) -> Vec<PathBuf> {
    common::files_under(&b.received())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect()
}

#[test]
fn pushed_series_is_acknowledged_durably_and_gets_exactly_one_result() {
    let b = Box::new();
    let mut child = b.spawn();
    let mut scu = b.connect("CT_SCANNER").expect("the allowed caller gets an association");
    let all = slices(12);
    for (i, s) in all.iter().enumerate() {
        assert_eq!(store(&mut scu, s, i as u16 + 1), 0x0000, "slice {}", i + 1);
        // Acknowledged means on disk under its final name.
        assert_eq!(stored_instances(&b).len(), i + 1);
    }
    scu.release().unwrap();
    wait_until("the result of the pushed series", Duration::from_secs(120), || {
        b.results().len() == 1
    });
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&b.results()[0]).unwrap()).unwrap();
    assert_eq!(v["patient"], "PAT-1", "{v}");
    assert_eq!(v["series"][0]["id"], SERIES);
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 12);
    assert!(v["notice"].as_str().unwrap().contains("research use only"));
    // Beside the JSON, the same result as a DICOM SR in the source study, referencing all 12.
    let sr = dicom_object::open_file(b.results()[0].with_extension("sr.dcm")).expect("the SR beside the result");
    assert_eq!(sr.element(tags::MODALITY).unwrap().to_str().unwrap(), "SR");
    assert_eq!(sr.element(tags::PATIENT_ID).unwrap().to_str().unwrap(), "PAT-1");
    let ev = &sr
        .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let series = &ev.element(tags::REFERENCED_SERIES_SEQUENCE).unwrap().items().unwrap()[0];
    assert_eq!(
        series
            .element(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len(),
        12
    );
    // The same slices through `scan` give the same selection.
    let local = tempfile::tempdir().unwrap();
    for s in &all {
        s.write(&local.path().join(format!("{}.dcm", s.instance)));
    }
    let sel = ctsentinel::pipeline::select_folder(local.path()).unwrap();
    assert_eq!(v["selected_slices"].as_u64().unwrap() as usize, sel.series[0].selected);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.results().len(), 1, "exactly one result");
    kill9(&mut child);
}

#[test]
fn a_caller_not_in_allowed_callers_is_rejected_and_logged() {
    let b = Box::new();
    let mut child = b.spawn();
    assert!(b.connect("INTRUDER").is_err(), "an unknown calling AE must be rejected");
    let wrong_called = ClientAssociationOptions::new()
        .calling_ae_title("CT_SCANNER")
        .called_ae_title("SOMEONE_ELSE")
        .with_presentation_context(CT, vec![EXPLICIT_LE])
        .establish(("127.0.0.1", b.port));
    assert!(wrong_called.is_err(), "a wrong called AE must be rejected");
    wait_until("the refusal in the log", Duration::from_secs(10), || {
        b.log().contains("INTRUDER")
    });
    assert!(stored_instances(&b).is_empty());
    kill9(&mut child);
}

#[test]
fn a_connection_cut_mid_instance_leaves_nothing_half_written() {
    let b = Box::new();
    let mut child = b.spawn();
    let mut scu = b.connect("CT_SCANNER").unwrap();
    let s = &slices(1)[0];
    let pc = pc_id(&scu);
    let (cmd, data) = request(s, 1);
    scu.send(&pdv(pc, PDataValueType::Command, true, cmd)).unwrap();
    scu.send(&pdv(pc, PDataValueType::Data, false, data[..8000].to_vec()))
        .unwrap();
    // The scanner's cable is pulled: the socket closes without release or abort.
    drop(scu);
    wait_until("the receiver to notice", Duration::from_secs(20), || {
        b.log().contains("closed without A-RELEASE")
    });
    assert!(
        common::files_under(&b.received()).is_empty(),
        "{:?}",
        common::files_under(&b.received())
    );
    kill9(&mut child);
}

#[test]
fn kill_during_a_push_loses_no_acknowledged_instance() {
    let b = Box::new();
    let mut child = b.spawn();
    let all = slices(12);
    let mut scu = b.connect("CT_SCANNER").unwrap();
    for (i, s) in all[..6].iter().enumerate() {
        assert_eq!(store(&mut scu, s, i as u16 + 1), 0);
    }
    // kill -9 while the association is open and a seventh instance is half sent.
    let pc = pc_id(&scu);
    let (cmd, data) = request(&all[6], 7);
    scu.send(&pdv(pc, PDataValueType::Command, true, cmd)).unwrap();
    scu.send(&pdv(pc, PDataValueType::Data, false, data[..8000].to_vec()))
        .unwrap();
    kill9(&mut child);
    drop(scu);
    let kept = stored_instances(&b);
    assert_eq!(kept.len(), 6, "every acknowledged instance survives: {kept:?}");
    for p in &kept {
        assert!(ingest_ok(p), "{} must be a whole, readable slice", p.display());
    }
    // After the restart the scanner sends the rest; the series gets one result of 12 slices.
    let mut child = b.spawn();
    let mut scu = b.connect("CT_SCANNER").unwrap();
    for (i, s) in all[6..].iter().enumerate() {
        assert_eq!(store(&mut scu, s, i as u16 + 7), 0);
    }
    scu.release().unwrap();
    wait_until("the result of the whole series", Duration::from_secs(120), || {
        b.results().iter().any(|r| {
            std::fs::read_to_string(r)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["series"][0]["slices"].as_array().map_or(0, |a| a.len()) == 12)
        })
    });
    assert!(
        common::files_under(&b.received())
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "dcm")),
        "no temporaries left"
    );
    kill9(&mut child);
}

fn ingest_ok(p: &Path) -> bool {
    ctsentinel::ingest::SliceDecoder::new().decode(p).is_ok()
}

/// The verdict and reason of every result JSON, and its number of slices.
fn verdicts(b: &Box) -> Vec<(String, String, usize)> {
    b.results()
        .iter()
        .filter_map(|r| std::fs::read_to_string(r).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| {
            (
                v["verdict"].as_str().unwrap_or("").to_string(),
                v["reason"].as_str().unwrap_or("").to_string(),
                v["series"][0]["slices"].as_array().map_or(0, |a| a.len()),
            )
        })
        .collect()
}

#[test]
fn a_push_aborted_mid_series_never_gets_a_definite_verdict_and_its_resend_gets_one_once() {
    let b = Box::new();
    let mut child = b.spawn();
    let all = slices(12);
    let mut scu = b.connect("CT_SCANNER").unwrap();
    for (i, s) in all[..8].iter().enumerate() {
        assert_eq!(store(&mut scu, s, i as u16 + 1), 0);
    }
    scu.abort().unwrap();
    // Stable after 2 s, but the push never ended: it waits, and says so.
    wait_until("the wait for a resend in the log", Duration::from_secs(120), || {
        b.log().contains("did not end with A-RELEASE")
    });
    assert!(b.results().is_empty(), "no verdict on 8 of 12 slices while waiting");
    // Not sent again within resend_wait_s (6 s): undetermined, naming the reason.
    wait_until("the undetermined result", Duration::from_secs(60), || {
        !b.results().is_empty()
    });
    let v = verdicts(&b);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, "undetermined", "{v:?}");
    assert!(v[0].1.contains("aborted"), "{v:?}");
    // The scanner sends the whole series again (8 duplicates, 4 new), released: one verdict on
    // all 12, replacing the undetermined one.
    let mut scu = b.connect("CT_SCANNER").unwrap();
    for (i, s) in all.iter().enumerate() {
        assert_eq!(store(&mut scu, s, i as u16 + 1), 0, "slice {} again", i + 1);
    }
    scu.release().unwrap();
    wait_until("the verdict on the whole series", Duration::from_secs(120), || {
        verdicts(&b).iter().any(|(_, _, n)| *n == 12)
    });
    let v = verdicts(&b);
    assert_eq!(v.len(), 1, "one result file per series: {v:?}");
    assert!(!v[0].1.contains("aborted"), "{v:?}");
    assert!(
        !common::files_under(&b.received())
            .iter()
            .any(|p| ingest_name(p).starts_with(".ctsentinel-push-")),
        "the release removed the abort's marker"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(verdicts(&b).len(), 1);
    kill9(&mut child);
}

fn ingest_name(p: &Path) -> String {
    ctsentinel::ingest::name_of(p)
}

/// C-STORE `s` with the command's Affected SOP Instance UID set to `uid`; returns the status.
fn store_as(scu: &mut ClientAssociation<TcpStream>, s: &Slice, message_id: u16, uid: &str) -> u16 {
    let pc = pc_id(scu);
    let (_, data) = request(s, message_id);
    let c = store_command(uid, message_id);
    scu.send(&pdv(pc, PDataValueType::Command, true, c)).unwrap();
    let chunks: Vec<&[u8]> = data.chunks(8000).collect();
    for (i, ch) in chunks.iter().enumerate() {
        scu.send(&pdv(pc, PDataValueType::Data, i + 1 == chunks.len(), ch.to_vec()))
            .unwrap();
    }
    match scu.receive().unwrap() {
        Pdu::PData { data } => {
            let rsp =
                InMemDicomObject::read_dataset_with_ts(&data[0].data[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
            rsp.element(tags::STATUS).unwrap().to_int::<u16>().unwrap()
        }
        other => panic!("expected a C-STORE-RSP, got {other:?}"),
    }
}

#[test]
fn instances_with_empty_or_mismatching_uids_are_refused_and_duplicates_never_overwrite() {
    let b = Box::new();
    let mut child = b.spawn();
    let all = slices(3);
    let mut scu = b.connect("CT_SCANNER").unwrap();
    // Two instances with an empty Affected SOP Instance UID: both refused, nothing stored
    // (before, both got Success and the second overwrote the first).
    assert_eq!(store_as(&mut scu, &all[0], 1, ""), 0xC001);
    assert_eq!(store_as(&mut scu, &all[1], 2, ""), 0xC001);
    // The command names another instance than the data set holds: refused.
    assert_eq!(store_as(&mut scu, &all[2], 3, "1.2.3.4.5"), 0xC002);
    assert!(stored_instances(&b).is_empty(), "{:?}", stored_instances(&b));
    // The same instance twice: success, one file. Different bytes under its UID: the first
    // copy is kept, with a warning status.
    assert_eq!(store(&mut scu, &all[0], 4), 0);
    let first = std::fs::read(&stored_instances(&b)[0]).unwrap();
    assert_eq!(store(&mut scu, &all[0], 5), 0);
    let mut changed = all[0].clone();
    changed.pixels[1000] += 7;
    assert_eq!(store(&mut scu, &changed, 6), 0xB000);
    assert_eq!(stored_instances(&b).len(), 1);
    assert_eq!(
        std::fs::read(&stored_instances(&b)[0]).unwrap(),
        first,
        "the first copy is kept"
    );
    scu.release().unwrap();
    wait_until("the warning in the log", Duration::from_secs(10), || {
        b.log().contains("different content")
    });
    kill9(&mut child);
}

#[test]
fn full_slots_are_refused_with_a_reject_and_idle_connections_never_lock_out_the_scanner() {
    let b = Box::with("max_associations = 2");
    let mut child = b.spawn();
    // Five idle TCP connections (more than max_associations): they hold no association slot.
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", b.port)).unwrap())
        .collect();
    let mut one = b
        .connect("CT_SCANNER")
        .expect("the scanner gets in past idle connections");
    let two = b.connect("CT_SCANNER").expect("second slot");
    // Both slots taken: the third is answered with A-ASSOCIATE-RJ, not a bare close.
    match b.connect("CT_SCANNER") {
        Err(dicom_ul::association::Error::Rejected { .. }) => {}
        Err(other) => panic!("expected an A-ASSOCIATE-RJ, got {other}"),
        Ok(_) => panic!("a third association was admitted with max_associations = 2"),
    }
    assert_eq!(store(&mut one, &slices(1)[0], 1), 0);
    one.release().unwrap();
    drop(two);
    // The idle connections are closed at the PDU deadline (pdu_timeout_s = 3).
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
        assert!(n == 0 || buf[0] == 0x07, "closed or aborted, got PDU type {}", buf[0]);
    }
    kill9(&mut child);
}

#[test]
fn a_peer_that_trickles_one_byte_at_a_time_is_cut_off_at_the_pdu_deadline() {
    let b = Box::new();
    let mut child = b.spawn();
    let mut c = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    // An A-ASSOCIATE-RQ header, one byte every 500 ms.
    for byte in [0x01u8, 0, 0, 0, 0x01, 0, 0, 1].iter().cycle().take(40) {
        if std::io::Write::write_all(&mut c, &[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if matches!(std::io::Read::read(&mut c, &mut buf), Ok(_)) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(closed, "the trickling peer was never cut off");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    kill9(&mut child);
}

/// dcmtk's client, when installed (`.ci/run` installs it and sets CTSENTINEL_REQUIRE_DCMTK).
fn dcmtk(tool: &str) -> Option<std::process::Command> {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CTSENTINEL_REQUIRE_DCMTK").is_none(),
            "{tool} (Debian package dcmtk) is required here"
        );
        eprintln!("SKIPPED: {tool} not installed (apt-get install dcmtk)");
        return None;
    }
    Some(std::process::Command::new(tool))
}

#[test]
fn dcmtk_echoscu_and_storescu_push_a_series_that_gets_one_result() {
    let (Some(mut echo), Some(mut store)) = (dcmtk("echoscu"), dcmtk("storescu")) else {
        return;
    };
    let b = Box::new();
    let mut child = b.spawn();
    let port = b.port.to_string();
    let ok = echo
        .args(["-aet", "CT_SCANNER", "-aec", "CTSENTINEL", "127.0.0.1", &port])
        .status()
        .unwrap();
    assert!(ok.success(), "echoscu");
    let bad = dcmtk("echoscu")
        .unwrap()
        .args(["-aet", "INTRUDER", "-aec", "CTSENTINEL", "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an intruder's echo must be rejected");
    let files = tempfile::tempdir().unwrap();
    write_files(&slices(12), files.path());
    let out = store
        .args(["-aet", "CT_SCANNER", "-aec", "CTSENTINEL", "127.0.0.1", &port, "+sd"])
        .arg(files.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the result of the storescu push", Duration::from_secs(120), || {
        verdicts(&b).iter().any(|(_, _, n)| *n == 12)
    });
    assert_eq!(stored_instances(&b).len(), 12);
    kill9(&mut child);
}

/// The slices as Part 10 files in `dir`, as a scanner's export would hand them to a peer.
fn write_files(slices: &[Slice], dir: &Path) -> Vec<PathBuf> {
    slices
        .iter()
        .map(|s| {
            let p = dir.join(format!("s{}.dcm", s.instance));
            s.write(&p);
            p
        })
        .collect()
}

/// Run tests/peers/pynetdicom_peer.py (a pynetdicom SCU) against the box.
fn pynetdicom(py: &Path, b: &Box, mode: &str, files: &[PathBuf]) -> serde_json::Value {
    let out = std::process::Command::new(py)
        .arg(common::repo().join("tests/peers/pynetdicom_peer.py"))
        .args([mode, "127.0.0.1", &b.port.to_string()])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pynetdicom peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn pynetdicom_empty_uids_are_refused_and_its_aborted_push_gets_a_verdict_only_when_sent_whole() {
    let Some(py) = common::reference_python_with(
        "pynetdicom_empty_uids_are_refused_and_its_aborted_push_gets_a_verdict_only_when_sent_whole",
        "pynetdicom",
    ) else {
        return;
    };
    let b = Box::new();
    let mut child = b.spawn();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(&slices(12), dir.path());
    // Three instances whose SOPInstanceUID is empty (as in a real export): each refused, none
    // stored (before, three Success statuses left one file).
    let v = pynetdicom(&py, &b, "empty-uid", &files[..3]);
    assert_eq!(v["statuses"], serde_json::json!([0xC001, 0xC001, 0xC001]), "{v}");
    assert!(stored_instances(&b).is_empty());
    // 5 of 12 then A-ABORT: acknowledged, but no verdict.
    let v = pynetdicom(&py, &b, "abort-after-5", &files);
    assert_eq!(v["statuses"], serde_json::json!([0, 0, 0, 0, 0]), "{v}");
    wait_until("the wait for a resend in the log", Duration::from_secs(120), || {
        b.log().contains("did not end with A-RELEASE")
    });
    assert!(b.results().is_empty(), "no verdict on 5 of 12 slices");
    // The whole series, released: one verdict on all 12.
    let v = pynetdicom(&py, &b, "store", &files);
    assert_eq!(v["statuses"].as_array().unwrap().len(), 12, "{v}");
    assert!(v["statuses"].as_array().unwrap().iter().all(|s| s == 0), "{v}");
    wait_until("the verdict on the whole series", Duration::from_secs(120), || {
        verdicts(&b).iter().any(|(_, _, n)| *n == 12)
    });
    let all = verdicts(&b);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(!all[0].1.contains("aborted"), "{all:?}");
    kill9(&mut child);
}

#[test]
fn storage_commitment_reports_exactly_the_instances_held_and_gets_the_study_classified_without_the_stability_wait() {
    let Some(py) = common::reference_python_with(
        "storage_commitment_reports_exactly_the_instances_held_and_gets_the_study_classified_without_the_stability_wait",
        "pynetdicom",
    ) else {
        return;
    };
    // Stability far beyond the test: only the commitment can get the study classified.
    let b = Box::with_stability(3600.0, "");
    let mut child = b.spawn();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(&slices(12), dir.path());
    let v = pynetdicom(&py, &b, "commit", &files);
    assert_eq!(v["statuses"], serde_json::json!(vec![0; 12]), "{v}");
    assert_eq!(v["action_status"], 0, "{v}");
    assert_eq!(v["event_type"], 2, "failures exist: one instance was never sent: {v}");
    assert_eq!(v["transaction_matches"], true, "{v}");
    let mut committed: Vec<String> = serde_json::from_value(v["committed"].clone()).unwrap();
    committed.sort();
    let mut sent: Vec<String> = slices(12).iter().map(|s| s.instance_uid()).collect();
    sent.sort();
    assert_eq!(committed, sent, "{v}");
    assert_eq!(v["failed"], serde_json::json!(["1.2.3.999.1"]), "{v}");
    // The commitment covers every instance received: classified now, not after an hour.
    wait_until("the verdict on the committed study", Duration::from_secs(120), || {
        verdicts(&b).iter().any(|(_, _, n)| *n == 12)
    });
    kill9(&mut child);
}

#[test]
fn two_series_of_one_study_are_pooled_and_a_series_with_two_patient_ids_is_never_split() {
    let b = Box::new();
    let mut child = b.spawn();
    let mut scu = b.connect("CT_SCANNER").unwrap();
    // Two reconstructions (series) of one study, pushed in one association.
    let a: Vec<Slice> = slices(12);
    let second: Vec<Slice> = (1..=12)
        .map(|i| {
            let mut s = Slice::ct("1.2.840.99.501", -50.0 - 6.0 * f64::from(i), 100 + i);
            s.study_uid = Some(format!("{SERIES}.1"));
            s
        })
        .collect();
    let mut n = 0;
    for s in a.iter().chain(&second) {
        n += 1;
        assert_eq!(store(&mut scu, s, n), 0);
    }
    scu.release().unwrap();
    wait_until("the pooled result", Duration::from_secs(120), || {
        !b.results().is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        b.results().len(),
        1,
        "one result for the patient's study: {:?}",
        b.results()
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&b.results()[0]).unwrap()).unwrap();
    let ids: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let per_series: u64 = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["selected"].as_u64().unwrap())
        .sum();
    assert_eq!(
        v["selected_slices"].as_u64().unwrap(),
        per_series,
        "the verdict pools both series"
    );

    // A series whose instances carry two PatientIDs stays one series in one folder, and is
    // named, never judged as two halves.
    let mut scu = b.connect("CT_SCANNER").unwrap();
    for i in 1..=12 {
        let mut s = Slice::ct("1.2.840.99.777", -50.0 - 6.0 * f64::from(i), i);
        s.patient = if i <= 6 { "PAT-A".into() } else { "PAT-B".into() };
        assert_eq!(store(&mut scu, &s, i as u16), 0);
    }
    scu.release().unwrap();
    wait_until("the result of the two-patient series", Duration::from_secs(120), || {
        b.results().len() == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.results().len(), 2, "not split into two results");
    let r = b
        .results()
        .into_iter()
        .map(|p| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap()).unwrap())
        .find(|v| v["series"][0]["id"] == "1.2.840.99.777")
        .unwrap();
    assert_eq!(r["verdict"], "undetermined", "{r}");
    assert!(r.to_string().contains("two patients"), "{r}");
    kill9(&mut child);
}
