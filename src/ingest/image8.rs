//! 8-bit grayscale PNG/JPEG images (exported slices) for `classify`, through the `image` crate.
//!
//! They are taken as already windowed in the model card's 8-bit representation; only one
//! 8-bit gray channel is accepted (a colour screenshot is refused, not silently converted).

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
    let dec = |reason| IngestError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    super::tiff::check_candidate(path)?;
    let mut reader = ImageReader::open(path)
        .map_err(|e| io(path, e))?
        .with_guessed_format()
        .map_err(|e| io(path, e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_8BIT);
    limits.max_image_height = Some(MAX_SIDE_8BIT);
    limits.max_alloc = Some(2 * (MAX_SIDE_8BIT as u64) * (MAX_SIDE_8BIT as u64));
    reader.limits(limits);
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => {
            return Err(dec(DecodeError::Unsupported(
                "not a PNG, JPEG or 16-bit TIFF image".into(),
            )))
        }
    }
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => dec(DecodeError::Limits(l.to_string())),
        other => dec(DecodeError::Corrupt(other.to_string())),
    })?;
    if img.color() != ColorType::L8 {
        return Err(dec(DecodeError::PixelFormat(format!(
            "{:?} (an 8-bit image must be one grayscale channel in the model card's window)",
            img.color()
        ))));
    }
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(Gray8 {
        width,
        height,
        pixels: img.into_luma8().into_raw(),
    })
}
