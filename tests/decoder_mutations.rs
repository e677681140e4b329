//! Seeded mutation storms against the slice decoders (issue 15): thousands of corrupted copies
//! of real and generated TIFF and DICOM files. Every one must give `Ok` or a specific error,
//! never a panic (the shipped binary aborts on a panic) and never take long. This is not a
//! coverage-guided fuzzer (those are in `fuzz/`, on the nightly toolchain, see fuzz/README.md);
//! it runs in every `cargo test` and guards the same promise.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ctsentinel::ingest::SliceDecoder;

/// xorshift64*: deterministic, so a failure names its seed and case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One corrupted copy: flips, overwrites with boundary values, cuts, duplications, inserts.
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)],
            2 => {
                // Overwrite 4 bytes with a boundary length (forged lengths, dimensions).
                let word = [0u32, 1, 0xFFFF, 0xFFFF_FFFE, 0xFFFF_FFFF, 0x8000_0000][rng.below(6)];
                for (i, b) in word.to_le_bytes().iter().enumerate() {
                    if at + i < v.len() {
                        v[at + i] = *b;
                    }
                }
            }
            3 => v.truncate(at.max(1)),
            4 => {
                let len = rng.below(64).min(v.len() - at);
                let chunk = v[at..at + len].to_vec();
                v.splice(at..at, chunk);
            }
            5 => {
                let n = rng.below(32);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
            _ => {
                let len = rng.below(256).min(v.len() - at);
                v.drain(at..at + len);
            }
        }
        if v.is_empty() {
            v.push(0);
        }
    }
    v
}

fn storm(name: &str, base: &[u8], cases: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("IM00001");
    let mut rng = Rng(seed);
    let mut dec = SliceDecoder::new();
    let (mut ok, mut refused) = (0, 0);
    let mut slowest = Duration::ZERO;
    for case in 0..cases {
        let bytes = mutate(base, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| dec.decode(&path).map(|s| s.pixels.len())));
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("ctsentinel-panic-{name}-{seed}-{case}"));
                std::fs::write(&keep, &bytes).unwrap();
                panic!(
                    "{name}: case {case} (seed {seed}) panicked the decoder; input kept at {}",
                    keep.display()
                );
            }
        }
        // A fresh decoder after a panic-free case keeps the buffers' reuse honest too.
        if case % 50 == 0 {
            dec = SliceDecoder::new();
        }
    }
    eprintln!("{name}: {cases} mutated files: {ok} decoded, {refused} refused, slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{name}: one input took {slowest:?}");
}

fn generated_dicom() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.dcm");
    common::dicom_gen::Slice::ct("1.2.3", -50.0, 10).write(&p);
    std::fs::read(&p).unwrap()
}

#[test]
fn mutated_dicom_files_never_panic_the_decoder() {
    storm("generated-dicom", &generated_dicom(), 2000, 0x5eed_0001);
}

#[test]
fn mutated_jpeg_lossless_dicom_never_panics_the_decoder() {
    let Some(shared) = common::shared_or_skip("mutated_jpeg_lossless_dicom_never_panics_the_decoder") else {
        return;
    };
    let base = std::fs::read(shared.join("dicom/covid/ctmd_P001/SR_1/IM00025.dcm")).unwrap();
    storm("jpeg-lossless-dicom", &base, 1000, 0x5eed_0002);
}

#[test]
fn mutated_deflate_tiff_never_panics_the_decoder() {
    let Some(shared) = common::shared_or_skip("mutated_deflate_tiff_never_panics_the_decoder") else {
        return;
    };
    let dir = shared.join("ct16/normal/ctmd_normal001/SR_1");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let base = std::fs::read(&files[files.len() / 2]).unwrap();
    storm("deflate-tiff", &base, 1000, 0x5eed_0003);
}

#[test]
fn mutated_uncompressed_tiff_never_panics_the_decoder() {
    let px: Vec<u16> = (0..512 * 512).map(|i| (i % 3000) as u16).collect();
    let base = common::TiffSpec::gray16(512, 512, &px).bytes();
    storm("plain-tiff", &base, 1000, 0x5eed_0004);
}
