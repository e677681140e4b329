//! Who may see results: one password set at install (an argon2id hash in the state folder,
//! never the password), sessions that expire, and a per-address limit on sign-in attempts.
//!
//! Why this shape: the appliance has no user directory to lean on and one audience (the
//! clinic's radiologists and physicians), so one site password, set by the operator with
//! `ctsentinel set-password`, is what it can keep honestly. Sessions live in memory only: a
//! restart signs everybody out, which costs a sign-in and leaves nothing on disk to steal. The
//! session token is 256 random bits; the table is keyed by its SHA-256, so a lookup never
//! compares secrets byte by byte. The attempt limit counts every attempt (right or wrong) per
//! address in a sliding minute and is checked before the password is, so guessing costs the
//! box nothing beyond the refusal. Time comes from a [`Clock`] so that expiry and the limit are
//! tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{phc::PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use crate::classify::sha256_hex;

/// Monotonic time for sessions and the attempt limit.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock a test moves by hand.
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is shorter than {MIN_PASSWORD} characters")]
    TooShort,
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    TooLong,
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an argon2 password hash ({reason}); set the password again with `ctsentinel set-password`")]
    Corrupt { path: PathBuf, reason: String },
}

/// Shortest password accepted: the attempt limit makes guessing slow, not impossible.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (bytes): argon2 takes any length; this bounds the work per attempt.
pub const MAX_PASSWORD: usize = 1024;

/// `<state>/web/`: the password hash and the generated certificate; mode 0700.
pub fn web_dir(state: &Path) -> PathBuf {
    state.join("web")
}

/// `<state>/web/password`: one line, the argon2id PHC string.
pub fn password_file(state: &Path) -> PathBuf {
    web_dir(state).join("password")
}

/// Create `<state>/web` readable by the service's user only (the private key and the hash live
/// there; the mode of the folder guards them from the first byte written).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Hash `password` (argon2id, random salt, the crate's default cost) and keep it as the site
/// password in `state`, atomically: a crash leaves the old password or the new one.
pub fn set_password(state: &Path, password: &str) -> Result<PathBuf, PasswordError> {
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD {
        return Err(PasswordError::TooLong);
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string();
    let path = password_file(state);
    let io = |source| PasswordError::Io {
        path: path.clone(),
        source,
    };
    create_private_dir(&web_dir(state)).map_err(io)?;
    crate::fsys::write_atomic_private(&path, format!("{hash}\n").as_bytes()).map_err(io)?;
    Ok(path)
}

/// The site password's hash, read once at start (`None` when none was set).
#[derive(Clone)]
pub struct Password {
    phc: Option<String>,
}

impl Password {
    pub fn load(state: &Path) -> Result<Password, PasswordError> {
        let path = password_file(state);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Password { phc: None }),
            Err(source) => return Err(PasswordError::Io { path, source }),
        };
        let phc = text.trim().to_string();
        PasswordHash::new(&phc).map_err(|e| PasswordError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Password { phc: Some(phc) })
    }

    pub fn is_set(&self) -> bool {
        self.phc.is_some()
    }

    /// Whether `attempt` is the password (argon2 verification: slow on purpose, run it off the
    /// request thread). False when no password was set.
    pub fn verify(&self, attempt: &str) -> bool {
        let Some(phc) = &self.phc else { return false };
        if attempt.len() > MAX_PASSWORD {
            return false;
        }
        let Ok(hash) = PasswordHash::new(phc) else { return false };
        Argon2::default().verify_password(attempt.as_bytes(), &hash).is_ok()
    }
}

/// Signed-in sessions, in memory.
pub struct Sessions {
    lifetime: Duration,
    /// SHA-256 of the token → when the session ends.
    table: Mutex<HashMap<String, Instant>>,
}

/// At most this many live sessions; the one ending soonest gives way to a new one.
const MAX_SESSIONS: usize = 256;

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session: its token (64 hex digits, 256 random bits), valid for the lifetime from `now`.
    pub fn open(&self, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, end| *end > now);
        if t.len() >= MAX_SESSIONS {
            if let Some(k) = t.iter().min_by_key(|(_, end)| **end).map(|(k, _)| k.clone()) {
                t.remove(&k);
            }
        }
        t.insert(sha256_hex(token.as_bytes()), now + self.lifetime);
        Ok(token)
    }

    /// Whether `token` is a live session at `now` (an expired one is forgotten).
    pub fn check(&self, token: &str, now: Instant) -> Session {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Session::None;
        }
        let key = sha256_hex(token.as_bytes());
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match t.get(&key) {
            Some(end) if *end > now => Session::Live,
            Some(_) => {
                t.remove(&key);
                Session::Expired
            }
            None => Session::None,
        }
    }

    pub fn close(&self, token: &str) {
        let key = sha256_hex(token.as_bytes());
        self.table.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
}

/// What a request's session cookie is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    Live,
    Expired,
    None,
}

/// Sign-in attempts per address in a sliding minute, and for the whole box.
///
/// An IPv6 client is counted by its /64 (one host can take any address of its subnet), an
/// IPv4-mapped IPv6 address as the IPv4 address. The box-wide budget bounds the argon2 work a
/// flood from many addresses can cause (each check costs tens of milliseconds of one core): past
/// it, every sign-in waits for the minute to pass, which a clinician under attack sees as "try
/// again in N s" rather than a slower scanner.
pub struct AttemptLimit {
    per_minute: usize,
    seen: Mutex<Attempts>,
}

