//! Complete-decode check for compressed TIFF slices (issue 15).
//!
//! Why this exists: the `tiff` crate reads each strip with `read_exact` of the strip's
//! expected size and stops there. A corrupt Deflate stream can decode to *more* bytes than it
//! should before it reaches the broken code, so the crate fills the image with garbage and
//! never sees the error ("invalid distance too far back" in zlib's words); nor does it look at
//! the stream's end or its Adler-32 checksum. A pixel buffer that was not completely and
//! correctly decompressed must never reach selection or the model.
//!
//! So every compressed strip (or tile) is decompressed a second time here, to its very end,
//! by a strict reader: the stream must end properly (Deflate: end of stream and checksum;
//! LZW: the end-of-information code; PackBits: the last run ends exactly at the end of the
//! strip), without error, producing exactly the bytes that the strip must hold and consuming
//! all of its declared bytes (only zero padding may follow an LZW or Deflate stream). The
//! pixels still come from the `tiff` crate; this check only decides whether they may be used.
//! It costs one extra decompression per slice (about a millisecond), against a model run of
//! tens of milliseconds.

use tiff::decoder::Decoder;
use tiff::tags::Tag;

use super::DecodeError;

/// TIFF compression codes this appliance accepts for 16-bit slices.
const NONE: u16 = 1;
const LZW: u16 = 5;
const DEFLATE: u16 = 8;
const DEFLATE_OLD: u16 = 32946;
const PACKBITS: u16 = 32773;

/// Check that every chunk of the (already decoded) image in `file` decompresses completely
/// and exactly. `width`, `height` in pixels; 2 bytes per pixel, one sample.
/// The slice's compression, refused before any pixel is decoded when it is not one of ours.
pub(super) fn codec<R: std::io::Read + std::io::Seek>(d: &mut Decoder<R>) -> Result<Option<Codec>, DecodeError> {
    let compression = d
        .find_tag_unsigned::<u16>(Tag::Compression)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?
        .unwrap_or(NONE);
    Ok(match compression {
        NONE => None, // the crate checks that every uncompressed byte is there
        LZW => Some(Codec::Lzw),
        DEFLATE | DEFLATE_OLD => Some(Codec::Deflate),
        PACKBITS => Some(Codec::PackBits),
        other => {
            return Err(DecodeError::Unsupported(format!(
                "compression code {other} (accepted: none, LZW, Deflate, PackBits)"
            )))
        }
    })
}

pub(super) fn verify_chunks<R: std::io::Read + std::io::Seek>(
    d: &mut Decoder<R>,
    file: &[u8],
    width: u32,
    height: u32,
    scratch: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let Some(codec) = codec(d)? else {
        return Ok(());
    };
    let chunks = layout(d, width, height)?;
    for (i, c) in chunks.iter().enumerate() {
        let start = usize::try_from(c.offset).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(c.bytes).ok()?));
        let data = match (start, end) {
            (Some(s), Some(e)) if e <= file.len() => &file[s..e],
            _ => {
                return Err(DecodeError::Corrupt(format!(
                    "{} {i} lies outside the file (truncated)",
                    c.kind
                )))
            }
        };
        codec
            .check(data, c.expected, scratch)
            .map_err(|why| DecodeError::Corrupt(format!("{} {} of {}: {why}", codec.name(), c.kind, i)))?;
    }
    Ok(())
}

struct Chunk {
    kind: &'static str,
    offset: u64,
    bytes: u64,
    /// Decompressed bytes this chunk must hold.
    expected: usize,
}

