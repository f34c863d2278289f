//! Files over REST: the tus 1.0.0 upload endpoints (core, creation, termination,
//! expiration, checksum), instant upload, downloads with validators and ranges, and
//! thumbnails. The rules are the core's ([`app::files`]); bytes stream in both
//! directions between the client and the file service.
//!
//! Where tus defines a status or header it wins over API.md's general rules (415 for a
//! PATCH with another Content-Type, 460 for a chunk checksum mismatch, 412 for a
//! missing or unsupported `Tus-Resumable`); every tus response carries
//! `Tus-Resumable: 1.0.0`, errors included, with API.md's error body.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use beehive_proto::v1 as pb;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use crate::app::files::{self as core, RangeRequest, TUS_VERSION};
use crate::auth::AuthUser;
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::wire::files::{CheckRequest, File, FileResponse};
use crate::wire::model::ErrorResponse;

static TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
static TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
static TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
static TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
static TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
static UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
static UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
static UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
static UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
static UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
static UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
/// API.md: the completed upload's file id.
pub static BEEHIVE_FILE_ID: HeaderName = HeaderName::from_static("beehive-file-id");

/// The headers a browser tus client must be allowed to send (CORS).
pub const TUS_REQUEST_HEADERS: [&str; 7] = [
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "upload-checksum",
    "upload-defer-length",
    "x-http-method-override",
];
/// The headers a browser tus client must be able to read (CORS).
pub const TUS_RESPONSE_HEADERS: [&str; 10] = [
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "beehive-file-id",
];

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An HTTP-date (RFC 9110) of a protobuf timestamp.
fn http_date(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let time = beehive_common::time::from_timestamp(ts?)?;
    Some(time.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

/// API.md's error body with a status tus defines.
fn error_with_status(status: StatusCode, error: Error) -> Response {
    let mut response = error.into_response();
    *response.status_mut() = status;
    response
}

/// Adds `Tus-Resumable` to any outcome of a tus handler.
fn tus(result: Result<Response, Error>) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(error) if core::is_checksum_mismatch(&error) => {
            // tus checksum extension: 460 Checksum Mismatch.
            error_with_status(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                error,
            )
        }
        Err(error) => error.into_response(),
    };
    response
        .headers_mut()
        .insert(TUS_RESUMABLE.clone(), HeaderValue::from_static(TUS_VERSION));
    response
}

/// tus: a request must speak our version; the 412 (with `Tus-Version`) otherwise.
fn reject_tus(headers: &HeaderMap) -> Option<Response> {
    if header_str(headers, &TUS_RESUMABLE).map(str::trim) == Some(TUS_VERSION) {
        return None;
    }
    let mut response = error_with_status(
        StatusCode::PRECONDITION_FAILED,
        Error::invalid(
            "tus_resumable",
            "Tus-Resumable: 1.0.0 is required (the only tus version served)",
        ),
    );
    response
        .headers_mut()
        .insert(TUS_VERSION_H.clone(), HeaderValue::from_static(TUS_VERSION));
    Some(response)
}

fn upload_headers(response: &mut Response, upload: &pb::UploadResponse) {
    let headers = response.headers_mut();
    if let Some(u) = &upload.upload {
        headers.insert(UPLOAD_OFFSET.clone(), HeaderValue::from(u.offset));
        if let Some(expires) = http_date(u.expires_at.as_ref()) {
            headers.insert(UPLOAD_EXPIRES.clone(), value(&expires));
        }
    }
    if let Some(file) = &upload.file {
        headers.insert(BEEHIVE_FILE_ID.clone(), value(&file.id));
    }
}

/// tus discovery: version, extensions, limits.
#[utoipa::path(options, path = "/api/v1/files/uploads", tag = "files",
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm")))]
pub async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(TUS_VERSION_H.clone(), HeaderValue::from_static(TUS_VERSION));
    headers.insert(
        TUS_EXTENSION.clone(),
        HeaderValue::from_static(core::TUS_EXTENSIONS),
    );
    headers.insert(
        TUS_MAX_SIZE.clone(),
        HeaderValue::from(state.config.file_max_size),
    );
    headers.insert(
        TUS_CHECKSUM_ALGORITHM.clone(),
        HeaderValue::from_static(core::TUS_CHECKSUM_ALGORITHMS),
    );
    tus(Ok(response))
}

