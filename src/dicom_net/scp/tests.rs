//! Unit tests of the association machine, byte by byte and at chosen times.

use super::*;
use dicom_ul::pdu::{AssociationRQ, PDataValue, PresentationContextProposed};

fn settings() -> Settings {
    Settings::example()
}

fn bytes(pdu: &Pdu) -> Vec<u8> {
    let mut v = Vec::new();
    dicom_ul::pdu::write_pdu(&mut v, pdu).unwrap();
    v
}

fn rq(calling: &str, called: &str) -> Vec<u8> {
    bytes(&Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: called.into(),
        application_context_name: APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: CT_IMAGE_STORAGE.into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    }))
}

fn read_back(out: &[u8]) -> Pdu {
    dicom_ul::pdu::read_pdu(out, MAX_REQUEST_PDU, false).unwrap().unwrap()
}

fn events(m: &mut Scp) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

const T0: Duration = Duration::from_secs(100);

#[test]
fn a_wrong_called_or_calling_ae_is_rejected_before_any_slot_is_asked_for() {
    for (calling, called, why) in [
        ("SCANNER", "OTHER", "called AE"),
        ("INTRUDER", "CTSENTINEL", "calling AE"),
    ] {
        let mut m = Scp::new(settings(), T0);
        m.receive(T0, &rq(calling, called));
        let ev = events(&mut m);
        assert!(
            matches!(&ev[..], [Event::Rejected { reason }] if reason.contains(why)),
            "{ev:?}"
        );
        assert!(matches!(
            read_back(&m.take_output()),
            Pdu::AssociationRJ(AssociationRJ {
                result: AssociationRJResult::Permanent,
                ..
            })
        ));
        assert!(m.is_closed());
    }
}

#[test]
fn a_busy_receiver_answers_with_a_transient_reject_not_a_bare_close() {
    let mut m = Scp::new(settings(), T0);
    m.receive(T0, &rq("SCANNER", "CTSENTINEL"));
    assert_eq!(
        events(&mut m),
        [Event::Admission {
            calling: "SCANNER".into()
        }]
    );
    assert!(m.take_output().is_empty(), "nothing is answered before admission");
    m.admit(T0, Err(Refusal::Busy));
    let Pdu::AssociationRJ(rj) = read_back(&m.take_output()) else {
        panic!()
    };
    assert_eq!(rj.result, AssociationRJResult::Transient);
    assert_eq!(
        rj.source,
        AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
        )
    );
}

#[test]
fn a_store_is_answered_only_after_the_driver_says_it_is_durable() {
    let mut m = Scp::new(settings(), T0);
    m.receive(T0, &rq("SCANNER", "CTSENTINEL"));
    m.admit(T0, Ok(()));
    assert!(matches!(read_back(&m.take_output()), Pdu::AssociationAC(_)));
    events(&mut m);
    let mut cmd = Vec::new();
    {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        let o = dicom_object::InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(CT_IMAGE_STORAGE),
            ),
            DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(5u16)),
            DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3")),
        ]);
        o.write_dataset_with_ts(
            &mut cmd,
            &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
    }
    let pd = |t, last, data: Vec<u8>| {
        bytes(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: t,
                is_last: last,
                data,
            }],
        })
    };
    let mut wire = pd(PDataValueType::Command, true, cmd);
    wire.extend(pd(PDataValueType::Data, false, vec![1; 100]));
    wire.extend(pd(PDataValueType::Data, true, vec![2; 100]));
    wire.extend(bytes(&Pdu::ReleaseRQ));
    // Byte by byte: framing does not depend on how the socket splits the stream.
    for b in &wire {
        m.receive(T0, std::slice::from_ref(b));
    }
    let ev = events(&mut m);
    let [Event::Store(s)] = &ev[..] else { panic!("{ev:?}") };
    assert_eq!(s.dataset.len(), 200);
    assert_eq!(s.command.instance_uid, "1.2.3");
    assert!(m.take_output().is_empty(), "no response before the store is durable");
    assert_eq!(m.deadline(), None, "no deadline runs while the driver stores");
    m.stored(T0, status::SUCCESS);
    let out = m.take_output();
    assert!(matches!(read_back(&out), Pdu::PData { .. }));
    // The release queued behind the store is handled after the response.
    assert_eq!(events(&mut m), [Event::Released]);
    assert!(m.is_closed());
}

#[test]
fn a_peer_that_trickles_a_pdu_is_aborted_at_the_pdu_deadline() {
    let mut m = Scp::new(settings(), T0);
    m.receive(T0, &rq("SCANNER", "CTSENTINEL"));
    m.admit(T0, Ok(()));
    m.take_output();
    events(&mut m);
    // One byte a second keeps the idle timer fresh but not the PDU deadline.
    let wire = bytes(&Pdu::ReleaseRQ);
    for (i, b) in wire.iter().take(5).enumerate() {
        let now = T0 + Duration::from_secs(3 * i as u64);
        m.receive(now, std::slice::from_ref(b));
        m.tick(now);
    }
    let ev = events(&mut m);
    assert!(
        matches!(&ev[..], [Event::Aborted { reason }] if reason.contains("PDU took longer")),
        "{ev:?}"
    );
    assert!(matches!(read_back(&m.take_output()), Pdu::AbortRQ { .. }));
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_at_the_artim_deadline() {
    let mut m = Scp::new(settings(), T0);
    assert_eq!(m.deadline(), Some(T0 + Duration::from_secs(10)));
    m.tick(T0 + Duration::from_secs(10));
    assert!(m.is_closed());
    assert!(matches!(&events(&mut m)[..], [Event::Aborted { reason }] if reason.contains("no A-ASSOCIATE-RQ")));
}

#[test]
fn an_oversized_pdu_is_refused_from_its_header_before_it_is_buffered() {
    let mut m = Scp::new(settings(), T0);
    m.receive(T0, &[0x01, 0x00, 0x7F, 0xFF, 0xFF, 0xFF]);
    assert!(m.is_closed());
    assert!(matches!(&events(&mut m)[..], [Event::Aborted { reason }] if reason.contains("more than")));
}
