//! Malformed and awkward DICOM of the kinds real exports contain: strict for what is
//! classified, tolerant for what is ignored. Each test is named after the promise it guards;
//! the fixtures are generated here (byte surgery on files dicom-object writes), or cut from the
//! real JPEG Lossless export in ../shared/data.

mod common;

use std::path::{Path, PathBuf};

use common::dicom_gen::{write_dicomdir, Slice};
use ctsentinel::ingest::{self, SliceDecoder};
use ctsentinel::pipeline;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

fn series_dir(n: i32, uid: &str, dir: &Path) -> Vec<PathBuf> {
    (1..=n)
        .map(|i| {
            let p = dir.join(format!("S{i}"));
            Slice::ct(uid, -50.0 - 6.0 * f64::from(i), i).write(&p);
            p
        })
        .collect()
}

/// Length of the file meta group's elements after (0002,0000), from its value.
fn meta_group_len(file: &[u8]) -> usize {
    assert_eq!(&file[132..136], &[0x02, 0x00, 0x00, 0x00], "group length first");
    u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize
}

/// The file without its (0002,0000) element (12 bytes, explicit VR UL).
fn without_group_length(file: &[u8]) -> Vec<u8> {
    meta_group_len(file);
    let mut out = file[..132].to_vec();
    out.extend_from_slice(&file[144..]);
    out
}

/// The bare data set: no preamble, no `DICM`, no meta group.
fn bare_data_set(file: &[u8]) -> Vec<u8> {
    file[144 + meta_group_len(file)..].to_vec()
}

/// Why the first series found under `dir` is outside the contract ("" when inside it).
fn protocol_of(dir: &Path) -> String {
    ingest::find(dir).unwrap().series[0]
        .info
        .as_ref()
        .and_then(|i| i.protocol.clone())
        .unwrap_or_default()
}

fn rewrite(path: &Path, f: impl FnOnce(&[u8]) -> Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, f(&bytes)).unwrap();
}

#[test]
fn ct_slices_without_preamble_or_file_meta_are_read_as_slices_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for i in 1..=12 {
        let mut s = Slice::ct("1.2.840.99.31", -50.0 - 6.0 * f64::from(i), i);
        s.transfer_syntax = IMPLICIT_LE.into();
        let p = dir.path().join(format!("IMG{i}"));
        s.write(&p);
        s.write(&canonical.path().join(format!("IMG{i}")));
        // Older exporters: implicit VR data set only; some: DICM without the preamble.
        if i % 2 == 0 {
            rewrite(&p, bare_data_set);
        } else {
            rewrite(&p, |b| b[128..].to_vec());
        }
        want.push(s.pixels.iter().map(|&v| v as u16).collect::<Vec<u16>>());
    }
    let found = ingest::find(dir.path()).unwrap();
    assert!(found.ignored.is_empty(), "{:?}", found.ignored);
    assert_eq!(found.series.len(), 1);
    let s = &found.series[0];
    assert_eq!(s.files.len(), 12);
    assert!(s.refused.is_empty(), "{:?}", s.refused);
    assert_eq!(s.info.as_ref().unwrap().protocol, None);
    let mut d = SliceDecoder::new();
    for (i, f) in s.files.iter().enumerate() {
        assert_eq!(d.decode(f).unwrap().pixels, &want[i][..], "{}", f.display());
    }
    let report = pipeline::select_folder(dir.path()).unwrap();
    let canon = pipeline::select_folder(canonical.path()).unwrap();
    assert_eq!(report.series[0].selected, canon.series[0].selected);
    assert!(report.series[0].selected > 0);
}