/// Offsets, sizes and expected decompressed sizes of every strip or tile.
fn layout<R: std::io::Read + std::io::Seek>(
    d: &mut Decoder<R>,
    width: u32,
    height: u32,
) -> Result<Vec<Chunk>, DecodeError> {
    let corrupt = |e: tiff::TiffError| DecodeError::Corrupt(e.to_string());
    let tile_w = d.find_tag_unsigned::<u32>(Tag::TileWidth).map_err(corrupt)?;
    let tile_h = d.find_tag_unsigned::<u32>(Tag::TileLength).map_err(corrupt)?;
    let (kind, offsets, counts, expected): (_, _, _, Box<dyn Fn(usize) -> usize>) = match (tile_w, tile_h) {
        (Some(tw), Some(th)) => {
            if tw == 0 || th == 0 || tw > 4096 || th > 4096 {
                return Err(DecodeError::Corrupt(format!("tile size {tw}x{th} is not plausible")));
            }
            let n = width.div_ceil(tw) as usize * height.div_ceil(th) as usize;
            let offsets = d.get_tag_u64_vec(Tag::TileOffsets).map_err(corrupt)?;
            let counts = d.get_tag_u64_vec(Tag::TileByteCounts).map_err(corrupt)?;
            if offsets.len() != n {
                return Err(DecodeError::Corrupt(format!(
                    "{} tiles declared, the image needs {n}",
                    offsets.len()
                )));
            }
            // Compressed tiles always hold whole tiles, padding included.
            let per = tw as usize * th as usize * 2;
            ("tile", offsets, counts, Box::new(move |_| per))
        }
        _ => {
            let rps = d
                .find_tag_unsigned::<u32>(Tag::RowsPerStrip)
                .map_err(corrupt)?
                .unwrap_or(height)
                .clamp(1, height.max(1));
            let n = height.div_ceil(rps) as usize;
            let offsets = d.get_tag_u64_vec(Tag::StripOffsets).map_err(corrupt)?;
            let counts = d.get_tag_u64_vec(Tag::StripByteCounts).map_err(corrupt)?;
            if offsets.len() != n {
                return Err(DecodeError::Corrupt(format!(
                    "{} strips declared, the image needs {n}",
                    offsets.len()
                )));
            }
            let row = width as usize * 2;
            let (rps, h) = (rps as usize, height as usize);
            (
                "strip",
                offsets,
                counts,
                Box::new(move |i| (h - i * rps).min(rps) * row),
            )
        }
    };
    if counts.len() != offsets.len() {
        return Err(DecodeError::Corrupt(format!(
            "{} {kind} offsets but {} byte counts",
            offsets.len(),
            counts.len()
        )));
    }
    Ok(offsets
        .into_iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (offset, bytes))| Chunk {
            kind,
            offset,
            bytes,
            expected: expected(i),
        })
        .collect())
}

#[derive(Clone, Copy)]
pub(super) enum Codec {
    Lzw,
    Deflate,
    PackBits,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Lzw => "LZW",
            Codec::Deflate => "Deflate",
            Codec::PackBits => "PackBits",
        }
    }

    /// `Err(why)` unless `data` decompresses completely to exactly `expected` bytes.
    fn check(self, data: &[u8], expected: usize, scratch: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Codec::Deflate => inflate_exact(data, expected, scratch),
            Codec::Lzw => lzw_exact(data, expected, scratch),
            Codec::PackBits => packbits_exact(data, expected),
        }
    }
}

/// The output buffer: one byte more than expected, so that excess output is detected.
fn out_buffer(scratch: &mut Vec<u8>, expected: usize) -> &mut [u8] {
    scratch.clear();
    scratch.resize(expected + 1, 0);
    &mut scratch[..]
}

fn only_padding(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

pub(super) fn inflate_exact(data: &[u8], expected: usize, scratch: &mut Vec<u8>) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let out = out_buffer(scratch, expected);
    let mut z = Decompress::new(true);
    let status = z
        .decompress(data, out, FlushDecompress::Finish)
        .map_err(|e| format!("compressed stream is corrupt ({e})"))?;
    let (used_in, produced) = (z.total_in() as usize, z.total_out() as usize);
    if produced > expected {
        return Err(format!("decompresses to more than the {expected} bytes declared"));
    }
    if status != Status::StreamEnd {
        return Err(format!(
            "compressed stream does not end properly (decompressed {produced} of {expected} bytes; truncated or corrupt)"
        ));
    }
    if produced != expected {
        return Err(format!("decompresses to {produced} bytes, expected {expected}"));
    }
    if !only_padding(&data[used_in.min(data.len())..]) {
        return Err(format!(
            "{} bytes of data follow the end of the compressed stream",
            data.len() - used_in
        ));
    }
    Ok(())
}

