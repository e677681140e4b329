//! DICOM input (issue 14): real exports from ../shared/data and generated DICOM files, each
//! test named after the promise it guards.

mod common;

use std::path::{Path, PathBuf};

use common::dicom_gen::{Slice, EXPLICIT_LE};
use ctsentinel::ingest::{self, DecodeError, IngestError, SliceDecoder};
use ctsentinel::pipeline;

fn series_dir(n: i32, uid: &str, dir: &Path) -> Vec<PathBuf> {
    (1..=n)
        .map(|i| {
            let p = dir.join(format!("X{}_{}", uid.len(), i)); // no extension, non-lexical order
            Slice::ct(uid, -50.0 - 6.0 * f64::from(i), i).write(&p);
            p
        })
        .collect()
}

#[test]
fn generated_dicom_slice_decodes_to_stored_value_convention() {
    let dir = tempfile::tempdir().unwrap();
    // Unsigned, intercept -1024: stored values are already HU + 1024.
    let a = dir.path().join("a.dcm");
    let s = Slice::ct("1.2.3", -50.0, 1);
    s.write(&a);
    let mut d = SliceDecoder::new();
    let px = d.decode(&a).unwrap().pixels.to_vec();
    assert_eq!(px, s.pixels.iter().map(|&v| v as u16).collect::<Vec<_>>());
    // Signed values with intercept 0 (HU stored directly), 16 bits stored: HU + 1024.
    let b = dir.path().join("b.dcm");
    let mut t = Slice::ct("1.2.3", -56.0, 2);
    t.signed = true;
    t.bits_stored = 16;
    t.rescale = Some((1.0, 0.0));
    t.pixels = s.pixels.iter().map(|&v| v - 1024).collect();
    t.pixels[0] = -3024; // padding outside the field of view: clamped to 0
    t.write(&b);
    let got = d.decode(&b).unwrap().pixels.to_vec();
    let mut want: Vec<u16> = s.pixels.iter().map(|&v| v as u16).collect();
    want[0] = 0;
    assert_eq!(got, want);
    // Slope 2, intercept -2048: stored 600 means HU 1200 - 2048 = -848, i.e. 176.
    let c = dir.path().join("c.dcm");
    let mut u = Slice::ct("1.2.3", -62.0, 3);
    u.rescale = Some((2.0, -2048.0));
    u.pixels = vec![600; 512 * 512];
    u.write(&c);
    assert!(d.decode(&c).unwrap().pixels.iter().all(|&v| v == 176));
}

#[test]
fn series_are_grouped_by_uid_not_folder_and_ordered_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = series_dir(12, "1.2.840.99.1", dir.path());
    let sub = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let b = series_dir(11, "1.2.840.99.22", &sub);
    let found = ingest::find(dir.path()).unwrap();
    assert_eq!(
        found.series.len(),
        2,
        "{:?}",
        found.series.iter().map(|s| &s.id).collect::<Vec<_>>()
    );
    let sa = found.series.iter().find(|s| s.id == "1.2.840.99.1").unwrap();
    // Names X12_1 .. X12_12 do not sort lexically; the order is head to foot (z falling).
    a.sort_by_key(|p| ingest::natural_key(&ingest::name_of(p)));
    assert_eq!(sa.files, a);
    let sb = found.series.iter().find(|s| s.id == "1.2.840.99.22").unwrap();
    assert_eq!(sb.files.len(), b.len());
    assert_eq!(sa.patient, "PAT-1");
    let info = sa.info.as_ref().unwrap();
    assert_eq!(info.ordered_by, "position");
    assert!((info.slice_spacing_mm.unwrap() - 6.0).abs() < 1e-9);
    assert_eq!(info.protocol, None);
    // Labels are relative to the folder given.
    assert_eq!(
        sb.label(&sb.files[0]),
        format!("nested/deeper/{}", ingest::name_of(&sb.files[0]))
    );
}

