//! Where a rendered screen goes: a PNG file (headless), the Linux framebuffer, or nothing; the
//! SPI panel driver is `present::spi_panel`.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("{path}: {reason}")]
    Device { path: PathBuf, reason: String },
}

/// Where a rendered canvas goes.
pub enum Backend {
    None,
    /// Writes `<dir>/screen.png` (atomically) on every update; headless boxes and tests.
    Png {
        dir: PathBuf,
    },
    Framebuffer(Framebuffer),
    /// An SPI TFT panel on the box.
    Spi(Box<crate::present::spi_panel::LinuxPanel>),
}

impl Backend {
    pub fn show(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        match self {
            Backend::None => Ok(()),
            Backend::Png { dir } => save_png(canvas, &dir.join("screen.png")),
            Backend::Framebuffer(fb) => fb.show(canvas),
            Backend::Spi(panel) => panel.show(canvas).map_err(|reason| DisplayError::Device {
                path: "spi".into(),
                reason,
            }),
        }
    }
}

/// Write a canvas as a PNG file, atomically.
pub fn save_png(canvas: &Canvas, path: &Path) -> Result<(), DisplayError> {
    let err = |reason: String| DisplayError::Device {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    image::RgbImage::from_raw(canvas.width, canvas.height, canvas.rgb8())
        .ok_or_else(|| err("canvas size mismatch".into()))?
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))?;
    crate::fsys::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// A Linux framebuffer (`/dev/fbN`), pixel format and geometry read from sysfs
/// (`/sys/class/graphics/fbN/{bits_per_pixel,virtual_size,stride}`): 16 bpp RGB565 or
/// 32 bpp XRGB8888. No X server needed.
pub struct Framebuffer {
    device: PathBuf,
    pub bits_per_pixel: u32,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

impl Framebuffer {
    /// Open `device` with its sysfs folder (e.g. `/dev/fb0` and `/sys/class/graphics/fb0`).
    pub fn open(device: &Path, sysfs: &Path) -> Result<Framebuffer, DisplayError> {
        let err = |reason: String| DisplayError::Device {
            path: device.to_path_buf(),
            reason,
        };
        let read = |name: &str| {
            std::fs::read_to_string(sysfs.join(name))
                .map(|s| s.trim().to_string())
                .map_err(|e| err(format!("{}: {e}", sysfs.join(name).display())))
        };
        let bits_per_pixel: u32 = read("bits_per_pixel")?
            .parse()
            .map_err(|e| err(format!("bits_per_pixel: {e}")))?;
        let size = read("virtual_size")?;
        let (w, h) = size
            .split_once(',')
            .ok_or_else(|| err(format!("virtual_size {size:?}")))?;
        let width: u32 = w.parse().map_err(|e| err(format!("virtual_size: {e}")))?;
        let height: u32 = h.parse().map_err(|e| err(format!("virtual_size: {e}")))?;
        let stride: u32 = read("stride")?.parse().map_err(|e| err(format!("stride: {e}")))?;
        if !matches!(bits_per_pixel, 16 | 32) {
            return Err(err(format!(
                "{bits_per_pixel} bits per pixel is not supported (RGB565 or XRGB8888)"
            )));
        }
        if stride < width * bits_per_pixel / 8 {
            return Err(err(format!("stride {stride} is shorter than a row of {width} pixels")));
        }
        Ok(Framebuffer {
            device: device.to_path_buf(),
            bits_per_pixel,
            width,
            height,
            stride,
        })
    }

    /// Copy the canvas to the top-left of the framebuffer in its pixel format.
    pub fn show(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        use std::io::{Seek, SeekFrom, Write};
        let err = |reason: String| DisplayError::Device {
            path: self.device.clone(),
            reason,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .map_err(|e| err(e.to_string()))?;
        let (w, h) = (canvas.width.min(self.width), canvas.height.min(self.height));
        let mut row = Vec::with_capacity((w * 4) as usize);
        for y in 0..h {
            row.clear();
            for x in 0..w {
                let p = canvas.pixels[(y * canvas.width + x) as usize];
                if self.bits_per_pixel == 16 {
                    row.extend_from_slice(&p.into_storage().to_le_bytes());
                } else {
                    let r = (p.r() << 3) | (p.r() >> 2);
                    let g = (p.g() << 2) | (p.g() >> 4);
                    let b = (p.b() << 3) | (p.b() >> 2);
                    row.extend_from_slice(&[b, g, r, 0]);
                }
            }
            f.seek(SeekFrom::Start(y as u64 * self.stride as u64))
                .map_err(|e| err(e.to_string()))?;
            f.write_all(&row).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}
