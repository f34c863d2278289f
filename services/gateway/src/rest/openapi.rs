//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations
//! and the DTOs' schemas, served at `GET /api/v1/openapi.json`.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::rest::{auth, conversations, files, friends, messages, presence, search, users};

/// The document's root; `paths(...)` lists every annotated handler.
#[derive(OpenApi)]
#[openapi(
    info(title = "Beehive API", version = "1", description = "Beehive instant messaging: REST API v1. Errors are `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        serve,
        auth::send_code, auth::register, auth::login, auth::refresh, auth::logout, auth::jwks,
        users::me, users::update_me, users::change_password, users::get, users::batch, users::search,
        friends::send, friends::list_requests, friends::accept, friends::reject, friends::list, friends::delete,
        conversations::create_group, conversations::update_group, conversations::add_members,
        conversations::remove_member, conversations::list, conversations::get,
        conversations::messages, conversations::receipts, conversations::read,
        messages::send, presence::get, search::messages,
        files::check, files::options, files::create, files::head_upload, files::patch_upload,
        files::delete_upload, files::download, files::delete, files::meta, files::thumbnail,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "users", description = "Profiles"),
        (name = "friends", description = "Friend requests and friendships"),
        (name = "conversations", description = "Groups, conversations, history, receipts"),
        (name = "messages", description = "Sending"),
        (name = "presence", description = "Who is online"),
        (name = "search", description = "Message history search"),
        (name = "files", description = "Resumable uploads (tus 1.0.0), instant upload, downloads, thumbnails"),
        (name = "meta", description = "This document"),
    ),
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the authenticated operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The generated document (built once).
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// Every (method, path) the document describes, lowercase methods.
pub fn operations() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = document().get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in [
                    "get", "put", "post", "delete", "options", "head", "patch", "trace",
                ] {
                    if item.contains_key(method) {
                        out.push((method.to_owned(), path.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Serves the OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json")))]
pub async fn serve() -> Json<&'static serde_json::Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_served_routes() {
        let mut served: Vec<(String, String)> = crate::rest::SERVED_ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        served.sort();
        assert_eq!(operations(), served);
    }

    #[test]
    fn the_document_is_openapi_3_with_schemas() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .unwrap_or_default()
                .starts_with("3.")
        );
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in ["User", "SessionResponse", "ErrorResponse", "JwkSet"] {
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