#[test]
fn scouts_reports_and_other_files_are_ignored_with_reasons_never_read_as_slices() {
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    let mut scout = Slice::ct("1.2.840.99.1", 0.0, 99);
    scout.image_type = "ORIGINAL\\PRIMARY\\LOCALIZER".into();
    scout.write(&dir.path().join("scout"));
    let mut sr = Slice::ct("1.2.840.99.7", 0.0, 98);
    sr.sop_class = "1.2.840.10008.5.1.4.1.1.88.67".into(); // X-Ray Radiation Dose SR
    sr.modality = "SR".into();
    sr.write(&dir.path().join("dose"));
    let mut mr = Slice::ct("1.2.840.99.8", 0.0, 97);
    mr.modality = "MR".into();
    mr.write(&dir.path().join("mr"));
    std::fs::write(dir.path().join("README.TXT"), b"exported by the scanner").unwrap();
    let found = ingest::find(dir.path()).unwrap();
    assert_eq!(found.series.len(), 1);
    assert_eq!(
        found.series[0].files.len(),
        12,
        "the scout shares the UID but is not a slice"
    );
    let reasons: Vec<(String, String)> = found
        .ignored
        .iter()
        .map(|i| (i.file.clone(), i.reason.clone()))
        .collect();
    let has = |f: &str, w: &str| reasons.iter().any(|(file, r)| file == f && r.contains(w));
    assert!(has("scout", "localizer"), "{reasons:?}");
    assert!(has("dose", "modality SR"), "{reasons:?}");
    assert!(has("mr", "modality MR"), "{reasons:?}");
    assert!(has("README.TXT", "not a DICOM file"), "{reasons:?}");
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert_eq!(report.ignored.len(), 4);
    assert!(report.series[0].rejected.is_none());
    assert_eq!(report.series[0].slices.len(), 12);
    assert!(report.series[0].selected > 0);
}

#[test]
fn unparsable_dicom_file_makes_every_series_of_the_folder_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    let mut bad = vec![0u8; 128];
    bad.extend_from_slice(b"DICM\x02\x00\x00\x00garbage that is no meta group");
    std::fs::write(dir.path().join("broken"), &bad).unwrap();
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert_eq!(report.series.len(), 1);
    let s = &report.series[0];
    assert!(s.rejected.as_deref().unwrap_or("").contains("broken"), "{s:?}");
    assert_eq!(s.unreadable.len(), 1);
    assert!(s.unreadable[0].reason.contains("DICOM"), "{:?}", s.unreadable);
}

fn decode_reason(s: &Slice) -> DecodeError {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("IM1");
    s.write(&p);
    match SliceDecoder::new().decode(&p) {
        Err(IngestError::Decode { reason, .. }) => reason,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn slice_without_rescale_is_refused_hounsfield_units_unknown() {
    let mut s = Slice::ct("1.2.3", 0.0, 1);
    s.rescale = None;
    assert!(matches!(decode_reason(&s), DecodeError::Unsupported(m) if m.contains("Rescale")));
}

#[test]
fn refused_transfer_syntax_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("IM1");
    Slice::ct("1.2.3", 0.0, 1).write(&p);
    // Relabel the (native) file as RLE: the syntax is checked before any pixel is decoded.
    let mut bytes = std::fs::read(&p).unwrap();
    let pos = bytes
        .windows(EXPLICIT_LE.len() + 1)
        .position(|w| &w[..EXPLICIT_LE.len()] == EXPLICIT_LE.as_bytes() && w[EXPLICIT_LE.len()] == 0)
        .unwrap();
    bytes[pos..pos + 20].copy_from_slice(b"1.2.840.10008.1.2.5\0");
    std::fs::write(&p, &bytes).unwrap();
    match SliceDecoder::new().decode(&p) {
        Err(IngestError::Decode {
            reason: DecodeError::Unsupported(m),
            ..
        }) => assert!(m.contains("RLE") && m.contains("JPEG Lossless"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_native_pixel_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("IM1");
    Slice::ct("1.2.3", 0.0, 1).write(&p);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 5000]).unwrap();
    assert!(SliceDecoder::new().decode(&p).is_err(), "a cut file must not decode");
}

#[test]
fn series_outside_the_contract_is_excluded_with_its_reason_not_classified() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=12 {
        let mut s = Slice::ct("1.2.840.99.5", 0.0, i);
        // Coronal reformat: the slices stack along y.
        s.orientation = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0];
        s.write(&dir.path().join(format!("cor{i}")));
    }
    let report = pipeline::select_folder(dir.path()).unwrap();
    let s = &report.series[0];
    assert!(s.excluded.as_deref().unwrap_or("").contains("not axial"), "{s:?}");
    assert!(s.rejected.is_none(), "out of contract is not unreadable");
    assert!(!report.any_rejected());
    // Too few slices and a pixel spacing out of range are named too.
    let dir2 = tempfile::tempdir().unwrap();
    for i in 1..=4 {
        let mut s = Slice::ct("1.2.840.99.6", -6.0 * f64::from(i), i);
        s.spacing = 1.6;
        s.write(&dir2.path().join(format!("s{i}")));
    }
    let r2 = pipeline::select_folder(dir2.path()).unwrap();
    let why = r2.series[0].excluded.clone().unwrap_or_default();
    assert!(why.contains("4 slices") && why.contains("pixel spacing"), "{why}");
}

