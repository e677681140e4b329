//! Issue 15: a compressed slice whose stream is corrupt, cut or extended must be refused with a
//! specific error, never decoded as data. Every stream here is generated; the last test
//! corrupts a real Deflate slice of the shared normal patient the way a bad copy would.

mod common;

use std::io::Write;

use common::TiffSpec;
use ctsentinel::ingest::{DecodeError, IngestError, SliceDecoder};

const W: u32 = 512;
const H: u32 = 512;

/// CT-like content: smooth body with texture, so the compressed stream has real structure.
fn pixels() -> Vec<u16> {
    (0..W * H)
        .map(|i| {
            let (x, y) = ((i % W) as i32 - 256, (i / W) as i32 - 256);
            let body = if x * x + y * y < 200 * 200 { 1000 } else { 24 };
            (body + ((x * 7 + y * 13) & 63)) as u16
        })
        .collect()
}

fn raw_bytes(px: &[u16]) -> Vec<u8> {
    px.iter().flat_map(|p| p.to_le_bytes()).collect()
}

fn deflate(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

fn lzw(raw: &[u8]) -> Vec<u8> {
    weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
        .encode(raw)
        .unwrap()
}

/// PackBits with alternating literal and repeat runs.
fn packbits(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let mut run = 1;
        while i + run < raw.len() && raw[i + run] == raw[i] && run < 128 {
            run += 1;
        }
        if run >= 2 {
            out.push((1 - run as i32) as i8 as u8);
            out.push(raw[i]);
            i += run;
        } else {
            let n = (raw.len() - i).min(128);
            out.push((n - 1) as u8);
            out.extend_from_slice(&raw[i..i + n]);
            i += n;
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<u16>, IngestError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("IM00001.tif");
    std::fs::write(&path, bytes).unwrap();
    let mut d = SliceDecoder::new();
    d.decode(&path).map(|s| s.pixels.to_vec())
}

fn file(compression: u16, data: Vec<u8>) -> Vec<u8> {
    TiffSpec::compressed(W, H, compression, data).bytes()
}

/// The stream is refused, with a reason that names the compression and says it is corrupt.
fn assert_refused(what: &str, compression: u16, data: Vec<u8>) {
    match decode(&file(compression, data)) {
        Err(IngestError::Decode {
            reason: DecodeError::Corrupt(m),
            ..
        }) => {
            let l = m.to_lowercase();
            assert!(
                ["deflate", "lzw", "packbits", "truncated", "corrupt"]
                    .iter()
                    .any(|w| l.contains(w)),
                "{what}: reason must say what is wrong: {m}"
            )
        }
        Err(other) => panic!("{what}: expected a corrupt-data error, got {other}"),
        Ok(_) => panic!("{what}: a broken stream was decoded as a valid slice"),
    }
}

fn codecs() -> Vec<(&'static str, u16, Vec<u8>)> {
    let raw = raw_bytes(&pixels());
    vec![
        ("Deflate", 8, deflate(&raw)),
        ("LZW", 5, lzw(&raw)),
        ("PackBits", 32773, packbits(&raw)),
    ]
}

#[test]
fn intact_compressed_slices_decode_exactly() {
    let px = pixels();
    for (name, code, data) in codecs() {
        assert_eq!(
            decode(&file(code, data)).unwrap_or_else(|e| panic!("{name}: {e}")),
            px,
            "{name}"
        );
    }
}

#[test]
fn corrupt_deflate_stream_is_refused_not_decoded() {
    let raw = raw_bytes(&pixels());
    let z = deflate(&raw);
    // Flip bytes all over the stream: header, Huffman tables, body, checksum.
    for &at in &[2usize, 10, 40, z.len() / 4, z.len() / 2, z.len() - 30, z.len() - 2] {
        let mut bad = z.clone();
        bad[at] ^= 0x5a;
        assert_refused(&format!("deflate byte {at} flipped"), 8, bad);
    }
}

#[test]
fn cut_compressed_streams_are_refused() {
    for (name, code, data) in codecs() {
        for keep in [data.len() - 1, data.len() - 5, data.len() / 2, 3] {
            assert_refused(&format!("{name} cut to {keep} bytes"), code, data[..keep].to_vec());
        }
    }
}

#[test]
fn data_after_the_end_of_a_compressed_stream_is_refused() {
    for (name, code, mut data) in codecs() {
        data.extend_from_slice(b"\x01garbage after the end");
        assert_refused(&format!("{name} + trailing data"), code, data);
    }
}

#[test]
fn a_stream_that_decompresses_to_too_much_is_refused() {
    let raw = raw_bytes(&pixels());
    let mut more = raw.clone();
    more.extend_from_slice(&raw[..4096]);
    for (name, code, data) in [
        ("Deflate", 8, deflate(&more)),
        ("LZW", 5, lzw(&more)),
        ("PackBits", 32773, packbits(&more)),
    ] {
        assert_refused(&format!("{name} with extra rows"), code, data);
    }
}

#[test]
fn corrupt_lzw_codes_are_refused() {
    let raw = raw_bytes(&pixels());
    let data = lzw(&raw);
    // A changed LZW code changes the dictionary from there on, so the length or the stream's
    // end almost never fits any more. LZW has no checksum: a change that keeps both is
    // undetectable (as in uncompressed data), so this counts, over 40 places, and needs
    // nearly all refused and none decoded to the original pixels' length with other content
    // unnoticed by more than a few.
    let px = pixels();
    let (mut refused, mut undetected) = (0, 0);
    for k in 1..=40 {
        let at = data.len() * k / 42;
        let mut bad = data.clone();
        bad[at] ^= 0xff;
        bad[at + 1] ^= 0xff;
        match decode(&file(5, bad)) {
            Err(IngestError::Decode { .. }) => refused += 1,
            Err(e) => panic!("LZW byte {at}: unexpected error kind {e}"),
            Ok(got) => undetected += usize::from(got != px),
        }
    }
    eprintln!("LZW: {refused} of 40 corrupt streams refused, {undetected} undetectable");
    assert!(refused >= 36, "only {refused} of 40 corrupt LZW streams refused");
}

#[test]
fn corrupt_packbits_run_header_is_refused() {
    let raw = raw_bytes(&pixels());
    let data = packbits(&raw);
    // The first run header: a literal of 128 becomes a repeat, so the strip's length is wrong.
    let mut bad = data.clone();
    bad[0] = 0x90;
    assert_refused("PackBits header changed", 32773, bad);
}

#[test]
fn unsupported_compression_is_named() {
    let raw = raw_bytes(&pixels());
    match decode(&file(7, deflate(&raw))) {
        Err(IngestError::Decode {
            reason: DecodeError::Unsupported(m),
            ..
        }) => assert!(m.contains('7'), "{m}"),
        other => panic!("JPEG-coded 16-bit TIFF must be refused as unsupported: {other:?}"),
    }
}

#[test]
fn corrupt_real_deflate_slice_is_refused() {
    let Some(shared) = common::shared_or_skip("corrupt_real_deflate_slice_is_refused") else {
        return;
    };
    let dir = shared.join("ct16/normal/ctmd_normal001/SR_1");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let original = std::fs::read(&names[names.len() / 2]).unwrap();
    let good = decode(&original).expect("the shared slice decodes");
    // Corrupt the middle of the file (inside the Deflate strips; the IFD is small).
    let mut refused = 0;
    for frac in [0.3, 0.5, 0.7] {
        let at = (original.len() as f64 * frac) as usize;
        let mut bad = original.clone();
        for b in &mut bad[at..at + 8] {
            *b ^= 0xa5;
        }
        match decode(&bad) {
            Err(IngestError::Decode { .. }) => refused += 1,
            Err(e) => panic!("byte {at}: unexpected error kind {e}"),
            Ok(px) => assert_eq!(px, good, "byte {at}: corrupt real slice decoded to other pixels"),
        }
    }
    assert!(refused >= 2, "only {refused} of 3 corrupt copies were refused");
}
