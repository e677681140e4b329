//! The fuzz targets' seeds and findings, replayed in every `cargo test` (issue 15), so the
//! harnesses in `ctsentinel::fuzzing` (which `fuzz/fuzz_targets/*.rs` call) stay alive on the
//! stable toolchain, and every input the fuzzer ever crashed on stays fixed.
//!
//! - The generated seeds (`seeds`) are written to `fuzz/corpus/<target>/` by
//!   `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` (`fuzz/run.sh` does it);
//!   `fuzz/run.sh` adds the real shared files (../shared/data) to the slice and header corpora.
//! - `fuzz/regressions/<target>/` holds minimised inputs of fixed crashes (committed, small).
//!
//! Each seed is checked for the answer it should give (a valid seed must be accepted, so a
//! harness that rejects everything fails here), and every input must be answered in bounded
//! time without a panic.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dicom_gen;
use common::TiffSpec;
use ctsentinel::fuzzing;

const TARGETS: [&str; 9] = [
    "slice",
    "dicom_header",
    "image8",
    "dicom_peer",
    "service_config",
    "model_card",
    "journal",
    "labels_csv",
    "web_request",
];

/// A 370x340 slice (the smallest the lung ROI allows) with some structure, as u16.
fn small_slice() -> (u32, u32, Vec<u16>) {
    let (w, h) = (ctsentinel::ingest::MIN_WIDTH, ctsentinel::ingest::MIN_HEIGHT);
    let px = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            if (x / 37 + y / 34) % 2 == 0 {
                24
            } else {
                1024 + (x % 50) as u16
            }
        })
        .collect();
    (w, h, px)
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn lzw(bytes: &[u8]) -> Vec<u8> {
    weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
        .encode(bytes)
        .unwrap()
}

/// PackBits: literal runs of up to 128 bytes (valid, if not compact).
fn packbits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(128) {
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
    out
}

/// A generated DICOM CT slice file (explicit VR little endian, native pixels).
fn dicom_file(size: u16) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.dcm");
    let mut s = dicom_gen::Slice::ct("1.2.826.0.1.3680043.9.7777.1", 10.0, 1);
    s.size = size;
    s.pixels = dicom_gen::phantom(size as usize, 1);
    s.write(&path);
    std::fs::read(path).unwrap()
}

/// What a scanner sends on an established association for one instance: a C-STORE-RQ
/// command set and the dataset, as P-DATA-TF PDUs within the receiver's PDU size.
fn c_store_stream() -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
    use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

    let file = dicom_file(ctsentinel::ingest::MIN_WIDTH as u16);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.dcm");
    std::fs::write(&p, &file).unwrap();
    let obj = dicom_object::open_file(&p).unwrap();
    let instance = obj.meta().media_storage_sop_instance_uid().to_string();
    let mut dataset = Vec::new();
    obj.write_dataset_with_ts(&mut dataset, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(dicom_gen::CT),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x0001u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0000u16)),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(instance.as_str()),
        ),
    ]);
    let mut command = Vec::new();
    cmd.write_dataset_with_ts(&mut command, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    let mut out = Vec::new();
    let pdv = |value_type, is_last, data: &[u8]| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: 1,
            value_type,
            is_last,
            data: data.to_vec(),
        }],
    };
    dicom_ul::pdu::write_pdu(&mut out, &pdv(PDataValueType::Command, true, &command)).unwrap();
    let chunks: Vec<&[u8]> = dataset.chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        dicom_ul::pdu::write_pdu(&mut out, &pdv(PDataValueType::Data, i + 1 == chunks.len(), c)).unwrap();
    }
    dicom_ul::pdu::write_pdu(&mut out, &Pdu::ReleaseRQ).unwrap();
    out
}

fn journal_seed() -> Vec<u8> {
    use ctsentinel::service::journal::{Journal, Record, State};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let mut j = Journal::open(&path).unwrap();
    for (k, state) in [
        ("a", State::Processing),
        ("a", State::Done),
        ("b", State::Processing),
        ("b", State::Crashed),
        ("c", State::SetAside),
    ] {
        j.append(&Record {
            key: format!("key-{k}"),
            series: format!("patient/{k}"),
            state,
            at: 1_764_000_000,
            place: None,
            stat: None,
        })
        .unwrap();
    }
    drop(j);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"0123456789abcdef {\"torn");
    bytes
}

fn image8_seeds() -> Vec<(String, Vec<u8>, bool)> {
    let img = image::GrayImage::from_fn(32, 24, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
    let mut out = Vec::new();
    for (name, fmt) in [
        ("gray.png", image::ImageFormat::Png),
        ("gray.jpg", image::ImageFormat::Jpeg),
    ] {
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, fmt).unwrap();
        out.push((name.to_string(), b.into_inner(), true));
    }
    let rgb = image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
    let mut b = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut b, image::ImageFormat::Png).unwrap();
    out.push(("rgb.png".into(), b.into_inner(), false));
    out
}

