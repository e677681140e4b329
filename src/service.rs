//! The appliance service (drop-folder watcher, journal, self-test). The only place that will
//! own clocks, threads and persistent state; filled in by the service issue.
