//! Files end to end through the gateway (API.md, Files): tus uploads resumed after an
//! interrupted PATCH and through a second gateway, the tus error statuses, instant
//! upload, dedupe under concurrency, downloads with ranges and validators,
//! thumbnails, access control through conversations, file messages, termination,
//! expiry, and a tus client written by others (tuspy).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::{Cluster, User, rest};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(u32::from(seed)) as u8
                ^ (i >> 9) as u8
        })
        .collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// POST /files/uploads; returns the response.
async fn create(gw: SocketAddr, user: &User, length: usize, metadata: &str) -> reqwest::Response {
    http()
        .post(format!("http://{gw}/api/v1/files/uploads"))
        .bearer_auth(&user.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .expect("create")
}

fn metadata(name: &str, data: &[u8], content_type: &str) -> String {
    format!(
        "filename {},sha256 {},content_type {}",
        b64(name.as_bytes()),
        b64(sha256_hex(data).as_bytes()),
        b64(content_type.as_bytes())
    )
}

/// Creates an upload of `data`; returns its path (`Location`).
async fn create_upload(gw: SocketAddr, user: &User, data: &[u8], name: &str, ct: &str) -> String {
    let response = create(gw, user, data.len(), &metadata(name, data, ct)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "tus-resumable").as_deref(), Some("1.0.0"));
    let expires = header(&response, "upload-expires").expect("Upload-Expires");
    assert!(expires.ends_with(" GMT"), "an HTTP-date: {expires}");
    header(&response, "location").expect("Location")
}

async fn patch(
    gw: SocketAddr,
    user: &User,
    path: &str,
    offset: u64,
    body: Vec<u8>,
) -> reqwest::Response {
    http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&user.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .expect("patch")
}

