//! The built-in web dashboard: static files bundled from `dashboard/` at build time
//! (see `build.rs`) and embedded in the binary, so nothing is loaded from elsewhere at
//! run time. The page reads the same tenant-scoped query API as any client, with the
//! key the user enters in the browser; serving the files needs no key.
//!
//! Caching: `index.html` is revalidated on every load (`no-cache` with an `ETag`);
//! everything under `assets/` carries a content hash in its name and is immutable.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file of the bundle; `path` is relative to the bundle's root.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Hashed assets never change under the same name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page itself is checked on every load, so a new binary's page is picked up.
const REVALIDATE: &str = "no-cache";
/// The page loads only its own files and talks only to its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /` (and `/index.html`) and `GET /assets/{file}`; mount it beside the query API
/// (`ais serve`, `ais query`).
pub fn dashboard_router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{file}", get(asset))
}

/// The embedded file at `path` (relative to the bundle root), if any.
pub fn asset_named(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// `Content-Type` of a bundle file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "text/plain; charset=utf-8",
    }
}

async fn index(headers: HeaderMap) -> Response {
    let Some(page) = asset_named("index.html") else {
        return (StatusCode::NOT_FOUND, "this build has no dashboard\n").into_response();
    };
    let etag = etag_of(page.bytes);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        page.bytes.into_response()
    };
    let response_headers = response.headers_mut();
    set(
        response_headers,
        header::CONTENT_TYPE,
        content_type(page.path),
    );
    set(response_headers, header::CACHE_CONTROL, REVALIDATE);
    set(
        response_headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(response_headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(response_headers, header::REFERRER_POLICY, "no-referrer");
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some(asset) = asset_named(&format!("assets/{file}")) else {
        return (StatusCode::NOT_FOUND, "no such dashboard asset\n").into_response();
    };
    let mut response = asset.bytes.into_response();
    let response_headers = response.headers_mut();
    set(
        response_headers,
        header::CONTENT_TYPE,
        content_type(asset.path),
    );
    set(response_headers, header::CACHE_CONTROL, IMMUTABLE);
    set(response_headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    headers.insert(name, HeaderValue::from_static(value));
}

/// A strong validator from the page's bytes (FNV-1a, 64 bits: stable across builds of
/// the same page, which is all a cache needs).
fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = dashboard_router()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    /// The `src`/`href` values under `assets/` that the page references.
    fn referenced_assets(page: &str) -> Vec<String> {
        page.split('"')
            .filter(|part| part.starts_with("assets/"))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn the_page_is_html_revalidated_and_its_assets_are_immutable() {
        let (status, headers, body) = get_path("/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let page = String::from_utf8(body).expect("page is UTF-8");
        let assets = referenced_assets(&page);
        assert!(
            assets.iter().any(|path| path.ends_with(".js"))
                && assets.iter().any(|path| path.ends_with(".css")),
            "the page loads a script and a stylesheet: {assets:?}"
        );
        for path in assets {
            let (status, headers, body) = get_path(&format!("/{path}"), &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], IMMUTABLE);
            assert_eq!(headers[header::CONTENT_TYPE], content_type(&path));
            assert!(!body.is_empty());
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the page loads nothing from elsewhere: {page}"
        );
    }

    #[tokio::test]
    async fn an_unchanged_page_is_not_sent_again_and_unknown_assets_are_404() {
        let (_, headers, _) = get_path("/", &[]).await;
        let etag = headers[header::ETAG].to_str().expect("etag").to_string();
        let (status, _, body) = get_path("/", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, _, _) = get_path("/assets/nothing-here.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get_path("/assets/..%2Findex.html", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(
            content_type("assets/app-X.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("assets/app-X.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    }
}
