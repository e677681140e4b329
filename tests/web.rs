//! The results page (`service::web`) as a client sees it, without a browser: sign-in, the
//! attempt limit, session expiry, forged paths, headers and cookie flags on the router itself,
//! and TLS on a real socket. The real-browser test is `tests/web_browser.rs`.
//!
//! The result shown is a real one: the service itself processes 16 slices of the shared COVID
//! series with the shipped model (real TIFF decoding, tract, the report sheet).
//!
//! Run: `cargo test --test web`.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::service::config::{Config, WebConfig};
use ctsentinel::service::display_task::Display;
use ctsentinel::service::run::{FreeSpace, Service};
use ctsentinel::service::web::routes::{self, ClientAddr, COOKIE};
use ctsentinel::service::web::{self, App, ManualClock, Site};

const PASSWORD: &str = "correct horse battery";

struct Plenty;
impl FreeSpace for Plenty {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(1 << 40)
    }
}

struct Page {
    _dir: tempfile::TempDir,
    state: PathBuf,
    app: Arc<App>,
    clock: Arc<ManualClock>,
    /// The processed series' result id, when the shared data was there to make one.
    result: Option<String>,
}

fn web_config(session_hours: f64) -> WebConfig {
    WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: None,
        session: Duration::from_secs_f64(session_hours * 3600.0),
        signin_per_minute: 5,
    }
}

/// A state folder with a password and, where the shared data is, one real result.
fn page(test: &str) -> Page {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let state = dir.path().join("state");
    let cfg = format!(
        "board = \"generic-x86_64\"\ndrop = [\"{}\"]\nstate = \"{}\"\nmodels = \"{}\"\nstability_s = 10\npoll_interval_s = 1\nmin_free_mb = 100\ndisplay = \"none\"\n",
        drop.display(),
        state.display(),
        common::models().display()
    );
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    let config = Config::load(&dir.path().join("config.toml"), Some(&common::repo().join("boards"))).unwrap();
    let classifier = Classifier::load(&common::models(), Options { threads: 2 }).unwrap();
    let model = classifier.identity();
    let threshold = classifier.card().output.threshold;
    let mut result = None;
    if let Some(shared) = common::shared_or_skip(test) {
        let src = shared.join("ct16/covid/ctmd_P001/SR_1");
        let dst = drop.join("ctmd_P001/SR_1");
        common::copy_slices(&src, &dst, 16, 16);
        let mut svc = Service::new(
            config,
            classifier,
            Plenty,
            Display::detached(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        svc.tick(Duration::ZERO);
        assert_eq!(svc.tick(Duration::from_secs(11)), 1, "the series was processed");
        assert!(
            common::files_under(&state.join("results"))
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "json")),
            "a result"
        );
        result = Some(());
    }
    web::set_password(&state, PASSWORD).unwrap();
    let selftest = ctsentinel::report::SelfTestReport {
        passed: true,
        checks: vec![],
        model: Some(model.clone()),
        cpu: String::new(),
        kernels: vec![],
        notice: ctsentinel::NOTICE.into(),
    };
    let clock = Arc::new(ManualClock::default());
    let site = Site {
        state: state.clone(),
        model,
        threshold,
        selftest,
        display: None,
    };
    let app = Arc::new(App::new(&web_config(12.0), site, "AB:CD".into(), clock.clone()).unwrap());
    // The id the page gives the one result (opaque: the box's key and the result's path).
    let result = result.map(|()| match &app.index.list()[..] {
        [web::results::Listed::Result(s)] => s.id.clone(),
        other => panic!("one readable result expected: {other:?}"),
    });
    Page {
        _dir: dir,
        state,
        app,
        clock,
        result,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Arc<App>, mut req: Request<Body>, from: &str) -> Reply {
    req.extensions_mut().insert(ClientAddr(from.parse::<IpAddr>().unwrap()));
    let r = routes::router(app.clone()).oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header(header::HOST, "box:8443");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("{COOKIE}={c}"));
    }
    b.body(Body::empty()).unwrap()
}

fn signin_request(password: &str, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/signin")
        .header(header::HOST, "box:8443")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    let body = format!("password={}", password.replace(' ', "+"));
    b.body(Body::from(body)).unwrap()
}

