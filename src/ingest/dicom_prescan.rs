//! A bounds pre-scan of a DICOM file's element structure, before dicom-rs parses it.
//!
//! Why: dicom-rs allocates an element's value from its *declared* length (up to 4 GiB) before
//! it reads the bytes, and builds nested sequences recursively without a depth limit. A
//! 200-byte file declaring a 4 GiB string would make the appliance commit 4 GiB (the OOM
//! killer on a 4 GiB board); 100,000 nested sequences would overflow the stack (an abort, not
//! an error). The whole file is already in memory (at most `MAX_FILE_BYTES`), so this walks
//! every element header — meta group, data set, sequence items, pixel data fragments — and
//! refuses the file unless every declared length fits inside the bytes that remain and
//! nesting stays within [`MAX_DEPTH`]. Values are never looked at (except the transfer syntax
//! UID, which says how the data set is encoded). A file that passes can still be malformed;
//! dicom-rs then reports it, but it can no longer allocate more than the file holds.
//!
//! The walk must see the same element boundaries dicom-rs will, or its bounds say nothing
//! (found by fuzzing, `fuzz/regressions/dicom_header/`): so it resolves VRs as dicom-rs does —
//! an unknown explicit VR is read as UN (reserved bytes, 32-bit length); an implicit VR comes
//! from the standard dictionary (Pixel Data and Overlay Data: OW) — and it refuses what would
//! make dicom-rs read fewer bytes than the length says: a length that is not a multiple of
//! the VR's value size (AT 10 bytes: dicom-rs reads two tags, its stream then lags two bytes
//! behind the lengths it believes, and a value byte is taken for a 4 GiB length), and an
//! implicit-VR sequence whose value does not start with an item.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::DecodeError;

/// Deepest sequence nesting accepted (real CT headers nest 3 or 4 levels).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one file (a CT slice has a few hundred).
const MAX_ELEMENTS: usize = 200_000;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
/// Transfer syntaxes whose data set dicom-rs inflates before reading it: Deflated Explicit VR
/// Little Endian, JPIP Referenced Deflate, JPIP HTJ2K Referenced Deflate.
const DEFLATED: [&str; 3] = [
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.205",
];

/// Transfer syntaxes whose data set is explicit VR little endian with (possibly) encapsulated
/// pixel data: every JPEG, JPEG-LS, JPEG 2000, HTJ2K, JPIP, MPEG/HEVC (`1.2.4.*`), RLE
/// (`1.2.5`) and deflated-frame (`1.2.8.*`) syntax. Which of them ingest can decode is decided
/// after parsing (with a clear reason); the walk only needs the data set's encoding.
fn explicit_le_family(ts: &str) -> bool {
    ts == EXPLICIT_LE
        || ts == "1.2.840.10008.1.2.5"
        || ts.starts_with("1.2.840.10008.1.2.4.")
        || ts.starts_with("1.2.840.10008.1.2.8.")
}

/// Check `file` (a whole Part 10 file: preamble, `DICM`, meta group, data set).
pub fn check(file: &[u8]) -> Result<(), DecodeError> {
    let body = file
        .get(132..)
        .ok_or_else(|| DecodeError::Dicom("file ends inside the preamble".into()))?;
    let mut s = Scan {
        buf: body,
        pos: 0,
        explicit: true,
        elements: 0,
    };
    let ts = s.meta()?;
    let rest = &body[s.pos..];
    match ts.as_str() {
        BIG_ENDIAN => Err(DecodeError::Unsupported(
            "transfer syntax Explicit VR Big Endian (retired)".into(),
        )),
        d if DEFLATED.contains(&d) => {
            // The data set is deflated: check it as it will be read, inflated, bounded.
            use std::io::Read;
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(rest)
                .take(super::MAX_FILE_BYTES + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| DecodeError::Dicom(format!("deflated data set is corrupt ({e})")))?;
            if inflated.len() as u64 > super::MAX_FILE_BYTES {
                return Err(DecodeError::Limits(format!(
                    "deflated data set inflates past {} bytes",
                    super::MAX_FILE_BYTES
                )));
            }
            Scan::new(&inflated, true).elements_until_end(0)
        }
        IMPLICIT_LE => Scan::new(rest, false).elements_until_end(0),
        other if explicit_le_family(other) => Scan::new(rest, true).elements_until_end(0),
        other => Err(DecodeError::Unsupported(format!(
            "transfer syntax {other:?} is not a DICOM transfer syntax this box knows"
        ))),
    }
}

