//! The socket driver of the receiver: a listener thread and one thread per connection, each
//! feeding an [`Scp`] machine and doing what it asks (admission, store, close).
//!
//! Why so thin: every decision lives in the machine (`scp`) and in the inbox; this file only
//! moves bytes and time. Resources: at most `max_associations` admitted associations, and at
//! most `max_associations + HANDSHAKE_EXTRA` connections at all; a connection only takes an
//! association slot once its AE titles passed, so idle or hostile connections cannot lock the
//! scanner out (each is closed at the PDU deadline, ARTIM). Beyond the connection cap a
//! connection is answered with an A-ASSOCIATE-RJ (transient, local limit exceeded), never a
//! bare close. Every thread wakes at least every `POLL` to see a shutdown, so dropping the
//! [`Receiver`] returns within that (an instance being fsynced finishes first).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::inbox::{FreeBytes, Inbox, Session};
use super::scp::{Event, Refusal, Scp, Settings};

/// Connections allowed beyond `max_associations` while their AE titles are being read.
pub const HANDSHAKE_EXTRA: usize = 16;
/// The longest a connection thread sleeps in a read.
const POLL: Duration = Duration::from_millis(200);

/// The validated `[dicom]` receiving settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveConfig {
    /// `host:port` to bind (port 0 picks a free port, for tests).
    pub listen: String,
    pub ae_title: String,
    pub allowed_callers: Vec<String>,
    /// Peer addresses allowed to connect (empty: any); others are closed at once.
    pub allowed_hosts: Vec<std::net::IpAddr>,
    pub max_instance_bytes: u64,
    pub max_associations: usize,
    /// No PDU for this long ends an association.
    pub idle_timeout: Duration,
    /// A PDU (and the A-ASSOCIATE-RQ after connecting) must arrive within this.
    pub pdu_timeout: Duration,
    /// No association lasts longer.
    pub association_timeout: Duration,
    /// How long a series whose push was aborted waits for a resend before it is `undetermined`.
    pub resend_wait: Duration,
}

/// The running listener; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    cfg: ReceiveConfig,
    settings: Settings,
    inbox: Inbox,
    connections: AtomicUsize,
    associations: AtomicUsize,
    epoch: Instant,
}

