//! "Acknowledged only once durable", tested by crashes that lose every write not yet made
//! durable (`fsys::sim::SimFs`), at every step of a store, not by `kill -9` (the page cache
//! survives a killed process). The real inbox code runs on the simulated file system.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::dicom_gen::Slice;
use ctsentinel::dicom_net::dimse::{status, StoreCommand};
use ctsentinel::dicom_net::inbox::{self, Inbox};
use ctsentinel::dicom_net::scp::{StoreRequest, CT_IMAGE_STORAGE};
use ctsentinel::fsys::sim::SimFs;
use ctsentinel::fsys::Fs;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use proptest::prelude::*;

/// Six instances of two series of one study; `changed` alters one pixel (same UID, other bytes).
fn request(k: usize, changed: bool) -> StoreRequest {
    let series = if k < 3 { "1.2.840.99.61" } else { "1.2.840.99.62" };
    let mut s = Slice::ct(series, -50.0 - 6.0 * k as f64, k as i32 + 1);
    s.study_uid = Some("1.2.840.99.60".into());
    if changed {
        s.pixels[77] += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.dcm");
    s.write(&p);
    let mut dataset = Vec::new();
    dicom_object::open_file(&p)
        .unwrap()
        .write_dataset_with_ts(&mut dataset, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    StoreRequest {
        command: StoreCommand {
            message_id: k as u16,
            class_uid: CT_IMAGE_STORAGE.into(),
            instance_uid: s.instance_uid(),
        },
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        abstract_syntax: CT_IMAGE_STORAGE.into(),
        dataset,
    }
}

/// Every `<series>_<instance>.dcm` file under the inbox, by instance file name.
fn held(fs: &SimFs, root: &Path) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for study in fs.list(root).unwrap() {
        let d = root.join(study);
        for n in fs.list(&d).unwrap_or_default() {
            if let Some((_, instance)) = n.split_once('_').filter(|_| n.ends_with(".dcm")) {
                out.insert(instance.to_string(), fs.read(&d.join(&n)).unwrap());
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_acknowledged_instance_survives_a_power_cut_at_any_step(
        plan in prop::collection::vec((0usize..6, any::<bool>()), 1..9),
        cut in 0usize..90,
    ) {
        let root = Path::new("/state/received");
        let fs = Arc::new(SimFs::new(root));
        let free: Box<inbox::FreeBytes> = Box::new(|_: &Path| Ok(u64::MAX));
        let inbox = Inbox::open_on(fs.clone(), root, 0, free).unwrap();
        fs.crash_after(cut);
        let mut session = inbox.begin("test peer");
        // What was acknowledged: instance file name -> the bytes it must keep.
        let mut acked: HashMap<String, Vec<u8>> = HashMap::new();
        for (k, changed) in plan {
            let req = request(k, changed);
            let (file, _) = inbox::instance_file(&req).unwrap();
            let name = format!("{}.dcm", req.command.instance_uid);
            let r = inbox.store(&mut session, &req);
            match r.status {
                status::SUCCESS => {
                    if let Some(first) = acked.get(&name) {
                        prop_assert_eq!(first, &file, "success for other bytes than the first");
                    }
                    acked.entry(name).or_insert(file);
                }
                // The first copy is kept and says so: it was acknowledged before.
                status::DUPLICATE_DIFFERENT => prop_assert!(acked.contains_key(&name), "0xB000 for {} never acknowledged", name),
                status::OUT_OF_RESOURCES => {}
                other => prop_assert!(false, "unexpected status {:#06x}: {}", other, r.note),
            }
        }
        fs.crash();
        // After the power cut the inbox opens again (sweeping what no one owns) ...
        let free: Box<inbox::FreeBytes> = Box::new(|_: &Path| Ok(u64::MAX));
        let again = Inbox::open_on(fs.clone(), root, 0, free);
        prop_assert!(again.is_ok());
        // ... and holds every acknowledged instance, byte for byte.
        let kept = held(&fs, root);
        for (name, bytes) in &acked {
            prop_assert!(kept.get(name) == Some(bytes), "acknowledged {} lost or changed after the crash", name);
        }
    }
}

#[test]
fn the_crash_test_sees_a_missing_folder_sync() {
    // The model itself: a file linked but its folder never synced is gone after a crash, so a
    // writer that skipped that fsync would fail the property above.
    let root = Path::new("/state/received");
    let fs = SimFs::new(root);
    fs.create_dir(&root.join("P~1")).unwrap();
    fs.sync_dir(root).unwrap();
    fs.write_synced(&root.join("P~1/.t.part"), b"abc").unwrap();
    fs.hard_link(&root.join("P~1/.t.part"), &root.join("P~1/a_1.dcm"))
        .unwrap();
    fs.crash();
    assert!(!fs.is_file(&root.join("P~1/a_1.dcm")));
}

/// The push markers in the study folder.
fn markers(fs: &SimFs, root: &Path) -> Vec<String> {
    fs.list(root)
        .unwrap()
        .into_iter()
        .flat_map(|study| fs.list(&root.join(study)).unwrap())
        .filter(|n| n.starts_with(inbox::PUSH_MARKER_PREFIX))
        .collect()
}

#[test]
fn a_released_push_of_one_series_never_clears_the_abort_of_another_series_of_the_study() {
    let root = Path::new("/state/received");
    let fs = Arc::new(SimFs::new(root));
    let free: Box<inbox::FreeBytes> = Box::new(|_: &Path| Ok(u64::MAX));
    let inbox = Inbox::open_on(fs.clone(), root, 0, free).unwrap();
    // Series 1 (instances 0..3) aborted after one instance.
    let mut a = inbox.begin("scanner, first try");
    assert_eq!(inbox.store(&mut a, &request(0, false)).status, status::SUCCESS);
    inbox.finish(&a, false);
    assert_eq!(markers(&fs, root).len(), 1);
    // Series 2 of the same study arrives whole and is released: series 1 still waits.
    let mut b = inbox.begin("scanner, series 2");
    assert_eq!(inbox.store(&mut b, &request(3, false)).status, status::SUCCESS);
    assert_eq!(inbox.store(&mut b, &request(4, false)).status, status::SUCCESS);
    inbox.finish(&b, true);
    let left = markers(&fs, root);
    assert_eq!(left.len(), 1, "series 1's abort must still hold the study: {left:?}");
    assert_eq!(left[0], markers_of(&a)[0]);
    // Series 1 sent again and released: nothing waits any more.
    let mut c = inbox.begin("scanner, resend");
    for k in 0..3 {
        assert_eq!(inbox.store(&mut c, &request(k, false)).status, status::SUCCESS);
    }
    inbox.finish(&c, true);
    assert!(markers(&fs, root).is_empty(), "{:?}", markers(&fs, root));
}

/// The marker names a session created.
fn markers_of(s: &inbox::Session) -> Vec<String> {
    s.touched
        .iter()
        .map(|(_, tag)| format!("{}{tag}-{}", inbox::PUSH_MARKER_PREFIX, s.id))
        .collect()
}
