//! The file service's use cases, one method per RPC, plus the sweeper. The only caller
//! of [`Store`]; owns the order of storage writes and database commits that keeps a
//! crash at any point harmless (DESIGN.md, Files; `store::Store::protect`).

use std::sync::Arc;
use std::time::Duration;

use beehive_common::Error;
use beehive_common::grpc::{ClientChannel, Retry};
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::{FileVisibleToRequest, ThumbnailSize};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::config::FileConfig;
use crate::storage::{ByteStream, Storage, StorageError};
use crate::store::{FileRow, NewBlob, NewFile, PartRow, Store, ThumbnailRow, UploadRow};
use crate::thumbnail;
use crate::upload::{self, ChunkChecksum, keys};

/// sha256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An upload with its file once complete.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub upload: UploadRow,
    pub file: Option<FileRow>,
}

/// The first message of a write.
#[derive(Debug, Clone)]
pub struct WriteStart {
    pub user: Uuid,
    pub upload: Uuid,
    pub offset: u64,
    pub checksum_algorithm: String,
    pub checksum: Vec<u8>,
}

/// A create-upload request, validated by [`FileService::create_upload`].
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub length: u64,
    pub filename: String,
    pub sha256: String,
    pub content_type: String,
    pub metadata: String,
}

/// What a thumbnail read answers besides its bytes.
#[derive(Debug, Clone)]
pub struct ThumbnailMeta {
    pub file: FileRow,
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_uploads: u64,
    pub dropped_blobs: u64,
    pub deleted_objects: u64,
    pub unfinished_writes: u64,
}

/// The file service.
pub struct FileService {
    store: Store,
    storage: Arc<dyn Storage>,
    messages: MessageServiceClient<ClientChannel>,
    retry: Retry,
    config: FileConfig,
    /// Thumbnails decode one at a time per process: each may hold a decoded image
    /// (bounded by `thumbnail::MAX_DECODE_ALLOC`) in memory.
    thumbnail_slots: Semaphore,
}

fn file_not_found() -> Error {
    Error::NotFound("file not found".to_owned())
}

fn upload_not_found() -> Error {
    Error::NotFound("upload not found".to_owned())
}

