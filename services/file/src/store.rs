//! Every SQL statement of the file service (schema `file`), nothing else.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A file with its blob.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FileRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub blob_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub shared: bool,
    pub owner_deleted: bool,
    pub created_at: DateTime<Utc>,
    pub sha256: String,
    pub size: i64,
    pub storage_key: String,
}

/// An upload's state.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UploadRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub length: i64,
    pub received: i64,
    pub sha256: String,
    pub filename: String,
    pub content_type: String,
    pub metadata: String,
    pub file_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

/// One stored part of an upload.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PartRow {
    pub start: i64,
    pub length: i64,
    pub storage_key: String,
}

/// A blob as completion needs it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct BlobRow {
    pub id: Uuid,
    pub size: i64,
    pub storage_key: String,
    pub refcount: i64,
}

/// A cached thumbnail.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub sha256: String,
    pub byte_size: i64,
    pub content_type: String,
    pub storage_key: String,
}

/// A new file's description.
#[derive(Clone, Debug)]
pub struct NewFile<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub filename: &'a str,
    pub content_type: &'a str,
}

/// The new blob of a completion that wrote content.
#[derive(Clone, Debug)]
pub struct NewBlob<'a> {
    pub id: Uuid,
    pub sha256: &'a str,
    pub size: i64,
    pub storage_key: &'a str,
}

const FILE_COLUMNS: &str = "f.id, f.owner_id, f.blob_id, f.filename, f.content_type, f.shared, \
     f.owner_deleted, f.created_at, b.sha256, b.size, b.storage_key";

const UPLOAD_COLUMNS: &str = "id, owner_id, length, received, sha256, filename, content_type, \
     metadata, file_id, expires_at";

