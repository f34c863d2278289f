//! The file service against real PostgreSQL and real storage: the directory backend,
//! and a real S3-compatible server (moto) for the same scenarios.

mod common;

use std::time::Duration;

use beehive_common::ErrorCode;
use beehive_proto::v1 as pb;
use common::{Backend, Harness, code, content, sha256_hex, uid};
use sha2::Digest;

/// Resumable upload in three parts, with a wrong offset and a bad chunk checksum on
/// the way; reads back whole and in ranges.
async fn resumable_upload_and_ranged_reads(h: &Harness) {
    let user = uid();
    let data = content(300_000, 1);
    let upload = h.create(&user, &data, "parts.bin").await;
    assert_eq!((upload.offset, upload.length), (0, 300_000));

    let first = h
        .write(&user, &upload.id, 0, &data[..100_000])
        .await
        .expect("part 1");
    assert_eq!(first.upload.expect("upload").offset, 100_000);
    assert!(first.file.is_none());

    // tus: a PATCH at any other offset is 409 and stores nothing.
    let wrong = h
        .write(&user, &upload.id, 0, &data[..10])
        .await
        .expect_err("stale offset");
    assert_eq!(code(&wrong), ErrorCode::AlreadyExists);

    // A chunk whose checksum does not match is refused and nothing of it is kept.
    let bogus = sha1::Sha1::digest(b"something else").to_vec();
    let refused = h
        .write_with(
            &user,
            &upload.id,
            100_000,
            &data[100_000..200_000],
            "sha1",
            bogus,
        )
        .await
        .expect_err("checksum mismatch");
    assert_eq!(code(&refused), ErrorCode::InvalidArgument);
    assert!(
        refused.message().contains("Upload-Checksum"),
        "{}",
        refused.message()
    );
    let state = h
        .files
        .clone()
        .get_upload(pb::GetUploadRequest {
            user_id: user.clone(),
            upload_id: upload.id.clone(),
        })
        .await
        .expect("head")
        .into_inner();
    assert_eq!(state.upload.expect("upload").offset, 100_000);

    let good = sha1::Sha1::digest(&data[100_000..200_000]).to_vec();
    h.write_with(
        &user,
        &upload.id,
        100_000,
        &data[100_000..200_000],
        "sha1",
        good,
    )
    .await
    .expect("part 2 with its checksum");
    let done = h
        .write(&user, &upload.id, 200_000, &data[200_000..])
        .await
        .expect("part 3");
    let file = done.file.expect("complete");
    assert_eq!(file.sha256, sha256_hex(&data));
    assert_eq!(file.size, 300_000);
    assert_eq!(file.filename, "parts.bin");

    // Every later HEAD names the file.
    let head = h
        .files
        .clone()
        .get_upload(pb::GetUploadRequest {
            user_id: user.clone(),
            upload_id: upload.id.clone(),
        })
        .await
        .expect("head")
        .into_inner();
    assert_eq!(head.file.expect("file").id, file.id);
    // Nobody else sees the upload.
    let other = h
        .files
        .clone()
        .get_upload(pb::GetUploadRequest {
            user_id: uid(),
            upload_id: upload.id.clone(),
        })
        .await
        .expect_err("not the uploader");
    assert_eq!(code(&other), ErrorCode::NotFound);

    let (meta, all) = h.read(&user, &file.id, 0, 0).await.expect("read");
    assert_eq!(meta.id, file.id);
    assert!(all == data, "round trip");
    let (_, middle) = h.read(&user, &file.id, 123_456, 1000).await.expect("range");
    assert_eq!(middle, &data[123_456..124_456]);
    let (_, tail) = h.read(&user, &file.id, 299_990, 0).await.expect("tail");
    assert_eq!(tail, &data[299_990..]);
    let outside = h
        .read(&user, &file.id, 299_990, 11)
        .await
        .expect_err("past the end");
    assert_eq!(code(&outside), ErrorCode::InvalidArgument);

    // The parts are gone once the content is a blob.
    assert!(
        h.objects("uploads").await.is_empty(),
        "{:?}",
        h.objects("uploads").await
    );
}

