//! The appliance service: the only place that will own clocks, threads and persistent state
//! (drop-folder watcher, journal, display task). So far: the power-up self-test, which the
//! service runs before it shows any verdict, and which `ctsentinel selftest` runs on demand.

pub mod config;
pub mod display_task;
pub mod journal;
pub mod selftest;
pub mod watch;
