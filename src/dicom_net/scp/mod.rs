//! The receiving end of one DICOM association as a state machine with no I/O: bytes and the
//! time go in, events and bytes come out (as smoltcp does it for TCP).
//!
//! Why: the promises of receiving — the AE titles checked before any resource is given, a
//! refusal answered with an A-ASSOCIATE-RJ that says why, a deadline on every PDU and on the
//! whole association, nothing acknowledged before the driver says it is durable — are
//! properties of *decisions*. Without sockets or clocks inside, they can be driven byte by byte,
//! at any time, by unit tests and by the `dicom_peer` fuzz target (the real machine, not a copy
//! of a receive loop), and the socket driver (`server`) stays a thin loop.
//!
//! The driver's contract:
//! - feed what the socket reads with [`Scp::receive`], a closed socket with [`Scp::closed`],
//!   and call [`Scp::tick`] at [`Scp::deadline`] at the latest;
//! - after each call, write [`Scp::take_output`] to the socket and handle every
//!   [`Scp::poll_event`]: [`Event::Admission`] must be answered with [`Scp::admit`] (slots, disk),
//!   [`Event::Store`] with [`Scp::stored`] once the instance is durable (or refused);
//! - close the socket once [`Scp::is_closed`] and the output is written.
//!
//! While the machine waits for the driver's answer it parses nothing more: a C-STORE-RSP is
//! never sent before the instance is on disk, and the next request is read after it.

use std::collections::VecDeque;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason, AssociationRJSource,
    PDataValueType, PresentationContextResult, PresentationContextResultReason, UserVariableItem,
};
use dicom_ul::Pdu;

use super::dimse::{self, status, Command, CommitmentRequest, StoreCommand, STORAGE_COMMITMENT};

/// The DICOM application context (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// What a scanner may send us, stored as received (ingest decodes it later).
pub const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];
/// The largest A-ASSOCIATE-RQ read (a scanner proposing every storage class: about 10 KiB).
pub const MAX_REQUEST_PDU: u32 = 64 * 1024;
/// The largest Storage Commitment request data set accepted (a study of thousands of images
/// is a few hundred KiB).
pub const MAX_COMMIT_BYTES: usize = 8 << 20;
/// The largest P-DATA PDU accepted; announced in the A-ASSOCIATE-AC.
pub const MAX_PDU: u32 = 16 * 1024;
const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1459.1";
const IMPLEMENTATION_VERSION: &str = "CTSENTINEL_01";

/// What the machine needs to know; fixed for an association.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Our (called) AE title.
    pub ae_title: String,
    /// Calling AE titles accepted.
    pub allowed_callers: Vec<String>,
    /// The largest instance (data set) accepted.
    pub max_instance_bytes: usize,
    /// A PDU once begun must be complete within this (also the time to send the A-ASSOCIATE-RQ).
    pub pdu_timeout: Duration,
    /// No PDU at all for this long ends the association.
    pub idle_timeout: Duration,
    /// No association lasts longer than this.
    pub association_timeout: Duration,
}

impl Settings {
    /// The settings the unit tests and the fuzz harness run the machine with: called
    /// `CTSENTINEL`, calling `SCANNER`, 1 MiB instances, 10 s PDU / 30 s idle / 1 h deadlines.
    #[doc(hidden)]
    pub fn example() -> Settings {
        Settings {
            ae_title: "CTSENTINEL".into(),
            allowed_callers: vec!["SCANNER".into()],
            max_instance_bytes: 1 << 20,
            pdu_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            association_timeout: Duration::from_secs(3600),
        }
    }
}

/// Why the driver refuses an association the AE titles allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_associations` are open (A-ASSOCIATE-RJ transient, local limit exceeded).
    Busy,
    /// The state disk is below its floor (A-ASSOCIATE-RJ transient, temporary congestion).
    DiskLow,
}

/// A complete C-STORE request: command and data set, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    pub command: StoreCommand,
    /// The transfer syntax negotiated for its presentation context.
    pub transfer_syntax: String,
    /// The abstract syntax of its presentation context.
    pub abstract_syntax: String,
    pub dataset: Vec<u8>,
}

