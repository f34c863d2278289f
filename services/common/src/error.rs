//! The one error type of Beehive.
//!
//! Services return [`Error`]; it becomes a `tonic::Status` carrying an
//! [`ErrorInfo`](beehive_proto::v1::ErrorInfo) detail with the public error code, and
//! the gateway turns a `Status` back into an [`Error`] and then into API.md's HTTP error
//! body. The code therefore survives every hop unchanged, and internal details (SQL,
//! source errors) are logged where they happen, never sent to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beehive_proto::v1::ErrorInfo;
use prost::Message as _;

/// Result with Beehive's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The public error codes of API.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 9] = [
        Self::InvalidArgument,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The snake_case code clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parses [`ErrorCode::as_str`] output.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status of API.md's table.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The closest gRPC code. `payload_too_large` and `rate_limited` share
    /// `ResourceExhausted`; the `ErrorInfo` detail tells them apart.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::PayloadTooLarge | Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The API code for a gRPC status that carries no `ErrorInfo` (e.g. produced by
    /// tonic itself: a timeout, a refused connection).
    pub fn from_grpc_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Self::InvalidArgument
            }
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists | Code::Aborted => Self::AlreadyExists,
            Code::ResourceExhausted => Self::RateLimited,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
            Code::Ok | Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                Self::Internal
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with a public code and a human message safe to show to clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the caller can fix. `field` names the offending request field.
    #[error("{message}")]
    InvalidArgument {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u32,
    },
    /// A dependency is down or overloaded; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure. The source is logged where the error is turned
    /// into a response, and replaced by a generic message for the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// `invalid_argument` about one request field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// `invalid_argument` not tied to one field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
            field: None,
        }
    }

    /// `internal` from any error; the source is kept for the log.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(source.into())
    }

    /// `unauthenticated` with the message every credential failure shares.
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated("missing, invalid or expired credentials".to_owned())
    }

    /// The public code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Builds an error from a public code and message (the inverse of
    /// [`Error::code`] + `to_string`).
    pub fn from_code(code: ErrorCode, message: String, field: Option<String>, retry: u32) -> Self {
        match code {
            ErrorCode::InvalidArgument => Self::InvalidArgument { message, field },
            ErrorCode::Unauthenticated => Self::Unauthenticated(message),
            ErrorCode::PermissionDenied => Self::PermissionDenied(message),
            ErrorCode::NotFound => Self::NotFound(message),
            ErrorCode::AlreadyExists => Self::AlreadyExists(message),
            ErrorCode::PayloadTooLarge => Self::PayloadTooLarge(message),
            ErrorCode::RateLimited => Self::RateLimited {
                message,
                retry_after_secs: retry.max(1),
            },
            ErrorCode::Unavailable => Self::Unavailable(message),
            ErrorCode::Internal => Self::Internal(message.into()),
        }
    }

    /// The message clients may see: never the source of an internal error.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// Logs internal errors with their source chain; other errors are the caller's
    /// business and are not logged at warn level.
    fn log_if_internal(&self) {
        if let Self::Internal(source) = self {
            tracing::error!(error = %source, "internal error");
        }
    }

    /// Converts a status received from another Beehive service.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Ok(info) = ErrorInfo::decode(status.details())
            && let Some(code) = ErrorCode::parse(&info.code)
        {
            let field = (!info.field.is_empty()).then_some(info.field);
            return Self::from_code(
                code,
                status.message().to_owned(),
                field,
                info.retry_after_seconds,
            );
        }
        let code = ErrorCode::from_grpc_code(status.code());
        match code {
            // A peer's own internal message may hold internals: keep it for the log only.
            ErrorCode::Internal => {
                Self::Internal(format!("{:?}: {}", status.code(), status.message()).into())
            }
            ErrorCode::Unavailable => {
                tracing::warn!(code = ?status.code(), message = status.message(), "dependency unavailable");
                Self::Unavailable("a dependency is unavailable, retry later".to_owned())
            }
            _ => Self::from_code(code, status.message().to_owned(), None, 1),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.log_if_internal();
        let code = error.code();
        let (field, retry_after_seconds) = match &error {
            Error::InvalidArgument { field, .. } => (field.clone().unwrap_or_default(), 0),
            Error::RateLimited {
                retry_after_secs, ..
            } => (String::new(), *retry_after_secs),
            _ => (String::new(), 0),
        };
        let info = ErrorInfo {
            code: code.as_str().to_owned(),
            field,
            retry_after_seconds,
        };
        tonic::Status::with_details(
            code.grpc_code(),
            error.public_message(),
            info.encode_to_vec().into(),
        )
    }
}

