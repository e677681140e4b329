//! The appliance service: the only place that owns clocks, threads and persistent state: the
//! configuration and board profiles, the journal, the drop-folder watcher, the display task, the
//! power-up self-test (run before any verdict is shown, and by `ctsentinel selftest`), and the
//! heap housekeeping a months-long process needs.

pub mod config;
pub mod display_task;
pub mod heap;
pub mod journal;
pub mod selftest;
pub mod watch;
