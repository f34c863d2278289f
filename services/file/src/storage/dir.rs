//! Storage in a directory: `<root>/objects/<key>` for objects, `<root>/tmp/` for
//! writes in progress. A writer writes a temporary file, syncs it and renames it into
//! place, so an object is either complete or absent; the temporary files of a crashed
//! process are removed by [`DirStorage::sweep_unfinished`].

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectWriter, Storage, StorageError};

/// Read chunk size of downloads.
const READ_CHUNK: usize = 64 * 1024;
/// Write buffer of a writer.
const WRITE_BUFFER: usize = 256 * 1024;

/// Objects in a directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    objects: PathBuf,
    tmp: PathBuf,
}

impl DirStorage {
    /// Uses (and creates) `root`.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        fs::create_dir_all(&objects).await?;
        fs::create_dir_all(&tmp).await?;
        Ok(Self { objects, tmp })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        // Keys are ours, but a path must never leave the root whatever happens.
        let safe = !key.is_empty()
            && key.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            });
        if !safe {
            return Err(StorageError::Config(format!("invalid object key {key:?}")));
        }
        Ok(self.objects.join(key))
    }
}

struct DirWriter {
    file: BufWriter<fs::File>,
    tmp: PathBuf,
    target: PathBuf,
}

#[async_trait::async_trait]
impl ObjectWriter for DirWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.file.write_all(&data).await?;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let result = async {
            self.file.flush().await?;
            self.file.get_ref().sync_data().await?;
            if let Some(parent) = self.target.parent() {
                fs::create_dir_all(parent).await?;
            }
            fs::rename(&self.tmp, &self.target).await?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(error) = result {
            let _ = fs::remove_file(&self.tmp).await;
            return Err(error.into());
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        drop(self.file);
        if let Err(error) = fs::remove_file(&self.tmp).await {
            tracing::warn!(%error, path = %self.tmp.display(), "cannot remove an aborted write");
        }
    }
}

fn not_found(key: &str, error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(key.to_owned())
    } else {
        StorageError::Io(error)
    }
}

#[async_trait::async_trait]
impl Storage for DirStorage {
    fn kind(&self) -> &'static str {
        "dir"
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let target = self.path(key)?;
        let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = fs::File::create(&tmp).await?;
        Ok(Box::new(DirWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            tmp,
            target,
        }))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let path = self.path(key)?;
        let mut file = fs::File::open(&path).await.map_err(|e| not_found(key, e))?;
        let stream = match range {
            Some(range) => {
                file.seek(SeekFrom::Start(range.start)).await?;
                let len = range.end.saturating_sub(range.start);
                ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed()
            }
            None => ReaderStream::with_capacity(file, READ_CHUNK).boxed(),
        };
        Ok(stream.map(|r| r.map_err(StorageError::Io)).boxed())
    }

    async fn link(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let source = self.path(from)?;
        let target = self.path(to)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).await?;
        }
        match fs::hard_link(&source, &target).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(from.to_owned()))
            }
            // A retry after a crash finds the link made: same content, same key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => {
                // A filesystem without hard links: copy through a temporary file, then
                // rename, so the target is never half-written.
                let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
                fs::copy(&source, &tmp)
                    .await
                    .map_err(|e| not_found(from, e))?;
                fs::File::open(&tmp).await?.sync_all().await?;
                fs::rename(&tmp, &target).await?;
                Ok(())
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // An upload's directory goes with its last part; failing because it is not
        // empty (or already gone) is the normal case.
        if key.starts_with("uploads/")
            && let Some(parent) = path.parent()
        {
            let _ = fs::remove_dir(parent).await;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![self.objects.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let path = entry.path();
                if entry.file_type().await?.is_dir() {
                    stack.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.objects) {
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn sweep_unfinished(&self, age: Duration) -> Result<u64, StorageError> {
        let mut removed = 0;
        let mut entries = fs::read_dir(&self.tmp).await?;
        while let Some(entry) = entries.next_entry().await? {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age);
            if old && fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut stream: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        out
    }

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("beehive-dir-{}", uuid::Uuid::new_v4().simple()))
    }

    #[tokio::test]
    async fn objects_appear_only_when_finished() {
        let root = temp_root();
        let storage = DirStorage::open(&root).await.expect("open");
        let mut writer = storage.writer("blobs/ab/x").await.expect("writer");
        writer
            .write(Bytes::from_static(b"hello "))
            .await
            .expect("write");
        assert!(matches!(
            storage.read("blobs/ab/x", None).await,
            Err(StorageError::NotFound(_))
        ));
        writer
            .write(Bytes::from_static(b"world"))
            .await
            .expect("write");
        writer.finish().await.expect("finish");
        let all = collect(storage.read("blobs/ab/x", None).await.expect("read")).await;
        assert_eq!(all, b"hello world");
        let part = collect(storage.read("blobs/ab/x", Some(2..7)).await.expect("read")).await;
        assert_eq!(part, b"llo w");

        let mut aborted = storage.writer("blobs/ab/y").await.expect("writer");
        aborted
            .write(Bytes::from_static(b"junk"))
            .await
            .expect("write");
        aborted.abort().await;
        assert!(storage.read("blobs/ab/y", None).await.is_err());
        assert_eq!(std::fs::read_dir(root.join("tmp")).expect("tmp").count(), 0);

        storage
            .link("blobs/ab/x", "blobs/cd/z")
            .await
            .expect("link");
        storage
            .link("blobs/ab/x", "blobs/cd/z")
            .await
            .expect("link again");
        storage.delete("blobs/ab/x").await.expect("delete source");
        let linked = collect(storage.read("blobs/cd/z", None).await.expect("read")).await;
        assert_eq!(linked, b"hello world");
        assert!(matches!(
            storage.link("blobs/ab/x", "blobs/cd/w").await,
            Err(StorageError::NotFound(_))
        ));
        storage.delete("blobs/cd/z").await.expect("delete");
        storage.delete("blobs/cd/z").await.expect("delete twice");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[tokio::test]
    async fn keys_never_leave_the_root_and_crashed_writes_are_swept() {
        let root = temp_root();
        let storage = DirStorage::open(&root).await.expect("open");
        for bad in ["../x", "a//b", "/etc/passwd", "a/./b", "", "a b"] {
            assert!(storage.writer(bad).await.is_err(), "{bad:?}");
        }
        // A writer dropped without finish or abort (a crash) leaves a temporary file.
        let mut writer = storage.writer("uploads/u/0").await.expect("writer");
        writer
            .write(Bytes::from_static(b"partial"))
            .await
            .expect("write");
        drop(writer);
        assert_eq!(
            storage
                .sweep_unfinished(Duration::from_secs(3600))
                .await
                .expect("sweep"),
            0
        );
        assert_eq!(
            storage
                .sweep_unfinished(Duration::ZERO)
                .await
                .expect("sweep"),
            1
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