impl Error {
    /// This error as the item of a batched call's answer (the status its own call
    /// would have ended with).
    pub fn into_item_status(self) -> beehive_proto::v1::ItemStatus {
        item_status(&tonic::Status::from(self))
    }

    /// The error of one item of a batched call's answer.
    pub fn from_item_status(item: beehive_proto::v1::ItemStatus) -> Self {
        Self::from_status(&tonic::Status::with_details(
            tonic::Code::from_i32(item.code),
            item.message,
            item.details.into(),
        ))
    }
}

/// A status as the item of a batched call's answer.
pub fn item_status(status: &tonic::Status) -> beehive_proto::v1::ItemStatus {
    beehive_proto::v1::ItemStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: status.details().to_vec(),
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("the database is unavailable, retry later".to_owned())
            }
            // Text PostgreSQL cannot store (a NUL character, or bytes that are not
            // valid in the database encoding) is the caller's input, not our fault.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                Self::bad_request("text contains a character that cannot be stored (NUL)")
            }
            _ => Self::internal(error),
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        tracing::warn!(%error, "redis unavailable");
        Self::Unavailable("the cache is unavailable, retry later".to_owned())
    }
}

/// API.md's error body: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    /// The body for a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let code = self.code();
        let body = ErrorBody::new(code, self.public_message());
        let mut response = (code.http_status(), axum::Json(body)).into_response();
        if let Error::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_grpc_hop() {
        for code in ErrorCode::ALL {
            let error = Error::from_code(code, "boom".into(), Some("field".into()), 7);
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code.grpc_code());
            let back = Error::from_status(&status);
            assert_eq!(back.code(), code, "{code}");
            if code != ErrorCode::Internal {
                assert_eq!(back.public_message(), "boom");
            }
        }
    }

    #[test]
    fn every_code_survives_a_batched_item() {
        for code in ErrorCode::ALL {
            let error = Error::from_code(code, "boom".into(), Some("field".into()), 7);
            let item = error.into_item_status();
            assert_eq!(item.code, code.grpc_code() as i32);
            let back = Error::from_item_status(item);
            assert_eq!(back.code(), code, "{code}");
            if code != ErrorCode::Internal {
                assert_eq!(back.public_message(), "boom");
            }
            if code == ErrorCode::InvalidArgument {
                assert!(
                    matches!(back, Error::InvalidArgument { field: Some(ref f), .. } if f == "field")
                );
            }
        }
    }

    #[test]
    fn internal_sources_never_reach_the_client() {
        let error = Error::internal("SELECT * FROM secret failed");
        let status = tonic::Status::from(error);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn statuses_without_detail_map_by_grpc_code() {
        let status = tonic::Status::unavailable("connection refused");
        let error = Error::from_status(&status);
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(!error.public_message().contains("refused"));
        let status = tonic::Status::internal("panic at store.rs:12");
        assert_eq!(
            Error::from_status(&status).public_message(),
            "internal error"
        );
    }

    #[tokio::test]
    async fn rate_limited_response_has_retry_after() {
        let response = Error::RateLimited {
            message: "slow down".into(),
            retry_after_secs: 12,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
    }
}
