//! What counts as a DICOM file, and how the non-canonical ones real exports contain are read.
//!
//! Why: pydicom and dcmtk read three kinds of files that a strict Part 10 reader refuses, and
//! older scanners, PACS exports and anonymisers write all three:
//! - a file meta group without its group length (0002,0000) (dose reports, secondary
//!   captures and DICOMDIRs written by some toolkits);
//! - no 128-byte preamble, the file starting at `DICM`;
//! - no preamble and no file meta at all: a bare data set, implicit VR little endian as older
//!   exporters write (or explicit VR), starting at group 0008.
//!
//! Refusing them made a whole folder `undetermined` (a file that looks like DICOM but cannot be
//! read could be a slice of any series) or silently left a slice out. [`canonical`] turns each
//! into a canonical Part 10 file in memory (preamble, `DICM`, a meta group that starts with its
//! group length, then the data set unchanged), so the bounds pre-scan and dicom-rs see exactly
//! one layout. The data set's bytes are never changed: what is decoded is what was sent.
//!
//! A bare data set is recognised only by a strict signature (see [`sniff`]): its first element
//! is in group 0008 with an element number below 0x0100 and a length that fits, and — when
//! the VR field holds two upper-case letters — a VR dicom-rs knows. TIFF files (`II*\0`,
//! `MM\0*`) and text never match.

use std::borrow::Cow;

use dicom_core::VR;

use super::DecodeError;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// ctsentinel's implementation class UID, written into meta groups it synthesises.
const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1459.1";

/// How a file presents itself as DICOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// 128-byte preamble, `DICM`, file meta group.
    Part10,
    /// `DICM` and the file meta group, no preamble.
    NoPreamble,
    /// A data set with no preamble and no file meta; `explicit` when its VRs are written.
    Bare { explicit: bool },
}

/// The form of a file from its first bytes (132 suffice), `None` when it is not DICOM.
pub fn sniff(head: &[u8]) -> Option<Form> {
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        return Some(Form::Part10);
    }
    if head.len() >= 12 && &head[..4] == b"DICM" && head[4..6] == [0x02, 0x00] {
        return Some(Form::NoPreamble);
    }
    if head.len() < 12 {
        return None;
    }
    let group = u16::from_le_bytes([head[0], head[1]]);
    let element = u16::from_le_bytes([head[2], head[3]]);
    if group != 0x0008 || element >= 0x0100 {
        return None;
    }
    let vr = [head[4], head[5]];
    if vr.iter().all(u8::is_ascii_uppercase) {
        // Explicit VR: it must be one dicom-rs knows.
        return VR::from_binary(vr).map(|_| Form::Bare { explicit: true });
    }
    // Implicit VR: a 4-byte length that is even and small (group 0008 holds short values).
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    (len % 2 == 0 && len < 1 << 16).then_some(Form::Bare { explicit: false })
}

/// `file` as a canonical Part 10 file (preamble, `DICM`, meta group led by its group length).
/// Borrowed when it already is one.
pub fn canonical(file: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    match sniff(file) {
        None => Err(DecodeError::Dicom(
            "not DICOM: no DICM signature (with or without the 128-byte preamble) and no data set starting at group 0008"
                .into(),
        )),
        Some(Form::Part10) => with_group_length(file, 132).map_or(Ok(Cow::Borrowed(file)), |v| v.map(Cow::Owned)),
        Some(Form::NoPreamble) => {
            let mut f = vec![0u8; 128];
            f.extend_from_slice(file);
            match with_group_length(&f, 132) {
                None => Ok(Cow::Owned(f)),
                Some(v) => v.map(Cow::Owned),
            }
        }
        Some(Form::Bare { explicit }) => bare(file, explicit).map(Cow::Owned),
    }
}

