//! Byte-level entry points of every parser that reads input we do not control: slices from a
//! drop folder or a USB stick (TIFF, DICOM, 8-bit PNG/JPEG), what a DICOM peer sends, the
//! service config, the model card, the service's own journal and a site's validation labels. The fuzz targets in `fuzz/`
//! call these, and `tests/fuzz_corpus.rs` replays the committed corpus through them in every
//! `cargo test`, so the harnesses cannot rot. Each returns whether the input was accepted; the
//! bugs they look for are panics, hangs and allocations driven by declared lengths.
//!
//! Not part of the product's interface (hidden from the docs).

use std::path::Path;

use crate::{classify, ingest, service};

/// A 16-bit slice file as `SliceDecoder::decode` reads it (TIFF or DICOM by signature), with
/// the complete-decode checks; an accepted slice has exactly width × height pixels.
pub fn slice(bytes: &[u8]) -> bool {
    let mut d = ingest::SliceDecoder::new();
    match d.decode_bytes(bytes) {
        Ok(s) => {
            assert_eq!(
                s.pixels.len(),
                s.width * s.height,
                "accepted slice with the wrong pixel count"
            );
            true
        }
        Err(_) => false,
    }
}

/// A DICOM file's header as grouping and ordering read it (with the bounds pre-scan), and the
/// same bytes as a DICOMDIR (the watcher reads a USB export's DICOMDIR at every look).
pub fn dicom_header(bytes: &[u8]) -> bool {
    let dicomdir = ingest::dicom::dicomdir_image_ids(bytes);
    ingest::dicom::header_of(bytes).is_ok() || dicomdir.is_ok_and(|ids| !ids.is_empty())
}

/// An 8-bit grayscale PNG or JPEG.
pub fn image8(bytes: &[u8]) -> bool {
    match ingest::decode_gray8_bytes(bytes) {
        Ok(g) => {
            assert_eq!(
                g.pixels.len(),
                g.width * g.height,
                "accepted image with the wrong pixel count"
            );
            true
        }
        Err(_) => false,
    }
}

/// What a DICOM peer sends: the real association machine (`dicom_net::fuzz_peer`), with an
/// instance limit of 1 MiB.
pub fn dicom_peer(bytes: &[u8]) -> bool {
    crate::dicom_net::fuzz_peer(bytes) > 0
}

/// A service config (`board` profiles from `boards`, the repository's or the package's).
pub fn service_config(bytes: &[u8], boards: &Path) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    service::config::Config::parse(text, Path::new("/etc/ctsentinel/ctsentinel.toml"), Some(boards)).is_ok()
}

/// A model card (only parsed and validated: the model file beside it is not opened).
pub fn model_card(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    classify::card::ModelCard::parse(text, Path::new("models/fuzz.card.toml")).is_ok()
}

/// The service's journal as found on disk at start-up (torn, damaged or hostile), through
/// `Journal::open` on a file in `dir`, then replayed.
pub fn journal(bytes: &[u8], dir: &Path) -> bool {
    let path = dir.join("journal");
    if std::fs::write(&path, bytes).is_err() {
        return false;
    }
    let ok = match service::journal::Journal::open(&path) {
        Ok(j) => {
            let _ = j.replay();
            true
        }
        Err(_) => false,
    };
    let _ = std::fs::remove_file(&path);
    ok
}

/// A site's validation labels as `ctsentinel validate` reads them (`validate::read_labels`), in
/// `dir`: the bytes as the labels CSV, and the same bytes as the slice-labels CSV a fixed labels
/// file names (`path,label,slices`), so both readers see every input.
pub fn labels_csv(bytes: &[u8], dir: &Path) -> bool {
    let (labels, slices, wrapper) = (dir.join("labels.csv"), dir.join("s.csv"), dir.join("wrapper.csv"));
    let written = std::fs::write(&labels, bytes)
        .and_then(|()| std::fs::write(&slices, bytes))
        .and_then(|()| std::fs::write(&wrapper, b"path,label,slices\np,covid,s.csv\n"));
    if written.is_err() {
        return false;
    }
    let as_labels = crate::validate::read_labels(&labels).is_ok();
    let as_slices = crate::validate::read_labels(&wrapper).is_ok();
    as_labels || as_slices
}

