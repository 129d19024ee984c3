//! The web console at `/`: the Webhooks and Webhook Logs pages, for admins (admin token) and
//! account owners (their account key, which makes it that account's own portal).
//!
//! Static files committed here and embedded in the binary: one page, one script, one style
//! sheet, in plain HTML, JavaScript and CSS, so nothing is built or installed beyond
//! `cargo build`, and the console can only do what the API lets its caller do. The page names
//! its files relatively and the script calls `/v1` below the path the page was opened at, so
//! a proxy may mount it all on a path prefix. The script sends the token as a bearer header,
//! kept in `sessionStorage` (gone with the tab); there is no cookie, so no request can be
//! forged from another site (CSRF). Values reach the page through `textContent`, never as
//! HTML, and the content security policy allows no inline or foreign script besides.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const FAVICON: &str = include_str!("favicon.svg");

/// Only this origin's own files; no inline script or style, no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
                   base-uri 'none'";
/// The same for the portal, but for the pages that may frame it (`portal_frame_ancestors`).
const PORTAL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                          img-src 'self'; connect-src 'self'; form-action 'none'; \
                          base-uri 'none'; frame-ancestors";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        // The same page: the script sees the path, and a session token in the fragment.
        .route("/portal", get(portal_page))
        .route(
            "/console/app.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/console/favicon.svg",
            get(|| async { page(FAVICON, "image/svg+xml") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Embedded in the binary: a new release serves new files; never a stale mix.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The portal: the console's page, which a platform may frame from the origins it lists.
async fn portal_page(State(state): State<AppState>) -> Response {
    let mut response = page(INDEX, "text/html; charset=utf-8");
    let ancestors = &state.inner.portal_frame_ancestors;
    if ancestors.is_empty() {
        return response;
    }
    // Checked origins (`https://host[:port]`) at start: nothing here can break the header.
    let csp = format!("{PORTAL_CSP} {}", ancestors.join(" "));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
        // Superseded by frame-ancestors wherever that is understood; DENY would win elsewhere.
        headers.remove(header::X_FRAME_OPTIONS);
    }
    response
}
