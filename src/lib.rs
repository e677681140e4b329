//! ctsentinel — a bedside CT appliance that reimplements the COVID-CTset method
//! (Rahimzadeh, Attar, Sakhaei 2020): pick the open-lung slices of each series, classify them
//! with an int8 network in `tract`, and decide per patient.
//!
//! The library holds all the logic; `src/main.rs` only parses the command line. Modules mirror
//! the pipeline, and data flows one way:
//!
//! ```text
//! ingest ──► select ──► classify ──► decide ──► present
//!    ▲                                            │
//!    └──────────────── service ◄──────────────────┘
//! ```
//!
//! Every layer has its own error type; only the binary turns them into `anyhow` and exit codes.
//!
//! `unsafe` is denied everywhere but in five fenced places, each fenced with a `// SAFETY:`
//! note: `service::heap` (one call into glibc, see its docs for the measurement), the two
//! AVX2 dispatches of `classify::fastquant` (its quantize loop and `islands::Island::run`: a
//! `#[target_feature]` function called only after `is_x86_feature_detected!("avx2")`), `clock`
//! (one read-only `adjtimex`: is the wall clock synchronised), and
//! `classify::madd16`, the int8 matrix kernel ctsentinel hands tract on AVX2 CPUs without VNNI
//! (a tract kernel works on raw panel and tile pointers; 2.1x tract's own kernel there).
//!
//! **Research use only, not a diagnosis.**
#![deny(unsafe_code)]

pub mod classify;
pub mod clock;
pub mod decide;
pub mod dicom_net;
pub mod fsys;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod lung;
pub mod names;
pub mod pipeline;
pub mod present;
pub mod report;
pub mod select;
pub mod service;
pub mod validate;

/// The notice that every result carries, verbatim (it is part of the JSON contracts).
pub const NOTICE: &str = "research use only, not a diagnosis";
