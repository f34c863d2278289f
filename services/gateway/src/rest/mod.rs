//! The REST API of API.md under `/api/v1`, one module per resource. Handlers are
//! thin adapters: decode the request, call the core ([`crate::app`]) or, where no rule
//! applies, one typed gRPC method of [`crate::clients::Clients`], and encode the
//! response with the JSON objects of [`crate::wire::model`]. Every route is registered through
//! [`api_routes!`] so that the list of served routes ([`SERVED_ROUTES`]) and the
//! router cannot disagree, and a test checks that the OpenAPI document lists exactly
//! those routes.

pub mod auth;
pub mod conversations;
pub mod files;
pub mod friends;
pub mod messages;
pub mod openapi;
pub mod presence;
pub mod rate_limited;
pub mod search;
pub mod users;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;

/// Registers routes and records them in `SERVED_ROUTES`.
macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:path;)*) => {
        /// Every (method, path) the REST router serves.
        pub const SERVED_ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router $(.route($path, axum::routing::$method($handler)))*
        }
    };
}

api_routes! {
    get "/api/v1/openapi.json" => openapi::serve;
    post "/api/v1/auth/send-code" => auth::send_code;
    post "/api/v1/auth/register" => auth::register;
    post "/api/v1/auth/login" => auth::login;
    post "/api/v1/auth/refresh" => auth::refresh;
    post "/api/v1/auth/logout" => auth::logout;
    get "/api/v1/auth/jwks.json" => auth::jwks;
    get "/api/v1/users/me" => users::me;
    patch "/api/v1/users/me" => users::update_me;
    post "/api/v1/users/me/password" => users::change_password;
    get "/api/v1/users/search" => users::search;
    get "/api/v1/users/{id}" => users::get;
    get "/api/v1/users" => users::batch;
    post "/api/v1/friends/requests" => friends::send;
    get "/api/v1/friends/requests" => friends::list_requests;
    post "/api/v1/friends/requests/{id}/accept" => friends::accept;
    post "/api/v1/friends/requests/{id}/reject" => friends::reject;
    get "/api/v1/friends" => friends::list;
    delete "/api/v1/friends/{user_id}" => friends::delete;
    post "/api/v1/groups" => conversations::create_group;
    patch "/api/v1/groups/{id}" => conversations::update_group;
    post "/api/v1/groups/{id}/members" => conversations::add_members;
    delete "/api/v1/groups/{id}/members/{user_id}" => conversations::remove_member;
    get "/api/v1/conversations" => conversations::list;
    get "/api/v1/conversations/{id}" => conversations::get;
    get "/api/v1/conversations/{id}/messages" => conversations::messages;
    get "/api/v1/conversations/{id}/receipts" => conversations::receipts;
    post "/api/v1/conversations/{id}/read" => conversations::read;
    post "/api/v1/messages" => messages::send;
    get "/api/v1/presence" => presence::get;
    get "/api/v1/search/messages" => search::messages;
    post "/api/v1/files/check" => files::check;
    options "/api/v1/files/uploads" => files::options;
    post "/api/v1/files/uploads" => files::create;
    head "/api/v1/files/uploads/{id}" => files::head_upload;
    patch "/api/v1/files/uploads/{id}" => files::patch_upload;
    delete "/api/v1/files/uploads/{id}" => files::delete_upload;
    get "/api/v1/files/{id}" => files::download;
    delete "/api/v1/files/{id}" => files::delete;
    get "/api/v1/files/{id}/meta" => files::meta;
    get "/api/v1/files/{id}/thumbnail" => files::thumbnail;
}

/// The REST router (without state; the caller adds it).
pub fn router() -> Router<AppState> {
    add_routes(Router::new())
}

/// CORS for the configured origins: `None` when none are configured (no
/// cross-origin access, and `OPTIONS` is answered like any other unknown method);
/// `*` allows any origin (without credentials, as the CORS spec requires).
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers(
            [
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-request-id"),
            ]
            .into_iter()
            .chain(files::TUS_REQUEST_HEADERS.map(HeaderName::from_static))
            .collect::<Vec<_>>(),
        )
        .expose_headers(
            [
                HeaderName::from_static("x-request-id"),
                header::RETRY_AFTER,
                header::LOCATION,
                header::ETAG,
                header::CONTENT_RANGE,
                header::CONTENT_DISPOSITION,
                header::ACCEPT_RANGES,
            ]
            .into_iter()
            .chain(files::TUS_RESPONSE_HEADERS.map(HeaderName::from_static))
            .collect::<Vec<_>>(),
        )
        .max_age(std::time::Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        return Some(base.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring invalid CORS origin");
                None
            }
        })
        .collect();
    Some(base.allow_origin(AllowOrigin::list(list)))
}