/// `None` when the meta group at `at` already starts with (0002,0000); else the file with a
/// group length inserted before the meta elements (or why that is impossible).
fn with_group_length(file: &[u8], at: usize) -> Option<Result<Vec<u8>, DecodeError>> {
    let tag = |p: usize| -> Option<(u16, u16)> {
        let b = file.get(p..p + 4)?;
        Some((u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]])))
    };
    if tag(at) == Some((0x0002, 0x0000)) || tag(at).is_none() {
        // Canonical, or too short to say: the pre-scan reports it.
        return None;
    }
    // Walk the group 0002 elements (always explicit VR little endian) to find where they end.
    let mut p = at;
    while let Some((g, _)) = tag(p) {
        if g != 0x0002 {
            break;
        }
        let Some(vr) = file.get(p + 4..p + 6) else {
            return Some(Err(meta_err(p, "file ends inside a meta element header")));
        };
        let long = matches!(
            vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT"
        );
        let (len, head) = if long {
            match file.get(p + 8..p + 12) {
                Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
                None => return Some(Err(meta_err(p, "file ends inside a meta element header"))),
            }
        } else {
            match file.get(p + 6..p + 8) {
                Some(b) => (usize::from(u16::from_le_bytes([b[0], b[1]])), 8),
                None => return Some(Err(meta_err(p, "file ends inside a meta element header"))),
            }
        };
        if len == 0xFFFF_FFFF || p + head + len > file.len() {
            return Some(Err(meta_err(p, "meta element with an undefined or overlong length")));
        }
        p += head + len;
    }
    let group = (p - at) as u32;
    if group == 0 {
        return Some(Err(meta_err(at, "no file meta group after DICM")));
    }
    let mut out = Vec::with_capacity(file.len() + 12);
    out.extend_from_slice(&file[..at]);
    push_element(&mut out, (0x0002, 0x0000), b"UL", &group.to_le_bytes());
    out.extend_from_slice(&file[at..]);
    Some(Ok(out))
}

/// The Media Storage SOP Class UID (0002,0002) a file's meta group names, read without
/// parsing the data set: for a file whose data set cannot be read, it still says whether the
/// file could be a CT slice at all.
pub fn meta_sop_class(file: &[u8]) -> Option<String> {
    let file = canonical(file).ok()?;
    let mut p = 132usize;
    loop {
        let b = file.get(p..p + 8)?;
        let (g, e) = (u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]]));
        if g != 0x0002 {
            return None;
        }
        let vr = &b[4..6];
        let long = matches!(
            vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT"
        );
        let (len, head) = if long {
            let l = file.get(p + 8..p + 12)?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (usize::from(u16::from_le_bytes([b[6], b[7]])), 8)
        };
        let value = file.get(p + head..(p + head).checked_add(len)?)?;
        if e == 0x0002 {
            let uid = String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string();
            return (!uid.is_empty()).then_some(uid);
        }
        p += head + len;
    }
}

fn meta_err(at: usize, what: &str) -> DecodeError {
    DecodeError::Dicom(format!("{what} (at byte {at})"))
}