/// Check a bare data set (no preamble, no meta group), e.g. a DIMSE command set received from
/// the network, encoded in implicit VR little endian (`explicit` false) or explicit.
pub fn check_dataset(bytes: &[u8], explicit: bool) -> Result<(), DecodeError> {
    Scan::new(bytes, explicit).elements_until_end(0)
}

/// The VR dicom-rs gives an element in implicit VR (its implicit decoder's rule).
fn implicit_vr(tag: (u16, u16)) -> [u8; 2] {
    if tag == (0x7FE0, 0x0010) || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return *b"OW";
    }
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN)
        .to_bytes()
}

/// Whether the dictionary gives `tag` the VR "US or SS".
fn is_xs(tag: (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .is_some_and(|e| matches!(e.vr(), VirtualVr::Xs))
}

/// The size of one value of a binary VR (its length must be a multiple), `None` for VRs read
/// as bytes or text (any even or odd length is read whole).
fn value_size(vr: &[u8; 2]) -> Option<usize> {
    match vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"AT" | b"UL" | b"SL" | b"FL" | b"OF" | b"OL" => Some(4),
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => Some(8),
        _ => None,
    }
}

/// (group, element), VR bytes (`"  "` when implicit), declared length.
type ElementHeader = ((u16, u16), [u8; 2], u32);

struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
    explicit: bool,
    elements: usize,
}

fn err(at: usize, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::Dicom(format!("{what} (at byte {at} of the data set)"))
}

impl<'a> Scan<'a> {
    fn new(buf: &'a [u8], explicit: bool) -> Self {
        Scan {
            buf,
            pos: 0,
            explicit,
            elements: 0,
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 2)
            .ok_or_else(|| err(self.pos, "file ends inside an element header (truncated)"))?;
        self.pos += 2;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| err(self.pos, "file ends inside an element header (truncated)"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, len: u32, tag: (u16, u16)) -> Result<(), DecodeError> {
        if len as usize > self.left() {
            return Err(err(
                self.pos,
                format_args!(
                    "element ({:04X},{:04X}) declares {len} bytes, only {} remain (truncated or forged length)",
                    tag.0,
                    tag.1,
                    self.left()
                ),
            ));
        }
        self.pos += len as usize;
        Ok(())
    }

    /// The meta group (always explicit VR little endian); returns the transfer syntax UID.
    /// Read as dicom-rs reads it: (0002,0000) first, 4 bytes, then elements until at least
    /// that many bytes were read; the data set starts after the last of them.
    fn meta(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let (tag, _vr, len) = self.header()?;
        if tag != (0x0002, 0x0000) || len != 4 {
            return Err(err(
                start,
                "the file meta group does not start with its 4-byte group length (0002,0000)",
            ));
        }
        let group = self.u32()? as usize;
        if group > self.left() {
            return Err(err(
                start,
                format_args!(
                    "file meta group length {group} exceeds the {} bytes that remain",
                    self.left()
                ),
            ));
        }
        let end = self.pos + group;
        let mut ts = None;
        while self.pos < end {
            let start = self.pos;
            let (tag, _vr, len) = self.header()?;
            if len == UNDEFINED {
                return Err(err(start, "undefined length in the file meta group"));
            }
            let vstart = self.pos;
            self.skip(len, tag)?;
            if tag == (0x0002, 0x0010) {
                let v = &self.buf[vstart..self.pos];
                // dicom-rs trims trailing whitespace of every kind and NULs.
                ts = Some(
                    String::from_utf8_lossy(v)
                        .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                        .to_string(),
                );
            }
        }
        ts.ok_or_else(|| DecodeError::Dicom("file meta group has no transfer syntax (0002,0010)".into()))
    }

    /// Tag, VR (explicit only) and length of the next element.
    fn header(&mut self) -> Result<ElementHeader, DecodeError> {
        let tag = (self.u16()?, self.u16()?);
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(DecodeError::Limits(format!("more than {MAX_ELEMENTS} elements")));
        }
        if tag.0 == 0xFFFE {
            // Item and delimiters have no VR in any encoding.
            return Ok((tag, *b"  ", self.u32()?));
        }
        if !self.explicit {
            return Ok((tag, *b"  ", self.u32()?));
        }
        let mut vr = self.u16()?.to_le_bytes();
        // dicom-rs reads a VR it does not know as UN, with UN's reserved field and long length.
        if VR::from_binary(vr).is_none() {
            vr = *b"UN";
        }
        let long = matches!(
            &vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT" | b"SV" | b"UV"
        );
        let len = if long {
            self.u16()?; // reserved
            self.u32()?
        } else {
            u32::from(self.u16()?)
        };
        Ok((tag, vr, len))
    }

