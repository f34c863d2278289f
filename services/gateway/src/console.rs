//! The web console (API.md, "The console"): `GET /` serves its `index.html` and
//! `GET /assets/<file>` its content-hashed files, read from the built directory
//! (`console/dist`, or `BEEHIVE_CONSOLE_DIR`). Every other unknown path stays a 404:
//! routes inside the console live in the URL fragment.
//!
//! The page gets a strict Content-Security-Policy (scripts, styles and connections to
//! this origin only; images also from `blob:`/`data:`), `nosniff`, and no framing.
//! Hashed assets are cached for a year as immutable; `index.html` is revalidated on
//! every load so a new build shows at once; a `<file>.gz` written beside an asset by the
//! build is sent to clients accepting gzip. Without a built console, `/` answers a
//! short page saying how to build it. The directory is looked up per request, so a
//! console built after the gateway started is served without a restart.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use beehive_common::Error;

/// The served directory's layout (what `npm run build` writes).
const INDEX: &str = "index.html";
const ASSETS: &str = "assets";

/// Hashed file names never change content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where the console is looked up: the configured directory, else `console/dist`
/// under the working directory, then next to or above the binary (a checkout's
/// `target/<profile>/beehive`).
#[derive(Clone, Debug)]
pub struct ConsoleDir {
    candidates: Vec<PathBuf>,
}

impl ConsoleDir {
    /// `configured` (`BEEHIVE_CONSOLE_DIR`) when set, else the default places.
    pub fn new(configured: Option<PathBuf>) -> Self {
        if let Some(dir) = configured {
            return Self {
                candidates: vec![dir],
            };
        }
        let mut candidates = vec![PathBuf::from("console").join("dist")];
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1).take(4) {
                candidates.push(dir.join("console").join("dist"));
            }
        }
        Self { candidates }
    }

    /// The first candidate holding an `index.html`.
    fn resolve(&self) -> Option<&Path> {
        self.candidates
            .iter()
            .map(PathBuf::as_path)
            .find(|dir| dir.join(INDEX).is_file())
    }
}

/// The console's routes. Generic over the state so it merges into any router.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: ConsoleDir) -> Router<S> {
    let for_asset = dir.clone();
    Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let dir = dir.clone();
                async move { index(&dir, &headers).await }
            }),
        )
        .route(
            "/assets/{*file}",
            get(move |UrlPath(file): UrlPath<String>, headers: HeaderMap| {
                let dir = for_asset.clone();
                async move { asset(&dir, &file, &headers).await }
            }),
        )
}

async fn index(dir: &ConsoleDir, headers: &HeaderMap) -> Response {
    let Some(root) = dir.resolve() else {
        return not_built(dir);
    };
    match tokio::fs::read(root.join(INDEX)).await {
        Ok(bytes) => page(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "no-cache",
            bytes,
            headers,
        ),
        Err(error) => {
            tracing::warn!(%error, dir = %root.display(), "cannot read the console's index.html");
            not_built(dir)
        }
    }
}

async fn asset(dir: &ConsoleDir, file: &str, headers: &HeaderMap) -> Response {
    if !is_plain_file_name(file) {
        return Error::NotFound("no such asset".to_owned()).into_response();
    }
    let Some(root) = dir.resolve() else {
        return Error::NotFound("the console is not built".to_owned()).into_response();
    };
    let path = root.join(ASSETS).join(file);
    // The build writes `<file>.gz` beside large text assets (console/scripts/precompress.mjs).
    if accepts_gzip(headers) {
        let mut gz = path.clone().into_os_string();
        gz.push(".gz");
        if let Ok(bytes) = tokio::fs::read(&gz).await {
            let mut response = page(
                StatusCode::OK,
                content_type(file),
                IMMUTABLE,
                bytes,
                headers,
            );
            let h = response.headers_mut();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            return response;
        }
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut response = page(
                StatusCode::OK,
                content_type(file),
                IMMUTABLE,
                bytes,
                headers,
            );
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            response
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Error::NotFound("no such asset".to_owned()).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, file, "cannot read a console asset");
            Error::NotFound("no such asset".to_owned()).into_response()
        }
    }
}