/// A request to the results page (`service::web`) from anyone on the LAN, without a session:
/// the bytes are split at `0xFF` into method, path (with query), `Cookie` header, `Origin`
/// header and body, and sent through the real router (in memory, no TLS) of a page with a
/// password set, in `dir`. The property checked: whatever the request, nothing but the sign-in
/// page and the style sheet (GET, or HEAD, which HTTP makes GET without a body) is ever served
/// with 200, and no response carries a session. Returns
/// whether the answer was a 200 (the sign-in page or the style sheet).
pub fn web_request(bytes: &[u8], dir: &Path) -> bool {
    use std::sync::{Arc, OnceLock};
    use tower_service::Service as _;
    static PAGE: OnceLock<(Arc<service::web::App>, tokio::runtime::Runtime)> = OnceLock::new();
    let (app, rt) = PAGE.get_or_init(|| {
        let _ = service::web::set_password(dir, "a fuzzing password");
        let model = classify::ModelIdentity {
            name: "fuzz".into(),
            version: "0".into(),
            sha256: "0".repeat(64),
        };
        let site = service::web::Site {
            state: dir.to_path_buf(),
            model: model.clone(),
            threshold: 0.5,
            selftest: crate::report::SelfTestReport {
                passed: true,
                checks: vec![],
                model: Some(model),
                cpu: String::new(),
                kernels: vec![],
                notice: crate::NOTICE.into(),
            },
            display: None,
        };
        let cfg = service::config::WebConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            cert: None,
            session: std::time::Duration::from_secs(3600),
            signin_per_minute: 1_000_000,
        };
        let app = service::web::App::new(&cfg, site, "00".into(), Arc::new(service::web::SystemClock))
            .expect("a page in a fresh folder");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        (Arc::new(app), rt)
    });
    let mut parts = bytes.splitn(5, |b| *b == 0xFF);
    let mut next = || parts.next().unwrap_or(&[]);
    let (method, path, cookie, origin, body) = (next(), next(), next(), next(), next());
    let Ok(method) = axum::http::Method::from_bytes(if method.is_empty() { b"GET" } else { method }) else {
        return false;
    };
    let path = String::from_utf8_lossy(path);
    let mut req = axum::http::Request::builder()
        .method(method.clone())
        .uri(if path.starts_with('/') { path.as_ref() } else { "/" })
        .header(axum::http::header::HOST, "box:8443");
    if let Ok(v) = axum::http::HeaderValue::from_bytes(cookie) {
        req = req.header(axum::http::header::COOKIE, v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_bytes(origin) {
        if !origin.is_empty() {
            req = req.header(axum::http::header::ORIGIN, v);
        }
    }
    let Ok(mut req) = req.body(axum::body::Body::from(body.to_vec())) else {
        return false;
    };
    req.extensions_mut().insert(service::web::routes::ClientAddr(
        "10.0.0.1".parse().expect("an address"),
    ));
    let uri = req.uri().path().to_string();
    let r = rt
        .block_on(service::web::routes::router(app.clone()).call(req))
        .expect("the router is infallible");
    let ok = r.status() == axum::http::StatusCode::OK;
    if ok {
        assert!(
            (uri == "/signin" || uri == "/static/style.css")
                && (method == axum::http::Method::GET || method == axum::http::Method::HEAD),
            "served {method} {uri} with 200 without a session"
        );
    }
    assert!(
        r.headers()
            .get(axum::http::header::SET_COOKIE)
            .is_none_or(|c| c.as_bytes().ends_with(b"Max-Age=0")),
        "a session for {method} {uri} without the password"
    );
    ok
}