/// Sign in; the session token.
async fn sign_in(p: &Page, from: &str) -> String {
    let r = send(&p.app, signin_request(PASSWORD, Some("https://box:8443")), from).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
    let token = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    assert_eq!(token.len(), 64);
    token
}

#[tokio::test]
async fn an_unsigned_request_for_the_list_a_result_or_its_sheet_gets_the_sign_in_page_and_no_patient_data() {
    let p = page("web::unsigned");
    let id = p.result.clone().unwrap_or_else(|| "0".repeat(20));
    for path in [
        "/".to_string(),
        format!("/result/{id}"),
        format!("/result/{id}/sheet.png"),
    ] {
        let r = send(&p.app, get(&path, None), "10.0.0.5").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/signin", "{path}");
        assert!(!r.text().contains("ctmd_P001"), "{path}: {}", r.text());
    }
    let forged = "f".repeat(64);
    let r = send(&p.app, get("/", Some(&forged)), "10.0.0.5").await;
    assert_eq!(r.location(), "/signin", "a made-up session is no session");
    let r = send(&p.app, get("/signin", None), "10.0.0.5").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("research use only, not a diagnosis"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_sixth_attempt_in_a_minute_from_one_address_is_not_even_checked() {
    let p = page("web::wrong_password");
    for _ in 0..5 {
        let r = send(&p.app, signin_request("not the password", None), "10.0.0.6").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains("Wrong password."), "{}", r.text());
        assert!(r.headers.get(header::SET_COOKIE).is_none());
    }
    // The right password, but the sixth attempt: refused before it is checked.
    let r = send(&p.app, signin_request(PASSWORD, None), "10.0.0.6").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get(header::RETRY_AFTER).is_some());
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // Another address is not held back; and after the minute this one may try again.
    sign_in(&p, "10.0.0.7").await;
    p.clock.advance(Duration::from_secs(61));
    sign_in(&p, "10.0.0.6").await;
}

#[tokio::test]
async fn a_session_expires_after_its_lifetime_and_is_sent_to_sign_in_again() {
    let p = page("web::expiry");
    let token = sign_in(&p, "10.0.0.8").await;
    let r = send(&p.app, get("/", Some(&token)), "10.0.0.8").await;
    assert_eq!(r.status, StatusCode::OK);
    p.clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(
        send(&p.app, get("/", Some(&token)), "10.0.0.8").await.status,
        StatusCode::OK
    );
    p.clock.advance(Duration::from_secs(1));
    let r = send(&p.app, get("/", Some(&token)), "10.0.0.8").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/signin?expired=1");
    let r = send(&p.app, get("/signin?expired=1", None), "10.0.0.8").await;
    assert!(r.text().contains("Your session has ended"), "{}", r.text());
}

