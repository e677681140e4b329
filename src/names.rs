//! Portable, collision-free file names for names that arrive from outside (a USB stick, a
//! share, a DICOM PatientID or UID).
//!
//! Why a module of its own: the service's state layout and the DICOM receiver's inbox both
//! name folders after untrusted strings; one rule, in one place, keeps every such name inside
//! the folder it is joined to.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::classify::sha256_hex;

/// Longest name we create (bytes), hash suffix included; well under every file system's 255.
pub const MAX_NAME: usize = 80;

/// A portable file name for any original name: ASCII letters, digits, `.`, `_`, `-` are kept,
/// every other byte becomes `_`; a leading `.` becomes `_` (no hidden files, no `.`/`..`); an
/// empty name becomes `_`. When anything was changed or the name is longer than [`MAX_NAME`],
/// `~` and 8 hex digits of the original's SHA-256 are appended (after truncation), so two
/// different originals never get the same name: unchanged names never contain `~`.
pub fn safe_name(original: &OsStr) -> String {
    let bytes = original.as_bytes();
    let mut out: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    let changed = out.as_bytes() != bytes;
    if !changed && out.len() <= MAX_NAME {
        return out;
    }
    out.truncate(MAX_NAME - 9);
    out.push('~');
    out.push_str(&sha256_hex(bytes)[..8]);
    out
}