#[test]
fn non_slice_objects_without_meta_group_length_are_ignored_and_never_drop_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let files = series_dir(12, "1.2.840.99.1", dir.path());
    let mut dose = Slice::ct("1.2.840.99.7", 0.0, 98);
    dose.sop_class = "1.2.840.10008.5.1.4.1.1.88.67".into(); // X-Ray Radiation Dose SR
    dose.modality = "SR".into();
    dose.write(&dir.path().join("DOSE"));
    let mut sc = Slice::ct("1.2.840.99.8", 0.0, 97);
    sc.sop_class = "1.2.840.10008.5.1.4.1.1.7".into(); // Secondary Capture
    sc.modality = "OT".into();
    sc.write(&dir.path().join("SCREEN"));
    let ids: Vec<String> = files.iter().map(|p| ingest::name_of(p)).collect();
    let ids: Vec<Vec<&str>> = ids.iter().map(|n| vec![n.as_str()]).collect();
    write_dicomdir(&dir.path().join("DICOMDIR"), &ids);
    for name in ["DOSE", "SCREEN", "DICOMDIR"] {
        rewrite(&dir.path().join(name), without_group_length);
    }
    let found = ingest::find(dir.path()).unwrap();
    assert_eq!(found.series.len(), 1);
    assert!(found.series[0].refused.is_empty(), "{:?}", found.series[0].refused);
    let ignored: Vec<String> = found
        .ignored
        .iter()
        .map(|i| format!("{}: {}", i.file, i.reason))
        .collect();
    assert_eq!(ignored.len(), 3, "{ignored:?}");
    assert!(
        ignored.iter().any(|i| i.starts_with("DOSE: modality SR")),
        "{ignored:?}"
    );
    assert!(
        ignored.iter().any(|i| i.starts_with("SCREEN: modality OT")),
        "{ignored:?}"
    );
    assert!(
        ignored.iter().any(|i| i.starts_with("DICOMDIR: DICOMDIR")),
        "{ignored:?}"
    );
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert!(report.series[0].rejected.is_none(), "{:?}", report.series[0].rejected);
    assert!(report.series[0].selected > 0);
}

#[test]
fn an_unreadable_object_whose_meta_names_no_ct_slice_is_ignored_not_a_reason_for_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    let mut sc = Slice::ct("1.2.840.99.8", 0.0, 97);
    sc.sop_class = "1.2.840.10008.5.1.4.1.1.7".into();
    let p = dir.path().join("SCREEN");
    sc.write(&p);
    // Cut inside the data set: the meta group is intact, the data set is not.
    rewrite(&p, |b| b[..b.len() - 1000].to_vec());
    let found = ingest::find(dir.path()).unwrap();
    assert!(found.series[0].refused.is_empty(), "{:?}", found.series[0].refused);
    assert!(
        found
            .ignored
            .iter()
            .any(|i| i.file == "SCREEN" && i.reason.contains("1.2.840.10008.5.1.4.1.1.7")),
        "{:?}",
        found.ignored
    );
    // The same cut in a CT slice still makes its folder incomplete.
    let q = dir.path().join("S3");
    rewrite(&q, |b| b[..b.len() - 1000].to_vec());
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert!(
        report.series[0].rejected.as_deref().unwrap_or("").contains("S3"),
        "{:?}",
        report.series[0]
    );
}

#[test]
fn a_truncated_jpeg_lossless_frame_is_refused_naming_the_file_never_classified() {
    let Some(shared) =
        common::shared_or_skip("a_truncated_jpeg_lossless_frame_is_refused_naming_the_file_never_classified")
    else {
        return;
    };
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    let src = shared.join("dicom/covid/ctmd_P001/SR_1/IM00020.dcm");
    let dir = tempfile::tempdir().unwrap();
    for keep in [0.5, 0.95] {
        let mut o = dicom_object::open_file(&src).unwrap();
        let frag = o.get(tags::PIXEL_DATA).unwrap().fragments().unwrap()[0].clone();
        let mut cut = frag[..(frag.len() as f64 * keep) as usize].to_vec();
        if cut.len() % 2 == 1 {
            cut.push(0);
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(vec![], vec![cut]),
        ));
        let p = dir.path().join(format!("CUT{}", (keep * 100.0) as u32));
        o.write_to_file(&p).unwrap();
        let e = SliceDecoder::new().decode(&p).unwrap_err().reason();
        assert!(e.contains("EOI") && e.contains("truncated"), "{keep}: {e}");
    }
    // The intact file still decodes.
    assert!(SliceDecoder::new().decode(&src).is_ok());
}

