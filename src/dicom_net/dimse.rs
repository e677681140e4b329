//! DIMSE command sets: what a C-ECHO / C-STORE request says, and the responses to them.
//!
//! Why a file of its own: the receiver's association machine and the sender share the same
//! command encoding (implicit VR little endian, group 0000), and a peer's command set is
//! untrusted input: it is bounds-checked before dicom-rs allocates from its declared lengths.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;

use crate::ingest::dicom as dcm;

/// The largest command set accepted from a peer (real ones are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// DIMSE status codes this appliance answers with.
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Warning: the instance was already held with different content; the first copy is kept.
    pub const DUPLICATE_DIFFERENT: u16 = 0xB000;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// The data set's SOP class differs from the request's, or is not CT Image Storage.
    pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Cannot understand: the data set cannot be read.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Cannot understand: the request has no Affected SOP Instance UID.
    pub const NO_INSTANCE_UID: u16 = 0xC001;
    /// Cannot understand: the data set's SOP Instance UID is missing or differs from the request's.
    pub const INSTANCE_UID_MISMATCH: u16 = 0xC002;
}

/// A C-STORE request's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCommand {
    pub message_id: u16,
    pub class_uid: String,
    pub instance_uid: String,
}

/// A command set a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Echo {
        message_id: u16,
    },
    Store(StoreCommand),
    /// N-ACTION-RQ (Storage Commitment asks with action type 1); a data set follows.
    Action {
        message_id: u16,
        class_uid: String,
        instance_uid: String,
        action_type: u16,
    },
    /// N-EVENT-REPORT-RSP: the peer's answer to our commitment report.
    EventReportResponse {
        status: u16,
    },
}

/// Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J).
pub const STORAGE_COMMITMENT: &str = "1.2.840.10008.1.20.1";
pub const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

/// Parse a complete command set (implicit VR little endian), bounds-checked first.
pub fn parse_command(bytes: &[u8]) -> Result<Command, String> {
    // dicom-rs allocates from declared lengths: a 2 GB one in a 40 KB command set was found by
    // the dicom_peer fuzz target (fuzz/regressions/dicom_peer/).
    dcm::check_implicit_dataset(bytes).map_err(|e| format!("command set: {e}"))?;
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|e| e.to_string())?;
    let int = |tag| -> Result<u16, String> {
        obj.element(tag)
            .map_err(|e| e.to_string())?
            .to_int::<u16>()
            .map_err(|e| e.to_string())
    };
    let text = |tag| -> String {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
            .unwrap_or_default()
    };
    let field = int(tags::COMMAND_FIELD)?;
    if field == 0x8100 {
        return Ok(Command::EventReportResponse {
            status: int(tags::STATUS)?,
        });
    }
    let message_id = int(tags::MESSAGE_ID)?;
    match field {
        0x0130 => Ok(Command::Action {
            message_id,
            class_uid: text(tags::REQUESTED_SOP_CLASS_UID),
            instance_uid: text(tags::REQUESTED_SOP_INSTANCE_UID),
            action_type: int(tags::ACTION_TYPE_ID)?,
        }),
        0x0030 => Ok(Command::Echo { message_id }),
        0x0001 => Ok(Command::Store(StoreCommand {
            message_id,
            class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
            instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
        })),
        other => Err(format!(
            "command field {other:#06x} is not C-STORE, C-ECHO, N-ACTION or N-EVENT-REPORT-RSP"
        )),
    }
}

/// A response command set (`field` 0x8001 C-STORE-RSP, 0x8030 C-ECHO-RSP).
pub fn response(field: u16, message_id: u16, class_uid: &str, instance_uid: Option<&str>, status: u16) -> Vec<u8> {
    let mut elements = vec![
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class_uid)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(message_id),
        ),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0101u16)),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
    ];
    if let Some(i) = instance_uid.filter(|i| !i.is_empty()) {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(i),
        ));
    }
    encode_command(elements)
}

/// N-ACTION-RSP for a Storage Commitment request (no data set).
pub fn action_response(message_id: u16, action_type: u16, status: u16) -> Vec<u8> {
    encode_command(vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x8130u16)),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(message_id),
        ),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0101u16)),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT_INSTANCE),
        ),
        DataElement::new(tags::ACTION_TYPE_ID, VR::US, PrimitiveValue::from(action_type)),
    ])
}

/// N-EVENT-REPORT-RQ carrying a Storage Commitment result (event type 1: all committed;
/// 2: failures exist); a data set follows.
pub fn event_report_request(message_id: u16, event_type: u16) -> Vec<u8> {
    encode_command(vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x0100u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0x0000u16)),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT_INSTANCE),
        ),
        DataElement::new(tags::EVENT_TYPE_ID, VR::US, PrimitiveValue::from(event_type)),
    ])
}

/// A command set in implicit VR little endian. Writing a small command set into memory cannot
/// fail but for a bug: then nothing is sent, and the log says why.
fn encode_command(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    if let Err(e) = obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased()) {
        log::error!("DICOM: cannot encode a command: {e}");
    }
    out
}

/// A Storage Commitment request's data set: its Transaction UID and the instances it asks
/// about (SOP class, SOP instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentRequest {
    pub transaction_uid: String,
    pub instances: Vec<(String, String)>,
}

