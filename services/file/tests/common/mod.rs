//! The file service's test harness: the real service bound on a loopback port with
//! its sweeper, the real message service (file access through conversations), real
//! PostgreSQL, and storage in a private directory or a real S3-compatible server.
//!
//! S3: `BEEHIVE_TEST_S3_URL` (an `s3+http://KEY:SECRET@host:port/bucket` URL) when
//! set; otherwise the harness starts `moto_server` (PyPI `moto[server]`, which
//! scripts/test.sh installs) on a free port for this test binary. Without either, S3
//! tests fail in CI (`CI` set) and are skipped with a loud message elsewhere.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use beehive_common::{Component, Shutdown};
use beehive_file::FileConfig;
use beehive_file::storage::StorageConfig;
use beehive_file::storage::s3::S3Location;
use beehive_proto::v1 as pb;
use beehive_proto::v1::file_service_client::FileServiceClient;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_testkit::TestEnv;
use beehive_testkit::serve::{context, loopback};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// One test's file service.
pub struct Harness {
    pub env: TestEnv,
    pub files: FileServiceClient<Channel>,
    pub messages: MessageServiceClient<Channel>,
    pub service: std::sync::Arc<beehive_file::FileService>,
    /// The storage directory (directory backend only).
    pub dir: Option<PathBuf>,
    /// The same storage, opened separately, to see what is stored.
    pub storage: std::sync::Arc<dyn beehive_file::storage::Storage>,
    pub config: FileConfig,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Which storage a harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Dir,
    S3,
}

