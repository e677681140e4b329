//! Service configuration: one TOML file (`ctsentinel watch --config FILE`) plus the board
//! profile it names (`boards/<board>.toml`), read once and validated into [`Config`]. Every
//! problem is a [`ConfigError`] naming the file and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The file as written (see `boards/ctsentinel.example.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    board: String,
    drop: Vec<PathBuf>,
    state: PathBuf,
    models: Option<PathBuf>,
    #[serde(default = "default_poll")]
    poll_interval_s: f64,
    #[serde(default = "default_stability")]
    stability_s: f64,
    #[serde(default = "default_min_free")]
    min_free_mb: u64,
    display: Option<String>,
    #[serde(default = "default_log")]
    log_level: String,
    threads: Option<usize>,
    #[serde(default = "default_inotify")]
    inotify: bool,
    #[serde(default = "default_retention")]
    retention_days: u64,
    /// The C-STORE receiver; absent (or without `listen`): no listener.
    #[serde(default)]
    dicom: Option<RawDicom>,
    /// The site-validation gate (see `crate::validate`).
    #[serde(default)]
    validation: Option<RawValidation>,
    /// The results page (`service::web`); absent (or without `listen`): no page.
    #[serde(default)]
    web: Option<RawWeb>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default = "default_session_hours")]
    session_hours: f64,
    #[serde(default = "default_signin_per_minute")]
    signin_per_minute: usize,
}

fn default_session_hours() -> f64 {
    12.0
}
fn default_signin_per_minute() -> usize {
    5
}

/// The validated `[web]` table: where the results page listens and how it signs people in.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    pub listen: std::net::SocketAddr,
    /// The operator's certificate and key (PEM); `None`: a self-signed pair made on the first
    /// start in `<state>/web/tls`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// How long a sign-in lasts.
    pub session: Duration,
    /// Sign-in attempts allowed per address in a minute.
    pub signin_per_minute: usize,
}

fn web_config(path: &Path, raw: Option<&RawWeb>) -> Result<Option<WebConfig>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let Some(w) = raw else { return Ok(None) };
    let Some(listen) = &w.listen else { return Ok(None) };
    let listen = listen.parse::<std::net::SocketAddr>().map_err(|_| {
        invalid(format!(
            "[web] listen = {listen:?} is not an address such as \"0.0.0.0:8443\""
        ))
    })?;
    let cert = match (&w.cert, &w.key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "[web] cert and key go together: set both, or neither for a self-signed certificate".into(),
            ))
        }
    };
    if !(w.session_hours.is_finite() && (0.1..=168.0).contains(&w.session_hours)) {
        return Err(invalid(format!(
            "[web] session_hours = {} must lie in 0.1..=168",
            w.session_hours
        )));
    }
    if !(1..=60).contains(&w.signin_per_minute) {
        return Err(invalid(format!(
            "[web] signin_per_minute = {} must lie in 1..=60",
            w.signin_per_minute
        )));
    }
    Ok(Some(WebConfig {
        listen,
        cert,
        session: Duration::from_secs_f64(w.session_hours * 3600.0),
        signin_per_minute: w.signin_per_minute,
    }))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    #[serde(default)]
    require: bool,
    #[serde(default = "default_floor")]
    min_sensitivity: f64,
    #[serde(default = "default_floor")]
    min_specificity: f64,
}