#[tokio::test]
async fn signed_in_the_list_and_the_result_show_the_verdict_counts_model_selection_and_the_report_sheet() {
    let p = page("web::content");
    let Some(id) = p.result.clone() else { return };
    let token = sign_in(&p, "10.0.0.9").await;
    let list = send(&p.app, get("/", Some(&token)), "10.0.0.9").await;
    assert_eq!(list.status, StatusCode::OK);
    let text = list.text();
    let result: ctsentinel::report::ServiceResult = serde_json::from_str(
        &std::fs::read_to_string(
            common::files_under(&p.state.join("results"))
                .into_iter()
                .find(|f| f.extension().is_some_and(|e| e == "json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let verdict = result.scan.verdict.as_str();
    assert!(text.contains("ctmd_P001"), "{text}");
    assert!(text.contains(&format!("data-verdict=\"{verdict}\"")), "{text}");
    assert!(text.contains(&format!("/result/{id}")), "{text}");
    assert!(text.contains("research use only, not a diagnosis"));
    let page = send(&p.app, get(&format!("/result/{id}"), Some(&token)), "10.0.0.9").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains(&result.scan.model.sha256), "the model's identity");
    assert!(html.contains(&format!("data-verdict=\"{verdict}\"")));
    if let Some(reason) = &result.scan.reason {
        assert!(
            html.contains(&maud::html! { (reason) }.into_string()),
            "the reason: {reason}"
        );
    }
    let threshold = result.scan.series[0].threshold.unwrap();
    assert!(html.contains(&format!("{threshold:.1}")), "the selection threshold");
    assert!(html.contains(&format!("/result/{id}/sheet.png")));
    let sheet = send(
        &p.app,
        get(&format!("/result/{id}/sheet.png"), Some(&token)),
        "10.0.0.9",
    )
    .await;
    assert_eq!(sheet.status, StatusCode::OK);
    assert_eq!(sheet.headers.get(header::CONTENT_TYPE).unwrap(), "image/png");
    let on_disk = std::fs::read(
        common::files_under(&p.state.join("results"))
            .into_iter()
            .find(|f| f.extension().is_some_and(|e| e == "png"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sheet.body, on_disk, "the sheet the service wrote, byte for byte");
}

#[tokio::test]
async fn forged_paths_never_reach_the_file_system() {
    let p = page("web::forged");
    let token = sign_in(&p, "10.0.0.10").await;
    let id = p.result.clone().unwrap_or_else(|| "0".repeat(20));
    let forged = [
        "/result/../../web/password".to_string(),
        "/result/..%2F..%2Fweb%2Fpassword".into(),
        "/result/%2e%2e%2f%2e%2e%2fjournal/sheet.png".into(),
        format!("/result/{id}/../../../web/password"),
        format!("/result/{}", id.to_uppercase()),
        format!("/result/{id}%00"),
        "/static/../web/password".into(),
        "/static/style.css/../../journal".into(),
        "/web/password".into(),
        "/results/".into(),
        "/journal".into(),
        "//etc/passwd".into(),
    ];
    for path in &forged {
        let r = send(&p.app, get(path, Some(&token)), "10.0.0.10").await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            r.status
        );
        let t = r.text();
        assert!(
            !t.contains("$argon2") && !t.contains("root:") && !t.contains("processing"),
            "{path}: {t}"
        );
    }
}

#[tokio::test]
async fn every_response_forbids_scripts_framing_sniffing_and_caching_and_the_cookie_is_host_only_secure_httponly_strict(
) {
    let p = page("web::headers");
    let r = send(&p.app, signin_request(PASSWORD, None), "10.0.0.11").await;
    let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cookie.starts_with("__Host-ctsentinel="), "{cookie}");
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    for path in ["/signin", "/", "/nowhere"] {
        let r = send(&p.app, get(path, None), "10.0.0.11").await;
        let csp = r
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("script-src"), "no script is ever allowed: {csp}");
        assert_eq!(r.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
        assert_eq!(r.headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        assert_eq!(r.headers.get(header::CACHE_CONTROL).unwrap(), "no-store", "{path}");
    }
}

#[tokio::test]
async fn a_sign_in_sent_from_another_site_is_refused() {
    let p = page("web::csrf");
    let r = send(
        &p.app,
        signin_request(PASSWORD, Some("https://evil.example")),
        "10.0.0.12",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
}

/// A TLS client that trusts exactly the certificate the page made.
fn client_config(state: &Path) -> Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let (cert, _) = web::tls::generated_paths(state);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(web::tls::provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn the_page_is_served_over_tls_only_with_a_certificate_kept_across_restarts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let site = |state: &Path| Site {
        state: state.to_path_buf(),
        model: ctsentinel::classify::ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
        },
        threshold: 0.5,
        selftest: ctsentinel::report::SelfTestReport {
            passed: true,
            checks: vec![],
            model: None,
            cpu: String::new(),
            kernels: vec![],
            notice: ctsentinel::NOTICE.into(),
        },
        display: None,
    };
    let server = web::WebServer::start(&web_config(12.0), site(&state)).unwrap();
    let fingerprint = server.fingerprint.clone();
    let addr = server.addr;
    let connector = tokio_rustls::TlsConnector::from(client_config(&state));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /signin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("research use only, not a diagnosis"));
    // Plain HTTP on the same port gets no page.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /signin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "served in clear"
    );
    drop(server);
    // A restart serves the same certificate: trust is given once.
    let again = web::WebServer::start(&web_config(12.0), site(&state)).unwrap();
    assert_eq!(again.fingerprint, fingerprint);
}
