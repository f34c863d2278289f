//! The gRPC surface of the file service: decode and validate ids, call
//! [`FileService`], encode. No SQL and no rules here.

use std::pin::Pin;
use std::sync::Arc;

use beehive_common::Error;
use beehive_common::id::parse_id;
use beehive_proto::v1 as pb;
use beehive_proto::v1::file_service_server::FileService as FileRpc;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::service::{FileService, NewUpload, UploadState, WriteStart};
use crate::store::{FileRow, UploadRow};

/// Largest data chunk of one ReadFile message.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// The tonic implementation of `beehive.v1.FileService`.
#[derive(Clone)]
pub struct FileGrpc {
    files: Arc<FileService>,
}

impl FileGrpc {
    /// Serves `files`.
    pub fn new(files: Arc<FileService>) -> Self {
        Self { files }
    }
}

/// The wire form of a file.
pub fn file_message(row: &FileRow) -> pb::File {
    pb::File {
        id: row.id.to_string(),
        sha256: row.sha256.clone(),
        size: u64::try_from(row.size).unwrap_or(0),
        content_type: row.content_type.clone(),
        filename: row.filename.clone(),
        created_at: Some(beehive_common::time::to_timestamp(row.created_at)),
    }
}

fn upload_message(row: &UploadRow) -> pb::Upload {
    pb::Upload {
        id: row.id.to_string(),
        length: u64::try_from(row.length).unwrap_or(0),
        offset: u64::try_from(row.received).unwrap_or(0),
        expires_at: Some(beehive_common::time::to_timestamp(row.expires_at)),
        metadata: row.metadata.clone(),
    }
}

fn upload_response(state: UploadState) -> pb::UploadResponse {
    pb::UploadResponse {
        upload: Some(upload_message(&state.upload)),
        file: state.file.as_ref().map(file_message),
    }
}

/// Splits large chunks so no message exceeds [`MAX_READ_CHUNK`].
fn rechunk(chunk: Bytes) -> impl Stream<Item = Bytes> {
    let mut rest = chunk;
    futures::stream::iter(std::iter::from_fn(move || {
        if rest.is_empty() {
            None
        } else {
            let n = rest.len().min(MAX_READ_CHUNK);
            Some(rest.split_to(n))
        }
    }))
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadFileResponse, Status>> + Send>>;

fn read_stream(first: pb::File, bytes: crate::storage::ByteStream) -> ReadStream {
    let head = futures::stream::once(async move {
        Ok(pb::ReadFileResponse {
            file: Some(first),
            data: Bytes::new().into(),
        })
    });
    let body = bytes
        .map(|chunk| match chunk {
            Ok(chunk) => rechunk(chunk).map(Ok).left_stream(),
            Err(error) => {
                let status: Status = Error::from(error).into();
                futures::stream::once(async move { Err(status) }).right_stream()
            }
        })
        .flatten()
        .map(|item| {
            item.map(|data: Bytes| pb::ReadFileResponse {
                file: None,
                data: data.into(),
            })
        });
    Box::pin(head.chain(body))
}

#[tonic::async_trait]
impl FileRpc for FileGrpc {
    async fn check_file(
        &self,
        request: Request<pb::CheckFileRequest>,
    ) -> Result<Response<pb::FileResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let file = self
            .files
            .check_file(user, &r.sha256, r.size, &r.filename, &r.content_type)
            .await?;
        Ok(Response::new(pb::FileResponse {
            file: Some(file_message(&file)),
        }))
    }

    async fn create_upload(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let state = self
            .files
            .create_upload(
                user,
                NewUpload {
                    length: r.length,
                    filename: r.filename,
                    sha256: r.sha256,
                    content_type: r.content_type,
                    metadata: r.metadata,
                },
            )
            .await?;
        Ok(Response::new(upload_response(state)))
    }

    async fn get_upload(
        &self,
        request: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("upload_id", &r.upload_id)?;
        let state = self.files.get_upload(user, id).await?;
        Ok(Response::new(upload_response(state)))
    }

    async fn write_upload(
        &self,
        request: Request<Streaming<pb::WriteUploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::from(Error::bad_request("an empty write stream")))?;
        let start = WriteStart {
            user: parse_id("user_id", &first.user_id)?,
            upload: parse_id("upload_id", &first.upload_id)?,
            offset: first.offset,
            checksum_algorithm: first.checksum_algorithm,
            checksum: first.checksum.to_vec(),
        };
        let head = futures::stream::iter((!first.data.is_empty()).then(|| Bytes::from(first.data)));
        // A broken stream ends the data: what arrived is kept (the service decides).
        let rest = futures::stream::unfold(stream, |mut stream| async move {
            match stream.message().await {
                Ok(Some(message)) => Some((Bytes::from(message.data), stream)),
                Ok(None) => None,
                Err(status) => {
                    tracing::debug!(%status, "upload stream broke");
                    None
                }
            }
        });
        let state = self
            .files
            .write_upload(start, head.chain(rest).boxed())
            .await?;
        Ok(Response::new(upload_response(state)))
    }

    async fn terminate_upload(
        &self,
        request: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::TerminateUploadResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("upload_id", &r.upload_id)?;
        self.files.terminate_upload(user, id).await?;
        Ok(Response::new(pb::TerminateUploadResponse {}))
    }

    async fn get_file_meta(
        &self,
        request: Request<pb::GetFileMetaRequest>,
    ) -> Result<Response<pb::FileResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("file_id", &r.file_id)?;
        let file = self.files.readable(user, id, false).await?;
        Ok(Response::new(pb::FileResponse {
            file: Some(file_message(&file)),
        }))
    }

    type ReadFileStream = ReadStream;

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("file_id", &r.file_id)?;
        let size = pb::ThumbnailSize::try_from(r.thumbnail)
            .map_err(|_| Status::from(Error::invalid("thumbnail", "unknown thumbnail size")))?;
        if size != pb::ThumbnailSize::Unspecified {
            let (meta, bytes) = self.files.thumbnail(user, id, size).await?;
            let mut file = file_message(&meta.file);
            file.sha256 = meta.sha256;
            file.size = meta.size;
            file.content_type = meta.content_type;
            return Ok(Response::new(read_stream(file, bytes)));
        }
        let (file, bytes) = self.files.read(user, id, r.offset, r.length).await?;
        Ok(Response::new(read_stream(file_message(&file), bytes)))
    }

    async fn delete_file(
        &self,
        request: Request<pb::GetFileMetaRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("file_id", &r.file_id)?;
        self.files.delete_file(user, id).await?;
        Ok(Response::new(pb::DeleteFileResponse {}))
    }

    async fn authorize_file(
        &self,
        request: Request<pb::AuthorizeFileRequest>,
    ) -> Result<Response<pb::AuthorizeFileResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("file_id", &r.file_id)?;
        let file = self.files.readable(user, id, r.share).await?;
        Ok(Response::new(pb::AuthorizeFileResponse {
            file: Some(file_message(&file)),
        }))
    }
}
