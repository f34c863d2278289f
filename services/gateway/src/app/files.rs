//! Files (API.md, Files): the tus 1.0.0 rules of uploads (headers, metadata,
//! checksums), instant upload, and the rules of downloads (ranges, validators, how a
//! file is presented to a browser). The bytes stream to and from the file service;
//! nothing here buffers a file.

use base64::Engine as _;
use beehive_common::Error;
use beehive_proto::v1 as pb;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::validate::uuid_field;
use crate::clients::Clients;

/// The protocol version of every tus request and response.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions served.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";
/// `Upload-Checksum` algorithms accepted.
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The content type of a PATCH body (tus core).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Largest data chunk sent to the file service per gRPC message.
pub const WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// Longest `Upload-Metadata` header accepted.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The upload metadata Beehive reads (tus `Upload-Metadata`, base64 values).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UploadMetadata {
    pub filename: String,
    pub sha256: String,
    pub content_type: String,
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (a key alone
/// means an empty value). `sha256` is required; `filename` (or `name`) and
/// `content_type` (or `filetype`, `type`, as common tus clients send) are optional.
pub fn parse_metadata(header: Option<&str>) -> Result<UploadMetadata, Error> {
    let invalid = |message: &str| Error::invalid("upload_metadata", message.to_owned());
    let header = header.unwrap_or_default();
    if header.len() > MAX_METADATA_BYTES {
        return Err(invalid("Upload-Metadata is too long"));
    }
    let mut metadata = UploadMetadata::default();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| invalid("Upload-Metadata values must be base64"))?;
        let value = String::from_utf8(value)
            .map_err(|_| invalid("Upload-Metadata values must be UTF-8 text"))?;
        match key {
            "sha256" => metadata.sha256 = value,
            "filename" | "name" if metadata.filename.is_empty() || key == "filename" => {
                metadata.filename = value
            }
            "content_type" => metadata.content_type = value,
            "filetype" | "type" if metadata.content_type.is_empty() => {
                metadata.content_type = value
            }
            _ => {}
        }
    }
    if metadata.sha256.is_empty() {
        return Err(invalid(
            "Upload-Metadata must carry sha256 (64 lowercase hex characters, base64-encoded)",
        ));
    }
    check_sha256("sha256", &metadata.sha256)?;
    Ok(metadata)
}

/// API.md: a sha256 is 64 lowercase hex characters.
pub fn check_sha256(field: &str, value: &str) -> Result<(), Error> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "sha256 must be 64 lowercase hex characters",
        ))
    }
}

/// A non-negative decimal header (`Upload-Length`, `Upload-Offset`).
pub fn parse_u64_header(name: &str, value: Option<&str>) -> Result<u64, Error> {
    let value = value.ok_or_else(|| Error::invalid(name, format!("{name} is required")))?;
    let value = value.trim();
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            name,
            format!("{name} must be a non-negative integer"),
        ));
    }
    value
        .parse()
        .map_err(|_| Error::invalid(name, format!("{name} is out of range")))
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(value: Option<&str>) -> Result<Option<(String, Vec<u8>)>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    // Not the field of a mismatch (460): a malformed header is a plain 400.
    let invalid = || {
        Error::invalid(
            "checksum_algorithm",
            "Upload-Checksum must be `sha1 <base64>` or `sha256 <base64>`",
        )
    };
    let (algorithm, digest) = value.trim().split_once(' ').ok_or_else(invalid)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| invalid())?;
    let expected = match algorithm {
        "sha1" => 20,
        "sha256" => 32,
        _ => return Err(invalid()),
    };
    if digest.len() != expected {
        return Err(invalid());
    }
    Ok(Some((algorithm.to_owned(), digest)))
}

/// Whether an error is the file service's chunk checksum mismatch (tus 460).
pub fn is_checksum_mismatch(error: &Error) -> bool {
    matches!(error, Error::InvalidArgument { field: Some(f), .. } if f == "upload_checksum")
}