/// What happened, for the driver to act on or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The AE titles are allowed: answer with [`Scp::admit`].
    Admission {
        calling: String,
    },
    Established {
        calling: String,
    },
    /// A C-ECHO was answered.
    Echo,
    /// Store this and answer with [`Scp::stored`].
    Store(StoreRequest),
    /// A Storage Commitment request: say which of its instances are held, with
    /// [`Scp::commitment`].
    Commit(CommitmentRequest),
    /// A Storage Commitment request that could not be read, answered with a failure status.
    CommitRefused {
        reason: String,
    },
    /// The peer answered our commitment report (N-EVENT-REPORT-RSP).
    CommitReportAnswered {
        status: u16,
    },
    /// Ended by A-RELEASE: everything the peer sent was answered.
    Released,
    /// Refused before it began (the reason says which check).
    Rejected {
        reason: String,
    },
    /// Ended in any other way (peer abort, our abort, deadline, protocol error, connection
    /// lost): a store under way is lost and the peer knows it was not acknowledged.
    Aborted {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitRequest,
    AwaitAdmission,
    Open,
    AwaitStore {
        pc: u8,
        message_id: u16,
        class_uid: String,
        instance_uid: String,
    },
    AwaitCommit {
        pc: u8,
        message_id: u16,
        transaction_uid: String,
        transfer_syntax: String,
    },
    Closed,
}

/// An accepted presentation context: id, abstract syntax, transfer syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Context {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

/// One association, receiving side. See the module docs.
#[derive(Debug)]
pub struct Scp {
    settings: Settings,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    started: Duration,
    last_pdu: Duration,
    /// When the first byte of a PDU not yet complete arrived.
    pdu_begun: Option<Duration>,
    request: Option<dicom_ul::pdu::AssociationRQ>,
    contexts: Vec<Context>,
    command: Vec<u8>,
    /// The C-STORE whose data set is arriving: its context and command.
    pending: Option<(u8, StoreCommand)>,
    data: Vec<u8>,
    /// The N-ACTION whose data set is arriving: context, message ID, action type, and whether
    /// it is a Storage Commitment request this machine serves.
    pending_commit: Option<(u8, u16, u16, bool)>,
    /// Message IDs of our own requests (N-EVENT-REPORT).
    next_message_id: u16,
    /// Presentation data values that arrived behind a completed data set.
    queued: VecDeque<dicom_ul::pdu::PDataValue>,
}

impl Scp {
    /// A new connection at time `now` (any monotonic origin).
    pub fn new(settings: Settings, now: Duration) -> Scp {
        Scp {
            settings,
            state: State::AwaitRequest,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            started: now,
            last_pdu: now,
            pdu_begun: None,
            request: None,
            contexts: Vec::new(),
            command: Vec::new(),
            pending: None,
            data: Vec::new(),
            queued: VecDeque::new(),
            pending_commit: None,
            next_message_id: 0,
        }
    }

    /// The calling AE title, once the request was read.
    pub fn calling(&self) -> Option<&str> {
        self.request.as_ref().map(|r| r.calling_ae_title.trim())
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes to send now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The latest time [`Scp::tick`] must be called (`None` while the driver holds the turn, or
    /// once closed).
    pub fn deadline(&self) -> Option<Duration> {
        let s = &self.settings;
        let whole = self.started + s.association_timeout;
        match self.state {
            State::Closed | State::AwaitAdmission | State::AwaitStore { .. } | State::AwaitCommit { .. } => None,
            State::AwaitRequest => Some(whole.min(self.started + s.pdu_timeout)),
            State::Open => {
                let mut d = whole.min(self.last_pdu + s.idle_timeout);
                if let Some(b) = self.pdu_begun {
                    d = d.min(b + s.pdu_timeout);
                }
                Some(d)
            }
        }
    }

    /// Bytes read from the peer.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        if !bytes.is_empty() && self.input.is_empty() {
            self.pdu_begun = Some(now);
        }
        self.input.extend_from_slice(bytes);
        self.process(now);
    }

    /// The peer closed the connection.
    pub fn closed(&mut self, _now: Duration) {
        if self.state != State::Closed {
            self.end_aborted("the connection was closed without A-RELEASE".into());
        }
    }