    /// Elements until the end of the buffer (the top level of a data set). An item delimiter
    /// here is skipped, as dicom-rs skips it; a sequence delimiter is refused (dicom-rs would
    /// read it as an element with a value of its declared length).
    fn elements_until_end(&mut self, depth: usize) -> Result<(), DecodeError> {
        while self.left() > 0 {
            let start = self.pos;
            if self.element(depth)? == Some(SEQ_END) {
                return Err(err(start, "sequence delimiter outside any sequence"));
            }
        }
        Ok(())
    }

    /// One element of a data set (or of an item), recursing into sequences.
    fn element(&mut self, depth: usize) -> Result<Option<(u16, u16)>, DecodeError> {
        let start = self.pos;
        let (tag, vr, len) = self.header()?;
        if tag == ITEM_END || tag == SEQ_END {
            return Ok(Some(tag));
        }
        if tag.0 == 0xFFFE {
            return Err(err(start, format_args!("unexpected item tag (FFFE,{:04X})", tag.1)));
        }
        let is_seq = &vr == b"SQ" || (&vr == b"UN" && len == UNDEFINED) || (&vr == b"  " && len == UNDEFINED);
        // dicom-rs takes an explicit SQ for a sequence before it looks for encapsulated pixels.
        if tag == (0x7FE0, 0x0010) && len == UNDEFINED && &vr != b"SQ" {
            return self.fragments(start).map(|_| None);
        }
        if is_seq {
            if depth + 1 > MAX_DEPTH {
                return Err(DecodeError::Limits(format!(
                    "sequences nested deeper than {MAX_DEPTH} levels"
                )));
            }
            // PS3.5 6.2.2 says a UN sequence of undefined length is encoded in implicit VR, but
            // dicom-rs 0.10 reads it in the data set's own encoding: so does this walk.
            let r = if len == UNDEFINED {
                self.items_until_delimiter(depth + 1)
            } else {
                self.items_within(len, tag, depth + 1)
            };
            return r.map(|_| None);
        }
        if len == UNDEFINED {
            return Err(err(
                start,
                format_args!(
                    "element ({:04X},{:04X}) has an undefined length but is not a sequence",
                    tag.0, tag.1
                ),
            ));
        }
        // The VR dicom-rs will read the value as: explicit, or the dictionary's for implicit VR.
        let read_as = if &vr == b"  " { implicit_vr(tag) } else { vr };
        // "US or SS" tags are read as SS whatever their explicit VR once the pixels are signed,
        // and as their explicit VR before: the length must suit both (sizes are powers of two).
        let size = match (is_xs(tag), value_size(&read_as)) {
            (true, v) => Some(v.unwrap_or(2).max(2)),
            (false, v) => v,
        };
        if let Some(size) = size {
            if len as usize % size != 0 {
                return Err(err(
                    start,
                    format_args!(
                        "element ({:04X},{:04X}) of VR {} declares {len} bytes, not a multiple of its {size}-byte values",
                        tag.0,
                        tag.1,
                        String::from_utf8_lossy(&read_as)
                    ),
                ));
            }
        }
        let vstart = self.pos;
        self.skip(len, tag)?;
        let starts_with_item = len >= 8 && self.buf[vstart..vstart + 4] == [0xFE, 0xFF, 0x00, 0xE0];
        if &vr == b"  " && &read_as == b"SQ" && len > 0 && !starts_with_item {
            return Err(err(
                start,
                format_args!("sequence ({:04X},{:04X}) does not start with an item", tag.0, tag.1),
            ));
        }
        // Implicit VR: a defined-length sequence (by the dictionary) is walked item by item.
        if &vr == b"  " && &read_as == b"SQ" && starts_with_item {
            if depth + 1 > MAX_DEPTH {
                return Err(DecodeError::Limits(format!(
                    "sequences nested deeper than {MAX_DEPTH} levels"
                )));
            }
            let mut inner = Scan::new(&self.buf[vstart..self.pos], false);
            inner.elements = self.elements;
            inner.items_all(depth + 1)?;
            self.elements = inner.elements;
        }
        Ok(None)
    }

