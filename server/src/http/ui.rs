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

#[cfg(test)]
mod tests {
    use super::*;

    /// The path `specifier` (`./x.js`, `../x.js`) names from the file `from`, inside `ui/`.
    fn resolve(from: &str, specifier: &str) -> String {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for part in specifier.split('/') {
            match part {
                "." => {}
                ".." => {
                    assert!(
                        parts.pop().is_some(),
                        "{from} imports {specifier} outside ui/"
                    );
                }
                part => parts.push(part),
            }
        }
        parts.join("/")
    }

    /// Every module a script imports is a file the console serves: a page cannot fail to load
    /// over a renamed file.
    #[test]
    fn every_import_resolves_to_a_served_file() {
        let mut scripts = 0;
        for file in Assets::iter().filter(|file| file.ends_with(".js")) {
            scripts += 1;
            let content = Assets::get(&file).expect("listed");
            let text = std::str::from_utf8(&content.data).expect("scripts are UTF-8");
            for line in text.lines().filter(|line| line.starts_with("import ")) {
                let specifier = line
                    .split(['\'', '"'])
                    .nth(1)
                    .unwrap_or_else(|| panic!("{file}: cannot read the import {line:?}"));
                let target = resolve(&file, specifier);
                assert!(
                    Assets::get(&target).is_some(),
                    "{file} imports {specifier}, but the console has no {target}"
                );
            }
        }
        assert!(
            scripts >= 5,
            "the console's scripts are embedded ({scripts})"
        );
    }

    /// The CSP forbids inline scripts and styles: the page holds neither, and what it loads
    /// exists.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let content = Assets::get("index.html").expect("index.html");
        let html = std::str::from_utf8(&content.data).expect("UTF-8");
        assert!(!html.contains("style="), "an inline style attribute");
        assert!(!html.contains("<style"), "an inline style element");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().expect("a tag");
            assert!(tag.contains("src="), "an inline script: <script{tag}>");
            assert!(
                script
                    .split('>')
                    .nth(1)
                    .is_some_and(|body| body.starts_with("</script")),
                "a script with a body"
            );
        }
        for reference in ["/ui/app.js", "/ui/style.css", "/ui/favicon.svg"] {
            assert!(html.contains(reference), "index.html loads {reference}");
            let file = reference.trim_start_matches("/ui/");
            assert!(Assets::get(file).is_some(), "{file} is embedded");
        }
    }

    /// Files are served with their type and the CSP; an unknown file is a 404 naming it.
    #[tokio::test]
    async fn assets_carry_their_type_and_the_policy() {
        let response = asset("app.js");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        let missing = asset("nothing-here.js");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(missing.into_body(), 1024)
            .await
            .expect("body");
        assert!(String::from_utf8_lossy(&body).contains("nothing-here.js"));
    }
}