#[test]
fn a_slice_declaring_forged_huge_dimensions_is_named_and_its_series_not_classified() {
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    let mut forged = Slice::ct("1.2.840.99.1", -50.0 - 6.0 * 13.0, 13);
    forged.size = 60000; // rows and columns declared; the pixel data stays 512 x 512
    forged.write(&dir.path().join("S13"));
    let found = ingest::find(dir.path()).unwrap();
    assert_eq!(found.series.len(), 1);
    let s = &found.series[0];
    assert_eq!(s.files.len(), 12);
    assert_eq!(s.refused.len(), 1, "{:?}", s.refused);
    assert_eq!(s.refused[0].file, "S13");
    assert!(s.refused[0].reason.contains("60000x60000"), "{:?}", s.refused);
    let report = pipeline::select_folder(dir.path()).unwrap();
    let r = report.series[0].rejected.as_deref().unwrap_or("");
    assert!(r.contains("S13"), "{r}");
    assert_eq!(report.series[0].selected, 0);
}

#[test]
fn a_lone_slice_of_another_series_is_its_own_excluded_series_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    Slice::ct("1.2.840.99.2", -80.0, 1).write(&dir.path().join("OTHER"));
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert_eq!(report.series.len(), 2, "{report:?}");
    let lone = report.series.iter().find(|s| s.id == "1.2.840.99.2").unwrap();
    let main = report.series.iter().find(|s| s.id == "1.2.840.99.1").unwrap();
    assert!(
        lone.excluded.as_deref().unwrap_or("").contains("1 slices, fewer than"),
        "{lone:?}"
    );
    assert!(main.excluded.is_none() && main.rejected.is_none(), "{main:?}");
    assert!(main.selected > 0);
}

#[test]
fn a_series_with_missing_slices_is_incomplete_by_instance_number_or_position_gap() {
    // Slice 6 of 12 missing: both its InstanceNumber and its position leave a gap.
    let dir = tempfile::tempdir().unwrap();
    let files = series_dir(12, "1.2.840.99.1", dir.path());
    std::fs::remove_file(&files[5]).unwrap();
    let found = ingest::find(dir.path()).unwrap();
    let why = found.series[0]
        .info
        .as_ref()
        .unwrap()
        .protocol
        .clone()
        .unwrap_or_default();
    assert!(why.contains("InstanceNumber jumps from 5 to 7"), "{why}");
    assert!(why.contains("12.00 mm gap"), "{why}");

    // Numbered 1, 4, 7, ... (every third slice exported) with even positions: complete.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..12 {
        Slice::ct("1.2.840.99.5", -50.0 - 6.0 * f64::from(i), 1 + 3 * i).write(&dir.path().join(format!("T{i}")));
    }
    let found = ingest::find(dir.path()).unwrap();
    assert_eq!(found.series[0].info.as_ref().unwrap().protocol, None);

    // Positions alone (renumbered 1..11 after a lost slice): the gap still shows.
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=12 {
        if i == 7 {
            continue;
        }
        let n = if i > 7 { i - 1 } else { i };
        Slice::ct("1.2.840.99.6", -50.0 - 6.0 * f64::from(i), n).write(&dir.path().join(format!("U{i}")));
    }
    let why = protocol_of(dir.path());
    assert!(why.contains("mm gap") && !why.contains("InstanceNumber"), "{why}");
}

#[test]
fn an_orientation_that_is_not_two_orthogonal_unit_vectors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=12 {
        let mut s = Slice::ct("1.2.840.99.9", -50.0 - 6.0 * f64::from(i), i);
        s.orientation = [2.0, 0.0, 0.0, 0.0, 2.0, 0.0];
        s.write(&dir.path().join(format!("O{i}")));
    }
    let why = protocol_of(dir.path());
    assert!(why.contains("orthogonal unit vectors"), "{why}");
}