    /// Items of a defined-length sequence value of `len` bytes starting here.
    fn items_within(&mut self, len: u32, tag: (u16, u16), depth: usize) -> Result<(), DecodeError> {
        let start = self.pos;
        self.skip(len, tag)?;
        let mut inner = Scan::new(&self.buf[start..self.pos], self.explicit);
        inner.elements = self.elements;
        inner.items_all(depth)?;
        self.elements = inner.elements;
        Ok(())
    }

    fn items_all(&mut self, depth: usize) -> Result<(), DecodeError> {
        while self.left() > 0 {
            let start = self.pos;
            let (tag, _, len) = self.header()?;
            if tag != ITEM {
                return Err(err(
                    start,
                    format_args!("expected an item, found ({:04X},{:04X})", tag.0, tag.1),
                ));
            }
            self.item(len, depth)?;
        }
        Ok(())
    }

    fn items_until_delimiter(&mut self, depth: usize) -> Result<(), DecodeError> {
        loop {
            let start = self.pos;
            let (tag, _, len) = self.header()?;
            match tag {
                SEQ_END => return Ok(()),
                ITEM => self.item(len, depth)?,
                other => {
                    return Err(err(
                        start,
                        format_args!("expected an item, found ({:04X},{:04X})", other.0, other.1),
                    ))
                }
            }
        }
    }

    /// One item's data set: defined length (bounded) or up to its delimiter.
    fn item(&mut self, len: u32, depth: usize) -> Result<(), DecodeError> {
        if len == UNDEFINED {
            loop {
                if self.left() == 0 {
                    return Err(err(self.pos, "file ends inside a sequence item (truncated)"));
                }
                match self.element(depth)? {
                    Some(ITEM_END) => return Ok(()),
                    Some(_) => return Err(err(self.pos, "sequence ended inside an item")),
                    None => {}
                }
            }
        }
        let start = self.pos;
        self.skip(len, ITEM)?;
        let mut inner = Scan::new(&self.buf[start..self.pos], self.explicit);
        inner.elements = self.elements;
        while inner.left() > 0 {
            if inner.element(depth)?.is_some() {
                return Err(err(start, "delimiter inside a defined-length item"));
            }
        }
        self.elements = inner.elements;
        Ok(())
    }

