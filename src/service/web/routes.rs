//! The page's routes: sign-in, the list, one result, its report sheet, the style sheet.
//!
//! Why each rule: every route but sign-in and the style sheet needs a live session (patient
//! identifiers only after sign-in); an unsigned request is sent to the sign-in page and learns
//! nothing else. The only form that changes anything is sign-in (and sign-out); both refuse a
//! cross-site `Origin`, and the session cookie is `__Host-`, `Secure`, `HttpOnly`,
//! `SameSite=Strict`. Every response forbids scripts, framing, sniffing, caching and referrers to other sites.
//! The access log names the route's pattern, the status and the address, never an identifier.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Extension, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::auth::Session;
use super::pages;
use super::App;

/// The session cookie's name; `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, so no other host or plain-HTTP page can set or read it.
pub const COOKIE: &str = "__Host-ctsentinel";

/// The peer's address, put on every request by the connection it came on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The largest request body read: the sign-in form (the only one).
const MAX_FORM_BYTES: usize = 4096;

/// The newest results the list shows.
const LIST_ROWS: usize = 500;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/result/{id}", get(result))
        .route("/result/{id}/sheet.png", get(sheet))
        .route("/static/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(access_log))
        .layer(middleware::map_response(secure_headers))
        .with_state(app)
}

async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    // `same-origin`, not `no-referrer`: with `no-referrer` chromium sends `Origin: null` on the
    // sign-in form, which the cross-site check must refuse (found by tests/web_browser.rs).
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    r
}

async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(no route)".into());
    let addr = req
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.to_string())
        .unwrap_or_default();
    let r = next.run(req).await;
    log::info!(
        "web: {addr} {method} {route} {} {} ms",
        r.status().as_u16(),
        started.elapsed().as_millis()
    );
    r
}

/// Refused sign-ins are logged, at most [`REFUSALS_LOGGED`] a minute (a flood cannot fill the
/// journal); the next line logged says how many were left out.
const REFUSALS_LOGGED: usize = 20;

fn log_refusal(app: &App, addr: IpAddr, why: &str) {
    let now = app.clock.now();
    let mut l = app.refusals.lock().unwrap_or_else(|p| p.into_inner());
    if now.duration_since(l.since) >= std::time::Duration::from_secs(60) {
        l.since = now;
        l.logged = 0;
    }
    if l.logged < REFUSALS_LOGGED {
        l.logged += 1;
        let skipped = std::mem::take(&mut l.skipped);
        let more = if skipped > 0 {
            format!(" ({skipped} earlier refusals not logged)")
        } else {
            String::new()
        };
        log::warn!("web: sign-in from {addr} refused: {why}{more}");
    } else {
        l.skipped += 1;
    }
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn session(app: &App, headers: &HeaderMap) -> Session {
    match token(headers) {
        Some(t) => app.sessions.check(&t, app.clock.now()),
        None => Session::None,
    }
}

/// The sign-in page, saying why when a session ended.
fn to_signin(s: Session) -> Response {
    let to = if s == Session::Expired {
        "/signin?expired=1"
    } else {
        "/signin"
    };
    Redirect::to(to).into_response()
}

/// The request's session, or where to go instead.
fn require(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    match session(app, headers) {
        Session::Live => Ok(()),
        other => Err(to_signin(other)),
    }
}

#[derive(Deserialize)]
struct SigninQuery {
    expired: Option<String>,
}

async fn signin_page(State(app): State<Arc<App>>, Query(q): Query<SigninQuery>) -> Response {
    let msg = q.expired.map(|_| "Your session has ended: sign in again.");
    Html(pages::signin(msg, app.password.is_set()).into_string()).into_response()
}

#[derive(Deserialize)]
struct SigninForm {
    password: String,
}

/// `Origin`, when the browser sent one, must be this page's own.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin.to_str().is_ok_and(|o| o == format!("https://{host}"))
}

fn refused(status: StatusCode, message: &str, password_set: bool) -> Response {
    (status, Html(pages::signin(Some(message), password_set).into_string())).into_response()
}

async fn signin(
    State(app): State<Arc<App>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    req: Request,
) -> Response {
    let set = app.password.is_set();
    let headers = req.headers().clone();
    // The form within BODY_TIMEOUT (the header timeout does not cover a body trickled in).
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(super::BODY_TIMEOUT, axum::body::to_bytes(body, MAX_FORM_BYTES)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let Ok(Form(form)) = Form::<SigninForm>::from_request(Request::from_parts(parts, bytes.into()), &()).await else {
        return refused(StatusCode::BAD_REQUEST, "The sign-in form was not understood.", set);
    };
    if !same_origin(&headers) {
        log_refusal(&app, addr, "cross-site Origin");
        return refused(
            StatusCode::FORBIDDEN,
            "Sign-in refused: the form was sent from another site.",
            set,
        );
    }
    if let Err(wait) = app.attempts.attempt(addr, app.clock.now()) {
        log_refusal(&app, addr, "too many attempts");
        let secs = wait.as_secs().max(1);
        let mut r = refused(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many sign-in attempts from this address: try again in {secs} s."),
            set,
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let password = app.password.clone();
    let ok = {
        let _one = app.argon2.acquire().await;
        tokio::task::spawn_blocking(move || password.verify(&form.password))
            .await
            .unwrap_or(false)
    };
    if !ok {
        log_refusal(&app, addr, "wrong password");
        return refused(StatusCode::UNAUTHORIZED, "Wrong password.", set);
    }
    let token = match app.sessions.open(app.clock.now()) {
        Ok(t) => t,
        Err(e) => {
            log::error!("web: no random session token: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "no session could be made").into_response();
        }
    };
    log::info!("web: sign-in from {addr}");
    redirect_setting_cookie("/", &token, app.sessions.lifetime().as_secs())
}

/// A redirect to `to` that sets the session cookie to `value` for `max_age` seconds (0: ends it).
fn redirect_setting_cookie(to: &str, value: &str, max_age: u64) -> Response {
    let cookie = format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut r = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn signout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if let Some(t) = token(&headers) {
        app.sessions.close(&t);
    }
    redirect_setting_cookie("/signin", "", 0)
}

/// Render on the blocking pool (the results folder is read there, never on the runtime).
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&app, &headers) {
        return r;
    }
    blocking(move || {
        let entries = app.index.list();
        let now = app.site.display.as_ref().and_then(|d| d.current());
        let b = app.box_state();
        Html(pages::list(&entries, now.as_ref(), &b, LIST_ROWS).into_string()).into_response()
    })
    .await
}

async fn result(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = require(&app, &headers) {
        return r;
    }
    blocking(move || {
        let Some(s) = app.index.find(&id) else {
            return not_found_page();
        };
        match app.index.load(&s) {
            Ok(r) => {
                let b = app.box_state();
                Html(pages::result(&s, &r, &b, s.sheet().is_some()).into_string()).into_response()
            }
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("this result cannot be read: {e}"),
            )
                .into_response(),
        }
    })
    .await
}

async fn sheet(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = require(&app, &headers) {
        return r;
    }
    blocking(move || match app.index.find(&id).and_then(|s| s.read_sheet()) {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        None => not_found_page(),
    })
    .await
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::STYLE,
    )
        .into_response()
}

async fn not_found() -> Response {
    not_found_page()
}

fn not_found_page() -> Response {
    (StatusCode::NOT_FOUND, Html(pages::not_found().into_string())).into_response()
}