fn default_floor() -> f64 {
    0.8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDicom {
    listen: Option<String>,
    #[serde(default = "default_ae")]
    ae_title: String,
    #[serde(default)]
    allowed_callers: Vec<String>,
    #[serde(default = "default_instance_mb")]
    max_instance_mb: u64,
    #[serde(default = "default_associations")]
    max_associations: usize,
    #[serde(default = "default_idle")]
    idle_timeout_s: f64,
    #[serde(default = "default_pdu_timeout")]
    pdu_timeout_s: f64,
    #[serde(default = "default_association_timeout")]
    association_timeout_s: f64,
    #[serde(default = "default_resend_wait")]
    resend_wait_s: f64,
    /// Peer IP addresses allowed to connect; empty: any (the AE titles are still checked).
    #[serde(default)]
    allowed_hosts: Vec<String>,
    /// `AE@host:port` of a PACS that gets every DICOM result (SR + Secondary Capture).
    send_to: Option<String>,
}

fn default_ae() -> String {
    "CTSENTINEL".into()
}
fn default_instance_mb() -> u64 {
    64
}
fn default_associations() -> usize {
    4
}
fn default_idle() -> f64 {
    30.0
}
fn default_pdu_timeout() -> f64 {
    30.0
}
fn default_association_timeout() -> f64 {
    3600.0
}
fn default_resend_wait() -> f64 {
    600.0
}

/// The validated `[dicom]` table: where the C-STORE receiver listens and whom it accepts.
pub use crate::dicom_net::ReceiveConfig as DicomReceive;

/// An AE title: 1 to 16 characters of printable ASCII, no backslash, not only spaces.
/// `[dicom] send_to`: where DICOM results go, as `AE@host:port`; our AE title calls.
fn send_config(path: &Path, raw: Option<&RawDicom>) -> Result<Option<super::sender::SendTo>, ConfigError> {
    let Some(d) = raw else { return Ok(None) };
    let Some(to) = &d.send_to else { return Ok(None) };
    let invalid = |why: &str| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason: format!("[dicom] send_to = {to:?}: {why} (expected \"AE@host:port\", such as \"PACS@10.0.0.5:104\")"),
    };
    let (ae, addr) = to.split_once('@').ok_or_else(|| invalid("no AE title before '@'"))?;
    if !valid_ae(ae) {
        return Err(invalid("the AE title must be 1-16 printable characters"));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid("no host"));
    }
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(invalid("the port must be 1-65535"));
    }
    if !valid_ae(&d.ae_title) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "[dicom] ae_title = {:?} is not a DICOM AE title (1-16 printable characters)",
                d.ae_title
            ),
        });
    }
    Ok(Some(super::sender::SendTo {
        address: to.clone(),
        calling_ae: d.ae_title.clone(),
    }))
}

fn valid_ae(t: &str) -> bool {
    (1..=16).contains(&t.len()) && t.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') && !t.trim().is_empty()
}

fn dicom_config(path: &Path, raw: Option<RawDicom>) -> Result<Option<DicomReceive>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let Some(d) = raw else { return Ok(None) };
    let Some(listen) = d.listen.clone() else {
        return Ok(None);
    };
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(format!(
            "[dicom] listen = {listen:?} is not an address such as \"127.0.0.1:11112\""
        )));
    }
    if !valid_ae(&d.ae_title) {
        return Err(invalid(format!(
            "[dicom] ae_title = {:?} is not a DICOM AE title (1-16 printable characters)",
            d.ae_title
        )));
    }
    if d.allowed_callers.is_empty() {
        return Err(invalid(
            "[dicom] allowed_callers is empty: name the scanner's calling AE title(s)".into(),
        ));
    }
    if let Some(bad) = d.allowed_callers.iter().find(|c| !valid_ae(c)) {
        return Err(invalid(format!(
            "[dicom] allowed_callers: {bad:?} is not a DICOM AE title"
        )));
    }
    // One instance limit with ingest: a received file is read back as a slice file.
    let max_mb = crate::ingest::MAX_FILE_BYTES >> 20;
    if !(1..=max_mb).contains(&d.max_instance_mb) {
        return Err(invalid(format!(
            "[dicom] max_instance_mb = {} must lie in 1..={max_mb} (the largest slice file ingest reads)",
            d.max_instance_mb
        )));
    }
    if !(1..=64).contains(&d.max_associations) {
        return Err(invalid(format!(
            "[dicom] max_associations = {} must lie in 1..=64",
            d.max_associations
        )));
    }
    if !(d.idle_timeout_s.is_finite() && (1.0..=3600.0).contains(&d.idle_timeout_s)) {
        return Err(invalid(format!(
            "[dicom] idle_timeout_s = {} must lie in 1..=3600",
            d.idle_timeout_s
        )));
    }
    let seconds = |key: &str, v: f64, lo: f64, hi: f64| -> Result<Duration, ConfigError> {
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(invalid(format!("[dicom] {key} = {v} must lie in {lo}..={hi}")))
        }
    };
    let pdu_timeout = seconds("pdu_timeout_s", d.pdu_timeout_s, 1.0, 600.0)?;
    let association_timeout = seconds("association_timeout_s", d.association_timeout_s, 10.0, 86400.0)?;
    let resend_wait = seconds("resend_wait_s", d.resend_wait_s, 1.0, 86400.0)?;
    let mut allowed_hosts = Vec::new();
    for h in &d.allowed_hosts {
        allowed_hosts.push(h.trim().parse::<std::net::IpAddr>().map_err(|_| {
            invalid(format!(
                "[dicom] allowed_hosts: {h:?} is not an IP address such as \"10.0.0.5\""
            ))
        })?);
    }
    Ok(Some(DicomReceive {
        listen,
        ae_title: d.ae_title.trim().to_string(),
        allowed_callers: d.allowed_callers.iter().map(|c| c.trim().to_string()).collect(),
        allowed_hosts,
        max_instance_bytes: d.max_instance_mb << 20,
        max_associations: d.max_associations,
        idle_timeout: Duration::from_secs_f64(d.idle_timeout_s),
        pdu_timeout,
        association_timeout,
        resend_wait,
    }))
}

