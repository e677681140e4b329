//! Generated chest phantoms for the lung mask's tests and fixture (never patient data).
//!
//! A phantom is a list of ellipses in millimetres, painted in order over air; rendering it at a
//! given size and pixel spacing gives the same anatomy at any field of view, which is what the
//! spacing tests need. `training/lung.py` (`render`, `chest`) is the same code in numpy and
//! must stay so: the committed fixture `tests/fixtures/lung/phantoms.json` holds shape lists
//! rendered by both sides.

/// An ellipse in mm, centre relative to the image centre (+x right, +y down), filled with `hu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipse {
    pub cx: f64,
    pub cy: f64,
    pub rx: f64,
    pub ry: f64,
    pub hu: i32,
}

impl Ellipse {
    pub const fn new(cx: f64, cy: f64, rx: f64, ry: f64, hu: i32) -> Self {
        Ellipse { cx, cy, rx, ry, hu }
    }
}

/// Indices into [`chest`]'s list, for tests that edit one part.
pub const BODY: usize = 0;
pub const RIGHT_LUNG: usize = 4;
pub const LEFT_LUNG: usize = 5;
pub const TRACHEA: usize = 6;
pub const NODULE: usize = 7;
pub const GROUND_GLASS: usize = 8;

/// The standard chest (mm): body, a table below it with two air pockets, two lungs, a trachea
/// (an air disc too small to be a lung), a solid nodule in the right lung and ground glass in
/// the left. Patient's right is image left, as on a CT viewer.
pub fn chest() -> Vec<Ellipse> {
    vec![
        Ellipse::new(0.0, 0.0, 160.0, 115.0, 40),     // body, soft tissue
        Ellipse::new(0.0, 135.0, 200.0, 8.0, 100),    // table
        Ellipse::new(-60.0, 135.0, 20.0, 3.0, -1000), // table air pocket
        Ellipse::new(60.0, 135.0, 20.0, 3.0, -1000),  // table air pocket
        Ellipse::new(-70.0, -5.0, 55.0, 80.0, -850),  // right lung
        Ellipse::new(70.0, -5.0, 50.0, 78.0, -850),   // left lung
        Ellipse::new(0.0, -70.0, 9.0, 9.0, -1000),    // trachea
        Ellipse::new(-70.0, 10.0, 8.0, 8.0, 40),      // solid nodule
        Ellipse::new(70.0, 20.0, 15.0, 12.0, -550),   // ground glass
    ]
}

/// Paints `shapes` over air (-1000 HU): a pixel takes the HU of the last ellipse whose interior
/// holds its centre, `((x + 0.5 - width / 2) * spacing - cx) / rx` squared plus the same in y
/// `< 1` (f64, in this order, like numpy). Stored value = `clamp(hu - intercept, 0, 65535)`.
pub fn render(shapes: &[Ellipse], width: usize, height: usize, spacing_mm: f64, intercept: f64) -> Vec<u16> {
    let off = intercept as i64;
    let mut hu = vec![-1000i64; width * height];
    for e in shapes {
        for y in 0..height {
            let ym = (y as f64 + 0.5 - height as f64 / 2.0) * spacing_mm;
            let dy = (ym - e.cy) / e.ry;
            let dy2 = dy * dy;
            if dy2 >= 1.0 {
                continue;
            }
            for x in 0..width {
                let xm = (x as f64 + 0.5 - width as f64 / 2.0) * spacing_mm;
                let dx = (xm - e.cx) / e.rx;
                if dx * dx + dy2 < 1.0 {
                    hu[y * width + x] = e.hu as i64;
                }
            }
        }
    }
    hu.into_iter().map(|v| (v - off).clamp(0, 65535) as u16).collect()
}
