//! The bedside screens: golden images at two panel sizes (regenerate with
//! `CTSENTINEL_BLESS=1 cargo test --test display` and look at them), no clipped strings at any
//! supported size, and the framebuffer backend on file-backed fakes in both pixel formats.

mod common;

use std::path::PathBuf;

use ctsentinel::decide::Verdict;
use ctsentinel::present::display::{self, Backend, Canvas, Framebuffer, Item, Screen, PANEL_SIZES};

fn golden(name: &str) -> PathBuf {
    common::repo().join("tests/golden/display").join(name)
}

#[test]
fn every_screen_matches_its_golden_image_at_320x240_and_800x480() {
    let bless = std::env::var_os("CTSENTINEL_BLESS").is_some();
    let mut mismatched = Vec::new();
    for screen in display::sample_screens() {
        for (w, h) in [(320, 240), (800, 480)] {
            let name = format!("{}_{w}x{h}.png", screen.name());
            let canvas = display::render(&screen, w, h);
            if bless {
                display::save_png(&canvas, &golden(&name)).unwrap();
                continue;
            }
            let want = image::open(golden(&name))
                .unwrap_or_else(|e| panic!("{name}: {e} (bless with CTSENTINEL_BLESS=1)"))
                .into_rgb8();
            if want.as_raw() != &canvas.rgb8() {
                mismatched.push(name);
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "screens differ from their golden images: {mismatched:?}"
    );
}

fn long_screens() -> Vec<Screen> {
    let long = "PATIENT-WITH-A-VERY-LONG-IDENTIFIER-FROM-THE-HOSPITAL-INFORMATION-SYSTEM-0123456789";
    let model = "ctsentinel-fpn256-with-a-much-longer-model-name 1.0.0-candidate+build.20261128";
    vec![
        Screen::Result {
            patient: long.into(),
            verdict: Verdict::Undetermined,
            covid_fraction: None,
            selected: 0,
            model: model.into(),
            time: "2026-11-28 10:43".into(),
            thumbnail: None,
        },
        Screen::Result {
            patient: long.into(),
            verdict: Verdict::Normal,
            covid_fraction: Some(0.0),
            selected: 999,
            model: model.into(),
            time: "t".into(),
            thumbnail: Some(display::Thumbnail {
                side: 4,
                gray: vec![128; 16],
                heat: Vec::new(),
            }),
        },
        Screen::Processing {
            patient: long.into(),
            series: long.into(),
            done: 999,
            of: 999,
            elapsed_s: 99999,
        },
        Screen::Idle {
            drop: format!("/mnt/{long}/{long}"),
            model: model.into(),
            last_result: Some(long.into()),
            web: Some(long.into()),
        },
        Screen::Fault {
            reason: format!("{long} {long} {long} {long} {long}"),
        },
        Screen::SelfTestFailed { reason: long.repeat(6) },
        Screen::Receiving {
            patient: long.into(),
            files: usize::MAX,
        },
    ]
}

#[test]
fn long_ids_and_model_names_never_overflow_any_supported_panel() {
    for (w, h) in PANEL_SIZES {
        for screen in display::sample_screens().into_iter().chain(long_screens()) {
            let items = display::layout(&screen, w, h);
            for item in &items {
                assert!(
                    item.right() <= w as i32,
                    "{w}x{h} {}: {item:?} runs off the right edge",
                    screen.name()
                );
                if let Item::Text { y, big, scale, .. } = item {
                    let height = if *big { 20 } else { 10 } * *scale as i32;
                    assert!(
                        *y >= 0 && *y + height <= h as i32,
                        "{w}x{h} {}: {item:?} runs off the bottom",
                        screen.name()
                    );
                }
            }
            for image in items.iter().filter(|i| matches!(i, Item::Image { .. })) {
                let Item::Image { x, y, side, .. } = image else {
                    unreachable!()
                };
                for t in &items {
                    if let Item::Text {
                        x: tx,
                        y: ty,
                        big,
                        scale,
                        ..
                    } = t
                    {
                        let th = if *big { 20 } else { 10 } * *scale as i32;
                        let overlaps =
                            *tx < x + *side as i32 && t.right() > *x && *ty < y + *side as i32 && ty + th > *y;
                        assert!(!overlaps, "{w}x{h} {}: {t:?} overlaps the thumbnail", screen.name());
                    }
                }
            }
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|i| {
                    if let Item::Text { text, .. } = i {
                        Some(text.as_str())
                    } else {
                        None
                    }
                })
                .collect();
            assert!(
                texts.iter().any(|t| t.contains("NOT A DIAGNOSIS")),
                "{w}x{h} {}: notice missing",
                screen.name()
            );
            if let Screen::Result { verdict, .. } = &screen {
                let word = match verdict {
                    Verdict::Covid => "COVID-19 PATTERN",
                    Verdict::Normal => "NO COVID-19 PATTERN",
                    Verdict::Undetermined => "UNDETERMINED",
                };
                assert!(
                    texts.contains(&word),
                    "{w}x{h}: verdict must be readable without colour, in full"
                );
            }
        }
    }
}

fn fake_framebuffer(bpp: u32, w: u32, h: u32, stride: u32) -> (tempfile::TempDir, Framebuffer) {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    std::fs::create_dir(&sys).unwrap();
    std::fs::write(sys.join("bits_per_pixel"), format!("{bpp}\n")).unwrap();
    std::fs::write(sys.join("virtual_size"), format!("{w},{h}\n")).unwrap();
    std::fs::write(sys.join("stride"), format!("{stride}\n")).unwrap();
    let dev = dir.path().join("fb0");
    std::fs::write(&dev, vec![0u8; (stride * h) as usize]).unwrap();
    let fb = Framebuffer::open(&dev, &sys).unwrap();
    (dir, fb)
}

#[test]
fn framebuffer_rgb565_and_xrgb8888_get_the_canvas_in_their_layout() {
    let canvas = display::render(&display::sample_screens()[5], 320, 240);
    // RGB565 with padding at the end of each row (stride > width * 2).
    let (dir, fb) = fake_framebuffer(16, 320, 240, 704);
    let mut backend = Backend::Framebuffer(fb);
    backend.show(&canvas).unwrap();
    let bytes = std::fs::read(dir.path().join("fb0")).unwrap();
    for (x, y) in [(0u32, 0u32), (20, 60), (319, 239), (100, 120)] {
        let p = canvas.pixels[(y * 320 + x) as usize];
        let o = (y * 704 + x * 2) as usize;
        use embedded_graphics::prelude::IntoStorage;
        assert_eq!(
            u16::from_le_bytes([bytes[o], bytes[o + 1]]),
            p.into_storage(),
            "({x},{y})"
        );
    }
    assert!(bytes[640..704].iter().all(|b| *b == 0), "row padding untouched");
    // XRGB8888: bytes B, G, R, X.
    let (dir, fb) = fake_framebuffer(32, 320, 240, 1280);
    Backend::Framebuffer(fb).show(&canvas).unwrap();
    let bytes = std::fs::read(dir.path().join("fb0")).unwrap();
    let rgb = canvas.rgb8();
    for (x, y) in [(0u32, 0u32), (20, 60), (319, 239)] {
        let o = (y * 1280 + x * 4) as usize;
        let i = ((y * 320 + x) * 3) as usize;
        assert_eq!(
            [bytes[o + 2], bytes[o + 1], bytes[o]],
            [rgb[i], rgb[i + 1], rgb[i + 2]],
            "({x},{y})"
        );
    }
}

#[test]
fn framebuffer_with_an_unsupported_format_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bits_per_pixel"), "24\n").unwrap();
    std::fs::write(dir.path().join("virtual_size"), "320,240\n").unwrap();
    std::fs::write(dir.path().join("stride"), "960\n").unwrap();
    let err = Framebuffer::open(&dir.path().join("fb0"), dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("24 bits per pixel"), "{err}");
    let err = Framebuffer::open(&dir.path().join("fb0"), &dir.path().join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bits_per_pixel"), "{err}");
}

#[test]
fn png_backend_writes_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let canvas: Canvas = display::render(&Screen::Booting, 240, 240);
    Backend::Png {
        dir: dir.path().to_path_buf(),
    }
    .show(&canvas)
    .unwrap();
    let img = image::open(dir.path().join("screen.png")).unwrap().into_rgb8();
    assert_eq!((img.width(), img.height()), (240, 240));
    assert_eq!(img.as_raw(), &canvas.rgb8());
}