fn default_retention() -> u64 {
    365
}

fn default_inotify() -> bool {
    true
}

fn default_poll() -> f64 {
    5.0
}
fn default_stability() -> f64 {
    60.0
}
fn default_min_free() -> u64 {
    512
}
fn default_log() -> String {
    "info".into()
}

/// A board profile: `boards/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// Inference threads (cores to use).
    pub threads: usize,
    pub display: DisplayProfile,
    /// Default models folder on this board.
    pub models: PathBuf,
}

pub use crate::present::DisplayProfile;

/// The validated configuration the service runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub board: Board,
    pub drop: Vec<PathBuf>,
    /// Journal and results live here: `<state>/journal`, `<state>/results/...`.
    pub state: PathBuf,
    pub models: PathBuf,
    pub poll_interval: Duration,
    pub stability: Duration,
    pub min_free_bytes: u64,
    pub display_backend: String,
    pub log_level: String,
    pub threads: usize,
    /// Wake up on inotify events as well as every poll interval (mounts without events, such
    /// as NFS, SMB or vfat USB sticks, are still seen by polling).
    pub inotify: bool,
    /// A finished series whose folder is gone from every drop folder is forgotten by the
    /// journal this long after it was processed (if it is dropped again later it is
    /// processed again; its result file is replaced, never duplicated).
    pub retention: Duration,
    /// The C-STORE receiver, when `[dicom] listen` is set. Its folder
    /// (`<state>/received`) is then one of `drop`, watched like any other.
    pub dicom: Option<DicomReceive>,
    /// The PACS that gets every DICOM result (`[dicom] send_to`), through `<state>/outbox`.
    pub send_to: Option<super::sender::SendTo>,
    /// `[validation] require = true`: no verdict until the running model has a site
    /// validation record in `<state>/validation` meeting these floors (`crate::validate`).
    pub validation: Option<crate::validate::Floors>,
    /// The results page, when `[web] listen` is set.
    pub web: Option<WebConfig>,
}

const BACKENDS: [&str; 4] = ["none", "png", "framebuffer", "spi"];

impl Config {
    /// The state folder's paths.
    pub fn layout(&self) -> super::layout::Layout {
        super::layout::Layout::new(&self.state)
    }

