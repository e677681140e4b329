use super::*;
use crate::classify::EvidenceMap;

#[test]
fn evidence_is_placed_on_the_slice_with_its_peak_and_the_share_inside_the_lungs() {
    // A 2 x 2 map over a 100 x 100 slice; the lungs are the left half.
    let mut place = Placement::whole(100, 100);
    place.mask = Some((0..100 * 100).map(|i| i % 100 < 50).collect());
    let e = EvidenceMap {
        rows: 2,
        cols: 2,
        values: vec![3.0, 1.0, -5.0, 0.0],
    };
    let s = place.evidence(&e);
    assert_eq!(s.grid, [2, 2]);
    assert_eq!(s.peak, [25.0, 25.0], "centre of the top-left cell");
    assert_eq!(
        s.in_lungs,
        Some(0.75),
        "3 of the 4 units of positive evidence are in the left half"
    );
    assert_eq!(s.at(10.0, 80.0), Some(-5.0));
    assert_eq!(s.at(99.0, 10.0), Some(1.0));
    assert_eq!(s.at(100.0, 10.0), None, "outside the view");
    // No mask: no share; a lung frame that reaches past the slice places cells on it.
    let mut lungs = LungFrame::default();
    lungs.width = 100;
    lungs.height = 100;
    lungs.frame = Some(crate::lung::FrameBox {
        x0: -20,
        y0: 10,
        side: 80,
    });
    let f = Placement::framed(&lungs, false).evidence(&e);
    assert_eq!((f.in_lungs, f.peak_in_lungs), (None, None));
    assert_eq!(f.view, [-20.0, 10.0, 80.0, 80.0]);
    assert_eq!(f.peak, [0.0, 30.0]);
}