/// The file service's statements over one pool.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Statements over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    // --- objects being written: the garbage table's intents ---

    /// Records that `key` is about to be written and is garbage unless made referenced
    /// before `due`.
    pub async fn protect(&self, key: &str, due: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO file.garbage (storage_key, due_at) VALUES ($1, $2)
             ON CONFLICT (storage_key) DO UPDATE SET due_at = EXCLUDED.due_at",
        )
        .bind(key)
        .bind(due)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes `key` garbage now (a write that failed or lost a race).
    pub async fn discard_object(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO file.garbage (storage_key, due_at) VALUES ($1, now())
             ON CONFLICT (storage_key) DO UPDATE SET due_at = now()",
        )
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keys of objects due for deletion at `at`, oldest first.
    pub async fn due_garbage(
        &self,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT storage_key FROM file.garbage WHERE due_at <= $1
              ORDER BY due_at LIMIT $2",
        )
        .bind(at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Forgets garbage whose objects were deleted.
    pub async fn forget_garbage(
        &self,
        keys: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM file.garbage WHERE storage_key = ANY($1) AND due_at <= $2")
            .bind(keys)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- uploads ---

    /// Creates an upload.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_upload(
        &self,
        id: Uuid,
        owner: Uuid,
        length: i64,
        sha256: &str,
        filename: &str,
        content_type: &str,
        metadata: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<UploadRow, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO file.uploads
                 (id, owner_id, length, sha256, filename, content_type, metadata, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING {UPLOAD_COLUMNS}"
        )))
        .bind(id)
        .bind(owner)
        .bind(length)
        .bind(sha256)
        .bind(filename)
        .bind(content_type)
        .bind(metadata)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await
    }

    /// An upload that has not expired.
    pub async fn upload(&self, id: Uuid) -> Result<Option<UploadRow>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM file.uploads WHERE id = $1 AND expires_at > now()"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records a part written at `start`: the upload's offset moves from `start` to
    /// `start + length` and the part's object stops being garbage, in one transaction.
    /// `None` when the offset moved meanwhile (a concurrent writer), the upload
    /// completed or expired, or it has `max_parts` parts already.
    pub async fn commit_part(
        &self,
        upload: Uuid,
        start: i64,
        length: i64,
        key: &str,
        max_parts: i64,
    ) -> Result<Option<UploadRow>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let row: Option<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE file.uploads SET received = received + $3
              WHERE id = $1 AND received = $2 AND file_id IS NULL AND expires_at > now()
                AND received + $3 <= length
                AND (SELECT count(*) FROM file.upload_parts WHERE upload_id = $1) < $4
              RETURNING {UPLOAD_COLUMNS}"
        )))
        .bind(upload)
        .bind(start)
        .bind(length)
        .bind(max_parts)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO file.upload_parts (upload_id, start, length, storage_key)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(upload)
        .bind(start)
        .bind(length)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM file.garbage WHERE storage_key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// An upload's parts in order.
    pub async fn parts(&self, upload: Uuid) -> Result<Vec<PartRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT start, length, storage_key FROM file.upload_parts
              WHERE upload_id = $1 ORDER BY start",
        )
        .bind(upload)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes an upload; its parts become garbage due now. False when there was none.
    pub async fn delete_upload(&self, upload: Uuid) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        forget_parts(&mut tx, upload).await?;
        let deleted = sqlx::query("DELETE FROM file.uploads WHERE id = $1")
            .bind(upload)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    // --- blobs and files ---

    /// The blob holding `sha256`, if any.
    pub async fn blob_by_sha(&self, sha256: &str) -> Result<Option<BlobRow>, sqlx::Error> {
        sqlx::query_as("SELECT id, size, storage_key, refcount FROM file.blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
    }

    /// Instant upload: a new file on the existing blob of (`sha256`, `size`), refcount
    /// + 1, in one transaction. `None` when no such blob exists.
    pub async fn reference_existing(
        &self,
        sha256: &str,
        size: i64,
        file: &NewFile<'_>,
    ) -> Result<Option<FileRow>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(blob) = increment_blob(&mut tx, sha256, Some(size)).await? else {
            return Ok(None);
        };
        let row = insert_file(&mut tx, file, blob).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Completes an upload whose content is already stored: refcount + 1, the file,
    /// the upload marked complete, its parts garbage. `None` when the blob is gone
    /// (swept meanwhile) or the upload was completed or deleted concurrently.
    pub async fn complete_onto_existing(
        &self,
        upload: Uuid,
        sha256: &str,
        file: &NewFile<'_>,
    ) -> Result<Option<FileRow>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(blob) = increment_blob(&mut tx, sha256, None).await? else {
            return Ok(None);
        };
        if !mark_complete(&mut tx, upload, file.id).await? {
            return Ok(None);
        }
        let row = insert_file(&mut tx, file, blob).await?;
        forget_parts(&mut tx, upload).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Completes an upload whose content was just written to `blob.storage_key`: the
    /// blob is inserted, or, when identical content was stored concurrently, the
    /// existing blob gets refcount + 1 and the new object becomes garbage. Returns the
    /// file and whether the new object is the blob's; `None` when the upload was
    /// completed or deleted concurrently.
    pub async fn complete_with_blob(
        &self,
        upload: Uuid,
        blob: &NewBlob<'_>,
        file: &NewFile<'_>,
    ) -> Result<Option<(FileRow, bool)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !mark_complete(&mut tx, upload, file.id).await? {
            return Ok(None);
        }
        let (blob_id, key): (Uuid, String) = sqlx::query_as(
            "INSERT INTO file.blobs (id, sha256, size, storage_key, refcount)
             VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (sha256) DO UPDATE
                SET refcount = file.blobs.refcount + 1, unreferenced_since = NULL
             RETURNING id, storage_key",
        )
        .bind(blob.id)
        .bind(blob.sha256)
        .bind(blob.size)
        .bind(blob.storage_key)
        .fetch_one(&mut *tx)
        .await?;
        let ours = key == blob.storage_key;
        let statement = if ours {
            "DELETE FROM file.garbage WHERE storage_key = $1"
        } else {
            "UPDATE file.garbage SET due_at = now() WHERE storage_key = $1"
        };
        sqlx::query(statement)
            .bind(blob.storage_key)
            .execute(&mut *tx)
            .await?;
        let row = insert_file(&mut tx, file, blob_id).await?;
        forget_parts(&mut tx, upload).await?;
        tx.commit().await?;
        Ok(Some((row, ours)))
    }

    /// A file (whoever owns it, deleted by its owner or not).
    pub async fn file(&self, id: Uuid) -> Result<Option<FileRow>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {FILE_COLUMNS} FROM file.files f JOIN file.blobs b ON b.id = f.blob_id
              WHERE f.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Marks `owner`'s own (not deleted) file as carried by a message. False when it
    /// is not (or no longer) the owner's visible file.
    pub async fn mark_shared(&self, id: Uuid, owner: Uuid) -> Result<bool, sqlx::Error> {
        let updated = sqlx::query(
            "UPDATE file.files SET shared = true
              WHERE id = $1 AND owner_id = $2 AND NOT owner_deleted",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// The owner deletes a file: hidden when a message carries it (it keeps counting),
    /// else removed with refcount - 1. False when the owner has no such visible file.
    pub async fn delete_file(&self, id: Uuid, owner: Uuid) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let found: Option<(bool, Uuid)> = sqlx::query_as(
            "SELECT shared, blob_id FROM file.files
              WHERE id = $1 AND owner_id = $2 AND NOT owner_deleted FOR UPDATE",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((shared, blob)) = found else {
            return Ok(false);
        };
        if shared {
            sqlx::query("UPDATE file.files SET owner_deleted = true WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("DELETE FROM file.files WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE file.blobs SET refcount = refcount - 1,
                        unreferenced_since = CASE WHEN refcount = 1 THEN now() END
                  WHERE id = $1",
            )
            .bind(blob)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    // --- thumbnails ---

    /// The cached thumbnail of a blob.
    pub async fn thumbnail(
        &self,
        blob: Uuid,
        size: i16,
    ) -> Result<Option<ThumbnailRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT sha256, byte_size, content_type, storage_key FROM file.thumbnails
              WHERE blob_id = $1 AND size = $2",
        )
        .bind(blob)
        .bind(size)
        .fetch_optional(&self.pool)
        .await
    }

    /// Forgets a cached thumbnail whose object is missing (only that row: one cached
    /// meanwhile under another key stays).
    pub async fn forget_thumbnail(
        &self,
        blob: Uuid,
        size: i16,
        storage_key: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM file.thumbnails WHERE blob_id = $1 AND size = $2 AND storage_key = $3",
        )
        .bind(blob)
        .bind(size)
        .bind(storage_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Caches a thumbnail written to `row.storage_key`. False when another was cached
    /// first (ours becomes garbage) or the blob is gone.
    pub async fn insert_thumbnail(
        &self,
        blob: Uuid,
        size: i16,
        row: &ThumbnailRow,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO file.thumbnails (blob_id, size, sha256, byte_size, content_type, storage_key)
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM file.blobs WHERE id = $1)
             ON CONFLICT (blob_id, size) DO NOTHING",
        )
        .bind(blob)
        .bind(size)
        .bind(&row.sha256)
        .bind(row.byte_size)
        .bind(&row.content_type)
        .bind(&row.storage_key)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let statement = if inserted {
            "DELETE FROM file.garbage WHERE storage_key = $1"
        } else {
            "UPDATE file.garbage SET due_at = now() WHERE storage_key = $1"
        };
        sqlx::query(statement)
            .bind(&row.storage_key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    // --- the sweeper ---

    /// Deletes up to `limit` uploads that expired before `before`; their parts become
    /// garbage due now. Rows another sweeper holds are skipped.
    pub async fn expire_uploads(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(
            "WITH doomed AS (
                 SELECT id FROM file.uploads WHERE expires_at < $1
                  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             garbage AS (
                 INSERT INTO file.garbage (storage_key, due_at)
                 SELECT p.storage_key, now() FROM file.upload_parts p
                  WHERE p.upload_id IN (SELECT id FROM doomed)
                 ON CONFLICT (storage_key) DO UPDATE SET due_at = now())
             DELETE FROM file.uploads u USING doomed d WHERE u.id = d.id",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Deletes up to `limit` blobs whose refcount has been 0 since before `before`;
    /// their objects and thumbnails become garbage due now.
    pub async fn drop_unreferenced_blobs(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(
            "WITH doomed AS (
                 SELECT id, storage_key FROM file.blobs
                  WHERE refcount = 0 AND unreferenced_since < $1
                  ORDER BY unreferenced_since LIMIT $2 FOR UPDATE SKIP LOCKED),
             garbage AS (
                 INSERT INTO file.garbage (storage_key, due_at)
                 SELECT storage_key, now() FROM doomed
                 UNION ALL
                 SELECT t.storage_key, now() FROM file.thumbnails t
                  WHERE t.blob_id IN (SELECT id FROM doomed)
                 ON CONFLICT (storage_key) DO UPDATE SET due_at = now())
             DELETE FROM file.blobs b USING doomed d WHERE b.id = d.id",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

/// refcount + 1 on the blob of `sha256` (and `size`, when given), bringing it back
/// from "unreferenced". Its id, or `None` when there is none.
async fn increment_blob(
    tx: &mut Transaction<'_, Postgres>,
    sha256: &str,
    size: Option<i64>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE file.blobs SET refcount = refcount + 1, unreferenced_since = NULL
          WHERE sha256 = $1 AND ($2::bigint IS NULL OR size = $2)
          RETURNING id",
    )
    .bind(sha256)
    .bind(size)
    .fetch_optional(&mut **tx)
    .await
}

async fn insert_file(
    tx: &mut Transaction<'_, Postgres>,
    file: &NewFile<'_>,
    blob: Uuid,
) -> Result<FileRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH f AS (
             INSERT INTO file.files (id, owner_id, blob_id, filename, content_type)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING *)
         SELECT {FILE_COLUMNS} FROM f JOIN file.blobs b ON b.id = f.blob_id"
    )))
    .bind(file.id)
    .bind(file.owner_id)
    .bind(blob)
    .bind(file.filename)
    .bind(file.content_type)
    .fetch_one(&mut **tx)
    .await
}

/// Marks the upload complete with its file; false when it already was, or is gone.
async fn mark_complete(
    tx: &mut Transaction<'_, Postgres>,
    upload: Uuid,
    file: Uuid,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE file.uploads SET file_id = $2 WHERE id = $1 AND file_id IS NULL AND received = length",
    )
    .bind(upload)
    .bind(file)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Deletes an upload's part rows, making their objects garbage due now.
async fn forget_parts(tx: &mut Transaction<'_, Postgres>, upload: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH gone AS (DELETE FROM file.upload_parts WHERE upload_id = $1 RETURNING storage_key)
         INSERT INTO file.garbage (storage_key, due_at) SELECT storage_key, now() FROM gone
         ON CONFLICT (storage_key) DO UPDATE SET due_at = now()",
    )
    .bind(upload)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
