//! SPI TFT panels (ST7789, ILI9341, ILI9486 in RGB565) driven by `mipidsi` over any
//! `embedded-hal` 1.0 SPI device and GPIO pins: on the box, `linux-embedded-hal`'s spidev and
//! GPIO character-device pins (wiring from the board profile); in tests, recording fakes.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::SpiInterface;
use mipidsi::models::{ILI9341Rgb565, ILI9486Rgb565, ST7789};
use mipidsi::{Builder, Display};

use super::canvas::Canvas;

/// The panel controllers the board profiles may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    St7789,
    Ili9341,
    Ili9486,
}

impl Controller {
    pub fn parse(name: &str) -> Result<Controller, String> {
        match name {
            "st7789" => Ok(Controller::St7789),
            "ili9341" => Ok(Controller::Ili9341),
            "ili9486" => Ok(Controller::Ili9486),
            other => Err(format!(
                "panel controller {other:?} is not supported (st7789, ili9341, ili9486)"
            )),
        }
    }
}

type Di<SPI, DC> = SpiInterface<'static, SPI, DC>;

/// An initialised panel.
pub enum Panel<SPI: SpiDevice, DC: OutputPin, RST: OutputPin> {
    St7789(Display<Di<SPI, DC>, ST7789, RST>),
    Ili9341(Display<Di<SPI, DC>, ILI9341Rgb565, RST>),
    Ili9486(Display<Di<SPI, DC>, ILI9486Rgb565, RST>),
}

impl<SPI: SpiDevice, DC: OutputPin, RST: OutputPin> Panel<SPI, DC, RST> {
    /// Reset and initialise the controller for a `width` x `height` panel.
    pub fn init(
        controller: Controller,
        spi: SPI,
        dc: DC,
        rst: RST,
        delay: &mut impl DelayNs,
        width: u16,
        height: u16,
    ) -> Result<Self, String> {
        // The interface's transfer buffer lives as long as the panel: one allocation at start.
        let buffer: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let di = SpiInterface::new(spi, dc, buffer);
        let e = |e| format!("panel initialisation failed: {e:?}");
        Ok(match controller {
            Controller::St7789 => Panel::St7789(
                Builder::new(ST7789, di)
                    .display_size(width, height)
                    .reset_pin(rst)
                    .init(delay)
                    .map_err(e)?,
            ),
            Controller::Ili9341 => Panel::Ili9341(
                Builder::new(ILI9341Rgb565, di)
                    .display_size(width, height)
                    .reset_pin(rst)
                    .init(delay)
                    .map_err(e)?,
            ),
            Controller::Ili9486 => Panel::Ili9486(
                Builder::new(ILI9486Rgb565, di)
                    .display_size(width, height)
                    .reset_pin(rst)
                    .init(delay)
                    .map_err(e)?,
            ),
        })
    }

    /// Send the whole canvas (one address window, one memory write).
    pub fn show(&mut self, canvas: &Canvas) -> Result<(), String> {
        let (ex, ey) = ((canvas.width - 1) as u16, (canvas.height - 1) as u16);
        let px = canvas.pixels.iter().copied();
        let r = match self {
            Panel::St7789(d) => d.set_pixels(0, 0, ex, ey, px).map_err(|e| format!("{e:?}")),
            Panel::Ili9341(d) => d.set_pixels(0, 0, ex, ey, px).map_err(|e| format!("{e:?}")),
            Panel::Ili9486(d) => d.set_pixels(0, 0, ex, ey, px).map_err(|e| format!("{e:?}")),
        };
        r.map_err(|e| format!("panel write failed: {e}"))
    }
}

/// The panel on the box: spidev device and GPIO character-device lines from the profile.
pub type LinuxPanel = Panel<linux_embedded_hal::SpidevDevice, linux_embedded_hal::CdevPin, linux_embedded_hal::CdevPin>;

/// Open the board's SPI panel (`device`, `gpio_chip`, `dc_line`, `reset_line`, `controller`).
pub fn open_linux(p: &super::DisplayProfile) -> Result<LinuxPanel, String> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    let controller = Controller::parse(p.controller.as_deref().unwrap_or(""))?;
    let device = p.device.as_deref().unwrap_or("/dev/spidev0.0");
    let mut spi = linux_embedded_hal::SpidevDevice::open(device).map_err(|e| format!("{device}: {e}"))?;
    let opts = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(32_000_000)
        .mode(SpiModeFlags::SPI_MODE_0)
        .build();
    spi.0.configure(&opts).map_err(|e| format!("{device}: {e}"))?;
    let chip_path = p.gpio_chip.as_deref().unwrap_or("/dev/gpiochip0");
    let mut chip = Chip::new(chip_path).map_err(|e| format!("{chip_path}: {e}"))?;
    let mut line = |n: Option<u32>, what: &str| -> Result<linux_embedded_hal::CdevPin, String> {
        let n = n.ok_or_else(|| format!("the board profile gives no {what} line"))?;
        let handle = chip
            .get_line(n)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "ctsentinel"))
            .map_err(|e| format!("{chip_path} line {n} ({what}): {e}"))?;
        linux_embedded_hal::CdevPin::new(handle).map_err(|e| format!("{chip_path} line {n} ({what}): {e}"))
    };
    let dc = line(p.dc_line, "dc")?;
    let rst = line(p.reset_line, "reset")?;
    Panel::init(
        controller,
        spi,
        dc,
        rst,
        &mut linux_embedded_hal::Delay,
        p.width as u16,
        p.height as u16,
    )
}