    /// Encapsulated pixel data: items of defined length up to the sequence delimiter.
    fn fragments(&mut self, start: usize) -> Result<(), DecodeError> {
        loop {
            let (tag, _, len) = self.header()?;
            match tag {
                SEQ_END => return Ok(()),
                ITEM if len != UNDEFINED => self.skip(len, ITEM)?,
                _ => return Err(err(start, "malformed encapsulated pixel data")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(meta_ts: &str, dataset: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let mut ts = meta_ts.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        let group = 8 + ts.len() as u32;
        f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        f.extend_from_slice(&group.to_le_bytes());
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        f.extend_from_slice(&ts);
        f.extend_from_slice(dataset);
        f
    }

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&tag.0.to_le_bytes());
        e.extend_from_slice(&tag.1.to_le_bytes());
        e.extend_from_slice(vr);
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        e.extend_from_slice(value);
        e
    }

    #[test]
    fn a_forged_length_is_refused_before_anything_is_allocated() {
        let ok = file("1.2.840.10008.1.2.1", &explicit((0x0010, 0x0020), b"LO", b"PAT1"));
        assert_eq!(check(&ok), Ok(()));
        // (7FE0,0010) OW declaring 4 GiB - 2 in a 160-byte file.
        let mut forged = file("1.2.840.10008.1.2.1", &[]);
        forged.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 1, 2]);
        let e = check(&forged).unwrap_err().to_string();
        assert!(e.contains("declares 4294967294 bytes"), "{e}");
    }

    /// What `fuzz/regressions/dicom_header/at-length-10-misaligns-dicom-rs` holds: an AT
    /// element of 10 bytes, then a CS element whose value bytes dicom-rs, two bytes behind,
    /// would take for a 2 GiB length of an unknown-VR (UN) element in a 202-byte file.
    pub(crate) fn at_length_10_misaligns_dicom_rs() -> Vec<u8> {
        let mut ds = explicit(
            (0x0008, 0x0005),
            b"AT",
            &[0x10, 0, 0x20, 0, 0x10, 0, 0x30, 0, 0x09, 0x00],
        );
        ds.extend(explicit((0x0008, 0x0008), b"CS", &[0xFF, 0x7F, 0xFF, 0x7F]));
        file("1.2.840.10008.1.2.1", &ds)
    }

