//! Helpers shared by the integration tests: locating ../shared data and writing tiny TIFFs.
#![allow(dead_code)]

pub mod dicom_gen;
pub mod same_outputs;

use std::path::{Path, PathBuf};

/// `../shared/data` beside the repository, or `CTSENTINEL_SHARED_DATA`.
pub fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("CTSENTINEL_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    p.join("ct16").is_dir().then_some(p)
}

/// Shared data, or a loud skip message. CI sets `CTSENTINEL_REQUIRE_SHARED=1`, turning the
/// skip into a failure so the real-data tests can never silently stop running there.
pub fn shared_or_skip(test: &str) -> Option<PathBuf> {
    let p = shared_data();
    if p.is_none() {
        assert!(
            std::env::var_os("CTSENTINEL_REQUIRE_SHARED").is_none(),
            "{test}: ../shared/data is required (CTSENTINEL_REQUIRE_SHARED is set) but missing"
        );
        eprintln!("\n!!! SKIPPED {test}: ../shared/data/ct16 not found (set CTSENTINEL_SHARED_DATA) !!!\n");
    }
    p
}

/// The repository's Python venv interpreter when it has numpy + tifffile, for independent
/// references. CI sets `CTSENTINEL_REQUIRE_PYTHON=1`, turning a missing venv into a failure.
pub fn reference_python(test: &str) -> Option<PathBuf> {
    reference_python_with(test, "numpy, tifffile")
}

/// Like [`reference_python`], for references that also need other modules (e.g. onnxruntime).
pub fn reference_python_with(test: &str, modules: &str) -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CTSENTINEL_REQUIRE_PYTHON").is_none(),
            "{test}: .venv with {modules} required (CTSENTINEL_REQUIRE_PYTHON is set); run scripts/setup-venv.sh"
        );
        eprintln!("\n!!! SKIPPED part of {test}: no .venv with {modules} (run scripts/setup-venv.sh) !!!\n");
        return None;
    }
    Some(py)
}

/// What to put in a hand-made, uncompressed, little-endian, single-strip TIFF.
#[derive(Clone, Debug)]
pub struct TiffSpec {
    pub width: u32,
    pub height: u32,
    pub bits: u16,
    pub samples: u16,
    /// 1 unsigned, 2 signed, 3 float.
    pub sample_format: u16,
    /// 1 BlackIsZero, 2 RGB, 0 WhiteIsZero.
    pub photometric: u16,
    /// Pixel bytes written after the header; may be shorter than the header declares.
    pub data: Vec<u8>,
    /// Write a second IFD (multi-page file).
    pub second_page: bool,
    /// TIFF compression code; `data` must then hold the compressed strip.
    pub compression: u16,
}

impl TiffSpec {
    /// A valid 16-bit unsigned grayscale slice from row-major pixels.
    pub fn gray16(width: u32, height: u32, pixels: &[u16]) -> Self {
        TiffSpec {
            width,
            height,
            bits: 16,
            samples: 1,
            sample_format: 1,
            photometric: 1,
            data: pixels.iter().flat_map(|p| p.to_le_bytes()).collect(),
            second_page: false,
            compression: 1,
        }
    }

