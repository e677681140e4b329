//! DICOM results out to a PACS (`[dicom] send_to`, `service::sender`; issue 14, step 4),
//! against the real binary and a real DICOM peer: a C-STORE SCP built on dicom-ul's server
//! association, started by each test on 127.0.0.1, that keeps what it receives.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::dicom_gen::Slice;
use ctsentinel::service::config::Config;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{Pdu, ServerAssociationOptions};

const SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const SERIES: &str = "1.2.840.99.600";

/// What the PACS got: (SOP class, SOP instance UID, data set bytes).
type Got = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A C-STORE SCP that answers every request with `status` and keeps what it received.
struct Pacs {
    got: Got,
    attempts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pacs {
    fn start(port: u16, status: u16) -> Pacs {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let got: Got = Arc::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, a, s) = (got.clone(), attempts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve(stream, status, &g, &a);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Pacs {
            got,
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<(String, String, Vec<u8>)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, status: u16, got: &Got, attempts: &AtomicUsize) {
    let Ok(mut assoc) = ServerAssociationOptions::new()
        .accept_called_ae_title()
        .ae_title("PACS")
        .with_abstract_syntax(SR)
        .with_abstract_syntax(SC)
        .with_transfer_syntax("1.2.840.10008.1.2.1")
        .with_transfer_syntax("1.2.840.10008.1.2")
        .establish(stream)
    else {
        return;
    };
    let (mut command, mut data) = (Vec::new(), Vec::new());
    loop {
        let Ok(pdu) = assoc.receive() else { return };
        match pdu {
            Pdu::PData { data: values } => {
                for v in values {
                    match v.value_type {
                        PDataValueType::Command => command.extend_from_slice(&v.data),
                        PDataValueType::Data => {
                            data.extend_from_slice(&v.data);
                            if !v.is_last {
                                continue;
                            }
                            let cmd = InMemDicomObject::read_dataset_with_ts(
                                &command[..],
                                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                            )
                            .unwrap();
                            assert!(
                                cmd.element(tags::COMMAND_GROUP_LENGTH).is_ok(),
                                "a command set carries its group length"
                            );
                            let text = |tag| {
                                cmd.element(tag)
                                    .unwrap()
                                    .to_str()
                                    .unwrap()
                                    .trim_end_matches(['\0', ' '])
                                    .to_string()
                            };
                            let (class, instance) = (
                                text(tags::AFFECTED_SOP_CLASS_UID),
                                text(tags::AFFECTED_SOP_INSTANCE_UID),
                            );
                            let id = cmd.element(tags::MESSAGE_ID).unwrap().to_int::<u16>().unwrap();
                            attempts.fetch_add(1, Ordering::Relaxed);
                            if status == 0 {
                                got.lock()
                                    .unwrap()
                                    .push((class.clone(), instance.clone(), data.clone()));
                            }
                            let rsp = InMemDicomObject::command_from_element_iter([
                                DataElement::new(
                                    tags::AFFECTED_SOP_CLASS_UID,
                                    VR::UI,
                                    PrimitiveValue::from(class.as_str()),
                                ),
                                DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x8001u16)),
                                DataElement::new(tags::MESSAGE_ID_BEING_RESPONDED_TO, VR::US, PrimitiveValue::from(id)),
                                DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0101u16)),
                                DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
                                DataElement::new(
                                    tags::AFFECTED_SOP_INSTANCE_UID,
                                    VR::UI,
                                    PrimitiveValue::from(instance.as_str()),
                                ),
                            ]);
                            let mut bytes = Vec::new();
                            rsp.write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                                .unwrap();
                            let pc = v.presentation_context_id;
                            let sent = assoc.send(&Pdu::PData {
                                data: vec![PDataValue {
                                    presentation_context_id: pc,
                                    value_type: PDataValueType::Command,
                                    is_last: true,
                                    data: bytes,
                                }],
                            });
                            if sent.is_err() {
                                return;
                            }
                            command.clear();
                            data.clear();
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                return;
            }
            _ => return,
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A box whose results go to `PACS@127.0.0.1:<pacs_port>`.
struct Box {
    dir: tempfile::TempDir,
}

impl Box {
    fn new(pacs_port: u16) -> Box {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        let cfg = format!(
            "board = \"generic-x86_64\"\ndrop = [\"{d}/drop\"]\nstate = \"{d}/state\"\nmodels = \"{m}\"\n\
             min_free_mb = 0\nstability_s = 1\npoll_interval_s = 0.2\ndisplay = \"none\"\n\n\
             [dicom]\nae_title = \"CTSENTINEL\"\nsend_to = \"PACS@127.0.0.1:{pacs_port}\"\n",
            d = dir.path().display(),
            m = common::models().display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Box { dir }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("watch.log"))
            .unwrap();
        common::ctsentinel()
            .args(["watch", "--config"])
            .arg(self.dir.path().join("config.toml"))
            .arg("--boards")
            .arg(common::repo().join("boards"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn drop_series(&self, n: i32) {
        let dir = self.dir.path().join("drop/PAT-1/CT");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=n {
            Slice::ct(SERIES, -50.0 - 6.0 * f64::from(i), i).write(&dir.join(format!("{i}.dcm")));
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn results_with(&self, ext: &str) -> Vec<PathBuf> {
        common::files_under(&self.state().join("results"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(ext))
            .collect()
    }

    fn outbox(&self) -> Vec<PathBuf> {
        ctsentinel::service::sender::pending(&self.state().join("outbox"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("watch.log")).unwrap_or_default()
    }
}

use common::wait_until;

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SOP Instance UID of a DICOM file.
fn instance_of(path: &Path) -> String {
    dicom_object::open_file(path)
        .unwrap()
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The SR and SC beside the result, as (class, instance UID), sorted.
fn written(b: &Box) -> Vec<(String, String)> {
    let mut v = vec![
        (SR.to_string(), instance_of(&b.results_with(".sr.dcm")[0])),
        (SC.to_string(), instance_of(&b.results_with(".sc.dcm")[0])),
    ];
    v.sort();
    v
}

fn got(p: &Pacs) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p.received().into_iter().map(|(c, i, _)| (c, i)).collect();
    v.sort();
    v
}

#[test]
fn the_sr_and_the_screen_of_a_dicom_result_reach_the_pacs_and_leave_the_outbox() {
    let port = free_port();
    let pacs = Pacs::start(port, 0x0000);
    let b = Box::new(port);
    let mut child = b.spawn();
    b.drop_series(12);
    wait_until("two instances at the PACS", Duration::from_secs(180), || {
        pacs.received().len() >= 2
    });
    wait_until("an empty outbox", Duration::from_secs(10), || b.outbox().is_empty());
    assert_eq!(
        got(&pacs),
        written(&b),
        "exactly the SR and SC written beside the result"
    );
    // What arrived is the file's data set, byte for byte: the SR's says research use only.
    let (_, _, sr) = pacs.received().into_iter().find(|(c, _, _)| c == SR).unwrap();
    let on_disk = std::fs::read(&b.results_with(".sr.dcm")[0]).unwrap();
    assert!(on_disk.ends_with(&sr), "the data set sent is the file's");
    assert!(String::from_utf8_lossy(&sr)
        .to_lowercase()
        .contains("research use only"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pacs.received().len(), 2, "sent once");
    kill9(&mut child);
}

#[test]
fn results_for_a_pacs_that_is_down_wait_in_the_outbox_across_a_kill_and_are_sent_when_it_is_back() {
    let port = free_port();
    let b = Box::new(port);
    let mut child = b.spawn();
    b.drop_series(12);
    wait_until("the result", Duration::from_secs(180), || {
        !b.results_with(".json").is_empty()
    });
    wait_until("two files waiting in the outbox", Duration::from_secs(10), || {
        b.outbox().len() == 2
    });
    wait_until("the failed attempt in the log", Duration::from_secs(20), || {
        b.log().contains("next try in")
    });
    kill9(&mut child);
    assert_eq!(b.outbox().len(), 2, "the kill loses nothing queued");
    let pacs = Pacs::start(port, 0x0000);
    let mut child = b.spawn();
    wait_until("two instances at the PACS", Duration::from_secs(120), || {
        pacs.received().len() >= 2
    });
    wait_until("an empty outbox", Duration::from_secs(10), || b.outbox().is_empty());
    assert_eq!(got(&pacs), written(&b));
    assert_eq!(b.results_with(".json").len(), 1, "the restart did not redo the series");
    kill9(&mut child);
}

#[test]
fn a_pacs_refusal_sets_the_file_aside_with_its_reason_and_is_not_retried() {
    let port = free_port();
    let pacs = Pacs::start(port, 0xC000);
    let b = Box::new(port);
    let mut child = b.spawn();
    b.drop_series(12);
    let refused = b.state().join("outbox/refused");
    let count = |ext: &str| {
        common::files_under(&refused)
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(ext))
            .count()
    };
    wait_until("both files refused", Duration::from_secs(180), || count(".dcm") == 2);
    assert_eq!(count(".reason.txt"), 2);
    let reason = std::fs::read_to_string(
        common::files_under(&refused)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".reason.txt"))
            .unwrap(),
    )
    .unwrap();
    assert!(reason.contains("0xc000"), "{reason}");
    assert!(b.outbox().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        pacs.attempts.load(Ordering::Relaxed),
        2,
        "a refused file is not sent again"
    );
    assert!(b.log().contains("refused for good"));
    assert_eq!(b.results_with(".json").len(), 1, "the result itself stands");
    kill9(&mut child);
}

#[test]
fn send_to_must_name_an_ae_title_a_host_and_a_port() {
    let boards = common::repo().join("boards");
    let base = "board = \"generic-x86_64\"\ndrop = [\"/srv/drop\"]\nstate = \"/var/lib/ctsentinel\"\n[dicom]\n";
    for bad in [
        "127.0.0.1:104",
        "PACS@127.0.0.1",
        "PACS@:104",
        "PACS@host:0",
        "PACS@host:99999",
        "WAY_TOO_LONG_AE_TITLE@h:104",
    ] {
        let text = format!("{base}send_to = \"{bad}\"\n");
        let e = Config::parse(&text, Path::new("c.toml"), Some(&boards)).unwrap_err();
        assert!(e.to_string().contains("send_to"), "{bad}: {e}");
    }
    let ok = Config::parse(
        &format!("{base}send_to = \"PACS@10.0.0.5:104\"\n"),
        Path::new("c.toml"),
        Some(&boards),
    )
    .unwrap();
    let to = ok.send_to.unwrap();
    assert_eq!(
        (to.address.as_str(), to.calling_ae.as_str()),
        ("PACS@10.0.0.5:104", "CTSENTINEL")
    );
    assert!(ok.dicom.is_none(), "sending alone starts no listener");
}