    /// Check the deadlines at `now`.
    pub fn tick(&mut self, now: Duration) {
        let s = self.settings.clone();
        let why = match self.state {
            State::Closed | State::AwaitAdmission | State::AwaitStore { .. } | State::AwaitCommit { .. } => None,
            _ if now >= self.started + s.association_timeout => Some(format!(
                "the association lasted longer than {} s",
                s.association_timeout.as_secs()
            )),
            State::AwaitRequest if now >= self.started + s.pdu_timeout => Some(format!(
                "no A-ASSOCIATE-RQ within {} s of connecting",
                s.pdu_timeout.as_secs()
            )),
            _ if self.pdu_begun.is_some_and(|b| now >= b + s.pdu_timeout) => Some(format!(
                "a PDU took longer than {} s to arrive (a slow or stalled peer)",
                s.pdu_timeout.as_secs()
            )),
            State::Open if now >= self.last_pdu + s.idle_timeout => {
                Some(format!("no PDU for {} s (idle_timeout_s)", s.idle_timeout.as_secs()))
            }
            _ => None,
        };
        if let Some(why) = why {
            self.abort(AbortRQServiceProviderReason::ReasonNotSpecified, why);
        }
    }

    /// The driver's own abort (shutting down).
    pub fn abort_now(&mut self, reason: &str) {
        if self.state != State::Closed {
            self.push_pdu(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            });
            self.end_aborted(reason.to_string());
        }
    }

    /// The driver's answer to [`Event::Admission`].
    pub fn admit(&mut self, now: Duration, answer: Result<(), Refusal>) {
        if self.state != State::AwaitAdmission {
            return;
        }
        let Some(rq) = self.request.clone() else { return };
        match answer {
            Err(r) => {
                let (reason, why) = match r {
                    Refusal::Busy => (
                        AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                        "every association slot is taken (max_associations)",
                    ),
                    Refusal::DiskLow => (
                        AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
                        "the state disk is below its free-space floor (min_free_mb)",
                    ),
                };
                self.reject(
                    AssociationRJResult::Transient,
                    AssociationRJSource::ServiceProviderPresentation(reason),
                    why.into(),
                );
            }
            Ok(()) => {
                let mut results = Vec::new();
                for pc in &rq.presentation_contexts {
                    let abstract_syntax = pc.abstract_syntax.trim_end_matches(['\0', ' ']);
                    let known = [CT_IMAGE_STORAGE, VERIFICATION, STORAGE_COMMITMENT].contains(&abstract_syntax);
                    // Images as the scanner encoded them; everything else uncompressed.
                    let offered = if abstract_syntax == CT_IMAGE_STORAGE {
                        TRANSFER_SYNTAXES
                    } else {
                        &TRANSFER_SYNTAXES[..2]
                    };
                    let ts = pc
                        .transfer_syntaxes
                        .iter()
                        .map(|t| t.trim_end_matches(['\0', ' ']))
                        .find(|t| offered.contains(t));
                    let (reason, ts) = match (known, ts) {
                        (false, _) => (
                            PresentationContextResultReason::AbstractSyntaxNotSupported,
                            TRANSFER_SYNTAXES[0],
                        ),
                        (true, None) => (
                            PresentationContextResultReason::TransferSyntaxesNotSupported,
                            TRANSFER_SYNTAXES[0],
                        ),
                        (true, Some(t)) => {
                            self.contexts.push(Context {
                                id: pc.id,
                                abstract_syntax: abstract_syntax.to_string(),
                                transfer_syntax: t.to_string(),
                            });
                            (PresentationContextResultReason::Acceptance, t)
                        }
                    };
                    results.push(PresentationContextResult {
                        id: pc.id,
                        reason,
                        transfer_syntax: ts.to_string(),
                    });
                }
                let ac = AssociationAC {
                    protocol_version: 1,
                    calling_ae_title: rq.calling_ae_title.clone(),
                    called_ae_title: rq.called_ae_title.clone(),
                    application_context_name: APPLICATION_CONTEXT.into(),
                    presentation_contexts: results,
                    user_variables: vec![
                        UserVariableItem::MaxLength(MAX_PDU),
                        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.into()),
                        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION.into()),
                    ],
                };
                self.push_pdu(&Pdu::AssociationAC(ac));
                self.state = State::Open;
                self.last_pdu = now;
                self.events.push_back(Event::Established {
                    calling: rq.calling_ae_title.trim().to_string(),
                });
                self.process(now);
            }
        }
    }

    /// The driver's answer to [`Event::Store`]: the status of the instance (success only once
    /// it is durable).
    pub fn stored(&mut self, now: Duration, status: u16) {
        let State::AwaitStore {
            pc,
            message_id,
            class_uid,
            instance_uid,
        } = self.state.clone()
        else {
            return;
        };
        let rsp = dimse::response(0x8001, message_id, &class_uid, Some(&instance_uid), status);
        self.push_pdu(&dimse::command_pdu(pc, rsp));
        self.state = State::Open;
        self.last_pdu = now;
        self.process(now);
    }

    /// The driver's answer to [`Event::Commit`]: the instances held durably (`committed`) and
    /// the others (`failed`), each as (SOP class, SOP instance). Answered with N-ACTION-RSP,
    /// then the result as N-EVENT-REPORT on this association.
    pub fn commitment(&mut self, now: Duration, committed: &[(String, String)], failed: &[(String, String)]) {
        let State::AwaitCommit {
            pc,
            message_id,
            transaction_uid,
            transfer_syntax,
        } = self.state.clone()
        else {
            return;
        };
        self.push_pdu(&dimse::command_pdu(
            pc,
            dimse::action_response(message_id, 1, status::SUCCESS),
        ));
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let event_type = if failed.is_empty() { 1 } else { 2 };
        let cmd = dimse::event_report_request(self.next_message_id, event_type);
        self.push_pdu(&dimse::command_pdu(pc, cmd));
        let data = dimse::commitment_report(&transaction_uid, committed, failed, &transfer_syntax);
        // Within the peer's maximum PDU length (0: no limit) and ours: 12 bytes of PDU and PDV
        // headers per piece.
        let peer_max = self
            .request
            .as_ref()
            .and_then(|r| {
                r.user_variables.iter().find_map(|u| match u {
                    UserVariableItem::MaxLength(n) if *n > 0 => Some(*n),
                    _ => None,
                })
            })
            .unwrap_or(MAX_PDU);
        let piece = (peer_max.min(MAX_PDU) as usize).saturating_sub(12).max(64);
        let chunks: Vec<&[u8]> = data.chunks(piece).collect();
        for (i, c) in chunks.iter().enumerate() {
            self.push_pdu(&Pdu::PData {
                data: vec![dicom_ul::pdu::PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: i + 1 == chunks.len(),
                    data: c.to_vec(),
                }],
            });
        }
        self.state = State::Open;
        self.last_pdu = now;
        self.process(now);
    }

    fn process(&mut self, now: Duration) {
        while self.state == State::Open {
            let Some(v) = self.queued.pop_front() else { break };
            self.on_pdv(v);
        }
        while matches!(self.state, State::AwaitRequest | State::Open) {
            if self.input.len() < 6 {
                return;
            }
            let len = u32::from_be_bytes([self.input[2], self.input[3], self.input[4], self.input[5]]);
            let limit = if self.state == State::AwaitRequest {
                MAX_REQUEST_PDU
            } else {
                MAX_PDU
            };
            if len > limit {
                self.abort(
                    AbortRQServiceProviderReason::InvalidPduParameter,
                    format!("a PDU of {len} bytes, more than the {limit} accepted"),
                );
                return;
            }
            let total = 6 + len as usize;
            if self.input.len() < total {
                return;
            }
            let parsed =
                dicom_ul::pdu::read_pdu(&self.input[..total], limit.max(dicom_ul::pdu::MINIMUM_PDU_SIZE), true);
            self.input.drain(..total);
            self.pdu_begun = (!self.input.is_empty()).then_some(now);
            self.last_pdu = now;
            match parsed {
                Ok(Some(pdu)) => self.on_pdu(now, pdu),
                Ok(None) => self.abort(
                    AbortRQServiceProviderReason::InvalidPduParameter,
                    "a PDU shorter than its declared length".into(),
                ),
                Err(e) => self.abort(
                    AbortRQServiceProviderReason::InvalidPduParameter,
                    format!("an unreadable PDU ({e})"),
                ),
            }
        }
    }

    fn on_pdu(&mut self, now: Duration, pdu: Pdu) {
        match (&self.state, pdu) {
            (State::AwaitRequest, Pdu::AssociationRQ(rq)) => {
                let called = rq.called_ae_title.trim().to_string();
                let calling = rq.calling_ae_title.trim().to_string();
                let user = |r| AssociationRJSource::ServiceUser(r);
                if rq.protocol_version & 1 == 0 {
                    self.reject(
                        AssociationRJResult::Permanent,
                        AssociationRJSource::ServiceProviderASCE(
                            dicom_ul::pdu::AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                        ),
                        format!("protocol version {:#x} is not DICOM UL version 1", rq.protocol_version),
                    );
                } else if rq.application_context_name.trim_end_matches(['\0', ' ']) != APPLICATION_CONTEXT {
                    self.reject(
                        AssociationRJResult::Permanent,
                        user(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
                        format!("application context {:?} is not DICOM's", rq.application_context_name),
                    );
                } else if called != self.settings.ae_title {
                    self.reject(
                        AssociationRJResult::Permanent,
                        user(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
                        format!(
                            "called AE {called:?} from {calling:?}: this is {:?}",
                            self.settings.ae_title
                        ),
                    );
                } else if !self.settings.allowed_callers.iter().any(|c| *c == calling) {
                    self.reject(
                        AssociationRJResult::Permanent,
                        user(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
                        format!("calling AE {calling:?} is not in allowed_callers"),
                    );
                } else {
                    self.request = Some(rq);
                    self.state = State::AwaitAdmission;
                    self.events.push_back(Event::Admission { calling });
                }
            }
            (State::Open, Pdu::PData { data }) => {
                let mut rest = data.into_iter();
                while let Some(v) = rest.next() {
                    if !self.on_pdv(v) {
                        // Values after a completed data set wait for the driver's answer.
                        self.queued.extend(rest);
                        break;
                    }
                }
                let _ = now;
            }
            (State::Open, Pdu::ReleaseRQ) => {
                if self.pending.is_some() || self.pending_commit.is_some() || !self.command.is_empty() {
                    self.abort(
                        AbortRQServiceProviderReason::UnexpectedPdu,
                        "A-RELEASE-RQ in the middle of a request".into(),
                    );
                    return;
                }
                self.push_pdu(&Pdu::ReleaseRP);
                self.state = State::Closed;
                self.events.push_back(Event::Released);
            }
            (_, Pdu::AbortRQ { .. }) => self.end_aborted("the peer sent A-ABORT".into()),
            (_, other) => {
                let what = other.short_description().to_string();
                self.abort(
                    AbortRQServiceProviderReason::UnexpectedPdu,
                    format!("unexpected {what}"),
                );
            }
        }
    }

    fn reject(&mut self, result: AssociationRJResult, source: AssociationRJSource, reason: String) {
        self.push_pdu(&Pdu::AssociationRJ(AssociationRJ { result, source }));
        self.state = State::Closed;
        self.events.push_back(Event::Rejected { reason });
    }

    fn abort(&mut self, reason: AbortRQServiceProviderReason, why: String) {
        if self.state == State::Closed {
            return;
        }
        self.push_pdu(&Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        });
        self.end_aborted(why);
    }

    fn end_aborted(&mut self, reason: String) {
        self.state = State::Closed;
        self.input.clear();
        self.pending = None;
        self.pending_commit = None;
        self.data = Vec::new();
        self.queued.clear();
        self.events.push_back(Event::Aborted { reason });
    }

    fn push_pdu(&mut self, pdu: &Pdu) {
        // Encoding into memory fails only for values out of the PDU's ranges, which the
        // machine never builds; a failure is logged and nothing is sent.
        if let Err(e) = dicom_ul::pdu::write_pdu(&mut self.output, pdu) {
            log::error!("DICOM: cannot encode {}: {e}", pdu.short_description());
        }
    }
}

mod pdata;

#[cfg(test)]
mod tests;
