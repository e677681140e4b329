//! The appliance service: the only place that owns clocks, threads, signals and persistent
//! state. It drives the pipeline (ingest → select → classify → decide → present); nothing
//! below imports it.
//!
//! - [`machine`]: the decisions, with no I/O (stability, ledger, exactly-once, crash counts,
//!   backoff), property-tested through every event order and crash point;
//! - [`run`](mod@run): the executor that carries them out, and the appliance loop;
//! - [`dropfs`]: reading drop folders without following links or writing to them;
//! - [`journal`]: the append-only, checksummed, compacted record of what was done;
//! - [`layout`]: every path of the state folder, and safe names for anything;
//! - [`sender`]: the outbox that sends DICOM results to a PACS, at least once (receiving is
//!   `crate::dicom_net`, whose inbox the service watches like a drop folder);
//! - [`web`]: the read-only results page on the clinic's LAN (TLS, signed in), off by default;
//! - [`config`], [`display_task`], [`event`], [`selftest`] (run before any verdict is shown,
//!   and by `ctsentinel selftest`), [`heap`] (housekeeping a months-long process needs).

pub mod config;
mod crashkey;
pub mod display_task;
pub mod dropfs;
pub mod event;
pub mod heap;
pub mod journal;
pub mod layout;
pub mod machine;
pub mod run;
pub mod selftest;
pub mod sender;
pub mod web;

pub use run::{run, Service};
