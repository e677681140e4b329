//! Generated DICOM CT slices for the tests (written with dicom-object, as a scanner would).
#![allow(dead_code)]

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// A generated CT slice: everything a scanner writes that ingest reads.
#[derive(Clone)]
pub struct Slice {
    pub series_uid: String,
    pub patient: String,
    pub sop_class: String,
    pub modality: String,
    pub image_type: String,
    pub z: f64,
    pub orientation: [f64; 6],
    pub spacing: f64,
    pub rescale: Option<(f64, f64)>,
    pub signed: bool,
    pub bits_stored: u16,
    pub size: u16,
    /// Stored values, row-major (as i32; written as u16 bit patterns).
    pub pixels: Vec<i32>,
    pub transfer_syntax: String,
    pub instance: i32,
    /// StudyInstanceUID; `None`: derived from the series UID (`<series>.1`).
    pub study_uid: Option<String>,
}

impl Slice {
    pub fn ct(series: &str, z: f64, instance: i32) -> Self {
        let size = 512u16;
        Slice {
            series_uid: series.into(),
            patient: "PAT-1".into(),
            sop_class: CT.into(),
            modality: "CT".into(),
            image_type: "ORIGINAL\\PRIMARY\\AXIAL".into(),
            z,
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            spacing: 0.7,
            rescale: Some((1.0, -1024.0)),
            signed: false,
            bits_stored: 12,
            size,
            pixels: phantom(size as usize, instance),
            transfer_syntax: EXPLICIT_LE.into(),
            instance,
            study_uid: None,
        }
    }

    /// The SOP Instance UID written into the file.
    pub fn instance_uid(&self) -> String {
        format!(
            "1.2.826.0.1.3680043.9.7777.{}.{}",
            self.instance,
            (self.z * 10.0).abs() as i64
        )
    }

    pub fn write(&self, path: &Path) {
        let mut o = InMemDicomObject::new_empty();
        let s = |o: &mut InMemDicomObject, tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        let uid = format!(
            "1.2.826.0.1.3680043.9.7777.{}.{}",
            self.instance,
            (self.z * 10.0).abs() as i64
        );
        s(&mut o, tags::SOP_CLASS_UID, VR::UI, &self.sop_class);
        s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &uid);
        s(&mut o, tags::MODALITY, VR::CS, &self.modality);
        s(&mut o, tags::IMAGE_TYPE, VR::CS, &self.image_type);
        s(&mut o, tags::PATIENT_ID, VR::LO, &self.patient);
        s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid);
        s(
            &mut o,
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &self
                .study_uid
                .clone()
                .unwrap_or_else(|| format!("{}.1", self.series_uid)),
        );
        s(&mut o, tags::SERIES_DESCRIPTION, VR::LO, "Thorax 2.0");
        s(&mut o, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
        s(&mut o, tags::INSTANCE_NUMBER, VR::IS, &self.instance.to_string());
        s(
            &mut o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("-170\\-330\\{}", self.z),
        );
        let io: Vec<String> = self.orientation.iter().map(|v| v.to_string()).collect();
        s(&mut o, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &io.join("\\"));
        s(
            &mut o,
            tags::PIXEL_SPACING,
            VR::DS,
            &format!("{}\\{}", self.spacing, self.spacing),
        );
        s(&mut o, tags::SLICE_THICKNESS, VR::DS, "2");
        if let Some((slope, intercept)) = self.rescale {
            s(&mut o, tags::RESCALE_SLOPE, VR::DS, &slope.to_string());
            s(&mut o, tags::RESCALE_INTERCEPT, VR::DS, &intercept.to_string());
        }
        s(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        let us = |o: &mut InMemDicomObject, tag, v: u16| o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
        us(&mut o, tags::ROWS, self.size);
        us(&mut o, tags::COLUMNS, self.size);
        us(&mut o, tags::BITS_ALLOCATED, 16);
        us(&mut o, tags::BITS_STORED, self.bits_stored);
        us(&mut o, tags::HIGH_BIT, self.bits_stored - 1);
        us(&mut o, tags::PIXEL_REPRESENTATION, u16::from(self.signed));
        let words: Vec<u16> = self.pixels.iter().map(|&v| v as u16).collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(words.into()),
        ));
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(self.transfer_syntax.as_str())
            .media_storage_sop_class_uid(self.sop_class.as_str())
            .media_storage_sop_instance_uid(uid.as_str());
        o.with_meta(meta).unwrap().write_to_file(path).unwrap();
    }
}

/// A DICOMDIR listing `ids` (each `DIR\FILE` style components) as IMAGE records.
pub fn write_dicomdir(path: &Path, ids: &[Vec<&str>]) {
    use dicom_core::value::DataSetSequence;
    let items: Vec<InMemDicomObject> = ids
        .iter()
        .map(|id| {
            let mut r = InMemDicomObject::new_empty();
            r.put(DataElement::new(
                tags::DIRECTORY_RECORD_TYPE,
                VR::CS,
                PrimitiveValue::from("IMAGE"),
            ));
            r.put(DataElement::new(
                tags::REFERENCED_FILE_ID,
                VR::CS,
                PrimitiveValue::Strs(id.iter().map(|s| s.to_string()).collect()),
            ));
            r
        })
        .collect();
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::DIRECTORY_RECORD_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(items),
    ));
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_LE)
        .media_storage_sop_class_uid("1.2.840.10008.1.3.10")
        .media_storage_sop_instance_uid("1.2.826.0.1.3680043.9.7777.1");
    o.with_meta(meta).unwrap().write_to_file(path).unwrap();
}

/// Lungs (dark) inside a body, darker toward the middle slices, so selection has a spread.
pub fn phantom(size: usize, instance: i32) -> Vec<i32> {
    let lung = (instance - 10).abs() < 5;
    (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as i32 - 256, (i / size) as i32 - 256);
            if x * x + y * y > 240 * 240 {
                24 // air
            } else if lung && (x.abs() > 30 && x.abs() < 180 && y.abs() < 120) {
                200 // lung, about -824 HU
            } else {
                1064 // soft tissue, +40 HU
            }
        })
        .collect()
}
