//! 16-bit grayscale TIFF slices through the `tiff` crate; [`SliceDecoder`] also hands DICOM
//! files (by their signature) to `super::dicom`.
//!
//! Only what the method defines is accepted: one unsigned 16-bit sample per pixel, black is
//! zero, a single image, at least as large as the lung ROI. Everything else is a specific
//! [`DecodeError`]. The decoder's [`Limits`] are set so that a forged header cannot make it
//! allocate more than one maximal slice.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::{PhotometricInterpretation, SampleFormat, Tag};
use tiff::{ColorType, TiffError};

use super::{io, DecodeError, IngestError, Slice};
use crate::select::{ROI_COLS, ROI_ROWS};

/// Smallest acceptable width: the ROI's columns must lie inside the image.
pub const MIN_WIDTH: u32 = ROI_COLS.end as u32;
/// Smallest acceptable height: the ROI's rows must lie inside the image.
pub const MIN_HEIGHT: u32 = ROI_ROWS.end as u32;
/// Largest accepted side. CT reconstructions are 512 (sometimes 768 or 1024) pixels wide.
pub const MAX_SIDE: u32 = 1024;
/// Largest file accepted as a slice; bigger files are refused before any byte is decoded.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

const MAX_PIXEL_BYTES: usize = (MAX_SIDE as usize) * (MAX_SIDE as usize) * 2;

fn limits() -> Limits {
    let mut l = Limits::default();
    // One maximal slice, and not a byte more, for the decoded image and any strip buffer.
    l.decoding_buffer_size = MAX_PIXEL_BYTES;
    l.intermediate_buffer_size = MAX_PIXEL_BYTES;
    // Strip tables of a 1024-row image need 8 KiB; 64 KiB leaves room for honest metadata.
    l.ifd_value_size = 64 * 1024;
    l
}

/// Decodes slices one at a time into a buffer it reuses, so a series walk holds one slice.
#[derive(Default)]
pub struct SliceDecoder {
    buf: Vec<u16>,
    /// The whole file, read once: decoded and checked from the same bytes.
    file: Vec<u8>,
    /// Output buffer of the complete-decode check (see `strict`).
    scratch: Vec<u8>,
}

impl SliceDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode the slice at `path`. The returned [`Slice`] borrows this decoder's buffer.
    pub fn decode(&mut self, path: &Path) -> Result<Slice<'_>, IngestError> {
        let dec = |reason| IngestError::Decode {
            path: path.to_path_buf(),
            reason,
        };
        check_candidate(path)?;
        let file = File::open(path).map_err(|e| io(path, e))?;
        // Read once, bounded even if the file grows after it was looked at; decoded and
        // checked from these bytes only.
        self.file.clear();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut self.file)
            .map_err(|e| io(path, e))?;
        if self.file.len() as u64 > MAX_FILE_BYTES {
            return Err(dec(DecodeError::Limits(format!(
                "file grew past the {MAX_FILE_BYTES} bytes a slice may have while it was read"
            ))));
        }
        self.decode_loaded().map_err(dec)
    }

    /// Decode a slice held in memory (a TIFF or a DICOM file's bytes), with every check
    /// [`SliceDecoder::decode`] makes after reading the file. The fuzz targets' entry point.
    pub fn decode_bytes(&mut self, bytes: &[u8]) -> Result<Slice<'_>, DecodeError> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(DecodeError::Limits(format!(
                "{} bytes is more than the {MAX_FILE_BYTES} bytes a slice may have",
                bytes.len()
            )));
        }
        self.file.clear();
        self.file.extend_from_slice(bytes);
        self.decode_loaded()
    }

    /// Decode `self.file` (DICOM or TIFF, told by its signature).
    fn decode_loaded(&mut self) -> Result<Slice<'_>, DecodeError> {
        if super::dicom::is_dicom_signature(&self.file) {
            let (width, height) = super::dicom::decode_slice(&self.file, &mut self.buf).inspect_err(|_| {
                self.buf.clear();
            })?;
            return Ok(Slice {
                width,
                height,
                pixels: &self.buf,
            });
        }
        if self.file.len() < 4 || !is_tiff_signature(self.file[..4].try_into().unwrap_or(&[0; 4])) {
            return Err(DecodeError::NotTiff);
        }
        let (width, height) = self.decode_buffered()?;
        Ok(Slice {
            width,
            height,
            pixels: &self.buf,
        })
    }

    fn decode_buffered(&mut self) -> Result<(usize, usize), DecodeError> {
        let file = std::mem::take(&mut self.file);
        let r = self.decode_from(&file);
        self.file = file;
        r
    }

    fn decode_from(&mut self, file: &[u8]) -> Result<(usize, usize), DecodeError> {
        let mut d = Decoder::new(Cursor::new(file)).map_err(map_err)?.with_limits(limits());
        let (w, h) = d.dimensions().map_err(map_err)?;
        if w > MAX_SIDE || h > MAX_SIDE {
            return Err(DecodeError::TooLarge { width: w, height: h });
        }
        if w < MIN_WIDTH || h < MIN_HEIGHT {
            return Err(DecodeError::TooSmall { width: w, height: h });
        }
        match d.colortype().map_err(map_err)? {
            ColorType::Gray(16) => {}
            other => return Err(DecodeError::PixelFormat(describe(other))),
        }
        let fmt = d
            .find_tag_unsigned::<u16>(Tag::SampleFormat)
            .map_err(map_err)?
            .unwrap_or(1);
        match SampleFormat::from_u16(fmt) {
            Some(SampleFormat::Uint) => {}
            Some(SampleFormat::Int) => return Err(DecodeError::PixelFormat("16-bit signed integer".into())),
            Some(SampleFormat::IEEEFP) => return Err(DecodeError::PixelFormat("16-bit floating point".into())),
            _ => return Err(DecodeError::PixelFormat(format!("sample format code {fmt}"))),
        }
        let photometric = d
            .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
            .map_err(map_err)?;
        if photometric.and_then(PhotometricInterpretation::from_u16) != Some(PhotometricInterpretation::BlackIsZero) {
            return Err(DecodeError::PixelFormat(format!(
                "photometric interpretation {photometric:?} (need BlackIsZero, code 1)"
            )));
        }
        if d.more_images() {
            return Err(DecodeError::Unsupported(
                "multi-page TIFF (a slice file must hold one image)".into(),
            ));
        }
        super::strict::codec(&mut d)?;
        let mut result = DecodingResult::U16(std::mem::take(&mut self.buf));
        let read = d.read_image_to_buffer(&mut result).map_err(map_err);
        let pixels = match result {
            DecodingResult::U16(v) => v,
            _ => Vec::new(),
        };
        self.buf = pixels;
        read?;
        let need = w as usize * h as usize;
        if self.buf.len() != need {
            return Err(DecodeError::Corrupt(format!(
                "decoded {} pixels, expected {need}",
                self.buf.len()
            )));
        }
        // The crate stops reading a strip once it has enough bytes: make sure every strip
        // really decompresses completely and exactly (see `strict`).
        if let Err(e) = super::strict::verify_chunks(&mut d, file, w, h, &mut self.scratch) {
            self.buf.clear();
            return Err(e);
        }
        Ok((w as usize, h as usize))
    }
}

