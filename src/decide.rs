//! Decide: the paper's patient rule and the evidence gate, as pure functions.
//!
//! The gate ([`evidence_gate`]): a verdict is `undetermined` when fewer than 90% of the slices
//! called COVID have their evidence peak inside the lungs.
//!
//! A patient is COVID iff at least `fraction` (the card's, 10% in the paper) of the selected
//! slices are classified COVID. Zero selected slices gives `undetermined` with the reason: the
//! paper's code called such a patient COVID; a bedside box must not guess.
//!
//! The comparison is done in integers (fraction in basis points) so that a patient exactly at
//! the card's fraction is COVID whatever the fraction: with a 7% rule, 7 COVID slices of 100
//! must count, yet `0.07 * 100.0` in floating point is 7.000000000000001.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Covid,
    Normal,
    Undetermined,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Covid => "covid",
            Verdict::Normal => "normal",
            Verdict::Undetermined => "undetermined",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of the rule over some selected slices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// COVID slices / selected slices; `None` when nothing was selected.
    pub covid_fraction: Option<f64>,
    /// Why the verdict is `undetermined`; `None` otherwise.
    pub reason: Option<String>,
}

/// Basis points of a fraction in (0, 1], rounded: 0.10 → 1000.
fn basis_points(fraction: f64) -> u64 {
    (fraction * 10_000.0).round().clamp(1.0, 10_000.0) as u64
}

/// Apply the rule: COVID iff `covid / selected >= fraction` (exactly, in basis points).
pub fn decide(selected: usize, covid: usize, fraction: f64) -> Decision {
    debug_assert!(covid <= selected);
    if selected == 0 {
        return Decision {
            verdict: Verdict::Undetermined,
            covid_fraction: None,
            reason: Some("no slice passed the open-lung selection; the rule needs at least one".into()),
        };
    }
    let is_covid = covid as u64 * 10_000 >= basis_points(fraction) * selected as u64;
    Decision {
        verdict: if is_covid { Verdict::Covid } else { Verdict::Normal },
        covid_fraction: Some(covid as f64 / selected as f64),
        reason: None,
    }
}

/// The share of a patient's COVID-called slices whose evidence peak must lie inside the lungs
/// (in tenths): below it, the model decided on something else (the table, the body wall).
pub const MIN_LUNG_DRIVEN_TENTHS: usize = 9;

/// The evidence gate: `covid_called` slices were classified COVID, `lung_driven` of them have
/// their evidence peak inside the lung mask. When fewer than 90% are lung-driven, the
/// decision becomes `undetermined` with the reason, whatever it was: a model that is right for
/// the wrong reason is wrong, and no definite verdict may rest on evidence outside the lungs.
pub fn evidence_gate(decision: Decision, covid_called: usize, lung_driven: usize) -> Decision {
    debug_assert!(lung_driven <= covid_called);
    if decision.verdict == Verdict::Undetermined
        || covid_called == 0
        || lung_driven * 10 >= MIN_LUNG_DRIVEN_TENTHS * covid_called
    {
        return decision;
    }
    Decision {
        verdict: Verdict::Undetermined,
        covid_fraction: decision.covid_fraction,
        reason: Some(format!(
            "the model's evidence lies outside the lungs: of {covid_called} slices called COVID, {lung_driven} have \
             their evidence peak inside the lungs (at least {}0% needed)",
            MIN_LUNG_DRIVEN_TENTHS
        )),
    }
}

/// A verdict that cannot be given because part of the input is unusable.
pub fn undetermined(reason: String) -> Decision {
    Decision {
        verdict: Verdict::Undetermined,
        covid_fraction: None,
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_selected_slices_is_undetermined_not_covid() {
        let d = decide(0, 0, 0.10);
        assert_eq!(d.verdict, Verdict::Undetermined);
        assert!(d.reason.is_some());
        assert_eq!(d.covid_fraction, None);
    }

    #[test]
    fn exactly_ten_percent_is_covid_even_where_float_rounding_would_miss_it() {
        assert!(
            std::hint::black_box(0.07f64) * 100.0 > 7.0,
            "the float trap this guards against"
        );
        assert_eq!(decide(100, 7, 0.07).verdict, Verdict::Covid);
        assert_eq!(decide(30, 3, 0.10).verdict, Verdict::Covid);
        assert_eq!(decide(10, 1, 0.10).verdict, Verdict::Covid);
    }

    #[test]
    fn just_below_ten_percent_is_normal() {
        assert_eq!(decide(31, 3, 0.10).verdict, Verdict::Normal);
        assert_eq!(decide(11, 1, 0.10).verdict, Verdict::Normal);
        assert_eq!(decide(50, 0, 0.10).verdict, Verdict::Normal);
    }

    #[test]
    fn fraction_is_reported() {
        assert_eq!(decide(40, 10, 0.10).covid_fraction, Some(0.25));
    }

    #[test]
    fn a_verdict_whose_covid_calls_are_not_lung_driven_is_undetermined_with_the_reason() {
        // 9 of 10 lung-driven: the verdict stands (exactly the 90% floor).
        assert_eq!(evidence_gate(decide(40, 10, 0.10), 10, 9).verdict, Verdict::Covid);
        // 8 of 10: undetermined, COVID or not, with the counts in the reason.
        let d = evidence_gate(decide(40, 10, 0.10), 10, 8);
        assert_eq!(d.verdict, Verdict::Undetermined);
        assert!(
            d.reason
                .as_deref()
                .unwrap()
                .contains("outside the lungs: of 10 slices called COVID, 8"),
            "{d:?}"
        );
        assert_eq!(evidence_gate(decide(40, 2, 0.10), 2, 0).verdict, Verdict::Undetermined);
        // No COVID calls: nothing to gate.
        assert_eq!(evidence_gate(decide(40, 0, 0.10), 0, 0).verdict, Verdict::Normal);
    }

    #[test]
    fn verdict_serialises_to_the_contract_names() {
        assert_eq!(
            serde_json::to_string(&Verdict::Undetermined).unwrap(),
            "\"undetermined\""
        );
        assert_eq!(serde_json::to_string(&Verdict::Covid).unwrap(), "\"covid\"");
    }
}