/// A completed upload whose bytes do not hash to the announced sha256 is discarded:
/// 409, the upload is gone and none of its bytes remain.
async fn hash_mismatch_keeps_nothing(h: &Harness) {
    let user = uid();
    let data = content(50_000, 2);
    let upload = h.create(&user, &data, "x").await;
    h.write(&user, &upload.id, 0, &data[..20_000])
        .await
        .expect("part");
    let mut tampered = data[20_000..].to_vec();
    tampered[100] ^= 1;
    let error = h
        .write(&user, &upload.id, 20_000, &tampered)
        .await
        .expect_err("mismatch");
    assert_eq!(code(&error), ErrorCode::AlreadyExists);
    let gone = h
        .files
        .clone()
        .get_upload(pb::GetUploadRequest {
            user_id: user.clone(),
            upload_id: upload.id,
        })
        .await
        .expect_err("discarded");
    assert_eq!(code(&gone), ErrorCode::NotFound);
    let (blobs, _) = h.blob_state(&sha256_hex(&data)).await;
    assert_eq!(blobs, 0);
    let garbage: i64 = sqlx::query_scalar("SELECT count(*) FROM file.garbage")
        .fetch_one(&h.env.pool)
        .await
        .expect("garbage");
    assert_eq!(garbage, 0, "every discarded object was deleted at once");
    assert!(h.objects("").await.is_empty(), "{:?}", h.objects("").await);
}

/// Identical content uploaded concurrently is stored once with an exact refcount;
/// instant uploads and deletes keep it exact; at 0 the sweeper removes it after the
/// grace period, not before.
async fn dedupe_refcount_and_sweep(h: &Harness) {
    let data = content(200_000, 3);
    let sha = sha256_hex(&data);
    let users: Vec<String> = (0..6).map(|_| uid()).collect();
    let uploads =
        futures::future::join_all(users.iter().map(|u| h.upload(u, &data, "same.bin"))).await;
    let (blobs, refcount) = h.blob_state(&sha).await;
    assert_eq!((blobs, refcount), (1, Some(6)));
    assert_eq!(h.objects("blobs").await.len(), 1, "one stored copy");
    assert!(h.objects("uploads").await.is_empty());

    // Instant upload: a new file with the caller's name and type, refcount + 1.
    let caller = uid();
    let instant = h
        .files
        .clone()
        .check_file(pb::CheckFileRequest {
            user_id: caller.clone(),
            sha256: sha.clone(),
            size: data.len() as u64,
            filename: "mine.dat".to_owned(),
            content_type: "text/plain".to_owned(),
        })
        .await
        .expect("instant upload")
        .into_inner()
        .file
        .expect("file");
    assert_eq!(
        (instant.filename.as_str(), instant.content_type.as_str()),
        ("mine.dat", "text/plain")
    );
    assert_eq!(h.blob_state(&sha).await.1, Some(7));
    let (_, bytes) = h
        .read(&caller, &instant.id, 0, 0)
        .await
        .expect("read instant");
    assert!(bytes == data);
    let unknown = h
        .files
        .clone()
        .check_file(pb::CheckFileRequest {
            user_id: caller.clone(),
            sha256: sha256_hex(b"never stored"),
            size: 12,
            ..Default::default()
        })
        .await
        .expect_err("unknown content");
    assert_eq!(code(&unknown), ErrorCode::NotFound);

    // Concurrent instant uploads and deletes: the count stays exact.
    let deletes = uploads.iter().zip(&users).map(|(file, user)| {
        let mut files = h.files.clone();
        let request = pb::GetFileMetaRequest {
            user_id: user.clone(),
            file_id: file.id.clone(),
        };
        async move { files.delete_file(request).await.map(|_| ()) }
    });
    let checkers: Vec<String> = (0..6).map(|_| uid()).collect();
    let checks = checkers.iter().map(|user| {
        let mut files = h.files.clone();
        let request = pb::CheckFileRequest {
            user_id: user.clone(),
            sha256: sha.clone(),
            size: data.len() as u64,
            ..Default::default()
        };
        async move {
            files
                .check_file(request)
                .await
                .map(|r| r.into_inner().file.expect("file").id)
        }
    });
    let (deleted, checked) = tokio::join!(
        futures::future::join_all(deletes),
        futures::future::join_all(checks)
    );
    assert!(deleted.iter().all(Result::is_ok));
    let checked: Vec<String> = checked
        .into_iter()
        .map(|r| r.expect("instant upload"))
        .collect();
    assert_eq!(h.blob_state(&sha).await.1, Some(7));
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM file.files")
        .fetch_one(&h.env.pool)
        .await
        .expect("files");
    assert_eq!(files, 7, "refcount = files pointing at the blob");

    // Deleting someone else's file, or one's own twice, is 404 and changes nothing.
    let stranger = h
        .files
        .clone()
        .delete_file(pb::GetFileMetaRequest {
            user_id: uid(),
            file_id: instant.id.clone(),
        })
        .await
        .expect_err("not the owner");
    assert_eq!(code(&stranger), ErrorCode::NotFound);

    // Down to zero, concurrently; the sweeper waits for the grace period.
    let owners = checkers
        .iter()
        .zip(&checked)
        .chain(std::iter::once((&caller, &instant.id)));
    let last = owners.map(|(user, file)| {
        let mut files = h.files.clone();
        let request = pb::GetFileMetaRequest {
            user_id: user.clone(),
            file_id: file.clone(),
        };
        async move { files.delete_file(request).await.map(|_| ()) }
    });
    assert!(
        futures::future::join_all(last)
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(h.blob_state(&sha).await, (1, Some(0)));
    let early = h.service.sweep(chrono::Utc::now()).await.expect("sweep");
    assert_eq!(early.dropped_blobs, 0, "within the grace period");
    let late = chrono::Utc::now()
        + chrono::Duration::from_std(h.config.gc_grace + Duration::from_secs(1)).expect("grace");
    let report = h.service.sweep(late).await.expect("sweep");
    assert_eq!(report.dropped_blobs, 1);
    assert_eq!(h.blob_state(&sha).await, (0, None));
    assert!(h.objects("blobs").await.is_empty());
    let recheck = h
        .files
        .clone()
        .check_file(pb::CheckFileRequest {
            user_id: uid(),
            sha256: sha.clone(),
            size: data.len() as u64,
            ..Default::default()
        })
        .await
        .expect_err("swept content is gone");
    assert_eq!(code(&recheck), ErrorCode::NotFound);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod dir {
            $(
                #[tokio::test]
                async fn $name() {
                    let h = super::Harness::on(super::Backend::Dir).await.expect("directory");
                    super::$name(&h).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(h) = super::Harness::on(super::Backend::S3).await else {
                        return;
                    };
                    super::$name(&h).await;
                }
            )*
        }
    };
}

