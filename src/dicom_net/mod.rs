//! The DICOM network: receiving C-STORE pushes from a scanner (and C-ECHO), as its own room.
//!
//! Why a module of its own: the upper layer protocol is a conversation with an untrusted peer
//! over time, and its promises — nothing acknowledged before it is durable and identified, no
//! resource given before the AE titles are checked, every wait bounded — are easiest to keep,
//! test and fuzz when the protocol is a state machine with no I/O ([`scp`]), the effects live
//! in one place ([`inbox`]), and the socket loop ([`server`]) only moves bytes and time.
//! Commands are encoded once ([`dimse`]), for the receiver and the sender.
//!
//! It knows nothing of the pipeline: the service watches the inbox like any drop folder.
//! Arrows: `service` → `dicom_net` → `ingest` (header checks of what is received), `names`.

pub mod dimse;
pub mod inbox;
pub mod scp;
pub mod server;

pub use server::{ReceiveConfig, Receiver};

/// Fuzz harness: drive the real [`scp::Scp`] machine with `bytes` as the peer's stream, fed in
/// 97-byte pieces 1 ms apart (framing must not depend on how the socket splits it), admitting the
/// association and answering every complete store with the inbox's checks
/// (`inbox::instance_file`), nothing written. A stream that does not begin with an
/// A-ASSOCIATE-RQ (PDU type 1) gets a valid one first (calling `SCANNER`, context 1 CT Image
/// Storage in explicit VR little endian, context 3 Verification, context 5 Storage Commitment), so seeds of what follows an
/// association reach the P-DATA states. Returns how many instances passed the checks.
#[doc(hidden)]
pub fn fuzz_peer(bytes: &[u8]) -> usize {
    use std::time::Duration;
    let mut m = scp::Scp::new(scp::Settings::example(), Duration::ZERO);
    if bytes.first() != Some(&0x01) {
        m.receive(Duration::ZERO, &fuzz_request());
    }
    let mut accepted = 0;
    let mut now = Duration::ZERO;
    let mut answer = |m: &mut scp::Scp, now| {
        while let Some(ev) = m.poll_event() {
            match ev {
                scp::Event::Admission { .. } => m.admit(now, Ok(())),
                scp::Event::Commit(req) => m.commitment(now, &req.instances, &[]),
                scp::Event::Store(req) => {
                    let ok = inbox::instance_file(&req).is_ok();
                    accepted += usize::from(ok);
                    m.stored(
                        now,
                        if ok {
                            dimse::status::SUCCESS
                        } else {
                            dimse::status::CANNOT_UNDERSTAND
                        },
                    );
                }
                _ => {}
            }
        }
        m.take_output();
    };
    answer(&mut m, now);
    for piece in bytes.chunks(97) {
        // 1 ms a piece: a 16 KiB PDU arrives in 0.17 s, well within the PDU deadline.
        now += Duration::from_millis(1);
        m.receive(now, piece);
        answer(&mut m, now);
        m.tick(now);
        if m.is_closed() {
            break;
        }
    }
    accepted
}

fn fuzz_request() -> Vec<u8> {
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
    let rq = dicom_ul::Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SCANNER".into(),
        called_ae_title: "CTSENTINEL".into(),
        application_context_name: scp::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: 1,
                abstract_syntax: scp::CT_IMAGE_STORAGE.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: scp::VERIFICATION.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            },
            PresentationContextProposed {
                id: 5,
                abstract_syntax: dimse::STORAGE_COMMITMENT.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            },
        ],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut v = Vec::new();
    let _ = dicom_ul::pdu::write_pdu(&mut v, &rq);
    v
}