/// Implicit or explicit VR little endian: the two syntaxes a commitment context is accepted in.
fn little_endian(ts: &str) -> Option<dicom_transfer_syntax_registry::TransferSyntax> {
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    match ts {
        "1.2.840.10008.1.2" => Some(IMPLICIT_VR_LITTLE_ENDIAN.erased()),
        "1.2.840.10008.1.2.1" => Some(EXPLICIT_VR_LITTLE_ENDIAN.erased()),
        _ => None,
    }
}

/// At most this many instances in one commitment request (a whole study is a few thousand).
pub const MAX_COMMIT_INSTANCES: usize = 100_000;

/// Parse an N-ACTION data set of Storage Commitment, encoded in transfer syntax `ts`.
pub fn parse_commitment(bytes: &[u8], ts: &str) -> Result<CommitmentRequest, String> {
    let explicit = ts != "1.2.840.10008.1.2";
    crate::ingest::dicom::check_dataset(bytes, explicit).map_err(|e| format!("commitment data set: {e}"))?;
    let syntax = little_endian(ts).ok_or_else(|| format!("transfer syntax {ts} for a commitment data set"))?;
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &syntax).map_err(|e| e.to_string())?;
    let text = |o: &InMemDicomObject, tag| -> String {
        o.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
            .unwrap_or_default()
    };
    let transaction_uid = text(&obj, tags::TRANSACTION_UID);
    if transaction_uid.is_empty() {
        return Err("no Transaction UID (0008,1195)".into());
    }
    let items = obj
        .get(tags::REFERENCED_SOP_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or("no Referenced SOP Sequence (0008,1199)")?;
    if items.len() > MAX_COMMIT_INSTANCES {
        return Err(format!("{} instances, more than {MAX_COMMIT_INSTANCES}", items.len()));
    }
    let instances = items
        .iter()
        .map(|i| {
            (
                text(i, tags::REFERENCED_SOP_CLASS_UID),
                text(i, tags::REFERENCED_SOP_INSTANCE_UID),
            )
        })
        .collect();
    Ok(CommitmentRequest {
        transaction_uid,
        instances,
    })
}

/// The N-EVENT-REPORT data set of a commitment result: the Transaction UID, the committed
/// instances and the failed ones (failure reason 0x0112, no such object instance).
pub fn commitment_report(
    transaction_uid: &str,
    committed: &[(String, String)],
    failed: &[(String, String)],
    ts: &str,
) -> Vec<u8> {
    use dicom_core::value::DataSetSequence;
    let item = |(class, instance): &(String, String), failure: bool| {
        let mut i = InMemDicomObject::new_empty();
        i.put(DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(class.as_str()),
        ));
        i.put(DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(instance.as_str()),
        ));
        if failure {
            i.put(DataElement::new(
                tags::FAILURE_REASON,
                VR::US,
                PrimitiveValue::from(0x0112u16),
            ));
        }
        i
    };
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::TRANSACTION_UID,
        VR::UI,
        PrimitiveValue::from(transaction_uid),
    ));
    if !committed.is_empty() {
        o.put(DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(committed.iter().map(|r| item(r, false)).collect::<Vec<_>>()),
        ));
    }
    if !failed.is_empty() {
        o.put(DataElement::new(
            tags::FAILED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(failed.iter().map(|r| item(r, true)).collect::<Vec<_>>()),
        ));
    }
    let mut out = Vec::new();
    let written = match little_endian(ts) {
        Some(syntax) => o.write_dataset_with_ts(&mut out, &syntax).map_err(|e| e.to_string()),
        None => Err(format!("transfer syntax {ts} for a commitment report")),
    };
    if let Err(e) = written {
        log::error!("DICOM: cannot encode a commitment report: {e}");
    }
    out
}

/// One P-DATA PDU carrying a whole command set on presentation context `pc` (both directions:
/// the receiver's answers and the sender's requests).
pub fn command_pdu(pc: u8, command: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_set_declaring_more_than_it_holds_is_refused_before_dicom_rs_allocates() {
        // (0000,0002) Affected SOP Class UID declaring 2 GB in a 16-byte command set.
        let mut cmd = vec![0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x7B];
        cmd.extend_from_slice(b"1.2.840\0");
        let Err(e) = parse_command(&cmd) else {
            panic!("accepted")
        };
        assert!(
            e.contains("command set") && e.contains("declares 2063597568 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_commitment_data_set_round_trips_in_both_little_endian_syntaxes() {
        let refs = vec![
            ("1.2.840.10008.5.1.4.1.1.2".to_string(), "1.2.3.1".to_string()),
            ("1.2.840.10008.5.1.4.1.1.2".to_string(), "1.2.3.2".to_string()),
        ];
        for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"] {
            let bytes = commitment_report("9.8.7", &refs, &[], ts);
            let req = parse_commitment(&bytes, ts).unwrap();
            assert_eq!(req.transaction_uid, "9.8.7");
            assert_eq!(req.instances, refs);
        }
        let e = parse_commitment(
            &commitment_report("", &refs, &[], "1.2.840.10008.1.2"),
            "1.2.840.10008.1.2",
        );
        assert!(e.unwrap_err().contains("Transaction UID"));
    }

    #[test]
    fn a_response_round_trips_through_the_parser_fields() {
        let r = response(0x8001, 7, "1.2.3", Some("4.5.6"), status::SUCCESS);
        let obj = InMemDicomObject::read_dataset_with_ts(&r[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        assert_eq!(obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(), 0);
        assert_eq!(
            obj.element(tags::MESSAGE_ID_BEING_RESPONDED_TO)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            7
        );
    }
}