on_both_backends!(
    resumable_upload_and_ranged_reads,
    hash_mismatch_keeps_nothing,
    dedupe_refcount_and_sweep,
    empty_and_oversized_uploads,
    expired_uploads_and_crashed_writes_are_swept,
);

async fn empty_and_oversized_uploads(h: &Harness) {
    let user = uid();
    let empty = h.upload(&user, b"", "empty.txt").await;
    assert_eq!(
        (empty.size, empty.sha256.as_str()),
        (0, sha256_hex(b"").as_str())
    );
    let (_, bytes) = h.read(&user, &empty.id, 0, 0).await.expect("read empty");
    assert!(bytes.is_empty());

    let too_big = h
        .files
        .clone()
        .create_upload(pb::CreateUploadRequest {
            user_id: user.clone(),
            length: h.config.max_size + 1,
            sha256: sha256_hex(b"x"),
            ..Default::default()
        })
        .await
        .expect_err("over the limit");
    assert_eq!(code(&too_big), ErrorCode::PayloadTooLarge);
    for bad in ["", "ABC", &"g".repeat(64)] {
        let error = h
            .files
            .clone()
            .create_upload(pb::CreateUploadRequest {
                user_id: user.clone(),
                length: 1,
                sha256: bad.to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("bad sha256");
        assert_eq!(code(&error), ErrorCode::InvalidArgument, "{bad}");
    }
    // More bytes than announced: 413, nothing kept.
    let data = content(1000, 4);
    let upload = h.create(&user, &data[..500], "short").await;
    let over = h
        .write(&user, &upload.id, 0, &data)
        .await
        .expect_err("too many bytes");
    assert_eq!(code(&over), ErrorCode::PayloadTooLarge);
    let h2 = h
        .files
        .clone()
        .get_upload(pb::GetUploadRequest {
            user_id: user.clone(),
            upload_id: upload.id.clone(),
        })
        .await
        .expect("head")
        .into_inner();
    assert_eq!(h2.upload.expect("upload").offset, 0);
    // Termination: the upload and its bytes are gone.
    h.write(&user, &upload.id, 0, &data[..200])
        .await
        .expect("part");
    h.files
        .clone()
        .terminate_upload(pb::GetUploadRequest {
            user_id: user.clone(),
            upload_id: upload.id.clone(),
        })
        .await
        .expect("terminate");
    assert!(h.objects("uploads").await.is_empty());
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM file.upload_parts")
        .fetch_one(&h.env.pool)
        .await
        .expect("parts");
    assert_eq!(parts, 0);
}

async fn expired_uploads_and_crashed_writes_are_swept(h: &Harness) {
    let user = uid();
    let data = content(10_000, 5);
    let upload = h.create(&user, &data, "late").await;
    h.write(&user, &upload.id, 0, &data[..4000])
        .await
        .expect("part");
    // A crash mid-write: an object protected by its intent, never committed.
    let key = format!("uploads/{}/crashed", uuid::Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO file.garbage (storage_key, due_at) VALUES ($1, now() + interval '2 hours')",
    )
    .bind(&key)
    .execute(&h.env.pool)
    .await
    .expect("intent");
    let mut writer = h.storage.writer(&key).await.expect("writer");
    writer
        .write(bytes::Bytes::from_static(b"half"))
        .await
        .expect("write");
    writer
        .finish()
        .await
        .expect("the crash came after the bytes, before the commit");
    assert_eq!(h.objects("uploads").await.len(), 2);
    // Now: nothing is due.
    let report = h.service.sweep(chrono::Utc::now()).await.expect("sweep");
    assert_eq!(report.expired_uploads, 0);
    assert_eq!(report.deleted_objects, 0);
    // After the expiry, the grace period and the write deadline: all of it is gone.
    let later = chrono::Utc::now() + chrono::Duration::hours(30);
    let report = h.service.sweep(later).await.expect("sweep");
    assert_eq!(report.expired_uploads, 1);
    assert_eq!(report.deleted_objects, 2, "the part and the crashed write");
    assert!(h.objects("").await.is_empty(), "{:?}", h.objects("").await);
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM file.uploads) + (SELECT count(*) FROM file.garbage)",
    )
    .fetch_one(&h.env.pool)
    .await
    .expect("rows");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn thumbnails_are_generated_once_and_bombs_refused() {
    let h = Harness::on(Backend::Dir).await.expect("directory");
    let user = uid();
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 99])
    })
    .write_to(&mut png, image::ImageFormat::Png)
    .expect("encode");
    let png = png.into_inner();
    let file = h.upload(&user, &png, "photo.png").await;
    let thumb = |size: pb::ThumbnailSize, file: String, user: String| {
        let mut files = h.files.clone();
        async move {
            let mut stream = files
                .read_file(pb::ReadFileRequest {
                    user_id: user,
                    file_id: file,
                    thumbnail: size as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut meta = None;
            let mut bytes = Vec::new();
            while let Some(m) = stream.message().await? {
                meta = meta.or(m.file);
                bytes.extend_from_slice(&m.data);
            }
            Ok::<_, tonic::Status>((meta.expect("meta"), bytes))
        }
    };
    let (meta, small) = thumb(pb::ThumbnailSize::Small, file.id.clone(), user.clone())
        .await
        .expect("small");
    assert_eq!(meta.content_type, "image/jpeg");
    assert_eq!(meta.size, small.len() as u64);
    assert_eq!(meta.sha256, sha256_hex(&small));
    let decoded = image::load_from_memory(&small).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (160, 107));
    let (_, medium) = thumb(pb::ThumbnailSize::Medium, file.id.clone(), user.clone())
        .await
        .expect("medium");
    let decoded = image::load_from_memory(&medium).expect("a JPEG");
    assert_eq!(decoded.width(), 640);
    // Cached: the same bytes again, one row per size.
    let (_, again) = thumb(pb::ThumbnailSize::Small, file.id.clone(), user.clone())
        .await
        .expect("again");
    assert_eq!(again, small);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM file.thumbnails")
        .fetch_one(&h.env.pool)
        .await
        .expect("rows");
    assert_eq!(rows, 2);
    // A cached thumbnail whose object is gone is made again, not a failure.
    let cached = h.objects("thumbs").await;
    assert_eq!(cached.len(), 2, "{cached:?}");
    for key in cached {
        h.storage
            .delete(&key)
            .await
            .expect("delete the cached object");
    }
    let (meta, remade) = thumb(pb::ThumbnailSize::Small, file.id.clone(), user.clone())
        .await
        .expect("made again");
    assert_eq!(remade, small);
    assert_eq!(meta.sha256, sha256_hex(&small));
    let (_, cached) = thumb(pb::ThumbnailSize::Small, file.id.clone(), user.clone())
        .await
        .expect("cached again");
    assert_eq!(cached, small);
    // Strangers get nothing.
    let stranger = thumb(pb::ThumbnailSize::Small, file.id.clone(), uid())
        .await
        .expect_err("stranger");
    assert_eq!(code(&stranger), ErrorCode::NotFound);

    // A decompression bomb: a valid PNG header declaring 100000 x 100000 pixels.
    let bomb = {
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
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    };
    let bomb = h.upload(&user, &bomb, "bomb.png").await;
    let refused = thumb(pb::ThumbnailSize::Small, bomb.id.clone(), user.clone())
        .await
        .expect_err("bomb");
    assert_eq!(code(&refused), ErrorCode::InvalidArgument);
    assert!(
        refused.message().contains("too large"),
        "{}",
        refused.message()
    );
    let text = h.upload(&user, b"plain text", "a.txt").await;
    let refused = thumb(pb::ThumbnailSize::Small, text.id, user.clone())
        .await
        .expect_err("text");
    assert_eq!(code(&refused), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn shared_files_outlive_their_owners_delete() {
    let h = Harness::on(Backend::Dir).await.expect("directory");
    let owner = uid();
    let file = h
        .upload(&owner, b"kept for the conversation", "k.txt")
        .await;
    let sha = file.sha256.clone();
    // About to be carried by a message: marked shared.
    h.files
        .clone()
        .authorize_file(pb::AuthorizeFileRequest {
            user_id: owner.clone(),
            file_id: file.id.clone(),
            share: true,
        })
        .await
        .expect("owner may share");
    h.files
        .clone()
        .delete_file(pb::GetFileMetaRequest {
            user_id: owner.clone(),
            file_id: file.id.clone(),
        })
        .await
        .expect("delete");
    // Hidden from the owner (no message carries it in a conversation of the owner
    // here), still counted.
    let hidden = h.read(&owner, &file.id, 0, 0).await.expect_err("hidden");
    assert_eq!(code(&hidden), ErrorCode::NotFound);
    assert_eq!(h.blob_state(&sha).await.1, Some(1));
    // A never-shared file's delete drops the count.
    let other = h.upload(&owner, b"private", "p.txt").await;
    h.files
        .clone()
        .delete_file(pb::GetFileMetaRequest {
            user_id: owner.clone(),
            file_id: other.id.clone(),
        })
        .await
        .expect("delete");
    assert_eq!(h.blob_state(&other.sha256).await.1, Some(0));
    // Unknown, malformed and foreign ids.
    for (user, id) in [(owner.clone(), uid()), (uid(), file.id.clone())] {
        let error = h
            .files
            .clone()
            .authorize_file(pb::AuthorizeFileRequest {
                user_id: user,
                file_id: id,
                share: true,
            })
            .await
            .expect_err("no access");
        assert_eq!(code(&error), ErrorCode::NotFound);
    }
    let malformed = h
        .files
        .clone()
        .get_file_meta(pb::GetFileMetaRequest {
            user_id: owner,
            file_id: "nope".to_owned(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(code(&malformed), ErrorCode::InvalidArgument);
}