/// `/` without a built console: how to get one, never an error page. The places
/// looked in go to the log, not to anonymous visitors.
fn not_built(dir: &ConsoleDir) -> Response {
    let looked: Vec<String> = dir
        .candidates
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    tracing::warn!(looked_in = ?looked, "GET / but no built console (index.html) was found");
    let text = "Beehive is running, but its web console is not built.\n\n\
         Build it (Node.js 20.19 or newer) in the source tree:\n\n  cd console && npm ci && npm run build\n\n\
         and start the gateway from the source tree, or point BEEHIVE_CONSOLE_DIR at the\n\
         built directory (console/dist).\n\n\
         The REST API is under /api/v1 (GET /api/v1/openapi.json), the WebSocket at /ws.\n";
    let mut response = (StatusCode::NOT_FOUND, text).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn page(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    bytes: Vec<u8>,
    request: &HeaderMap,
) -> Response {
    let mut response = (status, Body::from(bytes)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(request)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The page's policy: everything from this origin only, no inline script or style,
/// images and media also from `blob:` (files fetched with the token) and `data:`.
/// `connect-src` names the WebSocket origin explicitly (`ws:`/`wss:` of the request's
/// host) for browsers whose `'self'` does not cover WebSocket schemes.
pub fn content_security_policy(request: &HeaderMap) -> String {
    let ws = request
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|host| is_plain_host(host))
        .map(|host| format!(" ws://{host} wss://{host}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
         media-src 'self' blob:; font-src 'self'; connect-src 'self'{ws}; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Whether `Accept-Encoding` admits gzip (`gzip` or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// A Host header safe to repeat in a policy: `name`, `name:port`, `[v6]:port`.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// One file name of the flat assets directory: no separators, no dot files, no `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("beehive-console-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(dir.join(ASSETS)).expect("create temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
        let request = Request::get(uri)
            .header(header::HOST, "chat.example.com:8080")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn built() -> (TempDir, Router) {
        let dir = TempDir::new();
        std::fs::write(dir.0.join(INDEX), "<!doctype html><title>console</title>").expect("write");
        std::fs::write(dir.0.join(ASSETS).join("index-AbC123.js"), "console.log(1)")
            .expect("write");
        std::fs::write(dir.0.join(".secret"), "no").expect("write");
        let app = routes(ConsoleDir::new(Some(dir.0.clone())));
        (dir, app)
    }

    #[tokio::test]
    async fn index_is_revalidated_and_locked_down() {
        let (_dir, app) = built();
        let (status, h, body) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>console</title>"));
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("img-src 'self' blob: data:;"), "{csp}");
        assert!(
            csp.contains(
                "connect-src 'self' ws://chat.example.com:8080 wss://chat.example.com:8080;"
            ),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_with_their_type() {
        let (_dir, app) = built();
        let (status, h, body) = get(&app, "/assets/index-AbC123.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "console.log(1)");
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], IMMUTABLE);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[tokio::test]
    async fn precompressed_assets_go_to_clients_that_accept_gzip() {
        let (dir, app) = built();
        std::fs::write(dir.0.join(ASSETS).join("index-AbC123.js.gz"), b"\x1f\x8bgz")
            .expect("write");
        let request = |encoding: Option<&str>| {
            let mut r = Request::get("/assets/index-AbC123.js");
            if let Some(e) = encoding {
                r = r.header(header::ACCEPT_ENCODING, e);
            }
            r.body(Body::empty()).expect("request")
        };
        let gz = app
            .clone()
            .oneshot(request(Some("br, gzip;q=0.8")))
            .await
            .expect("response");
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(
            gz.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(gz.headers()[header::VARY], "accept-encoding");
        let body = gz.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"\x1f\x8bgz");
        for refused in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
            let plain = app
                .clone()
                .oneshot(request(refused))
                .await
                .expect("response");
            assert!(
                plain.headers().get(header::CONTENT_ENCODING).is_none(),
                "{refused:?}"
            );
            assert_eq!(plain.headers()[header::VARY], "accept-encoding");
            let body = plain.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"console.log(1)", "{refused:?}");
        }
    }

    #[tokio::test]
    async fn nothing_outside_the_assets_is_served() {
        let (_dir, app) = built();
        for uri in [
            "/assets/missing.js",
            "/assets/../index.html",
            "/assets/..%2F.secret",
            "/assets/%2e%2e/.secret",
            "/assets/sub/dir.js",
            "/assets/.secret",
            "/index.html",
            "/favicon.ico",
            "/chats",
        ] {
            let (status, _, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert!(
                !body.contains("no\n") && body != "no",
                "{uri} leaked a file"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_console_says_how_to_build_it() {
        let dir = TempDir::new();
        let app: Router = routes(ConsoleDir::new(Some(dir.0.join("nope"))));
        let (status, h, body) = get(&app, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(body.contains("npm ci && npm run build"), "{body}");
        assert!(body.contains("BEEHIVE_CONSOLE_DIR"), "{body}");
        assert!(
            !body.contains(&*dir.0.to_string_lossy()),
            "paths stay in the log: {body}"
        );
        let (status, _, _) = get(&app, "/assets/index-AbC123.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn hosts_and_names_are_checked_before_use() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("evil; script-src *"));
        let csp = content_security_policy(&h);
        assert!(!csp.contains("evil"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(is_plain_host("[::1]:8080"));
        assert!(is_plain_file_name("index-D4_x.css"));
        assert!(!is_plain_file_name(".."));
        assert!(!is_plain_file_name("a/b.js"));
        assert!(!is_plain_file_name("a\\b.js"));
        assert_eq!(content_type("x.SVG"), "image/svg+xml");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
