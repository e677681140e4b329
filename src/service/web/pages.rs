//! The page's HTML (maud: checked at compile time, every interpolated value escaped) and its one
//! style sheet.
//!
//! Why plain server-rendered pages: the appliance has no JavaScript to keep patched, the pages
//! work on a ward phone and a reading-room monitor alike (one column below 700 px), and the
//! Content-Security-Policy can forbid every script, inline style and foreign origin. The notice
//! "research use only, not a diagnosis" heads and closes every page, the sign-in page included.

use maud::{html, Markup, DOCTYPE};

use super::results::{Listed, Summary};
use crate::decide::Verdict;
use crate::present::display::Screen;
use crate::present::validation::pct;
use crate::report::ServiceResult;

/// What every page shows about the box itself.
pub struct BoxState<'a> {
    pub model: &'a crate::classify::ModelIdentity,
    pub selftest_passed: bool,
    pub selftest_failed: Vec<String>,
    /// The site validation of the running model, as an operator reads it.
    pub validation: Option<Validation>,
    pub fingerprint: &'a str,
    /// The running model's P(COVID) threshold.
    pub threshold: f32,
}

pub enum Validation {
    Record(Box<crate::validate::ValidationReport>),
    Problem(String),
}

pub const STYLE: &str = r#"
:root { color-scheme: light; --covid: #b3261e; --normal: #1e6b34; --undet: #6b5d00; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, sans-serif; color: #1b1b1b; background: #f4f5f6; }
header, footer { background: #14213d; color: #fff; padding: .6rem 1rem; display: flex; flex-wrap: wrap;
  gap: .4rem 1rem; align-items: center; }
header a { color: #fff; font-weight: 700; text-decoration: none; }
.notice { background: #ffd166; color: #000; font-weight: 700; padding: .1rem .5rem; border-radius: 3px; }
header form { margin-left: auto; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem; }
th, td, dd, h1 { overflow-wrap: break-word; }
h1 { font-size: 1.35rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
table { width: 100%; border-collapse: collapse; background: #fff; }
th, td { text-align: left; padding: .45rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #e9ecef; font-size: .9rem; }
.verdict { font-weight: 700; white-space: nowrap; }
.v-covid { color: var(--covid); } .v-normal { color: var(--normal); } .v-undetermined { color: var(--undet); }
.big { font-size: 1.6rem; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: .8rem 1rem; margin: .8rem 0; }
.now { border-left: 6px solid #2a6fdb; }
.bad { border-left: 6px solid var(--covid); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
img.sheet { max-width: 100%; height: auto; border: 1px solid #ccc; background: #fff; }
code { overflow-wrap: anywhere; }
form.signin { max-width: 22rem; }
input[type=password] { width: 100%; font-size: 1rem; padding: .5rem; margin: .3rem 0 .8rem; }
button { font-size: 1rem; padding: .45rem 1rem; }
.error { color: var(--covid); font-weight: 600; }
@media (max-width: 700px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border-bottom: 2px solid #ccc; padding: .3rem 0; }
  td { border: 0; padding: .15rem .5rem; }
  td[data-label]::before { content: attr(data-label) ": "; font-weight: 600; }
  dl { grid-template-columns: 1fr; }
}
"#;

/// `YYYY-MM-DD HH:MM:SS UTC`, as on the report sheet, and a note when the box's clock was not
/// synchronised.
pub fn time_text(secs: u64, synchronised: Option<bool>) -> String {
    format!(
        "{}{}",
        crate::present::sheet::utc_text(secs),
        crate::clock::note(synchronised)
    )
}

pub fn verdict_words(v: Verdict) -> &'static str {
    match v {
        Verdict::Covid => "COVID-19 pattern",
        Verdict::Normal => "no COVID-19 pattern",
        Verdict::Undetermined => "undetermined",
    }
}

fn verdict(v: Verdict, extra: &str) -> Markup {
    html! { span class={ "verdict v-" (v.as_str()) " " (extra) } data-verdict=(v.as_str()) { (verdict_words(v)) } }
}

fn page(title: &str, signed_in: bool, refresh: Option<u32>, body: Markup) -> Markup {
    let notice = crate::NOTICE;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " · ctsentinel" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    a href="/" { "ctsentinel" }
                    span.notice { (notice) }
                    @if signed_in {
                        form method="post" action="/signout" { button type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
                footer { span { "Research use only, not a diagnosis. Verdicts are decision support for a radiologist, never a diagnosis on their own." } }
            }
        }
    }
}

pub fn signin(message: Option<&str>, password_set: bool) -> Markup {
    page(
        "Sign in",
        false,
        None,
        html! {
            h1 { "Sign in to see results" }
            @if !password_set {
                p.error { "No password is set on this appliance yet: the operator sets one with "
                    code { "ctsentinel set-password --config FILE" } "." }
            }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.signin method="post" action="/signin" {
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn box_card(b: &BoxState) -> Markup {
    html! {
        div.card.(if b.selftest_passed { "" } else { "bad" }) {
            dl {
                dt { "Model" } dd { (b.model.name) " " (b.model.version) ", SHA-256 " code { (b.model.sha256) } }
                dt { "Self-test" } dd {
                    @if b.selftest_passed { "passed at start" } @else { "FAILED: " (b.selftest_failed.join("; ")) }
                }
                dt { "Site validation" } dd {
                    @match &b.validation {
                        None => "none recorded for this model (docs/scanning.md, site validation)",
                        Some(Validation::Problem(p)) => (p),
                        Some(Validation::Record(r)) => (validation_line(r)),
                    }
                }
                dt { "Page certificate" } dd { "SHA-256 " code { (b.fingerprint) } }
            }
        }
    }
}

fn validation_line(r: &crate::validate::ValidationReport) -> String {
    format!(
        "{} patients: sensitivity {}, specificity {}, undetermined {}",
        r.patients.len(),
        pct(&r.sensitivity),
        pct(&r.specificity),
        pct(&r.undetermined)
    )
}

fn now_card(now: Option<&Screen>) -> Markup {
    html! {
        @match now {
            Some(Screen::Processing { patient, series, done, of, elapsed_s }) => {
                div.card.now #now { "Processing " strong { (patient) } " / " (series) ": classified "
                    (done) " of " (of) " selected slices, " (elapsed_s) " s" }
            }
            Some(Screen::Receiving { patient, files }) => {
                div.card.now #now { "Receiving " strong { (patient) } ": " (files) " files so far" }
            }
            Some(Screen::Fault { reason }) | Some(Screen::SelfTestFailed { reason }) => {
                div.card.bad #now { "Appliance fault: " (reason) }
            }
            _ => { div.card #now { "Idle: no series being processed." } }
        }
    }
}

pub fn list(entries: &[Listed], now: Option<&Screen>, b: &BoxState, shown: usize) -> Markup {
    let total = entries.len();
    page(
        "Results",
        true,
        Some(10),
        html! {
            h1 { "Results, newest first" }
            (now_card(now))
            @if entries.is_empty() {
                p { "No results yet." }
            } @else {
                table #results {
                    thead { tr { th { "Time" } th { "Patient" } th { "Series" } th { "Verdict" } th { "COVID slices" } th { "Model" } } }
                    tbody {
                        @for e in entries.iter().take(shown) {
                            @match e {
                                Listed::Result(s) => { (row(s)) }
                                Listed::Unreadable(u) => {
                                    tr { td colspan="6" data-label="Unreadable result" { code { (u.id) } ": " (u.problem) } }
                                }
                            }
                        }
                    }
                }
                @if total > shown { p { "The newest " (shown) " of " (total) " results are shown." } }
            }
            h2 { "This appliance" }
            (box_card(b))
        },
    )
}

fn counts(selected: usize, covid: usize, fraction: Option<f64>) -> String {
    match fraction {
        Some(f) => format!("{covid} of {selected} ({:.0}%)", f * 100.0),
        None => format!("{covid} of {selected}"),
    }
}

fn row(s: &Summary) -> Markup {
    let link = format!("/result/{}", s.id);
    html! {
        tr {
            td data-label="Time" { a href=(link) { (time_text(s.written_at, s.clock_synchronised)) } }
            td data-label="Patient" { a href=(link) { (s.patient) } }
            td data-label="Series" { (s.series) }
            td data-label="Verdict" {
                (verdict(s.verdict, ""))
                @if let Some(r) = &s.reason { br; small { (r) } }
            }
            td data-label="COVID slices" { (counts(s.selected, s.covid, s.covid_fraction)) }
            td data-label="Model" { (s.model.name) " " (s.model.version) }
        }
    }
}

pub fn result(s: &Summary, r: &ServiceResult, b: &BoxState, sheet: bool) -> Markup {
    let scan = &r.scan;
    // Which slices count as called COVID follows from the model's threshold: known here only for
    // the running model.
    let same_model = scan.model.sha256 == b.model.sha256;
    html! {
        (page(&format!("Result {}", s.series), true, None, html! {
            p { a href="/" { "← all results" } }
            h1 { "Patient " (scan.patient) ", series " (s.series) }
            div.card {
                p { (verdict(scan.verdict, "big")) }
                @if let Some(reason) = &scan.reason { p #reason { "Why: " (reason) } }
                dl {
                    dt { "Selected slices" } dd { (scan.selected_slices) }
                    dt { "Called COVID" } dd { (counts(scan.selected_slices, scan.covid_slices, scan.covid_fraction)) }
                    dt { "Rule" } dd { (scan.rule) }
                    dt { "Written" } dd { (time_text(r.source.written_at, r.source.clock_synchronised)) }
                    dt { "Drop folder" } dd { (r.source.drop) " / " (r.source.patient) " / " (r.source.series_folder) }
                    dt { "Model" } dd #model { (scan.model.name) " " (scan.model.version) ", SHA-256 " code { (scan.model.sha256) } }
                }
            }
            h2 { "Series and selection" }
            table {
                thead { tr { th { "Series" } th { "Selection threshold (dark pixels)" } th { "Selected" } th { "Not classified" } th { "Called COVID" } th { "Evidence in the lungs" } th { "Verdict" } } }
                tbody {
                    @for se in &scan.series {
                        tr {
                            td data-label="Series" { (se.path) }
                            td data-label="Threshold" { @match se.threshold { Some(t) => (format!("{t:.1}")), None => "-" } }
                            td data-label="Selected" { (se.selected) }
                            td data-label="Not classified" { (se.not_classified) }
                            td data-label="Called COVID" { (se.covid) }
                            td data-label="Evidence in the lungs" {
                                @if same_model { (lung_driven_text(se, b.threshold)) } @else { "another model: not counted here" }
                            }
                            td data-label="Verdict" {
                                (verdict(se.verdict, ""))
                                @if let Some(x) = &se.excluded { br; small { "excluded: " (x) } }
                                @if let Some(x) = &se.rejected { br; small { "rejected: " (x) } }
                            }
                        }
                    }
                }
            }
            h2 { "Report sheet, with the evidence of the slices called COVID" }
            @if sheet {
                img.sheet #sheet src={ "/result/" (s.id) "/sheet.png" } alt="Report sheet: the selected slices, each with its P(COVID); on the slices called COVID, where the model's evidence is strongest";
            } @else {
                p { "No report sheet was written for this result." }
            }
            h2 { "This appliance" }
            (box_card(b))
            p { small { (scan.notice) } }
        }))
    }
}

/// `k of n` slices called COVID (P >= the running model's threshold) whose evidence peak lies
/// inside the lung mask: what the evidence gate counts (`pipeline::covid_calls_at`).
fn lung_driven_text(se: &crate::report::SeriesScan, threshold: f32) -> String {
    match crate::pipeline::covid_calls_at(se, threshold) {
        (0, _) => "no slice called COVID".into(),
        (n, lung) => format!("{lung} of {n}"),
    }
}

pub fn not_found() -> Markup {
    page(
        "Not found",
        false,
        None,
        html! { h1 { "Not found" } p { a href="/" { "All results" } } },
    )
}