fn moto_bin() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        candidates.push(home.join(".cache/beehive-tools/files/bin/moto_server"));
        candidates.push(home.join(".local/bin/moto_server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("moto_server")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

async fn port_answers(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// A minimal HTTP/1.1 PUT: creates a bucket on moto (it does not check signatures).
async fn create_bucket(addr: SocketAddr, bucket: &str) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to moto");
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200") || text.contains("BucketAlreadyOwnedByYou"),
        "moto refused to create the bucket: {text}"
    );
}

/// The base URL (without bucket) of the S3 server for this test binary, started once.
async fn s3_server() -> Option<String> {
    static SERVER: OnceLock<Option<SocketAddr>> = OnceLock::new();
    if let Ok(url) = std::env::var("BEEHIVE_TEST_S3_URL") {
        return Some(url);
    }
    let addr = *SERVER.get_or_init(|| {
        let bin = moto_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        // The shell keeps moto alive while this process holds its stdin open: when the
        // test binary exits, `cat` ends and moto is killed. No orphan server.
        let script = format!(
            "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; cat >/dev/null; kill $m",
            bin.display()
        );
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Never waited for: it lives as long as this process.
        std::mem::forget(child);
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    });
    let addr = addr?;
    for _ in 0..120 {
        if port_answers(addr).await {
            return Some(format!("s3+http://testing:testing@{addr}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("moto_server did not open {addr} within 30 s");
}

/// An S3 location with a fresh bucket, or `None` (after a loud message) when no S3
/// server can be had outside CI.
pub async fn s3_location() -> Option<S3Location> {
    let Some(base) = s3_server().await else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no S3 server: set BEEHIVE_TEST_S3_URL or install moto[server] (scripts/test.sh does)"
            );
        }
        eprintln!(
            "\n*** SKIPPED: S3 tests need BEEHIVE_TEST_S3_URL or moto_server (pip install 'moto[server]') ***\n"
        );
        return None;
    };
    let bucket = format!("bh-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let base = base.trim_end_matches('/');
    let url = if base.matches('/').count() > 2 {
        // A full URL with its own bucket: use it as is.
        base.to_owned()
    } else {
        let addr: SocketAddr = base
            .rsplit('@')
            .next()
            .and_then(|hostport| hostport.trim_start_matches("s3+http://").parse().ok())
            .expect("s3 base URL host:port");
        create_bucket(addr, &bucket).await;
        format!("{base}/{bucket}")
    };
    Some(S3Location::parse(&url).expect("valid S3 URL"))
}

/// A config for `backend` (directory in a fresh temp dir).
pub async fn config(backend: Backend) -> Option<(FileConfig, Option<PathBuf>)> {
    let settings = beehive_common::Settings::local_defaults();
    let mut config = FileConfig::from_settings(&settings).expect("config");
    // The tests sweep by hand, at the times they choose.
    config.sweep_interval = Duration::from_secs(3600);
    match backend {
        Backend::Dir => {
            let dir = std::env::temp_dir()
                .join(format!("beehive-files-{}", uuid::Uuid::new_v4().simple()));
            config.storage = StorageConfig::Dir(dir.clone());
            Some((config, Some(dir)))
        }
        Backend::S3 => {
            config.storage = StorageConfig::S3(s3_location().await?);
            Some((config, None))
        }
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

impl Harness {
    /// Starts the file and message services with `config`.
    pub async fn start(config: FileConfig, dir: Option<PathBuf>) -> Self {
        let env = TestEnv::new(&[&beehive_message::MIGRATOR, &beehive_file::MIGRATOR]).await;
        let mut settings = env.settings.clone();
        let message_listener = loopback().await;
        let file_listener = loopback().await;
        let message_addr = message_listener.local_addr().expect("addr");
        let file_addr = file_listener.local_addr().expect("addr");
        settings.set_component_addr(Component::Message, format!("http://{message_addr}"));
        settings.set_component_addr(Component::File, format!("http://{file_addr}"));
        let shutdown = Shutdown::new();
        let ctx = context(&settings, &shutdown);
        let message = beehive_message::bind(&ctx, message_listener)
            .await
            .expect("message service starts");
        tokio::spawn(message.serve);
        let (service, bound) = beehive_file::bind_service(&ctx, file_listener, config.clone())
            .await
            .expect("file service starts");
        tokio::spawn(bound.serve);
        let storage = beehive_file::storage::open(&config.storage)
            .await
            .expect("open the storage");
        Self {
            storage,
            files: FileServiceClient::new(channel(file_addr).await),
            messages: MessageServiceClient::new(channel(message_addr).await),
            service,
            env,
            dir,
            config,
            shutdown,
        }
    }

    /// Starts a harness on `backend`, or `None` when S3 is unavailable outside CI.
    pub async fn on(backend: Backend) -> Option<Self> {
        let (config, dir) = config(backend).await?;
        Some(Self::start(config, dir).await)
    }

    /// Every stored object key under `prefix` (either backend).
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        self.storage.list(prefix).await.expect("list objects")
    }

    /// Creates an upload of `content` for `user`.
    pub async fn create(&self, user: &str, content: &[u8], name: &str) -> pb::Upload {
        self.files
            .clone()
            .create_upload(pb::CreateUploadRequest {
                user_id: user.to_owned(),
                length: content.len() as u64,
                filename: name.to_owned(),
                sha256: sha256_hex(content),
                content_type: "application/octet-stream".to_owned(),
                metadata: String::new(),
            })
            .await
            .expect("create upload")
            .into_inner()
            .upload
            .expect("upload")
    }

    /// Writes `data` at `offset` in chunks of 64 KiB.
    pub async fn write(
        &self,
        user: &str,
        upload: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<pb::UploadResponse, tonic::Status> {
        self.write_with(user, upload, offset, data, "", Vec::new())
            .await
    }

    /// [`Harness::write`] with a chunk checksum.
    pub async fn write_with(
        &self,
        user: &str,
        upload: &str,
        offset: u64,
        data: &[u8],
        algorithm: &str,
        checksum: Vec<u8>,
    ) -> Result<pb::UploadResponse, tonic::Status> {
        let mut messages = vec![pb::WriteUploadRequest {
            user_id: user.to_owned(),
            upload_id: upload.to_owned(),
            offset,
            data: Vec::new(),
            checksum_algorithm: algorithm.to_owned(),
            checksum,
        }];
        for chunk in data.chunks(64 * 1024) {
            messages.push(pb::WriteUploadRequest {
                data: chunk.to_vec(),
                ..Default::default()
            });
        }
        self.files
            .clone()
            .write_upload(futures::stream::iter(messages))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Uploads `content` in one write; the completed file.
    pub async fn upload(&self, user: &str, content: &[u8], name: &str) -> pb::File {
        let upload = self.create(user, content, name).await;
        if content.is_empty() {
            return self
                .files
                .clone()
                .get_upload(pb::GetUploadRequest {
                    user_id: user.to_owned(),
                    upload_id: upload.id,
                })
                .await
                .expect("get upload")
                .into_inner()
                .file
                .expect("an empty upload completes at once");
        }
        self.write(user, &upload.id, 0, content)
            .await
            .expect("write")
            .file
            .expect("complete")
    }

    /// Reads a file (or a range of it) as `user`.
    pub async fn read(
        &self,
        user: &str,
        file: &str,
        offset: u64,
        length: u64,
    ) -> Result<(pb::File, Vec<u8>), tonic::Status> {
        let mut stream = self
            .files
            .clone()
            .read_file(pb::ReadFileRequest {
                user_id: user.to_owned(),
                file_id: file.to_owned(),
                offset,
                length,
                thumbnail: 0,
            })
            .await?
            .into_inner();
        let mut meta = None;
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            if let Some(file) = message.file {
                meta = Some(file);
            }
            bytes.extend_from_slice(&message.data);
        }
        Ok((meta.expect("first message carries the file"), bytes))
    }

    /// (blob count, refcount of `sha256`).
    pub async fn blob_state(&self, sha256: &str) -> (i64, Option<i64>) {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM file.blobs")
            .fetch_one(&self.env.pool)
            .await
            .expect("count");
        let refcount: Option<i64> =
            sqlx::query_scalar("SELECT refcount FROM file.blobs WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.env.pool)
                .await
                .expect("refcount");
        (count, refcount)
    }
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The API code of a status.
pub fn code(status: &tonic::Status) -> beehive_common::ErrorCode {
    beehive_common::Error::from_status(status).code()
}

/// A fresh user id.
pub fn uid() -> String {
    uuid::Uuid::now_v7().to_string()
}