#[test]
fn selection_on_dicom_equals_selection_on_the_same_slices_as_tiff() {
    let Some(shared) = common::shared_or_skip("selection_on_dicom_equals_selection_on_the_same_slices_as_tiff") else {
        return;
    };
    let dicom = pipeline::select_folder(&shared.join("dicom/covid/ctmd_P001/SR_1")).unwrap();
    let tiff = pipeline::select_folder(&shared.join("ct16/covid/ctmd_P001/SR_1")).unwrap();
    assert_eq!(dicom.series.len(), 1);
    let (d, t) = (&dicom.series[0], &tiff.series[0]);
    assert!(d.rejected.is_none() && d.excluded.is_none(), "{d:?}");
    assert_eq!(d.slices.len(), t.slices.len());
    for (a, b) in d.slices.iter().zip(&t.slices) {
        // Same slice in the same place: IMnnnnn.dcm beside IMnnnnn.tif.
        assert_eq!(a.file.trim_end_matches(".dcm"), b.file.trim_end_matches(".tif"));
        assert_eq!((a.dark_pixels, a.selected), (b.dark_pixels, b.selected), "{}", a.file);
    }
    assert_eq!(d.threshold, t.threshold);
    assert_eq!(d.selected, t.selected);
    assert_eq!(d.patient, "98C14734-ASSH");
    let info = d.info.as_ref().unwrap();
    assert!((info.pixel_spacing_mm.unwrap()[0] - 0.748046875).abs() < 1e-9);
    assert!((info.slice_spacing_mm.unwrap() - 6.0).abs() < 0.01, "{info:?}");
}

#[test]
fn jpeg_lossless_pixels_equal_the_tiff_bit_for_bit() {
    let Some(shared) = common::shared_or_skip("jpeg_lossless_pixels_equal_the_tiff_bit_for_bit") else {
        return;
    };
    let (mut a, mut b) = (SliceDecoder::new(), SliceDecoder::new());
    for n in [1, 17, 25, 50] {
        let d = shared.join(format!("dicom/covid/ctmd_P001/SR_1/IM{n:05}.dcm"));
        let t = shared.join(format!("ct16/covid/ctmd_P001/SR_1/IM{n:05}.tif"));
        let (x, y) = (a.decode(&d).unwrap(), b.decode(&t).unwrap());
        assert_eq!((x.width, x.height), (y.width, y.height));
        assert!(x.pixels == y.pixels, "IM{n:05}: DICOM and TIFF pixels differ");
    }
}

#[test]
fn thin_export_with_non_lexical_names_is_one_series_in_head_to_foot_order() {
    let Some(shared) = common::shared_or_skip("thin_export_with_non_lexical_names_is_one_series_in_head_to_foot_order")
    else {
        return;
    };
    let dir = shared.join("dicom/normal/ctmd_normal001_thin");
    let found = ingest::find(&dir).unwrap();
    assert_eq!(found.series.len(), 1);
    assert!(found.ignored.is_empty(), "{:?}", found.ignored);
    let s = &found.series[0];
    assert_eq!(s.files.len(), 154);
    let z: Vec<f64> = s
        .files
        .iter()
        .map(|p| ingest::dicom::read_header(p).unwrap().position.unwrap()[2])
        .collect();
    assert!(z.windows(2).all(|w| w[0] > w[1]), "slices must run head to foot");
    let names: Vec<String> = s.files.iter().map(|p| ingest::name_of(p)).collect();
    // File names are in no useful order (pydicom reads _1 at z -24.5, _67 at -26.5, ...).
    assert_eq!(
        &names[..3],
        ["99C628-ASAD_1.dcm", "99C628-ASAD_67.dcm", "99C628-ASAD_78.dcm"]
    );
    let info = s.info.as_ref().unwrap();
    assert_eq!(info.protocol, None, "the thin series is inside the contract");
    assert!((info.slice_spacing_mm.unwrap() - 2.0).abs() < 0.01);
    let sel = pipeline::select_folder(&dir).unwrap();
    assert!(sel.series[0].rejected.is_none());
    assert!(sel.series[0].selected > 20, "{}", sel.series[0].selected);
}