/// `POST /files/check` as decoded.
#[derive(Debug, Default)]
pub struct CheckInput {
    pub sha256: String,
    pub size: u64,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

/// Instant upload: the caller's own file on stored identical content, or 404.
pub async fn check(
    clients: &Clients,
    user_id: &str,
    input: CheckInput,
    max_size: u64,
) -> Result<pb::File, Error> {
    check_sha256("sha256", &input.sha256)?;
    if input.size > max_size {
        return Err(Error::PayloadTooLarge(format!(
            "files are at most {max_size} bytes"
        )));
    }
    let response = clients
        .check_file(pb::CheckFileRequest {
            user_id: user_id.to_owned(),
            sha256: input.sha256,
            size: input.size,
            filename: input.filename.unwrap_or_default(),
            content_type: input.content_type.unwrap_or_default(),
        })
        .await?;
    response
        .file
        .ok_or_else(|| Error::internal("file service answered without a file"))
}

/// tus creation: checks the length first (API.md: 413 before anything else).
pub fn check_length(length: u64, max_size: u64) -> Result<(), Error> {
    if length > max_size {
        return Err(Error::PayloadTooLarge(format!(
            "Upload-Length {length} is over the maximum file size of {max_size} bytes"
        )));
    }
    Ok(())
}

/// Creates an upload.
pub async fn create_upload(
    clients: &Clients,
    user_id: &str,
    length: u64,
    metadata_header: &str,
    metadata: UploadMetadata,
) -> Result<pb::UploadResponse, Error> {
    clients
        .create_upload(pb::CreateUploadRequest {
            user_id: user_id.to_owned(),
            length,
            filename: metadata.filename,
            sha256: metadata.sha256,
            content_type: metadata.content_type,
            metadata: metadata_header.to_owned(),
        })
        .await
}

/// An upload id from a path, or 404 (an invalid id names no upload).
pub fn upload_id(id: &str) -> Result<String, Error> {
    uuid_field("upload_id", id).map_err(|_| Error::NotFound("upload not found".to_owned()))
}

/// A file id from a path, or 404.
pub fn file_id(id: &str) -> Result<String, Error> {
    uuid_field("file_id", id).map_err(|_| Error::NotFound("file not found".to_owned()))
}

/// Streams `body` to the file service as one PATCH at `offset`. The call runs in its
/// own task, fed through a small channel: if the client goes away mid-body, the
/// request ends normally there, and the file service keeps the bytes that arrived
/// (tus resume). A body silent for `idle` ends the same way.
pub async fn write<S, E>(
    clients: &Clients,
    user_id: &str,
    upload_id: String,
    offset: u64,
    checksum: Option<(String, Vec<u8>)>,
    body: S,
    idle: std::time::Duration,
) -> Result<pb::UploadResponse, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteUploadRequest>(4);
    let (algorithm, digest) = checksum.unwrap_or_default();
    let first = pb::WriteUploadRequest {
        user_id: user_id.to_owned(),
        upload_id,
        offset,
        data: Bytes::new().into(),
        checksum_algorithm: algorithm,
        checksum: digest,
    };
    let call = clients.write_upload(first, tokio_stream_rx(rx));
    let task = tokio::spawn(call);
    let mut body = Box::pin(body);
    loop {
        let next = match tokio::time::timeout(idle, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::info!("upload body idle; ending the PATCH with what arrived");
                break;
            }
        };
        match next {
            Some(Ok(mut chunk)) => {
                let mut closed = false;
                while !chunk.is_empty() {
                    let n = chunk.len().min(WRITE_CHUNK_BYTES);
                    let message = pb::WriteUploadRequest {
                        data: chunk.split_to(n).into(),
                        ..pb::WriteUploadRequest::default()
                    };
                    if tx.send(message).await.is_err() {
                        // The call ended (an error): its answer says why.
                        closed = true;
                        break;
                    }
                }
                if closed {
                    break;
                }
            }
            Some(Err(error)) => {
                tracing::info!(%error, "upload body broke; ending the PATCH with what arrived");
                break;
            }
            None => break,
        }
    }
    drop(tx);
    task.await
        .map_err(|e| Error::internal(format!("upload task failed: {e}")))?
}

fn tokio_stream_rx(
    mut rx: tokio::sync::mpsc::Receiver<pb::WriteUploadRequest>,
) -> impl Stream<Item = pb::WriteUploadRequest> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What a `Range` header asks for, for a file of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: the whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a single `bytes=` range (RFC 9110). Other units, several ranges and
/// malformed values are ignored (the whole file), as the RFC allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        // bytes=A-
        (false, true) => match number(first) {
            Some(start) if start < size => RangeRequest::Partial {
                start,
                end: size - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=A-B
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// The strong ETag of content: its sha256, quoted.
pub fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// Whether `If-None-Match` matches the ETag (weak comparison, `*` matches).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(header) = header else {
        return false;
    };
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether a browser may show content of this type inline: images, audio and video
/// it renders without running anything, and plain text (with nosniff). Everything
/// else (HTML, SVG, XML, scripts, PDF, unknown types) is an attachment.
pub fn inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "image/bmp"
            | "text/plain"
    ) || essence.starts_with("audio/")
        || essence.starts_with("video/")
}