#[test]
fn display_demo_writes_one_png_per_screen_at_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::ctsentinel()
        .args(["display-demo", "--backend", "png", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let n = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(n, 2 * display::sample_screens().len());
}

mod spi {
    //! The SPI path with recording fakes of the embedded-hal 1.0 SPI device and pins.
    use std::cell::RefCell;
    use std::rc::Rc;

    use ctsentinel::present::display;
    use ctsentinel::present::spi_panel::{Controller, Panel};
    use embedded_hal::spi::{Operation, SpiDevice};

    /// Every byte written, with the level of the DC pin (false = command, true = data).
    type Log = Rc<RefCell<Vec<(bool, u8)>>>;

    struct Spi(Log, Rc<RefCell<bool>>);
    struct Pin(Rc<RefCell<bool>>);
    struct NoDelay;

    impl embedded_hal::spi::ErrorType for Spi {
        type Error = std::convert::Infallible;
    }
    impl SpiDevice for Spi {
        fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
            let dc = *self.1.borrow();
            for op in ops {
                if let Operation::Write(bytes) = op {
                    self.0.borrow_mut().extend(bytes.iter().map(|b| (dc, *b)));
                }
            }
            Ok(())
        }
    }
    impl embedded_hal::digital::ErrorType for Pin {
        type Error = std::convert::Infallible;
    }
    impl embedded_hal::digital::OutputPin for Pin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            *self.0.borrow_mut() = false;
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            *self.0.borrow_mut() = true;
            Ok(())
        }
    }
    impl embedded_hal::delay::DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    fn commands(log: &[(bool, u8)]) -> Vec<u8> {
        log.iter().filter(|(dc, _)| !dc).map(|(_, b)| *b).collect()
    }

    #[test]
    fn st7789_init_then_one_window_of_the_whole_canvas_in_rgb565() {
        let log: Log = Default::default();
        let dc = Rc::new(RefCell::new(false));
        let rst = Rc::new(RefCell::new(false));
        let mut panel = Panel::init(
            Controller::St7789,
            Spi(log.clone(), dc.clone()),
            Pin(dc),
            Pin(rst.clone()),
            &mut NoDelay,
            240,
            320,
        )
        .unwrap();
        assert!(*rst.borrow(), "reset released after init");
        let init = commands(&log.borrow());
        for (cmd, what) in [(0x11u8, "sleep out"), (0x3A, "pixel format"), (0x29, "display on")] {
            assert!(
                init.contains(&cmd),
                "{what} (0x{cmd:02x}) missing from init: {init:02x?}"
            );
        }
        log.borrow_mut().clear();
        let canvas = display::render(&display::Screen::Booting, 240, 320);
        panel.show(&canvas).unwrap();
        let sent = log.borrow();
        assert_eq!(
            commands(&sent),
            vec![0x2A, 0x2B, 0x2C],
            "column, row address, memory write"
        );
        let data: Vec<u8> = sent.iter().filter(|(dc, _)| *dc).map(|(_, b)| *b).collect();
        assert_eq!(&data[..4], &[0, 0, 0, 239], "columns 0..=239");
        assert_eq!(&data[4..8], &[0, 0, 1, 63], "rows 0..=319");
        let pixels = &data[8..];
        assert_eq!(pixels.len(), 240 * 320 * 2);
        use embedded_graphics::prelude::IntoStorage;
        for i in [0usize, 1000, 240 * 320 - 1] {
            let want = canvas.pixels[i].into_storage().to_be_bytes();
            assert_eq!(&pixels[2 * i..2 * i + 2], &want, "pixel {i} big-endian RGB565");
        }
    }

    #[test]
    fn unknown_controller_is_a_clear_error() {
        let err = Controller::parse("ssd1306").unwrap_err();
        assert!(err.contains("ssd1306") && err.contains("st7789"), "{err}");
        assert_eq!(Controller::parse("ili9486").unwrap(), Controller::Ili9486);
    }
}
