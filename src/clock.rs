//! The wall clock, and whether it can be believed.
//!
//! Why: a Raspberry Pi 4 has no battery-backed clock. Until NTP (or the operator) sets it, the
//! time is whatever `fake-hwclock` saved at the last shutdown, or 1970, and it then jumps. So:
//! every timer, wait and backoff in ctsentinel runs on the monotonic clock (`Instant`, or the
//! service's `tick(now)` fed from one), which never jumps; the wall clock is read only here, for
//! stamps people read (a result's `written_at`, the SR's content date, the report sheet and the
//! screen), for the order of the outbox and for retention. Each stamp a result carries says
//! whether the kernel considered the clock synchronised when it was taken
//! (`clock_synchronised`), and retention never deletes anything on the strength of a stamp, or a
//! "now", taken with an unsynchronised clock ([`age_is_trusted`]).
//!
//! "Synchronised" is the kernel's own flag, the one `timedatectl` shows as "System clock
//! synchronized": `adjtimex(2)` read-only (modes 0) answers `TIME_ERROR` or sets `STA_UNSYNC`
//! until a time daemon (systemd-timesyncd, chrony, ntpd) has disciplined the clock. `None` where
//! it cannot be asked (not Linux, or a seccomp filter such as systemd's `ProtectClock=` refusing
//! the call): then stamps are trusted as before.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Microseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
pub fn unix_micros() -> u128 {
    since_epoch().as_micros()
}

/// Nanoseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Whether the kernel considers the wall clock synchronised now; `None` when it cannot be
/// asked.
pub fn synchronised() -> Option<bool> {
    kernel::state().map(|(state, status)| synchronised_from(state, status))
}

/// The kernel's answer to a read-only `adjtimex` (its return value and `timex.status`) as
/// "synchronised".
fn synchronised_from(state: i32, status: i32) -> bool {
    const TIME_ERROR: i32 = 5; // the clock is not synchronised (linux/timex.h)
    const STA_UNSYNC: i32 = 0x0040;
    state != TIME_ERROR && status & STA_UNSYNC == 0
}

/// Whether an age computed from a wall-clock stamp may decide a deletion: only when neither the
/// stamp nor now was taken with a clock known to be unsynchronised. An unknown state (`None`) is
/// trusted, as it was before clocks were checked.
pub fn age_is_trusted(stamp_synchronised: Option<bool>, now_synchronised: Option<bool>) -> bool {
    stamp_synchronised != Some(false) && now_synchronised != Some(false)
}

/// A note to put after a wall-clock time shown to people: empty unless the clock is known to be
/// unsynchronised.
pub fn note(synchronised: Option<bool>) -> &'static str {
    if synchronised == Some(false) {
        " (clock not synchronised)"
    } else {
        ""
    }
}

#[cfg(target_os = "linux")]
mod kernel {
    /// `adjtimex` with modes 0 (read only): (return value, status), or None if refused.
    #[allow(unsafe_code)]
    pub fn state() -> Option<(i32, i32)> {
        // SAFETY: `timex` is a plain C struct of integers (and padding), for which all-zero bytes
        // are a valid value; zero `modes` makes adjtimex a pure read that fills the struct we
        // own and pass by a unique pointer, valid for the whole call.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: as above: `t` is a valid, exclusively borrowed timex for the call's duration.
        let state = unsafe { libc::adjtimex(&mut t) };
        (state >= 0).then_some((state, t.status))
    }
}

#[cfg(not(target_os = "linux"))]
mod kernel {
    pub fn state() -> Option<(i32, i32)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_unsync_answers_read_as_not_synchronised() {
        assert!(synchronised_from(0, 0), "TIME_OK, status clear");
        assert!(synchronised_from(1, 0x2001), "TIME_INS with PLL and nano bits");
        assert!(!synchronised_from(5, 0), "TIME_ERROR");
        assert!(!synchronised_from(0, 0x0040), "STA_UNSYNC");
        assert!(!synchronised_from(5, 0x0041));
    }

    #[test]
    fn an_age_decides_a_deletion_only_when_no_clock_involved_was_unsynchronised() {
        assert!(age_is_trusted(Some(true), Some(true)));
        assert!(
            age_is_trusted(None, None),
            "unknown is trusted, as before clocks were checked"
        );
        assert!(age_is_trusted(None, Some(true)));
        assert!(
            !age_is_trusted(Some(false), Some(true)),
            "a stamp from 1970 after NTP stepped the clock"
        );
        assert!(!age_is_trusted(Some(true), Some(false)), "now is not known");
        assert!(!age_is_trusted(None, Some(false)));
        assert_eq!(note(Some(false)), " (clock not synchronised)");
        assert_eq!(note(Some(true)), "");
        assert_eq!(note(None), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_answers_whether_its_clock_is_synchronised() {
        // Read-only adjtimex needs no capability; a container or CI runner answers either way.
        assert!(synchronised().is_some());
    }
}
