//! From the DICOM files of a folder to series: grouping by SeriesInstanceUID, ordering head to
//! foot, and the protocol contract each series is checked against (gaps, orientation, spacing,
//! sizes), see the module above.

use super::*;

/// DICOM files found under a folder, before grouping.
#[derive(Default)]
pub(in crate::ingest) struct Found {
    pub headers: Vec<(PathBuf, Header)>,
    /// Looked like DICOM, but could not be parsed: could belong to any series.
    pub unreadable: Vec<FileProblem>,
    pub ignored: Vec<FileProblem>,
}

/// Group candidate slices into series, order them, and check each against the contract.
pub(in crate::ingest) fn group(root: &Path, found: Found) -> (Vec<Series>, Vec<FileProblem>) {
    let label = |p: &Path| crate::ingest::label_under(root, p);
    let mut ignored = found.ignored;
    let mut unassigned = found.unreadable;
    let mut by_uid: BTreeMap<String, Vec<(PathBuf, Header)>> = BTreeMap::new();
    let mut refused_of: BTreeMap<String, Vec<FileProblem>> = BTreeMap::new();
    for (path, h) in found.headers {
        if let Some(why) = not_a_candidate(&h) {
            ignored.push(FileProblem {
                file: label(&path),
                reason: why,
            });
        } else if let Some(why) = size_problem(&h) {
            // A slice of its series that can never be decoded: the series is incomplete, and
            // the file is named.
            let uid = h.series_uid.clone();
            refused_of.entry(uid.clone()).or_default().push(FileProblem {
                file: label(&path),
                reason: why,
            });
            by_uid.entry(uid).or_default();
        } else if h.series_uid.is_empty() {
            unassigned.push(FileProblem {
                file: label(&path),
                reason: "CT image without SeriesInstanceUID: cannot tell which series it belongs to".into(),
            });
        } else {
            by_uid.entry(h.series_uid.clone()).or_default().push((path, h));
        }
    }
    let mut series: Vec<Series> = by_uid
        .into_iter()
        .map(|(uid, mut slices)| {
            let mut refused = refused_of.remove(&uid).unwrap_or_default();
            refused.extend(unassigned.iter().cloned());
            if slices.is_empty() {
                // Every file of this series declared an impossible image: named, no slices.
                return Series {
                    patient: "unknown patient".into(),
                    id: uid,
                    path: root.to_path_buf(),
                    files: Vec::new(),
                    refused,
                    info: None,
                };
            }
            let ordered_by = order(&mut slices);
            let info = info_of(&slices, ordered_by);
            let first = &slices[0].1;
            log::debug!("series {uid}: patient {:?}, {} slices", first.patient_id, slices.len());
            Series {
                patient: if first.patient_id.is_empty() {
                    "unknown patient".into()
                } else {
                    first.patient_id.clone()
                },
                id: uid,
                path: root.to_path_buf(),
                files: slices.iter().map(|(p, _)| p.clone()).collect(),
                refused,
                info: Some(info),
            }
        })
        .collect();
    if series.is_empty() && !unassigned.is_empty() {
        // Nothing could be grouped: report the unreadable files as one incomplete series.
        series.push(Series {
            patient: "unknown patient".into(),
            id: crate::ingest::name_of(root),
            path: root.to_path_buf(),
            files: Vec::new(),
            refused: unassigned,
            info: None,
        });
    }
    ignored.sort_by(|a, b| a.file.cmp(&b.file));
    (series, ignored)
}

/// Sort slices head to foot; returns what the order rests on.
fn order(slices: &mut [(PathBuf, Header)]) -> &'static str {
    let along = |h: &Header| -> Option<f64> {
        let (p, o) = (h.position?, h.orientation?);
        let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
    };
    if slices.iter().all(|(_, h)| along(h).is_some()) {
        // Descending along the normal: for axial slices, superior (head) first. A total order
        // (`total_cmp`, then the name): `sort_by` may panic on an inconsistent comparator.
        slices.sort_by_cached_key(|(p, h)| {
            let key = along(h).map_or(f64::NAN, |z| -z);
            (TotalF64(key), natural_key(&crate::ingest::name_of(p)))
        });
        "position"
    } else if slices.iter().all(|(_, h)| h.instance.is_some()) {
        slices.sort_by_cached_key(|(p, h)| (h.instance, natural_key(&crate::ingest::name_of(p))));
        "instance number"
    } else {
        slices.sort_by_key(|(p, _)| natural_key(&crate::ingest::name_of(p)));
        "file name"
    }
}

/// A series is incomplete when its largest step between neighbouring slices exceeds this many
/// times the median step (a slice missing doubles a step).
pub const MAX_GAP_RATIO: f64 = 1.5;

/// Why the slice positions say slices are missing: a step above [`MAX_GAP_RATIO`] x `median`.
fn position_gap(gaps: &[f64], median: f64) -> Option<String> {
    if gaps.len() < 2 || median <= 0.0 {
        return None;
    }
    let (at, max) = gaps.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1))?;
    (max > MAX_GAP_RATIO * median).then(|| {
        format!(
            "incomplete series: a {max:.2} mm gap after slice {} of {} (median step {median:.2} mm; more than {MAX_GAP_RATIO}x means slices are missing)",
            at + 1,
            gaps.len() + 1
        )
    })
}

