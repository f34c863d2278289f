//! HTTP plumbing of the REST API: extractors whose rejections follow API.md's error
//! rules (every undecodable body is 400 `invalid_argument`, never 415/422; 413 above
//! the body limit), the client IP behind trusted proxies, request ids, and the 404/405
//! fallbacks with the error body.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use beehive_common::config::IpNet;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::app::limits::MAX_BODY_BYTES;

/// The request id header, read from clients and echoed on every response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client-supplied request id longer than this is replaced by a generated one.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A JSON body decoded with API.md's error rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Error::bad_request(
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent: an empty body (with or without a Content-Type) is
/// `None`; anything else must be valid JSON of `T`.
#[derive(Debug, Clone, Default)]
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !json {
            return Err(Error::bad_request(
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        decode_json(&bytes).map(|v| Self(Some(v)))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(format!("the request body exceeds {MAX_BODY_BYTES} bytes"))
            } else {
                Error::bad_request("the request body could not be read")
            }
        })
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "the body has wrong or missing fields",
            serde_json::error::Category::Eof => "the body is truncated JSON",
            _ => "the body is not valid JSON",
        };
        // serde's message names the field and position, never any server internals.
        Error::bad_request(format!("{what}: {e}"))
    })
}

/// `application/json` or any `application/*+json`, with optional parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Query parameters decoded with 400 `invalid_argument` on any error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| Error::bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// Path parameters decoded with 400 `invalid_argument` on any error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| Error::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// The client's IP: the TCP peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries
/// further left are client-controlled and could be forged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Where [`ClientIp`] finds the trusted proxies.
pub trait HasTrustedProxies {
    /// Networks whose `X-Forwarded-For` is believed.
    fn trusted_proxies(&self) -> &[IpNet];
}

impl<S> FromRequestParts<S> for ClientIp
where
    S: HasTrustedProxies + Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| Error::internal("ConnectInfo missing: serve with connect info"))?;
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            state.trusted_proxies(),
        )))
    }
}

/// See [`ClientIp`].
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    // Several X-Forwarded-For headers are one list in order.
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for item in value.split(',').take(64) {
            match parse_forwarded_ip(item.trim()) {
                Some(ip) => hops.push(canonical(ip)),
                // An unparsable hop: we cannot know who is behind it; stop trusting.
                None => return hops.last().copied().unwrap_or(peer),
            }
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

fn parse_forwarded_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    // `1.2.3.4:5678` or `[::1]:5678`
    text.parse::<SocketAddr>().ok().map(|s| s.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The request id of the current request (also in the tracing span).
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Histogram of the gateway's HTTP requests by method, route template and status.
pub const HTTP_DURATION: &str = "beehive_http_request_duration_seconds";

/// The labels of a request's duration: its route template (`/api/v1/conversations/{id}`,
/// never the raw path, so ids do not become series; `unmatched` for the 404 fallback)
/// and its method (`other` for non-standard ones).
fn route_labels(req: &Request) -> (String, &'static str) {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    (route, method)
}

/// Gives every request an id (the client's `x-request-id` when sane, else a new
/// UUID), runs it inside a span carrying the id, echoes the id on the response, logs
/// one line per request and times it per route ([`HTTP_DURATION`]; the layer runs per
/// route, after routing, so the matched route template is known).
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        });
    req.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "http",
        request_id = %String::from_utf8_lossy(id.as_bytes()),
        method = %req.method(),
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let (route, method) = route_labels(&req);
    async move {
        let mut response = next.run(req).await;
        let status = response.status().as_u16();
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status.to_string())
            .record(elapsed);
        let elapsed_ms = elapsed * 1000.0;
        if response.status().is_server_error() {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request");
        }
        response.headers_mut().insert(REQUEST_ID.clone(), id);
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the oversized body was never read, so this connection cannot
            // carry another request; say so, or a client reusing it fails mysteriously.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }
    .instrument(span)
    .await
}

/// Unknown paths: 404 with the error body.
pub async fn not_found() -> Response {
    Error::NotFound("no such endpoint".to_owned()).into_response()
}

/// Known path, wrong method: 405 with the error body; axum adds `Allow`. API.md has
/// no code for this case, so the body says `method_not_allowed`.
pub async fn method_not_allowed() -> Response {
    let body = serde_json::json!({
        "error": {"code": "method_not_allowed", "message": "method not allowed on this endpoint"}
    });
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        headers
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        let ip = client_ip(peer, &xff(&["1.1.1.1"]), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, peer);
    }

    #[test]
    fn forwarded_for_walks_back_over_trusted_hops() {
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        let headers = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]);
        let ip = client_ip(peer, &headers, &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn forwarded_for_with_ports_and_mapped_addresses() {
        let peer: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        let headers = xff(&["[2001:db8::1]:443"]);
        let ip = client_ip(peer, &headers, &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn garbage_forwarded_for_falls_back_to_the_peer() {
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        let ip = client_ip(peer, &xff(&["not-an-ip"]), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, peer);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_are_timed_per_route_template_not_per_path() {
        use tower::ServiceExt as _;
        let recorder = beehive_common::telemetry::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        // Every poll happens on this thread (current_thread runtime).
        let _guard = metrics::set_default_local_recorder(&recorder);
        let app = axum::Router::new()
            .route(
                "/api/v1/conversations/{id}",
                axum::routing::get(|| async { "ok" }),
            )
            .fallback(not_found)
            .layer(axum::middleware::from_fn(request_context));
        for uri in [
            "/api/v1/conversations/abc",
            "/api/v1/conversations/def",
            "/no/such/thing",
        ] {
            let request = Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .expect("request");
            app.clone().oneshot(request).await.expect("infallible");
        }
        let scrape = handle.render();
        let count = |labels: &[&str]| {
            scrape
                .lines()
                .filter(|l| l.starts_with(&format!("{HTTP_DURATION}_count{{")))
                .find(|l| labels.iter().all(|label| l.contains(label)))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(
            count(&[
                "route=\"/api/v1/conversations/{id}\"",
                "status=\"200\"",
                "method=\"GET\""
            ]),
            Some(2),
            "{scrape}"
        );
        assert_eq!(
            count(&["route=\"unmatched\"", "status=\"404\""]),
            Some(1),
            "{scrape}"
        );
        assert!(
            !scrape.contains("abc") && !scrape.contains("no/such"),
            "raw paths never become labels: {scrape}"
        );
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/Problem+JSON"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
