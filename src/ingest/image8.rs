//! 8-bit grayscale PNG/JPEG images (exported slices) for `classify`, through the `image` crate.
//!
//! They are taken as already windowed in the model card's 8-bit representation; only one
//! 8-bit gray channel is accepted (a colour screenshot is refused, not silently converted).

use std::io::{Cursor, Read};
use std::path::Path;

use image::{ColorType, ImageReader, Limits};

use super::{io, DecodeError, IngestError};

/// Largest side accepted for an 8-bit image.
pub const MAX_SIDE_8BIT: u32 = 4096;

/// A decoded 8-bit grayscale image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gray8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decode an 8-bit grayscale PNG or JPEG.
pub fn decode_gray8(path: &Path) -> Result<Gray8, IngestError> {
    super::tiff::check_candidate(path)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(super::tiff::MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| io(path, e))?;
    decode_gray8_bytes(&bytes).map_err(|reason| IngestError::Decode {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decode an 8-bit grayscale PNG or JPEG held in memory (the fuzz targets' entry point).
pub fn decode_gray8_bytes(bytes: &[u8]) -> Result<Gray8, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::EmptyFile);
    }
    if bytes.len() as u64 > super::tiff::MAX_FILE_BYTES {
        return Err(DecodeError::Limits(format!(
            "{} bytes is more than the {} bytes an image may have",
            bytes.len(),
            super::tiff::MAX_FILE_BYTES
        )));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_8BIT);
    limits.max_image_height = Some(MAX_SIDE_8BIT);
    limits.max_alloc = Some(2 * (MAX_SIDE_8BIT as u64) * (MAX_SIDE_8BIT as u64));
    reader.limits(limits);
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err(DecodeError::Unsupported("not a PNG, JPEG or 16-bit TIFF image".into())),
    }
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => DecodeError::Limits(l.to_string()),
        other => DecodeError::Corrupt(other.to_string()),
    })?;
    if img.color() != ColorType::L8 {
        return Err(DecodeError::PixelFormat(format!(
            "{:?} (an 8-bit image must be one grayscale channel in the model card's window)",
            img.color()
        )));
    }
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(Gray8 {
        width,
        height,
        pixels: img.into_luma8().into_raw(),
    })
}