#[derive(Default)]
struct Attempts {
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    all: VecDeque<Instant>,
}

/// Addresses remembered at most (a flood of addresses cannot grow the table without bound).
const MAX_ADDRESSES: usize = 4096;
/// Password checks the whole box makes in a minute at most.
pub const BOX_PER_MINUTE: usize = 30;
const WINDOW: Duration = Duration::from_secs(60);

/// Whom an attempt is counted against: the IPv4 address, or the IPv6 /64.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Drop the instants that left the window; the wait until a slot frees when `limit` are left.
fn window(q: &mut VecDeque<Instant>, now: Instant, limit: usize) -> Result<(), Duration> {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
    match q.front() {
        Some(oldest) if q.len() >= limit => Err(WINDOW.saturating_sub(now.duration_since(*oldest))),
        _ => Ok(()),
    }
}

impl AttemptLimit {
    pub fn new(per_minute: usize) -> AttemptLimit {
        AttemptLimit {
            per_minute,
            seen: Mutex::new(Attempts::default()),
        }
    }

    /// Count an attempt from `addr` at `now`: `Ok` when it may go ahead, else how long until
    /// the oldest attempt of the minute leaves the window.
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client_key(addr);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Attempts { by_address, all } = &mut *seen;
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&key) {
            by_address.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if by_address.len() >= MAX_ADDRESSES {
                return Err(WINDOW);
            }
        }
        let q = by_address.entry(key).or_default();
        window(q, now, self.per_minute)?;
        window(all, now, BOX_PER_MINUTE)?;
        q.push_back(now);
        all.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_kept_as_an_argon2id_hash_and_verifies_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = set_password(dir.path(), "correct horse battery\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("$argon2id$"), "{text}");
        assert!(
            !text.contains("correct horse"),
            "the password itself must never be stored"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(web_dir(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let p = Password::load(dir.path()).unwrap();
        assert!(p.verify("correct horse battery"));
        assert!(!p.verify("correct horse battery "));
        assert!(!p.verify(""));
    }

    #[test]
    fn short_empty_and_corrupt_passwords_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(set_password(dir.path(), "\n"), Err(PasswordError::Empty)));
        assert!(matches!(
            set_password(dir.path(), "short"),
            Err(PasswordError::TooShort)
        ));
        assert!(!Password::load(dir.path()).unwrap().is_set());
        create_private_dir(&web_dir(dir.path())).unwrap();
        std::fs::write(password_file(dir.path()), "hunter2\n").unwrap();
        assert!(matches!(Password::load(dir.path()), Err(PasswordError::Corrupt { .. })));
    }

    #[test]
    fn a_session_ends_after_its_lifetime() {
        let clock = ManualClock::default();
        let s = Sessions::new(Duration::from_secs(3600));
        let token = s.open(clock.now()).unwrap();
        assert_eq!(s.check(&token, clock.now()), Session::Live);
        clock.advance(Duration::from_secs(3599));
        assert_eq!(s.check(&token, clock.now()), Session::Live);
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.check(&token, clock.now()), Session::Expired);
        assert_eq!(
            s.check(&token, clock.now()),
            Session::None,
            "an expired session is forgotten"
        );
        assert_eq!(s.check("zz", clock.now()), Session::None);
    }

    #[test]
    fn the_sixth_attempt_in_a_minute_from_one_address_is_refused_until_the_first_leaves_the_window() {
        let clock = ManualClock::default();
        let limit = AttemptLimit::new(5);
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        let b: IpAddr = "10.0.0.8".parse().unwrap();
        for _ in 0..5 {
            assert!(limit.attempt(a, clock.now()).is_ok());
            clock.advance(Duration::from_secs(1));
        }
        let wait = limit.attempt(a, clock.now()).unwrap_err();
        assert_eq!(wait, Duration::from_secs(55));
        assert!(limit.attempt(b, clock.now()).is_ok(), "another address is not limited");
        clock.advance(Duration::from_secs(55));
        assert!(limit.attempt(a, clock.now()).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let clock = ManualClock::default();
        let limit = AttemptLimit::new(2);
        for a in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
            assert!(limit.attempt(a.parse().unwrap(), clock.now()).is_ok());
        }
        assert!(limit
            .attempt("2001:db8:1:2:abcd::7".parse().unwrap(), clock.now())
            .is_err());
        assert!(limit.attempt("2001:db8:1:3::1".parse().unwrap(), clock.now()).is_ok());
        assert_eq!(
            client_key("::ffff:10.0.0.7".parse().unwrap()),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_whole_box_checks_at_most_box_per_minute_passwords_whatever_the_addresses() {
        let clock = ManualClock::default();
        let limit = AttemptLimit::new(5);
        for i in 0..BOX_PER_MINUTE {
            let a = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8));
            assert!(limit.attempt(a, clock.now()).is_ok(), "{i}");
        }
        assert!(limit.attempt("10.9.9.9".parse().unwrap(), clock.now()).is_err());
        clock.advance(Duration::from_secs(60));
        assert!(limit.attempt("10.9.9.9".parse().unwrap(), clock.now()).is_ok());
    }
}