/// tus creation: `Upload-Length`, `Upload-Metadata` (base64 `filename`, `sha256`
/// (required), `content_type`).
#[utoipa::path(post, path = "/api/v1/files/uploads", tag = "files", security(("bearer" = [])),
    params(("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Length" = u64, Header, description = "Total bytes"),
        ("Upload-Metadata" = String, Header, description = "filename, sha256 (required), content_type; base64 values")),
    responses((status = 201, description = "Created; Location and Upload-Expires (an HTTP-date)"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 412, body = ErrorResponse, description = "Tus-Resumable missing or unsupported"),
        (status = 413, body = ErrorResponse, description = "Upload-Length over the maximum size")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Result<AuthUser, Error>,
    headers: HeaderMap,
) -> Response {
    // API.md: an oversized Upload-Length is 413, checked before anything else.
    let length = core::parse_u64_header("Upload-Length", header_str(&headers, &UPLOAD_LENGTH));
    if let Ok(length) = &length
        && let Err(error) = core::check_length(*length, state.config.file_max_size)
    {
        return tus(Err(error));
    }
    let claims = match auth {
        Ok(AuthUser(claims)) => claims,
        Err(error) => return tus(Err(error)),
    };
    if let Some(response) = reject_tus(&headers) {
        return response;
    }
    tus(async {
        if headers.contains_key(&UPLOAD_DEFER_LENGTH) {
            return Err(Error::invalid(
                "upload_defer_length",
                "Upload-Defer-Length is not supported: give Upload-Length",
            ));
        }
        let length = length?;
        let raw = header_str(&headers, &UPLOAD_METADATA).unwrap_or_default();
        let metadata = core::parse_metadata(Some(raw))?;
        let created =
            core::create_upload(&state.clients, &claims.user_id, length, raw, metadata).await?;
        let id = created
            .upload
            .as_ref()
            .map(|u| u.id.clone())
            .ok_or_else(|| Error::internal("file service answered without an upload"))?;
        let mut response = StatusCode::CREATED.into_response();
        response.headers_mut().insert(
            header::LOCATION,
            value(&format!("/api/v1/files/uploads/{id}")),
        );
        upload_headers(&mut response, &created);
        Ok(response)
    }
    .await)
}

/// tus: an upload's offset (only its uploader sees it).
#[utoipa::path(head, path = "/api/v1/files/uploads/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires, Cache-Control: no-store; Beehive-File-Id once complete"),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn head_upload(
    State(state): State<AppState>,
    auth: Result<AuthUser, Error>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let claims = match auth {
        Ok(AuthUser(claims)) => claims,
        Err(error) => return tus(Err(error)),
    };
    if let Some(response) = reject_tus(&headers) {
        return response;
    }
    tus(async {
        let upload_id = core::upload_id(&id)?;
        let state_of = state
            .clients
            .get_upload(pb::GetUploadRequest {
                user_id: claims.user_id.clone(),
                upload_id,
            })
            .await?;
        let mut response = StatusCode::OK.into_response();
        upload_headers(&mut response, &state_of);
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(u) = &state_of.upload {
            headers.insert(UPLOAD_LENGTH.clone(), HeaderValue::from(u.length));
            if !u.metadata.is_empty() {
                headers.insert(UPLOAD_METADATA.clone(), value(&u.metadata));
            }
        }
        Ok(response)
    }
    .await)
}

/// tus: appends the body at `Upload-Offset`.
#[utoipa::path(patch, path = "/api/v1/files/uploads/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id"),
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Offset" = u64, Header, description = "Must equal the stored offset"),
        ("Upload-Checksum" = Option<String>, Header, description = "sha1 or sha256 and the base64 digest of this chunk")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "New Upload-Offset; Beehive-File-Id when complete"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "Upload-Offset is not the stored offset, or the completed content does not match its sha256 (the upload is discarded)"),
        (status = 413, body = ErrorResponse, description = "More bytes than Upload-Length"),
        (status = 415, body = ErrorResponse, description = "Content-Type is not application/offset+octet-stream"),
        (status = 460, body = ErrorResponse, description = "Chunk checksum mismatch; nothing of the chunk was kept")))]