impl Receiver {
    /// Listen on `cfg.listen` and store into `inbox` (created if missing).
    pub fn start(
        cfg: &ReceiveConfig,
        inbox: &Path,
        min_free_bytes: u64,
        free: Box<FreeBytes>,
    ) -> std::io::Result<Receiver> {
        let inbox = Inbox::open(inbox, min_free_bytes, free)?;
        let listener = TcpListener::bind(&cfg.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            settings: Settings {
                ae_title: cfg.ae_title.clone(),
                allowed_callers: cfg.allowed_callers.clone(),
                max_instance_bytes: cfg.max_instance_bytes as usize,
                pdu_timeout: cfg.pdu_timeout,
                idle_timeout: cfg.idle_timeout,
                association_timeout: cfg.association_timeout,
            },
            cfg: cfg.clone(),
            inbox,
            connections: AtomicUsize::new(0),
            associations: AtomicUsize::new(0),
            epoch: Instant::now(),
        });
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dicom-listener".into())
            .spawn(move || accept_loop(listener, shared, s))?;
        log::info!(
            "DICOM receiver listening on {addr} as AE {:?}, accepting calls from {:?}",
            cfg.ae_title,
            cfg.allowed_callers
        );
        Ok(Receiver {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let cap = shared.cfg.max_associations + HANDSHAKE_EXTRA;
    while !stop.load(Ordering::Relaxed) {
        workers.retain(|w| !w.is_finished());
        match listener.accept() {
            Ok((mut stream, peer)) => {
                if !shared.cfg.allowed_hosts.is_empty() && !shared.cfg.allowed_hosts.contains(&peer.ip()) {
                    log::warn!("DICOM: {peer}: connection refused, not in allowed_hosts");
                    continue;
                }
                if shared.connections.load(Ordering::SeqCst) >= cap {
                    log::warn!("DICOM: {peer}: refused, {cap} connections already open");
                    let _ = stream.set_write_timeout(Some(POLL));
                    let _ = stream.write_all(&busy_reject());
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let sh = shared.clone();
                let st = stop.clone();
                let spawned = std::thread::Builder::new().name("dicom-assoc".into()).spawn(move || {
                    serve(stream, peer, &sh, &st);
                    sh.connections.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => {
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                        log::error!("DICOM: {peer}: cannot start a thread: {e}");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                log::warn!("DICOM: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// An A-ASSOCIATE-RJ (transient, local limit exceeded) for a connection over the cap.
fn busy_reject() -> Vec<u8> {
    use dicom_ul::pdu::{
        AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJSource,
    };
    let mut v = Vec::new();
    let _ = dicom_ul::pdu::write_pdu(
        &mut v,
        &dicom_ul::Pdu::AssociationRJ(AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        }),
    );
    v
}

/// Holds an association slot until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(n: &AtomicUsize, max: usize) -> Option<Slot<'_>> {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v < max).then_some(v + 1))
        .ok()
        .map(|_| Slot(n))
}

fn serve(mut stream: TcpStream, peer: SocketAddr, sh: &Shared, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(sh.cfg.pdu_timeout.max(POLL)));
    let now = || sh.epoch.elapsed();
    let mut m = Scp::new(sh.settings.clone(), now());
    let mut slot: Option<Slot<'_>> = None;
    let mut session: Option<Session> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut shutdown_said = false;
    loop {
        while let Some(ev) = m.poll_event() {
            match ev {
                Event::Admission { calling } => {
                    let answer = if sh.inbox.disk_low() {
                        Err(Refusal::DiskLow)
                    } else {
                        match take_slot(&sh.associations, sh.cfg.max_associations) {
                            Some(s) => {
                                slot = Some(s);
                                Ok(())
                            }
                            None => Err(Refusal::Busy),
                        }
                    };
                    if answer.is_ok() {
                        session = Some(sh.inbox.begin(&format!("{calling} ({peer})")));
                    }
                    m.admit(now(), answer);
                }
                Event::Established { calling } => log::info!("DICOM: association from {calling} ({peer})"),
                Event::Echo => log::debug!("DICOM: {peer}: C-ECHO answered"),
                Event::Store(req) => {
                    let status = match session.as_mut() {
                        Some(s) => {
                            let r = sh.inbox.store(s, &req);
                            if r.status == super::dimse::status::SUCCESS {
                                log::debug!("DICOM: {peer}: {}", r.note);
                            } else {
                                log::warn!(
                                    "DICOM: {peer}: instance {:?}: status {:#06x}: {}",
                                    req.command.instance_uid,
                                    r.status,
                                    r.note
                                );
                            }
                            r.status
                        }
                        None => super::dimse::status::OUT_OF_RESOURCES,
                    };
                    m.stored(now(), status);
                }
                Event::Commit(req) => {
                    let (committed, failed) = sh.inbox.commitment(&req);
                    log::info!(
                        "DICOM: {peer}: storage commitment {}: {} of {} instances held{}",
                        req.transaction_uid,
                        committed.len(),
                        req.instances.len(),
                        if failed.is_empty() {
                            ""
                        } else {
                            "; the others reported as failed"
                        }
                    );
                    m.commitment(now(), &committed, &failed);
                }
                Event::CommitRefused { reason } => {
                    log::warn!("DICOM: {peer}: storage commitment request refused: {reason}")
                }
                Event::CommitReportAnswered { status } => {
                    log::debug!("DICOM: {peer}: commitment report answered with status {status:#06x}")
                }
                Event::Released => {
                    if let Some(s) = session.take() {
                        sh.inbox.finish(&s, true);
                        log::info!("DICOM: {peer}: released after {} instances", s.stored);
                    }
                }
                Event::Rejected { reason } => log::warn!("DICOM: {peer}: association rejected: {reason}"),
                Event::Aborted { reason } => {
                    let n = session.as_ref().map_or(0, |s| s.stored);
                    log::warn!("DICOM: {peer}: association ended: {reason} ({n} instances stored)");
                    if let Some(s) = session.take() {
                        sh.inbox.finish(&s, false);
                    }
                }
            }
        }
        let out = m.take_output();
        if !out.is_empty() && stream.write_all(&out).is_err() {
            m.closed(now());
            continue;
        }
        if m.is_closed() {
            break;
        }
        if stop.load(Ordering::Relaxed) && !shutdown_said {
            shutdown_said = true;
            m.abort_now("the service is shutting down");
            continue;
        }
        let wait = m
            .deadline()
            .map_or(POLL, |d| d.saturating_sub(now()))
            .clamp(Duration::from_millis(1), POLL);
        let _ = stream.set_read_timeout(Some(wait));
        match stream.read(&mut buf) {
            Ok(0) => m.closed(now()),
            Ok(n) => m.receive(now(), &buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                m.tick(now())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => m.closed(now()),
        }
    }
    // Closed: a session still here ended without an event (cannot happen; kept total).
    if let Some(s) = session.take() {
        sh.inbox.finish(&s, false);
    }
    drop(slot);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
