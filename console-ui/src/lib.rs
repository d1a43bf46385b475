//! Serv console: the web pages served at `/console` on the admin address. The assets (one HTML
//! page, its scripts and style sheet, no build step) are embedded in the binary with
//! `include_str!`, so a plain `cargo build` produces them and nothing is fetched at run time.
//! The page reads and acts only through the versioned admin API (`/v1/...`, bearer token) and
//! its live feed (`/v1/events`, Server-Sent Events): the console has no back door.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const CHARTS: &str = include_str!("../assets/charts.js");
const STYLE: &str = include_str!("../assets/style.css");

/// Only the page's own script and style run; it talks only to this origin.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                      connect-src 'self'; frame-ancestors 'none'";

/// The console's routes, to merge into the admin router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/charts.js", get(|| async { asset("text/javascript; charset=utf-8", CHARTS) }))
        .route("/console/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache"), (CONTENT_SECURITY_POLICY, POLICY)], body)
}