/// A bare data set with a synthesised file meta group (the SOP class and instance UIDs read
/// from the data set's own (0008,0016) and (0008,0018)).
fn bare(data: &[u8], explicit: bool) -> Result<Vec<u8>, DecodeError> {
    let (class, instance) = sop_uids(data, explicit)?;
    let ts = if explicit { EXPLICIT_LE } else { IMPLICIT_LE };
    let mut meta = Vec::new();
    push_element(&mut meta, (0x0002, 0x0001), b"OB", &[0, 1]);
    push_element(&mut meta, (0x0002, 0x0002), b"UI", &uid_bytes(&class));
    push_element(&mut meta, (0x0002, 0x0003), b"UI", &uid_bytes(&instance));
    push_element(&mut meta, (0x0002, 0x0010), b"UI", &uid_bytes(ts));
    push_element(&mut meta, (0x0002, 0x0012), b"UI", &uid_bytes(IMPLEMENTATION_CLASS_UID));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    push_element(&mut out, (0x0002, 0x0000), b"UL", &(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    Ok(out)
}

fn uid_bytes(uid: &str) -> Vec<u8> {
    let mut v = uid.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

fn push_element(out: &mut Vec<u8>, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// SOP Class and SOP Instance UID of a bare data set: its leading group 0008 elements are
/// walked (bounded by the bytes present) until both are found or the group ends.
fn sop_uids(data: &[u8], explicit: bool) -> Result<(String, String), DecodeError> {
    let (mut class, mut instance) = (None, None);
    let mut p = 0usize;
    let u16_at = |p: usize| data.get(p..p + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |p: usize| data.get(p..p + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    while let (Some(g), Some(e)) = (u16_at(p), u16_at(p + 2)) {
        if g != 0x0008 {
            break;
        }
        let (len, head) = if explicit {
            let vr = data.get(p + 4..p + 6).unwrap_or(b"  ");
            let long = matches!(
                vr,
                b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT"
            );
            if long {
                (u32_at(p + 8), 12)
            } else {
                (u16_at(p + 6).map(u32::from), 8)
            }
        } else {
            (u32_at(p + 4), 8)
        };
        let Some(len) = len else { break };
        if len == 0xFFFF_FFFF || p + head + len as usize > data.len() {
            break;
        }
        let value = &data[p + head..p + head + len as usize];
        let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string();
        match e {
            0x0016 => class = Some(text()),
            0x0018 => instance = Some(text()),
            _ => {}
        }
        if class.is_some() && instance.is_some() {
            break;
        }
        p += head + len as usize;
    }
    match (class, instance) {
        (Some(c), Some(i)) if !c.is_empty() && !i.is_empty() => Ok((c, i)),
        _ => Err(DecodeError::Dicom(
            "data set without preamble and file meta has no SOP Class UID (0008,0016) or SOP Instance UID (0008,0018)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn implicit(tag: (u16, u16), value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn tiff_text_and_short_files_are_not_dicom() {
        assert_eq!(sniff(b"II*\0\x08\0\0\0\0\0\0\0"), None);
        assert_eq!(sniff(b"MM\0*\0\0\0\x08\0\0\0\0"), None);
        assert_eq!(sniff(b"hello, this is text"), None);
        assert_eq!(sniff(&[0x08, 0x00, 0x16]), None);
        // Group 0008 but an element number no data set starts with.
        assert_eq!(sniff(&[0x08, 0, 0x00, 0x10, 4, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn a_bare_implicit_data_set_gets_a_meta_group_naming_its_own_uids() {
        let mut ds = implicit((0x0008, 0x0016), b"1.2.840.10008.5.1.4.1.1.2\0");
        ds.extend(implicit((0x0008, 0x0018), b"1.2.3.4"));
        ds.extend(implicit((0x0010, 0x0020), b"PAT1"));
        assert_eq!(sniff(&ds), Some(Form::Bare { explicit: false }));
        let f = canonical(&ds).unwrap();
        assert_eq!(&f[128..132], b"DICM");
        assert!(f.ends_with(&ds), "the data set is kept byte for byte");
        let meta = crate::ingest::dicom::header_of(&f).unwrap();
        assert_eq!(meta.sop_class, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(meta.sop_instance_uid, "1.2.3.4");
        assert_eq!(meta.patient_id, "PAT1");
    }

    #[test]
    fn a_bare_data_set_without_uids_is_refused_with_the_reason() {
        let mut ds = implicit((0x0008, 0x0060), b"CT");
        ds.extend(implicit((0x0010, 0x0020), b"PAT1"));
        let e = canonical(&ds).unwrap_err().to_string();
        assert!(e.contains("no SOP Class UID"), "{e}");
    }

    #[test]
    fn a_meta_group_without_group_length_gets_one() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        push_element(&mut f, (0x0002, 0x0001), b"OB", &[0, 1]);
        push_element(&mut f, (0x0002, 0x0010), b"UI", &uid_bytes(IMPLICIT_LE));
        let mut ds = implicit((0x0008, 0x0016), b"1.2.840.10008.5.1.4.1.1.7\0");
        ds.extend(implicit((0x0008, 0x0018), b"1.2.3.5\0"));
        f.extend_from_slice(&ds);
        let c = canonical(&f).unwrap();
        assert!(matches!(c, Cow::Owned(_)));
        let h = crate::ingest::dicom::header_of(&c).unwrap();
        assert_eq!(h.sop_class, "1.2.840.10008.5.1.4.1.1.7");
        // A canonical file is borrowed, not copied.
        assert!(matches!(canonical(&c).unwrap(), Cow::Borrowed(_)));
    }
}