    /// Read `path` and the board profile it names from `boards` (default: `boards/` beside the
    /// config file's folder, then `/usr/share/ctsentinel/boards`).
    pub fn load(path: &Path, boards: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, boards)
    }

    /// Parse and check a config's text; `path` is where it was read from (errors name it, and
    /// the board profile is looked for beside it unless `boards` is given). The fuzz targets'
    /// entry point.
    pub fn parse(text: &str, path: &Path, boards: Option<&Path>) -> Result<Config, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if raw.board.is_empty()
            || !raw
                .board
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!("board {:?} must be a profile name like rpi5", raw.board)));
        }
        let board_path = board_file(path, boards, &raw.board);
        let board = load_board(&board_path)?;
        if raw.drop.is_empty() {
            return Err(bad("drop: at least one drop folder is needed".into()));
        }
        for d in &raw.drop {
            if d.starts_with(&raw.state) || raw.state.starts_with(d) {
                return Err(bad(format!(
                    "drop folder {} and state folder {} must not contain each other",
                    d.display(),
                    raw.state.display()
                )));
            }
        }
        if !(0.05..=3600.0).contains(&raw.poll_interval_s) {
            return Err(bad(format!(
                "poll_interval_s = {} must lie in 0.05..=3600",
                raw.poll_interval_s
            )));
        }
        if !(0.0..=86400.0).contains(&raw.stability_s) {
            return Err(bad(format!("stability_s = {} must lie in 0..=86400", raw.stability_s)));
        }
        let display_backend = raw.display.unwrap_or_else(|| board.display.backend.clone());
        if !BACKENDS.contains(&display_backend.as_str()) {
            return Err(bad(format!("display {display_backend:?} must be one of {BACKENDS:?}")));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&raw.log_level.as_str()) {
            return Err(bad(format!(
                "log_level {:?} must be error, warn, info, debug or trace",
                raw.log_level
            )));
        }
        // 16 TiB: a floor no box can have, and `* 1024 * 1024` cannot overflow.
        if raw.min_free_mb > 16 << 20 {
            return Err(bad(format!(
                "min_free_mb = {} must lie in 0..=16777216",
                raw.min_free_mb
            )));
        }
        if !(1..=36500).contains(&raw.retention_days) {
            return Err(bad(format!(
                "retention_days = {} must lie in 1..=36500",
                raw.retention_days
            )));
        }
        for (i, d) in raw.drop.iter().enumerate() {
            if raw.drop[..i].iter().any(|e| e.starts_with(d) || d.starts_with(e)) {
                return Err(bad(format!(
                    "drop folder {} is listed twice or inside another drop folder",
                    d.display()
                )));
            }
        }
        let threads = raw.threads.unwrap_or(board.threads);
        if !(1..=64).contains(&threads) {
            return Err(bad(format!("threads = {threads} must lie in 1..=64")));
        }
        let send_to = send_config(path, raw.dicom.as_ref())?;
        let dicom = dicom_config(path, raw.dicom.clone())?;
        let web = web_config(path, raw.web.as_ref())?;
        let mut drop = raw.drop.clone();
        if dicom.is_some() {
            // Received instances land here and are processed like a drop folder's series.
            drop.push(super::layout::Layout::new(&raw.state).received());
        }
        let validation = match &raw.validation {
            Some(v) => {
                for (key, x) in [
                    ("min_sensitivity", v.min_sensitivity),
                    ("min_specificity", v.min_specificity),
                ] {
                    if !(0.0..=1.0).contains(&x) {
                        return Err(bad(format!("[validation] {key} = {x} must lie in 0..=1")));
                    }
                }
                v.require.then_some(crate::validate::Floors {
                    min_sensitivity: v.min_sensitivity,
                    min_specificity: v.min_specificity,
                })
            }
            None => None,
        };
        Ok(Config {
            models: raw.models.unwrap_or_else(|| board.models.clone()),
            board,
            drop,
            state: raw.state,
            poll_interval: Duration::from_secs_f64(raw.poll_interval_s),
            stability: Duration::from_secs_f64(raw.stability_s),
            min_free_bytes: raw.min_free_mb * 1024 * 1024,
            display_backend,
            log_level: raw.log_level,
            threads,
            inotify: raw.inotify,
            retention: Duration::from_secs(raw.retention_days * 86_400),
            dicom,
            send_to,
            validation,
            web,
        })
    }
}

fn board_file(config: &Path, boards: Option<&Path>, name: &str) -> PathBuf {
    let file = format!("{name}.toml");
    if let Some(b) = boards {
        return b.join(file);
    }
    let beside = config.parent().unwrap_or(Path::new(".")).join(&file);
    if beside.is_file() {
        return beside;
    }
    let repo = Path::new("boards").join(&file);
    if repo.is_file() {
        return repo;
    }
    Path::new("/usr/share/ctsentinel/boards").join(file)
}

/// Read a TOML file into `T`; every failure names the file.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Read and check one board profile.
pub fn load_board(path: &Path) -> Result<Board, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let b: Board = read_toml(path)?;
    if !BACKENDS.contains(&b.display.backend.as_str()) {
        return Err(bad(format!(
            "display.backend {:?} must be one of {BACKENDS:?}",
            b.display.backend
        )));
    }
    if !(16..=4096).contains(&b.display.width) || !(16..=4096).contains(&b.display.height) {
        return Err(bad(format!(
            "display size {}x{} is not a panel size",
            b.display.width, b.display.height
        )));
    }
    if b.display.backend == "spi" && (b.display.controller.is_none() || b.display.dc_line.is_none()) {
        return Err(bad("an spi display needs controller and dc_line".into()));
    }
    if !(1..=64).contains(&b.threads) {
        return Err(bad(format!("threads = {} must lie in 1..=64", b.threads)));
    }
    Ok(b)
}
