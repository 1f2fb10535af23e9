//! # The console (`/ui`)
//!
//! Static pages, scripts and styles from `server/ui/`, compiled into the binary (rust-embed
//! with `debug-embed`, so debug builds and tests serve what ships). No build step: the files
//! are plain HTML, CSS and JavaScript modules. The pages call the JSON API ([`super::api`])
//! with the credentials the user logs in with, so what a principal may see or do is decided
//! by the same ACLs as everywhere; the pages hide what the API refuses and show its reason.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::Embed;

use std::sync::Arc;

use super::HttpFrontend;

#[derive(Embed)]
#[folder = "ui/"]
struct Assets;

/// `/` and `/ui` lead to the console's first page; `/ui/{file}` serves a file.
pub fn routes() -> Router<Arc<HttpFrontend>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(file: &str) -> Response {
    let Some(content) = Assets::get(file) else {
        return (
            StatusCode::NOT_FOUND,
            format!("the console has no file {file:?}\n"),
        )
            .into_response();
    };
    let mime = match file.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                     script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        content.data,
    )
        .into_response()
}