/// `Content-Disposition` for a download (RFC 6266): `inline` or `attachment`, an
/// ASCII fallback `filename` and the exact name as RFC 5987 `filename*`.
pub fn content_disposition(filename: &str, content_type: &str) -> String {
    let kind = if inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    if filename.is_empty() {
        return kind.to_owned();
    }
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// `small` (default) or `medium`.
pub fn thumbnail_size(size: Option<&str>) -> Result<pb::ThumbnailSize, Error> {
    match size {
        None | Some("small") => Ok(pb::ThumbnailSize::Small),
        Some("medium") => Ok(pb::ThumbnailSize::Medium),
        Some(_) => Err(Error::invalid("size", "size must be small or medium")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn metadata_needs_a_valid_sha256() {
        let sha = "a".repeat(64);
        let header = format!(
            "filename {},sha256 {},content_type {},is_confidential",
            b64("报告.pdf"),
            b64(&sha),
            b64("application/pdf")
        );
        let m = parse_metadata(Some(&header)).expect("valid");
        assert_eq!(m.filename, "报告.pdf");
        assert_eq!(m.sha256, sha);
        assert_eq!(m.content_type, "application/pdf");
        // tus-js-client and tuspy conventions.
        let m = parse_metadata(Some(&format!(
            "name {},filetype {},sha256 {}",
            b64("a.png"),
            b64("image/png"),
            b64(&sha)
        )))
        .expect("valid");
        assert_eq!(
            (m.filename.as_str(), m.content_type.as_str()),
            ("a.png", "image/png")
        );
        for bad in [
            None,
            Some(format!("filename {}", b64("x"))),
            Some(format!("sha256 {}", b64(&"A".repeat(64)))),
            Some("sha256 !!!notbase64".to_owned()),
            Some(format!(
                "sha256 {}",
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe])
            )),
            Some(format!("sha256 {},{}", b64(&sha), "x".repeat(5000))),
        ] {
            assert!(parse_metadata(bad.as_deref()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numeric_headers_and_checksums() {
        assert_eq!(
            parse_u64_header("Upload-Offset", Some(" 42 ")).expect("ok"),
            42
        );
        for bad in [
            None,
            Some(""),
            Some("-1"),
            Some("1e3"),
            Some("99999999999999999999999"),
        ] {
            assert!(parse_u64_header("Upload-Offset", bad).is_err(), "{bad:?}");
        }
        let sha1 = base64::engine::general_purpose::STANDARD.encode([7u8; 20]);
        let (alg, digest) = parse_checksum(Some(&format!("sha1 {sha1}")))
            .expect("valid")
            .expect("some");
        assert_eq!((alg.as_str(), digest.len()), ("sha1", 20));
        assert!(parse_checksum(None).expect("none").is_none());
        for bad in ["md5 AAAA", "sha1", &format!("sha256 {sha1}"), "sha1 ***"] {
            assert!(parse_checksum(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=-"), 10), Full);
    }

    #[test]
    fn validators() {
        let tag = etag(&"b".repeat(64));
        assert!(none_match(Some(&tag), &tag));
        assert!(none_match(Some(&format!("\"x\", W/{tag}")), &tag));
        assert!(none_match(Some("*"), &tag));
        assert!(!none_match(Some("\"x\""), &tag));
        assert!(!none_match(None, &tag));
    }

    #[test]
    fn dispositions_are_safe() {
        assert_eq!(
            content_disposition("cat.png", "image/png"),
            "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png"
        );
        let d = content_disposition("x\".html", "text/html");
        assert!(d.starts_with("attachment; filename=\"x_.html\""), "{d}");
        assert!(d.ends_with("filename*=UTF-8''x%22.html"), "{d}");
        let d = content_disposition("报告 v1.pdf", "application/pdf");
        assert!(d.starts_with("attachment; filename=\"__ v1.pdf\""), "{d}");
        assert!(d.contains("UTF-8''%E6%8A%A5%E5%91%8A%20v1.pdf"), "{d}");
        assert!(
            content_disposition("a\r\nb", "text/plain").starts_with("inline; filename=\"a__b\"")
        );
        assert_eq!(content_disposition("", "image/svg+xml"), "attachment");
        for executable in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "application/xhtml+xml",
            "text/xml",
            "application/octet-stream",
        ] {
            assert!(!inline_safe(executable), "{executable}");
        }
        assert!(inline_safe("Image/JPEG; q=1"));
        assert!(inline_safe("video/mp4"));
    }

    #[test]
    fn thumbnail_sizes() {
        assert_eq!(thumbnail_size(None).expect("ok"), pb::ThumbnailSize::Small);
        assert_eq!(
            thumbnail_size(Some("medium")).expect("ok"),
            pb::ThumbnailSize::Medium
        );
        assert!(thumbnail_size(Some("large")).is_err());
    }
}