/// Why the InstanceNumbers say slices are missing: with every slice numbered, a step between
/// neighbouring numbers larger than the series' usual (median) step.
fn instance_gap(slices: &[(PathBuf, Header)]) -> Option<String> {
    let mut n: Vec<i64> = slices.iter().map(|(_, h)| h.instance).collect::<Option<Vec<_>>>()?;
    if n.len() < 3 {
        return None;
    }
    n.sort_unstable();
    let steps: Vec<i64> = n.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    if median <= 0 {
        return None;
    }
    let i = steps.iter().position(|&d| d > median)?;
    Some(format!(
        "incomplete series: InstanceNumber jumps from {} to {} (step {median} elsewhere): slices are missing",
        n[i],
        n[i + 1]
    ))
}

/// An `f64` ordered by [`f64::total_cmp`] (a sort key that is a total order).
#[derive(Debug, Clone, Copy)]
struct TotalF64(f64);

impl PartialEq for TotalF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for TotalF64 {}
impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TotalF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Why `o` is not two orthogonal unit vectors (row and column direction), if it is not.
fn orientation_problem(o: &[f64; 6]) -> Option<String> {
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let dot = r[0] * c[0] + r[1] * c[1] + r[2] * c[2];
    const TOL: f64 = 0.01;
    if (norm(r) - 1.0).abs() > TOL || (norm(c) - 1.0).abs() > TOL || dot.abs() > TOL {
        return Some(format!(
            "ImageOrientationPatient is not two orthogonal unit vectors (lengths {:.3} and {:.3}, cosine {:.3})",
            norm(r),
            norm(c),
            dot
        ));
    }
    None
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn info_of(slices: &[(PathBuf, Header)], ordered_by: &'static str) -> SeriesInfo {
    let first = &slices[0].1;
    let positions: Vec<[f64; 3]> = slices.iter().filter_map(|(_, h)| h.position).collect();
    let gaps: Vec<f64> = positions
        .windows(2)
        .map(|w| ((w[0][0] - w[1][0]).powi(2) + (w[0][1] - w[1][1]).powi(2) + (w[0][2] - w[1][2]).powi(2)).sqrt())
        .collect();
    let slice_spacing_mm = (!gaps.is_empty() && positions.len() == slices.len()).then(|| {
        let mut g = gaps.clone();
        g.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        g[g.len() / 2]
    });
    let mut problems = Vec::new();
    if slices.len() < contract::MIN_SLICES {
        problems.push(format!(
            "{} slices, fewer than the {} selection needs",
            slices.len(),
            contract::MIN_SLICES
        ));
    }
    if slices
        .iter()
        .any(|(_, h)| (h.rows, h.columns) != (first.rows, first.columns))
    {
        problems.push("slices of different image sizes".into());
    }
    if let Some(why) = slices
        .iter()
        .find_map(|(_, h)| h.orientation.as_ref().and_then(orientation_problem))
    {
        problems.push(why);
    }
    match first.orientation {
        None => problems.push("no ImageOrientationPatient: cannot tell that the slices are axial".into()),
        Some(o) => {
            let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            let tilt = if len > 0.0 {
                (n[2].abs() / len).clamp(0.0, 1.0).acos().to_degrees()
            } else {
                90.0
            };
            if tilt > contract::MAX_TILT_DEG {
                problems.push(format!(
                    "not axial (slice normal {tilt:.0}° from the head-foot axis, at most {}° accepted)",
                    contract::MAX_TILT_DEG
                ));
            }
        }
    }
    if slices.iter().any(|(_, h)| {
        h.orientation
            .zip(first.orientation)
            .is_some_and(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3))
    }) {
        problems.push("slices with different orientations".into());
    }
    match first.pixel_spacing {
        None => problems.push("no PixelSpacing".into()),
        Some([r, c]) => {
            let (lo, hi) = contract::PIXEL_SPACING_MM;
            if (r - c).abs() > contract::MAX_ANISOTROPY * r.max(c) {
                problems.push(format!("non-square pixels ({r} x {c} mm)"));
            } else if !(lo..=hi).contains(&r) {
                problems.push(format!("pixel spacing {r:.3} mm outside {lo}..{hi} mm"));
            }
        }
    }
    match slice_spacing_mm {
        Some(s) => {
            let (lo, hi) = contract::SLICE_SPACING_MM;
            if !(lo..=hi).contains(&s) {
                problems.push(format!("slice spacing {s:.2} mm outside {lo}..{hi} mm"));
            }
            if gaps.iter().any(|g| *g < 1e-3) {
                problems.push("two or more slices at the same position (duplicates or mixed acquisitions)".into());
            } else if let Some(why) = position_gap(&gaps, s) {
                problems.push(why);
            }
        }
        None if slices.len() > 1 => {
            problems.push("no ImagePositionPatient on every slice: slice spacing unknown".into())
        }
        None => {}
    }
    if let Some(why) = instance_gap(slices) {
        problems.push(why);
    }
    let body = &first.body_part;
    if !body.is_empty() && !["CHEST", "LUNG", "THORAX", "TORSO"].iter().any(|b| body.contains(b)) {
        problems.push(format!("body part {body}, not chest"));
    }
    if let Some(id) = slices
        .iter()
        .map(|(_, h)| &h.patient_id)
        .find(|p| **p != first.patient_id)
    {
        problems.push(format!(
            "one series, two patients ({:?} and {:?})",
            first.patient_id, id
        ));
    }
    SeriesInfo {
        format: "dicom".into(),
        description: (!first.series_description.is_empty()).then(|| first.series_description.clone()),
        pixel_spacing_mm: first.pixel_spacing,
        slice_spacing_mm,
        slice_thickness_mm: first.thickness,
        ordered_by: ordered_by.into(),
        protocol: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}
