//! Complete decode of one slice: native or JPEG Lossless pixel data to HU + 1024, refusing any
//! frame that would not fill exactly rows × columns (see the module above for the rules).

use super::*;

/// Decode the slice in `bytes` (a whole DICOM file) into `out` as HU + 1024.
pub(in crate::ingest) fn decode_slice(bytes: &[u8], out: &mut Vec<u16>) -> Result<(usize, usize), DecodeError> {
    let o = open(bytes, false)?;
    let ts = o.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if !ACCEPTED_SYNTAXES.iter().any(|(u, _)| *u == ts) {
        let name = refused_syntax_name(&ts).unwrap_or("unknown");
        let accepted: Vec<&str> = ACCEPTED_SYNTAXES.iter().map(|(_, n)| *n).collect();
        return Err(DecodeError::Unsupported(format!(
            "transfer syntax {ts} ({name}); accepted: {}",
            accepted.join(", ")
        )));
    }
    let h = header_from(&o);
    if let Some(why) = not_a_candidate(&h) {
        return Err(DecodeError::Unsupported(why));
    }
    let (w, hgt) = (h.columns, h.rows);
    if w > MAX_SIDE || hgt > MAX_SIDE {
        return Err(DecodeError::TooLarge { width: w, height: hgt });
    }
    if w < MIN_WIDTH || hgt < MIN_HEIGHT {
        return Err(DecodeError::TooSmall { width: w, height: hgt });
    }
    let samples = int(&o, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = text(&o, tags::PHOTOMETRIC_INTERPRETATION);
    let allocated = int(&o, tags::BITS_ALLOCATED).unwrap_or(0);
    let stored = int(&o, tags::BITS_STORED).unwrap_or(0);
    let high = int(&o, tags::HIGH_BIT).unwrap_or(stored - 1);
    let signed = match int(&o, tags::PIXEL_REPRESENTATION).unwrap_or(0) {
        0 => false,
        1 => true,
        other => return Err(DecodeError::PixelFormat(format!("PixelRepresentation {other}"))),
    };
    if samples != 1 || photometric != "MONOCHROME2" {
        return Err(DecodeError::PixelFormat(format!(
            "{samples} samples per pixel, {photometric} (need one sample, MONOCHROME2)"
        )));
    }
    if allocated != 16 || !(1..=16).contains(&stored) || high != stored - 1 {
        return Err(DecodeError::PixelFormat(format!(
            "BitsAllocated {allocated}, BitsStored {stored}, HighBit {high} (need 16 allocated, up to 16 stored, high bit = stored - 1)"
        )));
    }
    let (Some(slope), Some(intercept)) = (float(&o, tags::RESCALE_SLOPE), float(&o, tags::RESCALE_INTERCEPT)) else {
        return Err(DecodeError::Unsupported(
            "no RescaleSlope / RescaleIntercept: Hounsfield units unknown".into(),
        ));
    };
    if slope <= 0.0 || slope > 16.0 || intercept.abs() > 32768.0 {
        return Err(DecodeError::Unsupported(format!(
            "implausible rescale (slope {slope}, intercept {intercept})"
        )));
    }
    let n = w as usize * hgt as usize;
    if JPEG_SYNTAXES.contains(&ts.as_str()) {
        check_jpeg_frame(&o, w, hgt)?;
    }
    let decoded = o
        .decode_pixel_data()
        .map_err(|e| DecodeError::Corrupt(format!("pixel data: {}", one_line(&e))))?;
    let data = decoded.data();
    if decoded.rows() != hgt || decoded.columns() != w || decoded.number_of_frames() != 1 {
        return Err(DecodeError::Corrupt(
            "decoded image size differs from the header".into(),
        ));
    }
    if data.len() != n * 2 {
        return Err(DecodeError::Corrupt(format!(
            "pixel data holds {} bytes, {w}x{hgt} 16-bit pixels need {}",
            data.len(),
            n * 2
        )));
    }
    let shift = 16 - stored as u32;
    out.clear();
    out.reserve(n);
    out.extend(data.chunks_exact(2).map(|c| {
        let v = u16::from_ne_bytes([c[0], c[1]]);
        let raw = if signed {
            i32::from(((v << shift) as i16) >> shift)
        } else {
            i32::from((v << shift) >> shift)
        };
        let hu = f64::from(raw) * slope + intercept;
        (hu + 1024.0).round().clamp(0.0, 65535.0) as u16
    }));
    Ok((w as usize, hgt as usize))
}

/// The JPEG stream of the one frame must itself declare exactly `w` x `h` pixels.
fn check_jpeg_frame(o: &DefaultDicomObject, w: u32, h: u32) -> Result<(), DecodeError> {
    let frags = o
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.fragments())
        .ok_or_else(|| DecodeError::Corrupt("encapsulated pixel data has no fragments".into()))?;
    let stream: Vec<u8> = frags.iter().flat_map(|f| f.iter().copied()).collect();
    // A stream cut short still decodes (the decoder fills what is missing): it must end at its
    // EOI marker, after at most the one pad byte that keeps a fragment's length even.
    let end = stream.len() - usize::from(stream.last() == Some(&0));
    if end < 2 || stream[end - 2..end] != [0xFF, 0xD9] {
        return Err(DecodeError::Corrupt(
            "JPEG stream does not end with its EOI marker (truncated frame)".into(),
        ));
    }
    let mut d = jpeg_decoder::Decoder::new(&stream[..]);
    d.read_info()
        .map_err(|e| DecodeError::Corrupt(format!("JPEG header: {e}")))?;
    let info = d
        .info()
        .ok_or_else(|| DecodeError::Corrupt("JPEG stream has no frame header".into()))?;
    if (u32::from(info.width), u32::from(info.height)) != (w, h) {
        return Err(DecodeError::Corrupt(format!(
            "JPEG frame is {}x{}, the header declares {w}x{h}",
            info.width, info.height
        )));
    }
    Ok(())
}
