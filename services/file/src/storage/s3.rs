//! Storage in an S3-compatible bucket through `object_store`.
//!
//! Writers use multipart uploads (5 MiB parts, at most two in flight), so memory per
//! write is bounded whatever the object's size, and the object appears only when the
//! upload completes. A process that dies mid-write leaves an incomplete multipart upload,
//! invisible and never listed as an object; S3 removes those with a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`), which docs/operator.md asks for.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::{ByteStream, ObjectWriter, Storage, StorageError};

/// Multipart part size (S3's minimum for all but the last part).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploading at once per writer.
const PARTS_IN_FLIGHT: usize = 2;

/// Where the bucket is, parsed from `BEEHIVE_FILE_S3_URL`:
/// `s3://[KEY:SECRET@]host[:port]/bucket[?region=R]` (HTTPS) or `s3+http://...`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: Option<String>,
    secret_key: Option<String>,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Location")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad percent-encoding in the URL".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's credentials are not UTF-8".to_owned())
}

impl S3Location {
    /// Parses the URL. Errors never echo the URL (it may hold a secret).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected s3://... or s3+http://...".to_owned())?;
        let http_scheme = match scheme {
            "s3" | "s3+https" => "https",
            "s3+http" => "http",
            _ => return Err("the scheme must be s3, s3+https or s3+http".to_owned()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| "the URL needs a bucket: s3://host/bucket".to_owned())?;
        let bucket = path.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err("the URL's path must be exactly the bucket name".to_owned());
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err("the URL needs a host".to_owned());
        }
        let (access_key, secret_key) = match userinfo {
            Some(info) => {
                let (key, secret) = info
                    .split_once(':')
                    .ok_or_else(|| "credentials must be KEY:SECRET".to_owned())?;
                (Some(percent_decode(key)?), Some(percent_decode(secret)?))
            }
            None => (None, None),
        };
        let mut region = "us-east-1".to_owned();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("region", value)) if !value.is_empty() => region = value.to_owned(),
                _ => return Err("the only query parameter is region=...".to_owned()),
            }
        }
        Ok(Self {
            endpoint: format!("{http_scheme}://{host}"),
            bucket: bucket.to_owned(),
            region,
            access_key,
            secret_key,
        })
    }
}

/// Objects in a bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
}

fn store_error(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        // object_store's messages hold URLs and paths, never credentials.
        other => StorageError::Store(other.to_string()),
    }
}

impl S3Storage {
    /// A client for `location` (nothing is dialled yet).
    pub fn open(location: &S3Location) -> Result<Self, StorageError> {
        beehive_common::tls::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env()
            .with_endpoint(&location.endpoint)
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_allow_http(location.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
        if let (Some(key), Some(secret)) = (&location.access_key, &location.secret_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
        })
    }
}

struct S3Writer {
    upload: WriteMultipart,
}

#[async_trait::async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        // Backpressure: at most PARTS_IN_FLIGHT parts uploading plus one buffering.
        self.upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(store_error)?;
        self.upload.put(data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        self.upload.finish().await.map_err(store_error)?;
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(%error, "cannot abort a multipart upload");
        }
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let upload = self
            .store
            .put_multipart(&Path::from(key))
            .await
            .map_err(store_error)?;
        Ok(Box::new(S3Writer {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
        }))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        if let Some(range) = &range
            && range.is_empty()
        {
            // S3 refuses an empty range; an empty read is simply nothing.
            return Ok(futures::stream::empty().boxed());
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&Path::from(key), options)
            .await
            .map_err(store_error)?;
        Ok(result.into_stream().map(|r| r.map_err(store_error)).boxed())
    }

    async fn link(&self, from: &str, to: &str) -> Result<(), StorageError> {
        // Server-side copy: the bytes never travel through this process.
        self.store
            .copy(&Path::from(from), &Path::from(to))
            .await
            .map_err(store_error)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(store_error(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        let mut listing = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            out.push(meta.map_err(store_error)?.location.to_string());
        }
        out.sort();
        Ok(out)
    }

    async fn sweep_unfinished(&self, _age: Duration) -> Result<u64, StorageError> {
        // Incomplete multipart uploads are not objects; the bucket's lifecycle rule
        // removes them.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoint_bucket_region_and_credentials() {
        let l = S3Location::parse("s3://access:se%2Fcret@minio.storage.svc:9000/beehive")
            .expect("valid");
        assert_eq!(l.endpoint, "https://minio.storage.svc:9000");
        assert_eq!(l.bucket, "beehive");
        assert_eq!(l.region, "us-east-1");
        assert_eq!(l.access_key.as_deref(), Some("access"));
        assert_eq!(l.secret_key.as_deref(), Some("se/cret"));
        assert!(!format!("{l:?}").contains("cret"));
        let l = S3Location::parse("s3+http://127.0.0.1:5000/b/?region=eu-west-1").expect("valid");
        assert_eq!(l.endpoint, "http://127.0.0.1:5000");
        assert_eq!(l.region, "eu-west-1");
        assert_eq!(l.access_key, None);
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_secrets() {
        for bad in [
            "http://host/bucket",
            "s3://host",
            "s3://host/",
            "s3://host/a/b",
            "s3://k@host/b",
            "s3:///bucket",
            "s3://k:hunter2@host/b?x=1",
            "s3://k:%zz@host/b",
        ] {
            let error = S3Location::parse(bad).expect_err(bad);
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
