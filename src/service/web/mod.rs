//! The read-only results page on the clinic's LAN (`[web] listen`; off by default).
//!
//! Why it exists: the verdict shows on a small panel beside the scanner and as files; a
//! radiologist in the reading room or a physician on the ward needs today's results, their
//! reasons, the report sheet with the evidence and the box's own state, without a server in the
//! clinic. Why it is built this way:
//!
//! - **Read-only**: it reads `<state>/results` (through [`results::Index`]), the self-test report
//!   the service started with, the site-validation record and the display's current screen
//!   (progress). It writes nothing a verdict depends on; the service never waits for it.
//! - **Its own thread and runtime**: a single-threaded tokio runtime on the `web` thread; file
//!   reads, page rendering and the argon2 checks (one at a time, at most
//!   [`auth::BOX_PER_MINUTE`] a minute) run on its blocking pool of [`BLOCKING_THREADS`], so
//!   the runtime never stalls on the disk and a flood of requests competes with a scan for a
//!   bounded share of the cores, never for the service's locks. At most [`MAX_CONNECTIONS`] at
//!   once, [`MAX_PER_CLIENT`] from one address; each TLS handshake, request header and request
//!   body has 10 s, each connection [`CONNECTION_LIFETIME`].
//! - **TLS only** ([`tls`]), **signed in** ([`auth`]), **URLs never reach the file system**
//!   ([`results`]), **no identifiers in the log** ([`routes`]).

pub mod auth;
pub mod pages;
pub mod results;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::ModelIdentity;
use crate::report::SelfTestReport;
use crate::service::config::WebConfig;
use crate::service::display_task::Display;

pub use auth::{set_password, Clock, ManualClock, PasswordError, SystemClock};

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one address (IPv4, or IPv6 /64) at once; more are closed at once.
pub const MAX_PER_CLIENT: usize = 8;
/// Threads for file reads, rendering and argon2.
pub const BLOCKING_THREADS: usize = 2;
/// A request body (the sign-in form) must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, kept alive or not (the browser opens another).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Password(#[from] auth::PasswordError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the web thread: {0}")]
    Thread(std::io::Error),
    #[error("the results page's id key in the state folder: {0}")]
    IdKey(std::io::Error),
}

/// What the page shows about the appliance, handed over by the service at start.
pub struct Site {
    pub state: PathBuf,
    pub model: ModelIdentity,
    /// The running model's P(COVID) threshold (which slices count as called COVID).
    pub threshold: f32,
    pub selftest: SelfTestReport,
    /// The display's current screen (progress of the series being processed).
    pub display: Option<Display>,
}

/// The page's shared state.
pub struct App {
    pub site: Site,
    /// One argon2 check at a time (each takes tens of ms of a core; see `auth::AttemptLimit`).
    pub argon2: tokio::sync::Semaphore,
    pub index: results::Index,
    pub password: auth::Password,
    pub sessions: auth::Sessions,
    pub attempts: auth::AttemptLimit,
    pub clock: Arc<dyn Clock>,
    pub fingerprint: String,
    /// How many refused sign-ins were logged in the current minute (`routes::log_refusal`).
    pub refusals: std::sync::Mutex<Refusals>,
}

pub struct Refusals {
    pub since: std::time::Instant,
    pub logged: usize,
    pub skipped: usize,
}

impl App {
    /// The page's state for `site` (reads the password hash once).
    pub fn new(cfg: &WebConfig, site: Site, fingerprint: String, clock: Arc<dyn Clock>) -> Result<App, WebError> {
        let password = auth::Password::load(&site.state)?;
        let results = crate::service::layout::Layout::new(&site.state).results();
        let key = results::id_key(&site.state).map_err(WebError::IdKey)?;
        Ok(App {
            argon2: tokio::sync::Semaphore::new(1),
            index: results::Index::new(&results, key),
            password,
            sessions: auth::Sessions::new(cfg.session),
            attempts: auth::AttemptLimit::new(cfg.signin_per_minute),
            refusals: std::sync::Mutex::new(Refusals {
                since: clock.now(),
                logged: 0,
                skipped: 0,
            }),
            clock,
            fingerprint,
            site,
        })
    }

    pub fn box_state(&self) -> pages::BoxState<'_> {
        let failed = self
            .site
            .selftest
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        let dir = crate::service::layout::Layout::new(&self.site.state).validation();
        let path = crate::validate::record_path(&dir, &self.site.model);
        let validation = match std::fs::read_to_string(&path) {
            Ok(text) => Some(match serde_json::from_str(&text) {
                Ok(r) => pages::Validation::Record(Box::new(r)),
                Err(e) => pages::Validation::Problem(format!("the validation record cannot be read: {e}")),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(pages::Validation::Problem(format!(
                "the validation record cannot be read: {e}"
            ))),
        };
        pages::BoxState {
            model: &self.site.model,
            selftest_passed: self.site.selftest.passed,
            selftest_failed: failed,
            validation,
            fingerprint: &self.fingerprint,
            threshold: self.site.threshold,
        }
    }
}

/// The running page; stops and joins its thread when dropped.
pub struct WebServer {
    pub addr: SocketAddr,
    /// SHA-256 of the certificate served (what the display and the log show).
    pub fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Names for a generated certificate: this host's name, `localhost`, and the listening address
/// when it is a specific one.
fn certificate_names(listen: &SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.push("localhost".into());
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names
}

impl WebServer {
    /// Load (or make) the certificate, bind `cfg.listen` and serve on the `web` thread.
    pub fn start(cfg: &WebConfig, site: Site) -> Result<WebServer, WebError> {
        let configured = cfg.cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let id = tls::identity(configured, &site.state, &certificate_names(&cfg.listen))?;
        let fingerprint = id.fingerprint.clone();
        let tls = tls::server_config(id)?;
        let app = Arc::new(App::new(cfg, site, fingerprint.clone(), Arc::new(SystemClock))?);
        if !app.password.is_set() {
            log::warn!("web: no password set: every sign-in is refused until `ctsentinel set-password` sets one");
        }
        let bind = |source| WebError::Bind {
            addr: cfg.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(cfg.listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("web".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .max_blocking_threads(BLOCKING_THREADS)
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("web: no runtime: {e}");
                        return;
                    }
                };
                rt.block_on(serve(listener, tls, routes::router(app), stopped));
            })
            .map_err(WebError::Thread)?;
        log::info!("web: results page on https://{addr}/ (certificate SHA-256 {fingerprint})");
        Ok(WebServer {
            addr,
            fingerprint,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    router: axum::Router,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("web: {e}");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per_client: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    log::warn!("web: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Some(client) = ClientSlot::take(&per_client, peer.ip()) else {
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let svc = router.clone().layer(axum::Extension(routes::ClientAddr(peer.ip())));
        tokio::spawn(async move {
            let _permit = permit;
            let _client = client;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    // Debug only: anyone on the LAN can make these (a scanner probing the port).
                    log::debug!("web: {} TLS handshake failed: {e}", peer.ip());
                    return;
                }
                Err(_) => return,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc));
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

/// One of [`MAX_PER_CLIENT`] connection slots of an address, given back when dropped.
struct ClientSlot {
    table: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    key: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        table: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        addr: std::net::IpAddr,
    ) -> Option<ClientSlot> {
        let key = auth::client_key(addr);
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(key).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.key);
            }
        }
    }
}
