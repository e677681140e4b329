//! The in-memory RGB565 canvas every display backend shows (framebuffer, SPI panel, PNG) and
//! every screen is drawn on (`display::render`). Its own room so the panel drivers
//! (`spi_panel`) and the screens (`display`) both build on it without importing each other.

use embedded_graphics::pixelcolor::{Rgb565, RgbColor};
use embedded_graphics::prelude::*;

/// An in-memory RGB565 panel every backend shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<Rgb565>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![Rgb565::BLACK; (width * height) as usize],
        }
    }

    /// RGB888 bytes, row-major.
    pub fn rgb8(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .flat_map(|p| {
                [
                    (p.r() << 3) | (p.r() >> 2),
                    (p.g() << 2) | (p.g() >> 4),
                    (p.b() << 3) | (p.b() >> 2),
                ]
            })
            .collect()
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb565;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(&mut self, pixels: I) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                self.pixels[(p.y as u32 * self.width + p.x as u32) as usize] = c;
            }
        }
        Ok(())
    }
}