    #[test]
    fn a_value_length_dicom_rs_would_read_short_is_refused_so_both_see_the_same_elements() {
        let e = check(&at_length_10_misaligns_dicom_rs()).unwrap_err().to_string();
        assert!(
            e.contains("(0008,0005) of VR AT declares 10 bytes, not a multiple of its 4-byte values"),
            "{e}"
        );
        // The same through the header reader the scan uses: refused, nothing allocated.
        let e = super::super::dicom::header_of(&at_length_10_misaligns_dicom_rs()).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
        // Implicit VR: the dictionary's VR counts (Rows is US: 3 bytes cannot be read whole).
        let mut rows = Vec::new();
        rows.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3, 0]);
        let e = check(&file("1.2.840.10008.1.2", &rows)).unwrap_err().to_string();
        assert!(e.contains("VR US declares 3 bytes"), "{e}");
        let mut ok = Vec::new();
        ok.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, 2, 0, 0, 0, 0, 2]);
        assert_eq!(check(&file("1.2.840.10008.1.2", &ok)), Ok(()));
    }

    #[test]
    fn an_unknown_explicit_vr_is_walked_as_dicom_rs_reads_it_as_un_with_a_long_length() {
        // VR "ZZ": dicom-rs reads UN — two reserved bytes, then a 32-bit length (2 GiB here).
        let mut ds = vec![0x09, 0x00, 0x10, 0x00, b'Z', b'Z', 0, 0, 0x00, 0x00, 0xFF, 0x7F];
        ds.extend_from_slice(&[0u8; 16]);
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("declares 2147418112 bytes"), "{e}");
    }

    #[test]
    fn the_meta_group_is_read_by_its_group_length_as_dicom_rs_reads_it() {
        // No (0002,0000): dicom-rs refuses; so does the walk, before anything else.
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(explicit((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0"));
        let e = check(&f).unwrap_err().to_string();
        assert!(e.contains("group length (0002,0000)"), "{e}");
        // A transfer syntax padded with a newline is the implicit one for dicom-rs: walked so.
        let mut rows = Vec::new();
        rows.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3, 0]);
        let e = check(&file("1.2.840.10008.1.2\n", &rows)).unwrap_err().to_string();
        assert!(e.contains("VR US declares 3 bytes"), "{e}");
        // A UID that is no transfer syntax: refused by name.
        let e = check(&file("1.2.3.4", &[])).unwrap_err().to_string();
        assert!(e.contains("\"1.2.3.4\" is not a DICOM transfer syntax"), "{e}");
    }

    #[test]
    fn a_sequence_delimiter_outside_any_sequence_is_refused_an_item_delimiter_skipped() {
        // dicom-rs would read (FFFE,E0DD) here as an element with a 2 GiB value.
        let mut ds = vec![0xFE, 0xFF, 0xDD, 0xE0, 0x00, 0x00, 0x00, 0x80];
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("sequence delimiter outside any sequence"), "{e}");
        ds = vec![0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
        ds.extend(explicit((0x0010, 0x0020), b"LO", b"PAT1"));
        assert_eq!(check(&file("1.2.840.10008.1.2.1", &ds)), Ok(()));
    }

    #[test]
    fn pixel_data_declared_sq_is_walked_as_the_sequence_dicom_rs_reads() {
        // (7FE0,0010) SQ, undefined length, one item holding a forged 2 GiB element.
        let mut ds = vec![0xE0, 0x7F, 0x10, 0x00, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0, 0, 0, 0x80]);
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("declares 2147483648 bytes"), "{e}");
    }

    #[test]
    fn a_us_or_ss_tag_of_odd_length_is_refused_whatever_its_explicit_vr() {
        // Smallest Image Pixel Value (0028,0106) is "US or SS": dicom-rs reads it as SS once
        // the pixels are signed, even when the file says OB.
        let mut ds = vec![0x28, 0x00, 0x06, 0x01, b'O', b'B', 0, 0, 3, 0, 0, 0, 1, 2, 3];
        ds.push(0);
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("not a multiple of its 2-byte values"), "{e}");
        // Found by fuzzing: Largest Image Pixel Value in Plane (0028,0111, "US or SS") written
        // as FD with 2 bytes. Unsigned pixels: dicom-rs reads FD, 0 values of 8 bytes, and
        // lags 2 bytes behind (a 775 MB allocation followed). Both readings must fit.
        let ds = vec![0x28, 0x00, 0x11, 0x01, b'F', b'D', 2, 0, 0x72, 0x01];
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("not a multiple of its 8-byte values"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 40 nested undefined-length sequences, each in an undefined-length item.
        let mut ds = Vec::new();
        for _ in 0..40 {
            ds.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = check(&file("1.2.840.10008.1.2.1", &ds)).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn truncated_header_and_implicit_lengths_are_checked() {
        let cut = file("1.2.840.10008.1.2.1", &[0x10, 0x00, 0x20]);
        assert!(check(&cut).unwrap_err().to_string().contains("truncated"));
        // Implicit VR: (0010,0010) with a 4-byte length of 1,000,000.
        let mut imp = Vec::new();
        imp.extend_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        imp.extend_from_slice(&1_000_000u32.to_le_bytes());
        imp.extend_from_slice(b"DOE^JOHN");
        let e = check(&file("1.2.840.10008.1.2", &imp)).unwrap_err().to_string();
        assert!(e.contains("only 8 remain"), "{e}");
    }
}
