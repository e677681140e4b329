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
    Echo { message_id: u16 },
    Store(StoreCommand),
}

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
    let message_id = int(tags::MESSAGE_ID)?;
    match int(tags::COMMAND_FIELD)? {
        0x0030 => Ok(Command::Echo { message_id }),
        0x0001 => Ok(Command::Store(StoreCommand {
            message_id,
            class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
            instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
        })),
        other => Err(format!("command field {other:#06x} is not C-STORE or C-ECHO")),
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
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    // Writing a small command set into memory cannot fail but for a bug: answer with nothing.
    if let Err(e) = obj.write_dataset_with_ts(&mut out, &ts) {
        log::error!("DICOM: cannot encode a response: {e}");
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
    fn a_response_round_trips_through_the_parser_fields() {
        let r = response(0x8001, 7, "1.2.3", Some("4.5.6"), status::SUCCESS);
        let obj = InMemDicomObject::read_dataset_with_ts(&r[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        assert_eq!(obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(), 0);
        assert_eq!(
            obj.element(tags::MESSAGE_ID_BEING_RESPONDED_TO).unwrap().to_int::<u16>().unwrap(),
            7
        );
    }
}
