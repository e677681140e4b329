//! Byte-level entry points of every parser that reads input we do not control: slices from a
//! drop folder or a USB stick (TIFF, DICOM, 8-bit PNG/JPEG), what a DICOM peer sends, the
//! service config, the model card, the service's own journal and a site's validation labels. The fuzz targets in `fuzz/`
//! call these, and `tests/fuzz_corpus.rs` replays the committed corpus through them in every
//! `cargo test`, so the harnesses cannot rot. Each returns whether the input was accepted; the
//! bugs they look for are panics, hangs and allocations driven by declared lengths.
//!
//! Not part of the product's interface (hidden from the docs).

use std::path::Path;

use crate::{classify, ingest, service};

/// A 16-bit slice file as `SliceDecoder::decode` reads it (TIFF or DICOM by signature), with
/// the complete-decode checks; an accepted slice has exactly width × height pixels.
pub fn slice(bytes: &[u8]) -> bool {
    let mut d = ingest::SliceDecoder::new();
    match d.decode_bytes(bytes) {
        Ok(s) => {
            assert_eq!(
                s.pixels.len(),
                s.width * s.height,
                "accepted slice with the wrong pixel count"
            );
            true
        }
        Err(_) => false,
    }
}

/// A DICOM file's header as grouping and ordering read it (with the bounds pre-scan), and the
/// same bytes as a DICOMDIR (the watcher reads a USB export's DICOMDIR at every look).
pub fn dicom_header(bytes: &[u8]) -> bool {
    let dicomdir = ingest::dicom::dicomdir_image_ids(bytes);
    ingest::dicom::header_of(bytes).is_ok() || dicomdir.is_ok_and(|ids| !ids.is_empty())
}

/// An 8-bit grayscale PNG or JPEG.
pub fn image8(bytes: &[u8]) -> bool {
    match ingest::decode_gray8_bytes(bytes) {
        Ok(g) => {
            assert_eq!(
                g.pixels.len(),
                g.width * g.height,
                "accepted image with the wrong pixel count"
            );
            true
        }
        Err(_) => false,
    }
}

/// What a DICOM peer sends: the real association machine (`dicom_net::fuzz_peer`), with an
/// instance limit of 1 MiB.
pub fn dicom_peer(bytes: &[u8]) -> bool {
    crate::dicom_net::fuzz_peer(bytes) > 0
}

/// A service config (`board` profiles from `boards`, the repository's or the package's).
pub fn service_config(bytes: &[u8], boards: &Path) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    service::config::Config::parse(text, Path::new("/etc/ctsentinel/ctsentinel.toml"), Some(boards)).is_ok()
}

/// A model card (only parsed and validated: the model file beside it is not opened).
pub fn model_card(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    classify::card::ModelCard::parse(text, Path::new("models/fuzz.card.toml")).is_ok()
}

/// The service's journal as found on disk at start-up (torn, damaged or hostile), through
/// `Journal::open` on a file in `dir`, then replayed.
pub fn journal(bytes: &[u8], dir: &Path) -> bool {
    let path = dir.join("journal");
    if std::fs::write(&path, bytes).is_err() {
        return false;
    }
    let ok = match service::journal::Journal::open(&path) {
        Ok(j) => {
            let _ = j.replay();
            true
        }
        Err(_) => false,
    };
    let _ = std::fs::remove_file(&path);
    ok
}

/// A site's validation labels as `ctsentinel validate` reads them (`validate::read_labels`), in
/// `dir`: the bytes as the labels CSV, and the same bytes as the slice-labels CSV a fixed labels
/// file names (`path,label,slices`), so both readers see every input.
pub fn labels_csv(bytes: &[u8], dir: &Path) -> bool {
    let (labels, slices, wrapper) = (dir.join("labels.csv"), dir.join("s.csv"), dir.join("wrapper.csv"));
    let written = std::fs::write(&labels, bytes)
        .and_then(|()| std::fs::write(&slices, bytes))
        .and_then(|()| std::fs::write(&wrapper, b"path,label,slices\np,covid,s.csv\n"));
    if written.is_err() {
        return false;
    }
    let as_labels = crate::validate::read_labels(&labels).is_ok();
    let as_slices = crate::validate::read_labels(&wrapper).is_ok();
    as_labels || as_slices
}