    /// The same slice with its one strip already compressed (`data` = the compressed bytes).
    pub fn compressed(width: u32, height: u32, compression: u16, data: Vec<u8>) -> Self {
        TiffSpec {
            compression,
            data,
            ..TiffSpec::gray16(width, height, &[])
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let declared = self.width as u64 * self.height as u64 * (self.bits as u64 / 8) * self.samples as u64;
        let mut out = b"II*\0".to_vec();
        // Layout: header(8) | BitsPerSample array (if samples>1) | pixel data | IFD(s)
        let bps_off = 8u32;
        let bps_len = if self.samples > 1 { 2 * self.samples as u32 } else { 0 };
        let data_off = bps_off + bps_len;
        let ifd_off = data_off + self.data.len() as u32;
        let ifd_off = ifd_off + (ifd_off & 1);
        out.extend_from_slice(&ifd_off.to_le_bytes());
        if self.samples > 1 {
            for _ in 0..self.samples {
                out.extend_from_slice(&self.bits.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.data);
        if out.len() % 2 == 1 {
            out.push(0);
        }
        let entries = |next: u32| {
            let mut e: Vec<(u16, u16, u32, u32)> = vec![
                (256, 4, 1, self.width),
                (257, 4, 1, self.height),
                (
                    258,
                    3,
                    self.samples as u32,
                    if self.samples > 1 { bps_off } else { self.bits as u32 },
                ),
                (259, 3, 1, self.compression as u32),
                (262, 3, 1, self.photometric as u32),
                (273, 4, 1, data_off),
                (277, 3, 1, self.samples as u32),
                (278, 4, 1, self.height),
                (
                    279,
                    4,
                    1,
                    if self.compression == 1 {
                        declared.min(u32::MAX as u64) as u32
                    } else {
                        self.data.len() as u32
                    },
                ),
                (339, 3, 1, self.sample_format as u32),
            ];
            e.sort_by_key(|x| x.0);
            let mut b = Vec::new();
            b.extend_from_slice(&(e.len() as u16).to_le_bytes());
            for (tag, typ, count, val) in e {
                b.extend_from_slice(&tag.to_le_bytes());
                b.extend_from_slice(&typ.to_le_bytes());
                b.extend_from_slice(&count.to_le_bytes());
                if typ == 3 && count == 1 {
                    b.extend_from_slice(&(val as u16).to_le_bytes());
                    b.extend_from_slice(&[0, 0]);
                } else {
                    b.extend_from_slice(&val.to_le_bytes());
                }
            }
            b.extend_from_slice(&next.to_le_bytes());
            b
        };
        let first_len = entries(0).len() as u32;
        let next = if self.second_page {
            out.len() as u32 + first_len
        } else {
            0
        };
        out.extend(entries(next));
        if self.second_page {
            out.extend(entries(0));
        }
        out
    }
}

/// Write `pixels` as a valid 16-bit slice at `path`.
pub fn write_gray16(path: &Path, width: u32, height: u32, pixels: &[u16]) {
    std::fs::write(path, TiffSpec::gray16(width, height, pixels).bytes()).unwrap();
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped model folder.
pub fn models() -> PathBuf {
    repo().join("models")
}

/// The shipped model's file names, read from its card (the single `*.toml` in `models/`), so
/// the tests follow the shipped model instead of naming one.
pub struct Shipped {
    /// `models/<name>.toml`.
    pub card: String,
    /// The int8 ONNX file the card names.
    pub model: String,
    /// The self-test's known answers, `<name>.kat.json`.
    pub kat: String,
}

pub fn shipped() -> Shipped {
    let mut cards: Vec<PathBuf> = std::fs::read_dir(models())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert_eq!(cards.len(), 1, "models/ must hold exactly one card: {cards:?}");
    let card = cards.pop().unwrap();
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(&card).unwrap()).unwrap();
    Shipped {
        card: card.file_name().unwrap().to_string_lossy().into_owned(),
        model: t["model"]["file"].as_str().unwrap().to_owned(),
        kat: format!("{}.kat.json", t["model"]["name"].as_str().unwrap()),
    }
}

/// Path of the shipped model card.
pub fn card_path() -> PathBuf {
    models().join(shipped().card)
}

/// A 512x512 16-bit slice of `value` with `dark` air pixels inside the lung ROI.
pub fn write_slice(path: &Path, value: u16, dark: usize) {
    let mut px = vec![value; 512 * 512];
    for i in 0..dark {
        px[(240 + i / 250) * 512 + 120 + i % 250] = 24;
    }
    std::fs::write(path, TiffSpec::gray16(512, 512, &px).bytes()).unwrap();
}

/// The binary under test as a command. With `CTSENTINEL_TEST_RUNNER` set (e.g. `qemu-aarch64`,
/// by `scripts/cross-aarch64.sh test`) the binary is started through that runner, so the
/// integration suites run an aarch64 build under emulation without binfmt_misc.
pub fn ctsentinel() -> std::process::Command {
    let bin = env!("CARGO_BIN_EXE_ctsentinel");
    match std::env::var_os("CTSENTINEL_TEST_RUNNER").filter(|r| !r.is_empty()) {
        Some(runner) => {
            let mut c = std::process::Command::new(runner);
            c.arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}

/// Every file below `dir` (folders walked, links not followed), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Poll `cond` every 20 ms until it holds; fail the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Copy `take` slice files of the series `src`, after skipping the first `skip` in name order,
/// into `dst` (created): a short real series for tests that need a real result quickly.
pub fn copy_slices(src: &Path, dst: &Path, skip: usize, take: usize) {
    std::fs::create_dir_all(dst).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names.iter().skip(skip).take(take) {
        std::fs::copy(src.join(n), dst.join(n)).unwrap();
    }
}