async fn head(gw: SocketAddr, user: &User, path: &str) -> reqwest::Response {
    http()
        .head(format!("http://{gw}{path}"))
        .bearer_auth(&user.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head")
}

/// Uploads `data` in one PATCH; the file id.
async fn upload(gw: SocketAddr, user: &User, data: &[u8], name: &str, ct: &str) -> String {
    let path = create_upload(gw, user, data, name, ct).await;
    let response = patch(gw, user, &path, 0, data.to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    header(&response, "beehive-file-id").expect("Beehive-File-Id")
}

async fn get(
    gw: SocketAddr,
    user: &User,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http()
        .get(format!("http://{gw}{path}"))
        .bearer_auth(&user.token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("get")
}

fn objects(root: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("objects").join(prefix)];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tus_uploads_resume_across_interruptions_and_gateways() {
    let cluster = Cluster::start(2).await;
    let (gw1, gw2) = (cluster.gw(0), cluster.gw(1));
    let alice = cluster.user().await;
    let data = content(1_000_000, 1);

    // Discovery.
    let options = http()
        .request(
            Method::OPTIONS,
            format!("http://{gw1}/api/v1/files/uploads"),
        )
        .send()
        .await
        .expect("options");
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&options, "tus-version").as_deref(), Some("1.0.0"));
    assert_eq!(header(&options, "tus-resumable").as_deref(), Some("1.0.0"));
    let extensions = header(&options, "tus-extension").expect("extensions");
    for ext in ["creation", "termination", "expiration", "checksum"] {
        assert!(extensions.contains(ext), "{extensions}");
    }
    assert_eq!(
        header(&options, "tus-max-size").as_deref(),
        Some("104857600")
    );
    assert!(
        header(&options, "tus-checksum-algorithm")
            .expect("algorithms")
            .contains("sha1")
    );

    let path = create_upload(gw1, &alice, &data, "big.bin", "application/octet-stream").await;
    let first = patch(gw1, &alice, &path, 0, data[..200_000].to_vec()).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&first, "upload-offset").as_deref(), Some("200000"));

    // An interrupted PATCH: 300 KB arrive, then the client's connection breaks.
    let sent = data[200_000..500_000].to_vec();
    let stream = futures::stream::unfold(0usize, move |i| {
        let sent = sent.clone();
        async move {
            if i < 3 {
                let chunk = sent[i * 100_000..(i + 1) * 100_000].to_vec();
                Some((Ok::<_, std::io::Error>(chunk), i + 1))
            } else if i == 3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Some((Err(std::io::Error::other("cable pulled")), i + 1))
            } else {
                None
            }
        }
    });
    let interrupted = http()
        .patch(format!("http://{gw1}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "200000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(interrupted.is_err(), "the client aborted its request");

    // Resume through the other gateway, from wherever the bytes that arrived end.
    let mut offset = 0;
    for _ in 0..50 {
        let state = head(gw2, &alice, &path).await;
        assert_eq!(state.status(), StatusCode::OK);
        assert_eq!(header(&state, "cache-control").as_deref(), Some("no-store"));
        assert_eq!(header(&state, "upload-length").as_deref(), Some("1000000"));
        offset = header(&state, "upload-offset")
            .expect("offset")
            .parse::<u64>()
            .expect("number");
        if offset > 200_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (200_000..=500_000).contains(&offset) && offset > 200_000,
        "the bytes that arrived before the break were kept: offset {offset}"
    );
    // A PATCH at another offset is 409.
    let stale = patch(gw2, &alice, &path, 200_000, data[200_000..200_010].to_vec()).await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert_eq!(header(&stale, "tus-resumable").as_deref(), Some("1.0.0"));
    let body: Value = stale.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "already_exists");

    let done = patch(gw2, &alice, &path, offset, data[offset as usize..].to_vec()).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&done, "upload-offset").as_deref(), Some("1000000"));
    let file_id = header(&done, "beehive-file-id").expect("the completing PATCH names the file");
    let later = head(gw1, &alice, &path).await;
    assert_eq!(
        header(&later, "beehive-file-id").as_deref(),
        Some(file_id.as_str())
    );

    let download = get(gw1, &alice, &format!("/api/v1/files/{file_id}"), &[]).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(
        header(&download, "etag"),
        Some(format!("\"{}\"", sha256_hex(&data)))
    );
    assert_eq!(
        header(&download, "content-length").as_deref(),
        Some("1000000")
    );
    let bytes = download.bytes().await.expect("bytes");
    assert!(
        bytes.as_ref() == data.as_slice(),
        "the bytes round-trip exactly"
    );

    // Another user never sees the upload.
    let bob = cluster.user().await;
    assert_eq!(head(gw1, &bob, &path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        patch(gw1, &bob, &path, 1_000_000, Vec::new())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Nothing of the parts is left once complete.
    assert!(objects(&cluster.settings.file_storage_dir, "uploads").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tus_errors_follow_the_protocol() {
    let cluster = Cluster::start(1).await;
    let gw = cluster.gw(0);
    let alice = cluster.user().await;
    let data = content(10_000, 2);

    // 413 before anything else: even without credentials or Tus-Resumable.
    let huge = http()
        .post(format!("http://{gw}/api/v1/files/uploads"))
        .header("Upload-Length", (100u64 << 20 | 1).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = huge.json().await.expect("body");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let no_tus = http()
        .post(format!("http://{gw}/api/v1/files/uploads"))
        .bearer_auth(&alice.token)
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("post");
    assert_eq!(no_tus.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&no_tus, "tus-version").as_deref(), Some("1.0.0"));

    let anonymous = http()
        .post(format!("http://{gw}/api/v1/files/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    for bad in [
        "",
        &format!("filename {}", b64(b"x")),
        "sha256 !!!",
        &format!("sha256 {}", b64(b"ABC")),
    ] {
        let response = create(gw, &alice, 10, bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(header(&response, "tus-resumable").as_deref(), Some("1.0.0"));
        let body: Value = response.json().await.expect("body");
        assert_eq!(body["error"]["code"], "invalid_argument");
    }
    let no_length = http()
        .post(format!("http://{gw}/api/v1/files/uploads"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Metadata", metadata("a", &data, ""))
        .send()
        .await
        .expect("post");
    assert_eq!(no_length.status(), StatusCode::BAD_REQUEST);

    let path = create_upload(gw, &alice, &data, "a.bin", "").await;
    // Wrong Content-Type: 415 (tus wins over the general 400 rule).
    let wrong_type = http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("patch");
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = wrong_type.json().await.expect("body");
    assert!(body["error"]["message"].is_string());
    // Malformed Upload-Offset.
    let bad_offset = http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "-5")
        .header("Content-Type", "application/offset+octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("patch");
    assert_eq!(bad_offset.status(), StatusCode::BAD_REQUEST);
    // Chunk checksum mismatch: 460, nothing kept.
    let wrong_sum = b64(&sha1::Sha1::digest(b"other bytes"));
    let mismatch = http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Upload-Checksum", format!("sha1 {wrong_sum}"))
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[..5000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(mismatch.status().as_u16(), 460);
    assert_eq!(
        header(&head(gw, &alice, &path).await, "upload-offset").as_deref(),
        Some("0")
    );
    let right_sum = b64(&sha2::Sha256::digest(&data[..5000]));
    let checked = http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Upload-Checksum", format!("sha256 {right_sum}"))
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[..5000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(checked.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&checked, "upload-offset").as_deref(), Some("5000"));
    let unsupported = http()
        .patch(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "5000")
        .header("Upload-Checksum", "md5 AAAA")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8])
        .send()
        .await
        .expect("patch");
    assert_eq!(unsupported.status(), StatusCode::BAD_REQUEST);
    // Too many bytes for the upload.
    let over = patch(gw, &alice, &path, 5000, content(5001, 9)).await;
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Unknown and malformed upload ids are 404.
    for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let response = head(gw, &alice, &format!("/api/v1/files/uploads/{id}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    // Hash mismatch on completion: 409, the upload and every byte of it discarded.
    let mut tampered = data[5000..].to_vec();
    tampered[0] ^= 0xff;
    let response = patch(gw, &alice, &path, 5000, tampered).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.expect("body");
    assert_eq!(body["error"]["code"], "already_exists");
    assert_eq!(
        head(gw, &alice, &path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        objects(&cluster.settings.file_storage_dir, "").is_empty(),
        "{:?}",
        objects(&cluster.settings.file_storage_dir, "")
    );

    // Termination.
    let path = create_upload(gw, &alice, &data, "t.bin", "").await;
    assert_eq!(
        patch(gw, &alice, &path, 0, data[..100].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let terminated = http()
        .delete(format!("http://{gw}{path}"))
        .bearer_auth(&alice.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("delete");
    assert_eq!(terminated.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&terminated, "tus-resumable").as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        head(gw, &alice, &path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(objects(&cluster.settings.file_storage_dir, "uploads").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_content_is_stored_once_and_instant_uploads_are_instant() {
    let cluster = Cluster::start(2).await;
    let users = futures::future::join_all((0..6).map(|_| cluster.user())).await;
    let data = content(400_000, 3);
    let sha = sha256_hex(&data);

    let (status, body) = rest(
        cluster.gw(0),
        &users[0],
        Method::POST,
        "/api/v1/files/check",
        Some(json!({"sha256": sha, "size": data.len()})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Six users upload the same bytes at the same time, through two gateways.
    let ids = futures::future::join_all(users.iter().enumerate().map(|(i, user)| {
        let gw = cluster.gw(i % 2);
        let data = data.clone();
        async move { upload(gw, user, &data, "same.bin", "application/octet-stream").await }
    }))
    .await;
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 6, "each uploader gets its own file");
    let (blobs, refcount): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(refcount), 0)::bigint FROM file.blobs")
            .fetch_one(&cluster.env.pool)
            .await
            .expect("blobs");
    assert_eq!((blobs, refcount), (1, 6), "one blob, exact refcount");
    assert_eq!(
        objects(&cluster.settings.file_storage_dir, "blobs").len(),
        1
    );

    // Instant upload: the caller's own file with its name and type.
    let late = cluster.user().await;
    let (status, body) = rest(
        cluster.gw(1),
        &late,
        Method::POST,
        "/api/v1/files/check",
        Some(json!({"sha256": sha, "size": data.len(), "filename": "renamed.dat", "content_type": "text/plain"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let file = &body["file"];
    assert_eq!(file["filename"], "renamed.dat");
    assert_eq!(file["content_type"], "text/plain");
    assert_eq!(file["sha256"], sha.as_str());
    assert_eq!(file["size"], 400_000);
    let refcount: i64 = sqlx::query_scalar("SELECT refcount FROM file.blobs")
        .fetch_one(&cluster.env.pool)
        .await
        .expect("refcount");
    assert_eq!(refcount, 7);
    let id = file["id"].as_str().expect("id");
    let (status, meta) = rest(
        cluster.gw(0),
        &late,
        Method::GET,
        &format!("/api/v1/files/{id}/meta"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["file"]["filename"], "renamed.dat");
    assert!(meta["file"]["created_at"].is_string());

    // Malformed checks.
    for bad in [
        json!({"sha256": "ABC", "size": 1}),
        json!({"sha256": sha}),
        json!({"sha256": sha, "size": -1}),
    ] {
        let (status, body) = rest(
            cluster.gw(0),
            &late,
            Method::POST,
            "/api/v1/files/check",
            Some(bad),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_argument");
    }
    let (status, _) = rest(
        cluster.gw(0),
        &late,
        Method::POST,
        "/api/v1/files/check",
        Some(json!({"sha256": sha, "size": 200u64 << 20})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Deleting: the count follows.
    let (status, _) = rest(
        cluster.gw(0),
        &late,
        Method::DELETE,
        &format!("/api/v1/files/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = rest(
        cluster.gw(0),
        &late,
        Method::GET,
        &format!("/api/v1/files/{id}/meta"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refcount: i64 = sqlx::query_scalar("SELECT refcount FROM file.blobs")
        .fetch_one(&cluster.env.pool)
        .await
        .expect("refcount");
    assert_eq!(refcount, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downloads_have_ranges_validators_and_safe_presentation() {
    let cluster = Cluster::start(1).await;
    let gw = cluster.gw(0);
    let alice = cluster.user().await;
    let data = content(10_000, 4);
    let id = upload(
        gw,
        &alice,
        &data,
        "数据 \"v1\".bin",
        "application/octet-stream",
    )
    .await;
    let path = format!("/api/v1/files/{id}");
    let tag = format!("\"{}\"", sha256_hex(&data));

    let full = get(gw, &alice, &path, &[]).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(
        header(&full, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(&full, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(
        header(&full, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    let disposition = header(&full, "content-disposition").expect("disposition");
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename*=UTF-8''%E6%95%B0%E6%8D%AE%20%22v1%22.bin"),
        "{disposition}"
    );

    let partial = get(gw, &alice, &path, &[("Range", "bytes=100-199")]).await;
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&partial, "content-range").as_deref(),
        Some("bytes 100-199/10000")
    );
    assert_eq!(header(&partial, "content-length").as_deref(), Some("100"));
    assert_eq!(
        partial.bytes().await.expect("bytes").as_ref(),
        &data[100..200]
    );
    let suffix = get(gw, &alice, &path, &[("Range", "bytes=-10")]).await;
    assert_eq!(suffix.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(suffix.bytes().await.expect("bytes").as_ref(), &data[9990..]);
    let open = get(gw, &alice, &path, &[("Range", "bytes=9000-")]).await;
    assert_eq!(open.bytes().await.expect("bytes").as_ref(), &data[9000..]);
    let outside = get(gw, &alice, &path, &[("Range", "bytes=10000-")]).await;
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&outside, "content-range").as_deref(),
        Some("bytes */10000")
    );
    let several = get(gw, &alice, &path, &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!(
        several.status(),
        StatusCode::OK,
        "several ranges: the whole file"
    );

    let cached = get(gw, &alice, &path, &[("If-None-Match", &tag)]).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&cached, "etag").as_deref(), Some(tag.as_str()));
    let stale = get(gw, &alice, &path, &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(stale.status(), StatusCode::OK);

    // HTML is an attachment, never rendered inline; an image is inline.
    let html = upload(
        gw,
        &alice,
        b"<script>alert(1)</script>",
        "x.html",
        "text/html",
    )
    .await;
    let response = get(gw, &alice, &format!("/api/v1/files/{html}"), &[]).await;
    assert!(
        header(&response, "content-disposition")
            .expect("cd")
            .starts_with("attachment")
    );
    assert_eq!(
        header(&response, "x-content-type-options").as_deref(),
        Some("nosniff")
    );

    // Unknown and malformed ids: 404.
    for id in [uuid::Uuid::now_v7().to_string(), "zzz".to_owned()] {
        let response = get(gw, &alice, &format!("/api/v1/files/{id}"), &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.expect("body");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let anonymous = http()
        .get(format!("http://{gw}{path}"))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thumbnails_of_images_only() {
    let cluster = Cluster::start(1).await;
    let gw = cluster.gw(0);
    let alice = cluster.user().await;
    let mut png = std::io::Cursor::new(Vec::new());
    image_png(&mut png, 900, 600);
    let id = upload(gw, &alice, png.get_ref(), "p.png", "image/png").await;
    let small = get(
        gw,
        &alice,
        &format!("/api/v1/files/{id}/thumbnail?size=small"),
        &[],
    )
    .await;
    assert_eq!(small.status(), StatusCode::OK);
    assert_eq!(
        header(&small, "content-type").as_deref(),
        Some("image/jpeg")
    );
    let tag = header(&small, "etag").expect("etag");
    let bytes = small.bytes().await.expect("bytes");
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "a JPEG");
    let medium = get(
        gw,
        &alice,
        &format!("/api/v1/files/{id}/thumbnail?size=medium"),
        &[],
    )
    .await;
    assert_eq!(medium.status(), StatusCode::OK);
    let again = get(
        gw,
        &alice,
        &format!("/api/v1/files/{id}/thumbnail"),
        &[("If-None-Match", &tag)],
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let bad = get(
        gw,
        &alice,
        &format!("/api/v1/files/{id}/thumbnail?size=huge"),
        &[],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let text = upload(gw, &alice, b"not an image", "a.txt", "text/plain").await;
    let refused = get(gw, &alice, &format!("/api/v1/files/{text}/thumbnail"), &[]).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let bob = cluster.user().await;
    let stranger = get(gw, &bob, &format!("/api/v1/files/{id}/thumbnail"), &[]).await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
}

/// A PNG with a simple gradient (no image crate needed here).
fn image_png(out: &mut std::io::Cursor<Vec<u8>>, width: u32, height: u32) {
    // Uncompressed deflate blocks ("stored") keep this encoder tiny.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in bytes {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, 128]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    *out.get_mut() = png;
}

async fn send_file(
    gw: SocketAddr,
    user: &User,
    target: Value,
    msg_type: &str,
    file_id: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({"client_msg_id": uuid::Uuid::now_v7().to_string(), "msg_type": msg_type, "content": "see this"});
    for (k, v) in target.as_object().expect("target").iter() {
        body[k] = v.clone();
    }
    if let Some(file) = file_id {
        body["file_id"] = json!(file);
    }
    rest(gw, user, Method::POST, "/api/v1/messages", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_access_follows_conversations_and_file_messages_need_readable_files() {
    let cluster = Cluster::start(1).await;
    let gw = cluster.gw(0);
    let (alice, bob, carol, mallory) = (
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
        cluster.user().await,
    );
    let group = cluster.group(&alice, std::slice::from_ref(&bob)).await;
    let photo = upload(gw, &alice, b"\x89PNG pretend", "pic.png", "image/png").await;
    let meta = format!("/api/v1/files/{photo}/meta");

    // Before any message: only the owner.
    assert_eq!(
        rest(gw, &alice, Method::GET, &meta, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        rest(gw, &bob, Method::GET, &meta, None).await.0,
        StatusCode::NOT_FOUND
    );

    // Messages other than text need a file; a file the sender may not read is 404.
    let (status, body) =
        send_file(gw, &alice, json!({"conversation_id": group}), "image", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send_file(
        gw,
        &bob,
        json!({"conversation_id": group}),
        "image",
        Some(&photo),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _) = send_file(
        gw,
        &alice,
        json!({"conversation_id": group}),
        "file",
        Some(&unknown),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = send_file(
        gw,
        &alice,
        json!({"conversation_id": group}),
        "image",
        Some(&photo),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"]["file_id"], photo.as_str());
    assert_eq!(body["message"]["msg_type"], "image");

    // A member now reads it; a stranger does not.
    let download = get(gw, &bob, &format!("/api/v1/files/{photo}"), &[]).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(
        download.bytes().await.expect("bytes").as_ref(),
        b"\x89PNG pretend"
    );
    assert_eq!(
        rest(gw, &mallory, Method::GET, &meta, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(gw, &mallory, &format!("/api/v1/files/{photo}"), &[])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // A member who joins later does not see files of messages before its join...
    let (status, body) = rest(
        gw,
        &alice,
        Method::POST,
        &format!("/api/v1/groups/{group}/members"),
        Some(json!({"user_ids": [carol.id]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        rest(gw, &carol, Method::GET, &meta, None).await.0,
        StatusCode::NOT_FOUND
    );
    // ...and may not forward it.
    let (status, _) = send_file(
        gw,
        &carol,
        json!({"conversation_id": group}),
        "file",
        Some(&photo),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bob, who may read it, forwards it: now Carol sees it (a message after her join).
    let (status, body) = send_file(
        gw,
        &bob,
        json!({"conversation_id": group}),
        "file",
        Some(&photo),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        rest(gw, &carol, Method::GET, &meta, None).await.0,
        StatusCode::OK
    );

    // The owner deletes it: it leaves the owner's files, the conversation keeps it, and
    // it stays counted.
    let (status, _) = rest(
        gw,
        &alice,
        Method::DELETE,
        &format!("/api/v1/files/{photo}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = rest(
        gw,
        &alice,
        Method::DELETE,
        &format!("/api/v1/files/{photo}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted once");
    assert_eq!(
        rest(gw, &bob, Method::GET, &meta, None).await.0,
        StatusCode::OK
    );
    let refcount: i64 = sqlx::query_scalar("SELECT refcount FROM file.blobs")
        .fetch_one(&cluster.env.pool)
        .await
        .expect("refcount");
    assert_eq!(refcount, 1);
    // Nobody else may delete a file.
    let own = upload(gw, &bob, b"bob's", "b.txt", "text/plain").await;
    let (status, _) = rest(
        gw,
        &alice,
        Method::DELETE,
        &format!("/api/v1/files/{own}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Direct messages too: voice to a friend.
    cluster.befriend(&alice, &mallory).await;
    let voice = upload(gw, &alice, b"OggS voice", "v.ogg", "audio/ogg").await;
    let (status, body) = send_file(
        gw,
        &alice,
        json!({"to_user_id": mallory.id}),
        "voice",
        Some(&voice),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = get(gw, &mallory, &format!("/api/v1/files/{voice}"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, "content-disposition")
            .expect("cd")
            .starts_with("inline")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_uploads_are_swept_with_their_bytes() {
    let cluster = Cluster::start_with(1, |settings| {
        settings.file_upload_expiry = Duration::from_secs(1);
        settings.file_gc_grace = Duration::ZERO;
    })
    .await;
    let gw = cluster.gw(0);
    let alice = cluster.user().await;
    let data = content(50_000, 6);
    let path = create_upload(gw, &alice, &data, "late.bin", "").await;
    assert_eq!(
        patch(gw, &alice, &path, 0, data[..20_000].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        objects(&cluster.settings.file_storage_dir, "uploads").len(),
        1
    );
    let mut swept = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM file.uploads")
            .fetch_one(&cluster.env.pool)
            .await
            .expect("uploads");
        if rows == 0 && objects(&cluster.settings.file_storage_dir, "uploads").is_empty() {
            swept = true;
            break;
        }
    }
    assert!(
        swept,
        "the sweeper removed the expired upload and its bytes"
    );
    assert_eq!(
        head(gw, &alice, &path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(gw, &alice, &path, 20_000, data[20_000..].to_vec())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// A tus client written by others: tuspy (PyPI), run by tests/files/tus_client.py.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuspy_uploads_and_resumes() {
    let Some(python) = tuspy_python() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "tuspy is not installed: scripts/test.sh installs it into ~/.cache/beehive-tools/files"
            );
        }
        eprintln!(
            "\n*** SKIPPED: tuspy not installed (pip install tuspy, or run scripts/test.sh) ***\n"
        );
        return;
    };
    let cluster = Cluster::start(1).await;
    let gw = cluster.gw(0);
    let alice = cluster.user().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/files/tus_client.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg(format!("http://{gw}/api/v1/files/uploads"))
        .arg(&alice.token)
        .output()
        .await
        .expect("run tus_client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tus_client.py failed:\n{stdout}\n{stderr}"
    );
    // The script prints the file id and the sha256 it uploaded.
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let id = result["file_id"].as_str().expect("file id");
    let download = get(gw, &alice, &format!("/api/v1/files/{id}"), &[]).await;
    assert_eq!(download.status(), StatusCode::OK);
    let bytes = download.bytes().await.expect("bytes");
    assert_eq!(sha256_hex(&bytes), result["sha256"].as_str().expect("sha"));
    assert_eq!(result["resumed_from"].as_u64().map(|n| n > 0), Some(true));
}

fn tuspy_python() -> Option<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("BEEHIVE_TEST_PYTHON") {
        candidates.push(std::path::PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/beehive-tools/files/bin/python"));
    }
    candidates.push("python3".into());
    candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import tusclient"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}