pub async fn patch_upload(
    State(state): State<AppState>,
    auth: Result<AuthUser, Error>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let claims = match auth {
        Ok(AuthUser(claims)) => claims,
        Err(error) => return tus(Err(error)),
    };
    if let Some(response) = reject_tus(&headers) {
        return response;
    }
    let content_type = header_str(&headers, &header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some(core::OFFSET_OCTET_STREAM) {
        return tus(Ok(error_with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::bad_request(
                "a PATCH body must be Content-Type: application/offset+octet-stream",
            ),
        )));
    }
    tus(async {
        let upload_id = core::upload_id(&id)?;
        let offset = core::parse_u64_header("Upload-Offset", header_str(&headers, &UPLOAD_OFFSET))?;
        let checksum = core::parse_checksum(header_str(&headers, &UPLOAD_CHECKSUM))?;
        let written = core::write(
            &state.clients,
            &claims.user_id,
            upload_id,
            offset,
            checksum,
            body.into_data_stream(),
            state.config.upload_idle_timeout,
        )
        .await?;
        let mut response = StatusCode::NO_CONTENT.into_response();
        upload_headers(&mut response, &written);
        Ok(response)
    }
    .await)
}

/// tus termination: the upload and its bytes are gone.
#[utoipa::path(delete, path = "/api/v1/files/uploads/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204, description = "Terminated"), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn delete_upload(
    State(state): State<AppState>,
    auth: Result<AuthUser, Error>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let claims = match auth {
        Ok(AuthUser(claims)) => claims,
        Err(error) => return tus(Err(error)),
    };
    if let Some(response) = reject_tus(&headers) {
        return response;
    }
    tus(async {
        let upload_id = core::upload_id(&id)?;
        state
            .clients
            .terminate_upload(pb::GetUploadRequest {
                user_id: claims.user_id.clone(),
                upload_id,
            })
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await)
}

/// Instant upload: when identical content is stored, the caller gets its own file of
/// it (with the given filename and content type); 404 otherwise.
#[utoipa::path(post, path = "/api/v1/files/check", tag = "files", security(("bearer" = [])),
    request_body = CheckRequest,
    responses((status = 200, body = FileResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse, description = "No identical content stored: upload it"),
        (status = 413, body = ErrorResponse)))]
pub async fn check(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<CheckRequest>,
) -> Result<Json<FileResponse>, Error> {
    let input = core::CheckInput {
        sha256: body.sha256,
        size: body.size,
        filename: body.filename,
        content_type: body.content_type,
    };
    let file = core::check(
        &state.clients,
        &claims.user_id,
        input,
        state.config.file_max_size,
    )
    .await?;
    Ok(Json(FileResponse {
        file: File::from(file),
    }))
}

/// The bytes of a `ReadFile` stream after its first (metadata) message.
fn body_of(stream: tonic::Streaming<pb::ReadFileResponse>) -> Body {
    Body::from_stream(stream.filter_map(|item| async move {
        match item {
            Ok(message) if message.data.is_empty() => None,
            Ok(message) => Some(Ok(Bytes::from(message.data))),
            Err(status) => {
                tracing::warn!(%status, "download stream failed");
                Some(Err(std::io::Error::other(status.message().to_owned())))
            }
        }
    }))
}