pub(super) fn lzw_exact(data: &[u8], expected: usize, scratch: &mut Vec<u8>) -> Result<(), String> {
    use weezl::{decode::Decoder, BitOrder, LzwStatus};
    let out = out_buffer(scratch, expected);
    let mut dec = Decoder::with_tiff_size_switch(BitOrder::Msb, 8);
    let (mut inp, mut produced) = (0usize, 0usize);
    loop {
        let r = dec.decode_bytes(&data[inp..], &mut out[produced..]);
        inp += r.consumed_in;
        produced += r.consumed_out;
        match r.status {
            Err(e) => return Err(format!("compressed stream is corrupt ({e})")),
            Ok(LzwStatus::Done) => break,
            Ok(LzwStatus::Ok) if produced > expected => {
                return Err(format!("decompresses to more than the {expected} bytes declared"))
            }
            Ok(LzwStatus::Ok) => continue,
            Ok(LzwStatus::NoProgress) => {
                return Err(format!(
                    "compressed stream has no end-of-information code (decompressed {produced} of {expected} bytes; truncated or corrupt)"
                ))
            }
        }
    }
    if produced != expected {
        return Err(format!("decompresses to {produced} bytes, expected {expected}"));
    }
    if !only_padding(&data[inp..]) {
        return Err(format!(
            "{} bytes of data follow the end-of-information code",
            data.len() - inp
        ));
    }
    Ok(())
}

pub(super) fn packbits_exact(data: &[u8], expected: usize) -> Result<(), String> {
    let (mut i, mut produced) = (0usize, 0usize);
    while i < data.len() && produced < expected {
        let n = data[i] as i8;
        i += 1;
        match n {
            0..=127 => {
                let len = n as usize + 1;
                if i + len > data.len() {
                    return Err("a literal run goes past the end of the strip (truncated)".into());
                }
                i += len;
                produced += len;
            }
            -127..=-1 => {
                if i >= data.len() {
                    return Err("a repeat run goes past the end of the strip (truncated)".into());
                }
                i += 1;
                produced += (1 - n as isize) as usize;
            }
            -128 => {}
        }
    }
    if produced > expected {
        return Err(format!("decompresses to more than the {expected} bytes declared"));
    }
    if produced < expected {
        return Err(format!(
            "decompresses to {produced} bytes, expected {expected} (truncated)"
        ));
    }
    if i != data.len() {
        return Err(format!("{} bytes of data follow the last run", data.len() - i));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_accepts_exact_runs_and_refuses_short_long_or_trailing() {
        // literal 3 bytes + repeat 4 times = 7 bytes
        let good = [2u8, 1, 2, 3, (-3i8) as u8, 9];
        assert_eq!(packbits_exact(&good, 7), Ok(()));
        assert!(packbits_exact(&good, 8).unwrap_err().contains("truncated"));
        assert!(packbits_exact(&good, 6).unwrap_err().contains("more than"));
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(packbits_exact(&trailing, 7).unwrap_err().contains("follow"));
        assert!(packbits_exact(&[5u8, 1, 2], 6).unwrap_err().contains("literal run"));
    }

    #[test]
    fn inflate_refuses_a_stream_without_its_end() {
        use std::io::Write;
        let raw: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        let z = e.finish().unwrap();
        let mut s = Vec::new();
        assert_eq!(inflate_exact(&z, raw.len(), &mut s), Ok(()));
        // The checksum is part of the end of the stream.
        let mut bad_sum = z.clone();
        *bad_sum.last_mut().unwrap() ^= 0x55;
        assert!(inflate_exact(&bad_sum, raw.len(), &mut s).is_err());
        assert!(inflate_exact(&z[..z.len() - 4], raw.len(), &mut s).is_err());
        assert!(inflate_exact(&z, raw.len() - 1, &mut s)
            .unwrap_err()
            .contains("more than"));
        assert!(inflate_exact(&z, raw.len() + 1, &mut s).is_err());
    }
}