/// The generated seeds of `target`: (name, bytes, accepted?).
fn seeds(target: &str) -> Vec<(String, Vec<u8>, bool)> {
    let repo = common::repo();
    let text = |p: &str| std::fs::read(repo.join(p)).unwrap();
    match target {
        "slice" => {
            let (w, h, px) = small_slice();
            let raw: Vec<u8> = px.iter().flat_map(|p| p.to_le_bytes()).collect();
            vec![
                ("deflate.tif".into(), TiffSpec::compressed(w, h, 8, deflate(&raw)).bytes(), true),
                ("lzw.tif".into(), TiffSpec::compressed(w, h, 5, lzw(&raw)).bytes(), true),
                ("packbits.tif".into(), TiffSpec::compressed(w, h, 32773, packbits(&raw)).bytes(), true),
                ("native.dcm".into(), dicom_file(370), true),
                ("cut.tif".into(), TiffSpec::compressed(w, h, 8, deflate(&raw)[..900].to_vec()).bytes(), false),
            ]
        }
        "dicom_header" => {
            let f = dicom_file(370);
            let cut = f[..f.len() - 200_000].to_vec();
            let dir = tempfile::tempdir().unwrap();
            let dd = dir.path().join("DICOMDIR");
            dicom_gen::write_dicomdir(&dd, &[vec!["DICOM", "ST000", "SE000", "IM000001"]]);
            vec![
                ("native.dcm".into(), f, true),
                ("cut-pixels.dcm".into(), cut, false),
                ("DICOMDIR".into(), std::fs::read(&dd).unwrap(), true),
            ]
        }
        "image8" => image8_seeds(),
        "dicom_peer" => vec![("c-store.pdus".into(), c_store_stream(), true)],
        "service_config" => vec![
            ("example.toml".into(), text("boards/ctsentinel.example.toml"), true),
            (
                "dicom.toml".into(),
                b"board = \"generic-x86_64\"\ndrop = [\"/srv/drop\"]\nstate = \"/var/lib/ctsentinel\"\n\
                  [dicom]\nlisten = \"127.0.0.1:11112\"\nae_title = \"CTSENTINEL\"\nallowed_callers = [\"CT_SCANNER\"]\n"
                    .to_vec(),
                true,
            ),
        ],
        "model_card" => vec![("shipped.card.toml".into(), std::fs::read(common::card_path()).unwrap(), true)],
        "journal" => vec![("journal".into(), journal_seed(), true)],
        "labels_csv" => vec![
            ("labels.csv".into(), b"path,label\n# site A\np1,covid\n\"p 2\",normal\np3,other\n".to_vec(), true),
            ("slices.csv".into(), b"file,infected\nSR_1/IM00001.tif,0\nIM00002.tif,1\n".to_vec(), true),
            ("bad-label.csv".into(), b"path,label\np1,pneumonia\n".to_vec(), false),
        ],
        "web_request" => vec![
            ("signin".into(), b"GET\xff/signin\xff\xff\xff".to_vec(), true),
            ("style".into(), b"GET\xff/static/style.css".to_vec(), true),
            ("list".into(), b"GET\xff/\xff__Host-ctsentinel=00\xff\xff".to_vec(), false),
            ("forged".into(), b"GET\xff/result/..%2F..%2Fweb%2Fpassword\xff\xff\xff".to_vec(), false),
            (
                "wrong-password".into(),
                b"POST\xff/signin\xff\xffhttps://box:8443\xffpassword=guess".to_vec(),
                false,
            ),
        ],
        other => panic!("no target {other}"),
    }
}

fn run(target: &str, bytes: &[u8]) -> bool {
    let repo = common::repo();
    match target {
        "slice" => fuzzing::slice(bytes),
        "dicom_header" => fuzzing::dicom_header(bytes),
        "image8" => fuzzing::image8(bytes),
        "dicom_peer" => fuzzing::dicom_peer(bytes),
        "service_config" => fuzzing::service_config(bytes, &repo.join("boards")),
        "model_card" => fuzzing::model_card(bytes),
        "journal" => {
            let dir = tempfile::tempdir().unwrap();
            fuzzing::journal(bytes, dir.path())
        }
        "labels_csv" => {
            let dir = tempfile::tempdir().unwrap();
            fuzzing::labels_csv(bytes, dir.path())
        }
        "web_request" => {
            // One page for the whole test binary (the harness keeps it, as the fuzzer does).
            static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
            fuzzing::web_request(bytes, DIR.get_or_init(|| tempfile::tempdir().unwrap()).path())
        }
        other => panic!("no target {other}"),
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_fuzz_target_accepts_its_valid_seeds_and_refuses_its_broken_ones() {
    for t in TARGETS {
        for (name, bytes, accepted) in seeds(t) {
            assert_eq!(run(t, &bytes), accepted, "{t}/{name}");
        }
    }
}

#[test]
fn every_committed_fuzz_finding_and_corpus_input_is_answered_without_a_panic_in_bounded_time() {
    let fuzz = common::repo().join("fuzz");
    let mut n = 0;
    for t in TARGETS {
        for dir in ["regressions", "corpus"] {
            for f in files_in(&fuzz.join(dir).join(t)) {
                let bytes = match std::fs::read(&f) {
                    Ok(b) => b,
                    // A fuzzer running on this checkout replaces corpus files as it reduces them.
                    Err(e) if dir == "corpus" && e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{}: {e}", f.display()),
                };
                let start = Instant::now();
                let _ = run(t, &bytes);
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{}: {:?}",
                    f.display(),
                    start.elapsed()
                );
                n += 1;
            }
        }
    }
    eprintln!("replayed {n} committed fuzz inputs");
}

/// Writes the generated seeds to `fuzz/corpus/<target>/` (run by `fuzz/run.sh`).
#[test]
#[ignore]
fn write_seed_corpus() {
    for t in TARGETS {
        let dir = common::repo().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes, _) in seeds(t) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