#[test]
fn usb_export_with_dicomdir_is_read_and_a_listed_missing_file_makes_it_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let se = dir.path().join("DICOM/ST000001/SE000001");
    std::fs::create_dir_all(&se).unwrap();
    let mut ids = Vec::new();
    for i in 1..=12 {
        let name = format!("IM{i:06}");
        Slice::ct("1.2.840.99.31", -6.0 * f64::from(i), i).write(&se.join(&name));
        ids.push(name);
    }
    let listed: Vec<Vec<&str>> = ids
        .iter()
        .map(|n| vec!["DICOM", "ST000001", "SE000001", n.as_str()])
        .collect();
    common::dicom_gen::write_dicomdir(&dir.path().join("DICOMDIR"), &listed);
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert_eq!(report.series.len(), 1);
    assert!(report.series[0].rejected.is_none(), "{:?}", report.series[0]);
    assert_eq!(report.series[0].slices.len(), 12);
    assert!(report.series[0].slices[0].file.starts_with("DICOM/ST000001/SE000001/"));
    assert!(
        report
            .ignored
            .iter()
            .any(|i| i.file == "DICOMDIR" && i.reason.contains("media directory")),
        "{:?}",
        report.ignored
    );
    // The stick lost a file the DICOMDIR lists: no verdict on part of the series.
    std::fs::remove_file(se.join(&ids[5])).unwrap();
    let report = pipeline::select_folder(dir.path()).unwrap();
    let s = &report.series[0];
    assert!(s.rejected.is_some(), "{s:?}");
    assert!(
        s.unreadable
            .iter()
            .any(|u| u.file == "DICOM/ST000001/SE000001/IM000006" && u.reason.contains("missing")),
        "{:?}",
        s.unreadable
    );
}

#[test]
fn two_patients_in_one_folder_get_no_pooled_verdict() {
    // Checked at the report level: the scan pools slices only within one patient.
    let dir = tempfile::tempdir().unwrap();
    series_dir(12, "1.2.840.99.1", dir.path());
    for i in 1..=12 {
        let mut s = Slice::ct("1.2.840.99.2", -6.0 * f64::from(i), i + 100);
        s.patient = "PAT-2".into();
        s.write(&dir.path().join(format!("other{i}")));
    }
    let found = ingest::find(dir.path()).unwrap();
    let mut patients: Vec<&str> = found.series.iter().map(|s| s.patient.as_str()).collect();
    patients.sort();
    assert_eq!(patients, ["PAT-1", "PAT-2"]);
    let mut c = ctsentinel::classify::Classifier::load(&common::models(), Default::default()).unwrap();
    let r = pipeline::scan_folder(dir.path(), &mut c, &mut |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert_eq!(r.verdict, ctsentinel::decide::Verdict::Undetermined);
    assert!(
        r.reason.as_deref().unwrap_or("").contains("2 patients"),
        "{:?}",
        r.reason
    );
    assert!(
        r.series.iter().all(|s| s.slices.iter().all(|sl| sl.p_covid.is_none())),
        "nothing is classified"
    );
}

#[test]
fn forged_pixel_data_length_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("IM1");
    Slice::ct("1.2.3", 0.0, 1).write(&p);
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes
        .windows(8)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0])
        .expect("pixel data element");
    bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    match SliceDecoder::new().decode(&p) {
        Err(IngestError::Decode {
            reason: DecodeError::Dicom(m),
            ..
        }) => assert!(m.contains("forged length"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Discovery reads the same header: the file is unreadable, never grouped.
    let report = pipeline::select_folder(dir.path()).unwrap();
    assert!(report.series[0].rejected.is_some());
}

#[test]
fn colour_and_missing_pixel_data_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("IM1");
    Slice::ct("1.2.3", 0.0, 1).write(&p);
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.windows(11).position(|w| w == b"MONOCHROME2").unwrap();
    bytes[at..at + 11].copy_from_slice(b"RGB        ");
    let q = dir.path().join("IM2");
    std::fs::write(&q, &bytes).unwrap();
    assert!(matches!(
        SliceDecoder::new().decode(&q),
        Err(IngestError::Decode {
            reason: DecodeError::PixelFormat(_),
            ..
        })
    ));
    // Cut just before the pixel data element: a header without pixels.
    let bytes = std::fs::read(&p).unwrap();
    let at = bytes.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
    std::fs::write(&q, &bytes[..at]).unwrap();
    match SliceDecoder::new().decode(&q) {
        Err(IngestError::Decode { reason, .. }) => {
            assert!(reason.to_string().to_lowercase().contains("pixel"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
