//! The JSON of the file endpoints.

use beehive_common::time::to_rfc3339;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// API.md's `file`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct File {
    pub id: String,
    /// 64 lowercase hex characters.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    pub content_type: String,
    pub filename: String,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
}

impl From<pb::File> for File {
    fn from(file: pb::File) -> Self {
        Self {
            created_at: to_rfc3339(file.created_at.as_ref()),
            id: file.id,
            sha256: file.sha256,
            size: file.size,
            content_type: file.content_type,
            filename: file.filename,
        }
    }
}

/// `{file}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileResponse {
    pub file: File,
}

/// `POST /files/check` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckRequest {
    /// 64 lowercase hex characters.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}