fn to_i64(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::PayloadTooLarge("size out of range".to_owned()))
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl FileService {
    /// The service over its store and storage; `messages` answers which conversations
    /// carry a file.
    pub fn new(
        store: Store,
        storage: Arc<dyn Storage>,
        messages: MessageServiceClient<ClientChannel>,
        config: FileConfig,
    ) -> Self {
        Self {
            store,
            storage,
            messages,
            retry: Retry::default(),
            config,
            thumbnail_slots: Semaphore::new(1),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FileConfig {
        &self.config
    }

    /// How long an object being written stays protected from the sweeper.
    fn write_deadline(&self) -> DateTime<Utc> {
        let protect = self.config.stream_timeout + Duration::from_secs(600);
        Utc::now() + chrono::Duration::from_std(protect).unwrap_or(chrono::Duration::hours(2))
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        if size > self.config.max_size {
            return Err(Error::PayloadTooLarge(format!(
                "files are at most {} bytes",
                self.config.max_size
            )));
        }
        Ok(())
    }

    // --- instant upload ---

    /// API.md `POST /files/check`: a new file of `user` on existing identical content.
    pub async fn check_file(
        &self,
        user: Uuid,
        sha256: &str,
        size: u64,
        filename: &str,
        content_type: &str,
    ) -> Result<FileRow, Error> {
        let sha256 = upload::sha256_hex("sha256", sha256)?;
        self.check_size(size)?;
        let filename = upload::filename(filename);
        let content_type = upload::content_type(content_type)?;
        let file = NewFile {
            id: Uuid::now_v7(),
            owner_id: user,
            filename: &filename,
            content_type: &content_type,
        };
        let row = self
            .store
            .reference_existing(&sha256, to_i64(size)?, &file)
            .await?
            .ok_or_else(|| {
                Error::NotFound("no stored content has this sha256 and size".to_owned())
            })?;
        metrics::counter!("beehive_file_instant_uploads_total").increment(1);
        tracing::info!(file_id = %row.id, user_id = %user, size, "instant upload");
        Ok(row)
    }

    // --- uploads ---

    /// tus creation. A zero-length upload completes at once.
    pub async fn create_upload(&self, user: Uuid, new: NewUpload) -> Result<UploadState, Error> {
        self.check_size(new.length)?;
        let sha256 = upload::sha256_hex("sha256", &new.sha256)?;
        let filename = upload::filename(&new.filename);
        let content_type = upload::content_type(&new.content_type)?;
        if new.metadata.len() > upload::MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "Upload-Metadata is at most {} bytes",
                    upload::MAX_METADATA_BYTES
                ),
            ));
        }
        let expiry = chrono::Duration::from_std(self.config.upload_expiry)
            .unwrap_or(chrono::Duration::hours(24));
        let row = self
            .store
            .insert_upload(
                Uuid::now_v7(),
                user,
                to_i64(new.length)?,
                &sha256,
                &filename,
                &content_type,
                &new.metadata,
                Utc::now() + expiry,
            )
            .await?;
        tracing::info!(upload_id = %row.id, user_id = %user, length = new.length, "upload created");
        if new.length == 0 {
            return self.complete(row, None).await;
        }
        Ok(UploadState {
            upload: row,
            file: None,
        })
    }

    async fn owned_upload(&self, user: Uuid, id: Uuid) -> Result<UploadRow, Error> {
        match self.store.upload(id).await? {
            Some(row) if row.owner_id == user => Ok(row),
            _ => Err(upload_not_found()),
        }
    }

    async fn state(&self, upload: UploadRow) -> Result<UploadState, Error> {
        let file = match upload.file_id {
            Some(id) => self.store.file(id).await?,
            None => None,
        };
        Ok(UploadState { upload, file })
    }

    /// tus HEAD.
    pub async fn get_upload(&self, user: Uuid, id: Uuid) -> Result<UploadState, Error> {
        let row = self.owned_upload(user, id).await?;
        self.state(row).await
    }

    /// tus PATCH: stores the bytes of `data` as one part at `start.offset`. When the
    /// stream ends early (the client went away), what arrived is kept, unless a chunk
    /// checksum was given (it cannot match a partial chunk).
    pub async fn write_upload(
        &self,
        start: WriteStart,
        mut data: BoxStream<'static, Bytes>,
    ) -> Result<UploadState, Error> {
        let row = self.owned_upload(start.user, start.upload).await?;
        let length = to_u64(row.length);
        let received = to_u64(row.received);
        upload::check_offset(received, start.offset)?;
        let mut checksum = ChunkChecksum::expect(&start.checksum_algorithm, &start.checksum)?;
        if row.file_id.is_some() || received == length {
            // Complete already (or a retry after a completion that failed midway):
            // nothing more may be written.
            if let Some(first) = data.next().await
                && !first.is_empty()
            {
                return Err(Error::PayloadTooLarge(
                    "the upload is complete; no more bytes fit".to_owned(),
                ));
            }
            if row.file_id.is_none() {
                return self.complete(row, None).await;
            }
            return self.state(row).await;
        }
        let remaining = length - received;
        let key = keys::part(row.id, start.offset);
        self.store.protect(&key, self.write_deadline()).await?;
        let mut writer = match self.storage.writer(&key).await {
            Ok(w) => w,
            Err(e) => {
                self.store.discard_object(&key).await?;
                return Err(e.into());
            }
        };
        let mut whole = (start.offset == 0).then(Sha256::new);
        let mut written: u64 = 0;
        let mut failure: Option<Error> = None;
        while let Some(chunk) = data.next().await {
            let len = chunk.len() as u64;
            if written + len > remaining {
                failure = Some(Error::PayloadTooLarge(format!(
                    "the chunk goes past Upload-Length ({length} bytes)"
                )));
                break;
            }
            if let Some(c) = checksum.as_mut() {
                c.update(&chunk);
            }
            if let Some(h) = whole.as_mut() {
                h.update(&chunk);
            }
            if let Err(e) = writer.write(chunk).await {
                failure = Some(e.into());
                break;
            }
            written += len;
        }
        if failure.is_none() && checksum.take().is_some_and(|c| !c.matches()) {
            failure = Some(upload::checksum_mismatch());
        }
        if failure.is_some() || written == 0 {
            writer.abort().await;
            self.store.discard_object(&key).await?;
            return match failure {
                Some(error) => Err(error),
                None => self.state(row).await,
            };
        }
        if let Err(error) = writer.finish().await {
            self.store.discard_object(&key).await?;
            return Err(error.into());
        }
        let committed = self
            .store
            .commit_part(
                row.id,
                row.received,
                to_i64(written)?,
                &key,
                i64::from(upload::MAX_PARTS),
            )
            .await?;
        let Some(row) = committed else {
            self.store.discard_object(&key).await?;
            return Err(match self.store.upload(row.id).await? {
                Some(now) if now.received == row.received => Error::PayloadTooLarge(format!(
                    "an upload has at most {} parts; send larger chunks",
                    upload::MAX_PARTS
                )),
                Some(_) => Error::AlreadyExists(
                    "the upload moved on meanwhile (a concurrent PATCH); HEAD it for its offset"
                        .to_owned(),
                ),
                None => upload_not_found(),
            });
        };
        metrics::counter!("beehive_file_upload_bytes_total").increment(written);
        tracing::debug!(upload_id = %row.id, offset = row.received, written, "upload part stored");
        if row.received == row.length {
            let digest = whole
                .filter(|_| written == length)
                .map(|h| hex::encode(h.finalize()));
            return self.complete(row, digest).await;
        }
        Ok(UploadState {
            upload: row,
            file: None,
        })
    }

    /// Verifies and completes a fully received upload. `digest` is the content's
    /// sha256 when the one part just written holds all of it.
    async fn complete(&self, row: UploadRow, digest: Option<String>) -> Result<UploadState, Error> {
        let parts = self.store.parts(row.id).await?;
        let mut next = 0;
        for part in &parts {
            if part.start != next {
                return Err(Error::internal(format!(
                    "upload {} has a gap at byte {next}",
                    row.id
                )));
            }
            next += part.length;
        }
        if next != row.length {
            return Err(Error::internal(format!(
                "upload {} parts do not add up",
                row.id
            )));
        }
        let file = NewFile {
            id: Uuid::now_v7(),
            owner_id: row.owner_id,
            filename: &row.filename,
            content_type: &row.content_type,
        };
        if let Some(existing) = self.store.blob_by_sha(&row.sha256).await? {
            let actual = match &digest {
                Some(d) => d.clone(),
                None => self.hash_parts(&parts).await?,
            };
            if actual != row.sha256 {
                return Err(self.reject(&row).await);
            }
            if to_u64(existing.size) == to_u64(row.length)
                && let Some(file) = self
                    .store
                    .complete_onto_existing(row.id, &row.sha256, &file)
                    .await?
            {
                metrics::counter!("beehive_file_dedup_hits_total").increment(1);
                tracing::info!(upload_id = %row.id, file_id = %file.id, "upload completed onto stored content");
                return self.completed(row.id, file).await;
            }
        }
        let blob_id = Uuid::now_v7();
        let key = keys::blob(&row.sha256, blob_id);
        self.store.protect(&key, self.write_deadline()).await?;
        let written = match (&digest, parts.as_slice()) {
            (Some(d), [single]) => {
                if *d != row.sha256 {
                    Err(None)
                } else {
                    self.storage
                        .link(&single.storage_key, &key)
                        .await
                        .map_err(|e| Some(e.into()))
                }
            }
            _ => self.concatenate(&parts, &key, &row.sha256).await,
        };
        if let Err(error) = written {
            self.store.discard_object(&key).await?;
            return Err(match error {
                Some(error) => error,
                None => self.reject(&row).await,
            });
        }
        let blob = NewBlob {
            id: blob_id,
            sha256: &row.sha256,
            size: row.length,
            storage_key: &key,
        };
        match self.store.complete_with_blob(row.id, &blob, &file).await? {
            Some((file, ours)) => {
                if !ours {
                    metrics::counter!("beehive_file_dedup_hits_total").increment(1);
                }
                tracing::info!(upload_id = %row.id, file_id = %file.id, size = row.length, new_blob = ours, "upload completed");
                self.completed(row.id, file).await
            }
            None => {
                self.store.discard_object(&key).await?;
                let now = self
                    .store
                    .upload(row.id)
                    .await?
                    .ok_or_else(upload_not_found)?;
                self.state(now).await
            }
        }
    }

    async fn completed(&self, upload: Uuid, file: FileRow) -> Result<UploadState, Error> {
        // The parts are garbage now: remove them at once rather than at the next sweep.
        self.collect_garbage().await;
        let row = self
            .store
            .upload(upload)
            .await?
            .ok_or_else(upload_not_found)?;
        Ok(UploadState {
            upload: row,
            file: Some(file),
        })
    }

    /// Discards an upload whose content does not match its sha256, bytes included.
    async fn reject(&self, row: &UploadRow) -> Error {
        tracing::info!(upload_id = %row.id, "uploaded content does not match its sha256; discarded");
        match self.store.delete_upload(row.id).await {
            Ok(_) => {
                self.collect_garbage().await;
                upload::hash_mismatch()
            }
            Err(error) => error.into(),
        }
    }

    async fn hash_parts(&self, parts: &[PartRow]) -> Result<String, Error> {
        let mut hasher = Sha256::new();
        for part in parts {
            let mut stream = self.storage.read(&part.storage_key, None).await?;
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Writes the parts, in order, to `key`, verifying the whole's sha256. `Err(None)`
    /// on a mismatch (nothing was written).
    async fn concatenate(
        &self,
        parts: &[PartRow],
        key: &str,
        sha256: &str,
    ) -> Result<(), Option<Error>> {
        let mut writer = self.storage.writer(key).await.map_err(|e| Some(e.into()))?;
        let mut hasher = Sha256::new();
        for part in parts {
            let stream = self.storage.read(&part.storage_key, None).await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    writer.abort().await;
                    return Err(Some(e.into()));
                }
            };
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        writer.abort().await;
                        return Err(Some(e.into()));
                    }
                };
                hasher.update(&chunk);
                if let Err(e) = writer.write(chunk).await {
                    writer.abort().await;
                    return Err(Some(e.into()));
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 || (parts.is_empty() && sha256 != EMPTY_SHA256) {
            writer.abort().await;
            return Err(None);
        }
        writer.finish().await.map_err(|e| Some(e.into()))
    }

    /// tus termination: the upload and its bytes are gone.
    pub async fn terminate_upload(&self, user: Uuid, id: Uuid) -> Result<(), Error> {
        self.owned_upload(user, id).await?;
        if !self.store.delete_upload(id).await? {
            return Err(upload_not_found());
        }
        self.collect_garbage().await;
        tracing::info!(upload_id = %id, user_id = %user, "upload terminated");
        Ok(())
    }

    // --- files ---

    /// The file if `user` may read it (API.md: its owner, or a member of a
    /// conversation where a message carrying it was sent after the member joined).
    /// With `share`, the file is about to be carried by a message: it is marked so
    /// that its owner deleting it keeps it for the conversation.
    pub async fn readable(&self, user: Uuid, id: Uuid, share: bool) -> Result<FileRow, Error> {
        let file = self.store.file(id).await?.ok_or_else(file_not_found)?;
        if file.owner_id == user && !file.owner_deleted {
            if share && !file.shared && !self.store.mark_shared(id, user).await? {
                // Deleted by its owner meanwhile.
                return Err(file_not_found());
            }
            return Ok(file);
        }
        let request = FileVisibleToRequest {
            user_id: user.to_string(),
            file_id: id.to_string(),
        };
        let messages = self.messages.clone();
        let visible = self
            .retry
            .idempotent(move || {
                let mut messages = messages.clone();
                let request = request.clone();
                async move { messages.file_visible_to(request).await }
            })
            .await
            .map_err(|status| Error::from_status(&status))?
            .into_inner()
            .visible;
        if visible {
            Ok(file)
        } else {
            Err(file_not_found())
        }
    }

    /// The content (or `length` bytes from `offset`; 0 means to the end).
    pub async fn read(
        &self,
        user: Uuid,
        id: Uuid,
        offset: u64,
        length: u64,
    ) -> Result<(FileRow, ByteStream), Error> {
        let file = self.readable(user, id, false).await?;
        let size = to_u64(file.size);
        let end = if length == 0 {
            size
        } else {
            offset.saturating_add(length)
        };
        if offset > size || end > size {
            return Err(Error::invalid(
                "offset",
                format!("the range is outside the file's {size} bytes"),
            ));
        }
        let range = (offset != 0 || end != size).then_some(offset..end);
        let stream = self.storage.read(&file.storage_key, range).await?;
        Ok((file, stream))
    }

    /// A thumbnail of an image file, generated once and cached.
    pub async fn thumbnail(
        &self,
        user: Uuid,
        id: Uuid,
        size: ThumbnailSize,
    ) -> Result<(ThumbnailMeta, ByteStream), Error> {
        let side = thumbnail::max_side(size)
            .ok_or_else(|| Error::invalid("size", "size must be small or medium"))?;
        let code = size as i16;
        let file = self.readable(user, id, false).await?;
        if let Some(cached) = self.cached_thumbnail(&file, code).await? {
            return Ok(cached);
        }
        if to_u64(file.size) > thumbnail::MAX_SOURCE_BYTES {
            return Err(Error::invalid(
                "file_id",
                "the image is too large to thumbnail",
            ));
        }
        let _slot = self
            .thumbnail_slots
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("shutting down".to_owned()))?;
        // Another request may have made it while this one waited.
        if let Some(cached) = self.cached_thumbnail(&file, code).await? {
            return Ok(cached);
        }
        let mut source = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
        let mut stream = self.storage.read(&file.storage_key, None).await?;
        while let Some(chunk) = stream.next().await {
            source.extend_from_slice(&chunk?);
            if source.len() as u64 > thumbnail::MAX_SOURCE_BYTES {
                return Err(Error::invalid(
                    "file_id",
                    "the image is too large to thumbnail",
                ));
            }
        }
        let thumb = tokio::task::spawn_blocking(move || thumbnail::generate(&source, side))
            .await
            .map_err(Error::internal)??;
        let sha256 = hex::encode(Sha256::digest(&thumb.bytes));
        let bytes = Bytes::from(thumb.bytes);
        let key = keys::thumbnail(file.blob_id, code);
        self.store.protect(&key, self.write_deadline()).await?;
        let mut writer = self.storage.writer(&key).await?;
        let stored = async {
            writer.write(bytes.clone()).await?;
            writer.finish().await
        }
        .await;
        let row = ThumbnailRow {
            sha256: sha256.clone(),
            byte_size: bytes.len() as i64,
            content_type: thumb.content_type.to_owned(),
            storage_key: key.clone(),
        };
        match stored {
            Ok(()) => {
                self.store
                    .insert_thumbnail(file.blob_id, code, &row)
                    .await?;
            }
            Err(error) => {
                // Serve it anyway; the next request tries to cache it again.
                tracing::warn!(%error, file_id = %file.id, "cannot cache a thumbnail");
                self.store.discard_object(&key).await?;
            }
        }
        tracing::info!(file_id = %file.id, size = code, width = thumb.width, height = thumb.height, "thumbnail generated");
        let meta = ThumbnailMeta {
            file,
            sha256,
            size: bytes.len() as u64,
            content_type: thumb.content_type.to_owned(),
        };
        Ok((
            meta,
            futures::stream::once(async move { Ok(bytes) }).boxed(),
        ))
    }

    async fn cached_thumbnail(
        &self,
        file: &FileRow,
        code: i16,
    ) -> Result<Option<(ThumbnailMeta, ByteStream)>, Error> {
        let Some(row) = self.store.thumbnail(file.blob_id, code).await? else {
            return Ok(None);
        };
        let stream = match self.storage.read(&row.storage_key, None).await {
            Ok(stream) => stream,
            Err(StorageError::NotFound(_)) => {
                // The cache lost its object (a restored bucket, a manual cleanup): a
                // thumbnail can be made again from the image, so it is, instead of
                // failing every request for it.
                tracing::warn!(file_id = %file.id, storage_key = %row.storage_key, "cached thumbnail object missing; making it again");
                self.store
                    .forget_thumbnail(file.blob_id, code, &row.storage_key)
                    .await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Some((
            ThumbnailMeta {
                file: file.clone(),
                sha256: row.sha256,
                size: to_u64(row.byte_size),
                content_type: row.content_type,
            },
            stream,
        )))
    }

    /// The owner deletes its file.
    pub async fn delete_file(&self, user: Uuid, id: Uuid) -> Result<(), Error> {
        if !self.store.delete_file(id, user).await? {
            return Err(file_not_found());
        }
        tracing::info!(file_id = %id, user_id = %user, "file deleted by its owner");
        Ok(())
    }

    // --- the sweeper ---

    /// Deletes the objects of garbage rows due now (one batch); returns how many.
    pub async fn collect_garbage(&self) -> u64 {
        self.collect_garbage_at(Utc::now()).await
    }

    /// Deletes the objects of garbage rows due at `at` (one batch); returns how many.
    /// Failures are logged and retried at the next sweep.
    pub async fn collect_garbage_at(&self, at: DateTime<Utc>) -> u64 {
        let keys = match self.store.due_garbage(at, self.config.sweep_batch).await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "cannot list garbage");
                return 0;
            }
        };
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            match self.storage.delete(&key).await {
                Ok(()) => deleted.push(key),
                Err(error) => tracing::warn!(%error, storage_key = %key, "cannot delete an object"),
            }
        }
        if deleted.is_empty() {
            return 0;
        }
        if let Err(error) = self.store.forget_garbage(&deleted, at).await {
            tracing::warn!(%error, "cannot forget deleted garbage");
        }
        deleted.len() as u64
    }

    /// One sweep as of `now`: uploads expired and content unreferenced for longer than
    /// the grace period are forgotten, then every due object is deleted, then the
    /// storage's leftovers of crashed writes.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport, Error> {
        let grace =
            chrono::Duration::from_std(self.config.gc_grace).unwrap_or(chrono::Duration::hours(1));
        let before = now - grace;
        let mut report = SweepReport::default();
        loop {
            let n = self
                .store
                .expire_uploads(before, self.config.sweep_batch)
                .await?;
            report.expired_uploads += n;
            if n < self.config.sweep_batch as u64 {
                break;
            }
        }
        loop {
            let n = self
                .store
                .drop_unreferenced_blobs(before, self.config.sweep_batch)
                .await?;
            report.dropped_blobs += n;
            if n < self.config.sweep_batch as u64 {
                break;
            }
        }
        loop {
            let n = self.collect_garbage_at(now).await;
            report.deleted_objects += n;
            if n < self.config.sweep_batch as u64 {
                break;
            }
        }
        report.unfinished_writes = self
            .storage
            .sweep_unfinished(self.config.stream_timeout + Duration::from_secs(600))
            .await?;
        Ok(report)
    }
}
