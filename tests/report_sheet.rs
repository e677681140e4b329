//! The per-patient report sheet (`scan --report FILE`, and `<series>.png` beside each service
//! result): every selected slice in order with its P(COVID) and frame colour, the verdict, the
//! counts, the model's identity and the notice; nothing drawn past its edge; bounded size.

mod common;

use ctsentinel::present::display::Item;
use ctsentinel::present::sheet::{self, SheetInput, COVID_FRAME, MAX_TILES, NORMAL_FRAME, SHEET_WIDTH};
use ctsentinel::report::ScanReport;

/// The real COVID patient through the binary: its JSON report and the sheet it wrote.
fn scan_with_sheet(test: &str) -> Option<(ScanReport, image::RgbImage)> {
    let data = common::shared_or_skip(test)?;
    let t = tempfile::tempdir().unwrap();
    let png = t.path().join("sheet.png");
    let out = common::ctsentinel()
        .arg("scan")
        .arg(data.join("ct16/covid/ctmd_P001"))
        .args(["--json", "--threads", "2", "--report"])
        .arg(&png)
        .env("CTSENTINEL_MODELS", common::models())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: ScanReport = serde_json::from_slice(&out.stdout).unwrap();
    let img = image::open(&png).unwrap().to_rgb8();
    Some((report, img))
}

fn texts(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Text { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn lay_out(report: &ScanReport) -> (Vec<Item>, u32, Vec<(usize, usize)>) {
    let input = SheetInput {
        report,
        threshold: 0.5,
        time: "2026-12-02 10:00:00 UTC",
    };
    let mut asked = Vec::new();
    let (items, h) = sheet::layout(&input, &mut |si, k| {
        asked.push((si, k));
        None
    });
    (items, h, asked)
}

#[test]
fn report_sheet_shows_every_selected_slice_in_order_with_its_p_and_the_model_identity() {
    let Some((report, img)) = scan_with_sheet("report_sheet_shows_every_selected_slice") else {
        return;
    };
    let (items, height, asked) = lay_out(&report);
    assert_eq!(
        (img.width(), img.height()),
        (SHEET_WIDTH, height),
        "the file is the laid-out sheet"
    );
    let selected: Vec<(usize, usize)> = report
        .series
        .iter()
        .enumerate()
        .flat_map(|(si, s)| {
            s.slices
                .iter()
                .enumerate()
                .filter(|(_, sl)| sl.selected)
                .map(move |(k, _)| (si, k))
        })
        .collect();
    assert!(selected.len() >= 10, "the patient has open-lung slices");
    assert_eq!(asked, selected, "one tile per selected slice, in slice order");
    let t = texts(&items);
    let all = t.join("\n");
    for s in &report.series {
        for sl in s.slices.iter().filter(|sl| sl.selected) {
            assert!(t.iter().any(|x| x == &sl.file), "file label {}", sl.file);
            let p = sl.p_covid.expect("classified");
            assert!(all.contains(&format!("P {p:.2}")), "P of {}", sl.file);
        }
    }
    assert!(all.contains(&report.model.sha256), "full model SHA-256");
    assert!(all.contains(&report.model.name) && all.contains(&report.model.version));
    assert!(all.contains("RESEARCH USE ONLY, NOT A DIAGNOSIS"));
    assert!(all.contains(&format!("Patient: {}", report.patient)));
    assert!(all.contains(&format!("{} of", report.covid_slices)), "{all}");
    let frames = |c| {
        items
            .iter()
            .filter(|i| matches!(i, Item::Fill { color, w, .. } if *color == c && *w == sheet::TILE_SIDE + 8))
            .count()
    };
    assert_eq!(
        frames(COVID_FRAME),
        report.covid_slices,
        "orange frames = slices called COVID"
    );
    assert_eq!(frames(NORMAL_FRAME), selected.len() - report.covid_slices);
    // The file has the slices in its tiles (the layout above was asked with no thumbnails):
    // a lung-windowed slice's centre is mediastinum, bright, never the empty tile's black.
    let (cx, cy) = first_tile_centre(&items);
    let px = img.get_pixel(cx, cy);
    assert!(
        px.0.iter().all(|&v| v > 60),
        "first tile centre is a drawn slice: {px:?}"
    );
}

fn first_tile_centre(items: &[Item]) -> (u32, u32) {
    items
        .iter()
        .find_map(|i| match i {
            Item::Fill { x, y, w, .. } if *w == sheet::TILE_SIDE + 8 => {
                Some(((*x as u32) + w / 2, (*y as u32) + w / 2))
            }
            _ => None,
        })
        .expect("a tile")
}

#[test]
fn report_sheet_text_never_runs_past_its_edge_and_tiles_are_capped() {
    let Some((mut report, _)) = scan_with_sheet("report_sheet_text_never_runs_past_its_edge") else {
        return;
    };
    report.patient = "P".repeat(400);
    report.rule = "a very long rule ".repeat(30);
    let template = report.series[0].slices.iter().find(|s| s.selected).unwrap().clone();
    report.series[0].slices = (0..MAX_TILES + 60)
        .map(|i| {
            let mut s = template.clone();
            s.file = format!("a-very-long-dicom-instance-file-name-{i:05}.dcm");
            s
        })
        .collect();
    let (items, height, asked) = lay_out(&report);
    assert_eq!(asked.len(), MAX_TILES, "at most MAX_TILES thumbnails");
    let all = texts(&items).join("\n");
    assert!(all.contains("60 more selected slices are not drawn"), "{all}");
    for i in &items {
        assert!(i.right() <= SHEET_WIDTH as i32, "past the right edge: {i:?}");
    }
    assert!(height < 20_000, "bounded height: {height}");
}