fn download_headers(response: &mut Response, file: &pb::File, tag: &str, disposition: bool) {
    let headers = response.headers_mut();
    headers.insert(header::ETAG, value(tag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    // Nothing served from here may run with the API's origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if disposition {
        headers.insert(
            header::CONTENT_DISPOSITION,
            value(&core::content_disposition(
                &file.filename,
                &file.content_type,
            )),
        );
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
}

/// The file's bytes, with `ETag` (the sha256), single `Range` (206/416),
/// `If-None-Match` (304), `Content-Disposition` and `nosniff`.
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id"),
        ("Range" = Option<String>, Header, description = "One byte range: bytes=A-B, bytes=A-, bytes=-N"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a cached copy")),
    responses((status = 200, description = "The bytes", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range, with Content-Range"),
        (status = 304, description = "Not modified"),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 416, body = ErrorResponse, description = "Range not satisfiable; Content-Range: bytes */size")))]
pub async fn download(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let file_id = core::file_id(&id)?;
    let file = state
        .clients
        .get_file_meta(pb::GetFileMetaRequest {
            user_id: claims.user_id.clone(),
            file_id: file_id.clone(),
        })
        .await?
        .file
        .ok_or_else(|| Error::internal("file service answered without a file"))?;
    let tag = core::etag(&file.sha256);
    if core::none_match(header_str(&headers, &header::IF_NONE_MATCH), &tag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        download_headers(&mut response, &file, &tag, false);
        return Ok(response);
    }
    let size = file.size;
    let (status, offset, length) =
        match core::parse_range(header_str(&headers, &header::RANGE), size) {
            RangeRequest::Full => (StatusCode::OK, 0, 0),
            RangeRequest::Partial { start, end } => {
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            RangeRequest::Unsatisfiable => {
                let mut response = error_with_status(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    Error::invalid("range", format!("the file has {size} bytes")),
                );
                response
                    .headers_mut()
                    .insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
                return Ok(response);
            }
        };
    let stream = state
        .clients
        .read_file(pb::ReadFileRequest {
            user_id: claims.user_id,
            file_id,
            offset,
            length,
            thumbnail: pb::ThumbnailSize::Unspecified as i32,
        })
        .await?;
    let mut response = Response::new(body_of(stream));
    *response.status_mut() = status;
    download_headers(&mut response, &file, &tag, true);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, value(&file.content_type));
    let sent = if status == StatusCode::PARTIAL_CONTENT {
        length
    } else {
        size
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {offset}-{}/{size}", offset + length - 1)),
        );
    }
    Ok(response)
}

/// `{file}`: the metadata of a file the caller may read.
#[utoipa::path(get, path = "/api/v1/files/{id}/meta", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn meta(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FileResponse>, Error> {
    let file_id = core::file_id(&id)?;
    let file = state
        .clients
        .get_file_meta(pb::GetFileMetaRequest {
            user_id: claims.user_id,
            file_id,
        })
        .await?
        .file
        .ok_or_else(|| Error::internal("file service answered without a file"))?;
    Ok(Json(FileResponse {
        file: File::from(file),
    }))
}

/// `GET /files/{id}/thumbnail` query.
#[derive(Debug, Deserialize)]
pub struct ThumbnailQuery {
    pub size: Option<String>,
}

/// A JPEG or PNG of an image file, at most 160 (small) or 640 (medium) px on its
/// longest side, generated once and cached.
#[utoipa::path(get, path = "/api/v1/files/{id}/thumbnail", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id"),
        ("size" = Option<String>, Query, description = "small (default, 160 px) or medium (640 px)")),
    responses((status = 200, description = "image/jpeg or image/png"),
        (status = 304, description = "Not modified"),
        (status = 400, body = ErrorResponse, description = "Not an image this server can thumbnail, or too large"),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn thumbnail(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ThumbnailQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let file_id = core::file_id(&id)?;
    let size = core::thumbnail_size(query.size.as_deref())?;
    let mut stream = state
        .clients
        .read_file(pb::ReadFileRequest {
            user_id: claims.user_id,
            file_id,
            offset: 0,
            length: 0,
            thumbnail: size as i32,
        })
        .await?;
    let first = stream
        .message()
        .await
        .map_err(|status| Error::from_status(&status))?
        .and_then(|m| m.file)
        .ok_or_else(|| Error::internal("thumbnail stream without metadata"))?;
    let tag = core::etag(&first.sha256);
    if core::none_match(header_str(&headers, &header::IF_NONE_MATCH), &tag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        download_headers(&mut response, &first, &tag, false);
        return Ok(response);
    }
    let mut response = Response::new(body_of(stream));
    download_headers(&mut response, &first, &tag, false);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, value(&first.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(first.size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    Ok(response)
}

/// The caller's own file disappears from its view; messages that carry it keep
/// working for their conversations.
#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Error> {
    let file_id = core::file_id(&id)?;
    state
        .clients
        .delete_file(pb::GetFileMetaRequest {
            user_id: claims.user_id,
            file_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