/// The four bytes that open a TIFF (little/big endian, classic/BigTIFF).
fn is_tiff_signature(magic: &[u8; 4]) -> bool {
    matches!(magic, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
}

/// True when `path` is a regular file that starts with a TIFF signature (no other check).
pub fn is_tiff_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && is_tiff_signature(&magic)
}

/// What every slice candidate must pass before a byte is read: a regular file (looked at
/// before opening: opening a fifo would block until someone writes to it), not empty, not over
/// [`MAX_FILE_BYTES`].
pub(crate) fn check_candidate(path: &Path) -> Result<(), IngestError> {
    let dec = |reason| IngestError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(IngestError::NotARegularFile {
            path: path.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    if meta.len() == 0 {
        return Err(dec(DecodeError::EmptyFile));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(dec(DecodeError::Limits(format!(
            "file is {} bytes, more than the {} bytes a slice may have",
            meta.len(),
            MAX_FILE_BYTES
        ))));
    }
    Ok(())
}

fn map_err(e: TiffError) -> DecodeError {
    match e {
        TiffError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Corrupt("file ends before the image data does (truncated)".into())
        }
        TiffError::IoError(e) => DecodeError::Corrupt(e.to_string()),
        TiffError::FormatError(e) => DecodeError::Corrupt(e.to_string()),
        TiffError::UnsupportedError(e) => DecodeError::Unsupported(e.to_string()),
        TiffError::LimitsExceeded => DecodeError::Limits("the declared image or metadata is too large".into()),
        TiffError::IntSizeError => DecodeError::Limits("sizes overflow the platform's integers".into()),
        other => DecodeError::Corrupt(other.to_string()),
    }
}

fn describe(c: ColorType) -> String {
    match c {
        ColorType::Gray(b) => format!("{b}-bit grayscale"),
        ColorType::RGB(b) => format!("{b}-bit RGB"),
        ColorType::RGBA(b) => format!("{b}-bit RGBA"),
        ColorType::Palette(b) => format!("{b}-bit palette"),
        ColorType::GrayA(b) => format!("{b}-bit grayscale with alpha"),
        other => format!("{other:?}"),
    }
}

fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_dir() {
        "folder"
    } else {
        "special file"
    }
}
