//! The rules of files and uploads, without I/O: what a valid sha256, filename and
//! content type are, where an upload's bytes may go, and the chunk checksums of the tus
//! checksum extension.

use beehive_common::Error;
use sha1::Digest as _;

/// Longest filename kept, in characters (longer ones are cut).
pub const MAX_FILENAME_CHARS: usize = 255;
/// Longest content type accepted, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Longest Upload-Metadata header kept, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// The content type of content nobody described.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Parts (PATCH requests that stored bytes) one upload may have: each is an object
/// and a row, so a client sending a byte per request cannot grow them without bound.
pub const MAX_PARTS: u32 = 10_000;

/// A sha256 as API.md writes it: 64 lowercase hex characters.
pub fn sha256_hex(field: &str, text: &str) -> Result<String, Error> {
    if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(text.to_owned())
    } else {
        Err(Error::invalid(
            field,
            "sha256 must be 64 lowercase hex characters",
        ))
    }
}

/// The filename kept for a file: its last path component, without control characters,
/// at most [`MAX_FILENAME_CHARS`]; empty stays empty.
pub fn filename(text: &str) -> String {
    let last = text.rsplit(['/', '\\']).next().unwrap_or_default();
    last.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A content type `type/subtype` with optional parameters; empty means
/// [`DEFAULT_CONTENT_TYPE`]. Lower-cased essence, so rules about types compare simply.
pub fn content_type(text: &str) -> Result<String, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_owned());
    }
    let invalid = || {
        Error::invalid(
            "content_type",
            "content_type must be a MIME type such as image/png",
        )
    };
    if text.len() > MAX_CONTENT_TYPE_BYTES || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid());
    }
    let (essence, params) = match text.split_once(';') {
        Some((essence, params)) => (essence.trim(), Some(params.trim())),
        None => (text, None),
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {}
        _ => return Err(invalid()),
    }
    let essence = essence.to_ascii_lowercase();
    Ok(match params {
        Some(p) if !p.is_empty() => format!("{essence}; {p}"),
        _ => essence,
    })
}

/// Where a PATCH may write: it must start at the stored offset (tus: 409 otherwise).
pub fn check_offset(stored: u64, given: u64) -> Result<(), Error> {
    if stored == given {
        Ok(())
    } else {
        Err(Error::AlreadyExists(format!(
            "Upload-Offset {given} does not match the upload's offset {stored}"
        )))
    }
}

/// The tus chunk checksum algorithms accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// Parses the algorithm name of `Upload-Checksum`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }
}

/// A chunk checksum being computed while its bytes stream by.
pub enum ChunkChecksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
}

impl ChunkChecksum {
    /// The expected checksum of a chunk, or `None` when the client gave none.
    pub fn expect(algorithm: &str, digest: &[u8]) -> Result<Option<Self>, Error> {
        if algorithm.is_empty() && digest.is_empty() {
            return Ok(None);
        }
        // Not the field of a mismatch: the gateway answers a mismatch with tus's 460.
        let invalid = || {
            Error::invalid(
                "checksum_algorithm",
                "Upload-Checksum must be sha1 or sha256 and a base64 digest of that length",
            )
        };
        let algorithm = ChecksumAlgorithm::parse(algorithm).ok_or_else(invalid)?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid());
        }
        Ok(Some(match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new(), digest.to_vec()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new(), digest.to_vec()),
        }))
    }

    /// Feeds chunk bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h, _) => h.update(data),
            Self::Sha256(h, _) => h.update(data),
        }
    }

    /// Whether the bytes fed match the expected digest.
    pub fn matches(self) -> bool {
        match self {
            Self::Sha1(h, expected) => h.finalize()[..] == expected[..],
            Self::Sha256(h, expected) => h.finalize()[..] == expected[..],
        }
    }
}

/// The error of a chunk whose checksum does not match (the gateway answers tus's 460).
pub fn checksum_mismatch() -> Error {
    Error::invalid(
        "upload_checksum",
        "the chunk does not match its Upload-Checksum; nothing of it was kept",
    )
}

/// The error of completed content whose sha256 is not the announced one.
pub fn hash_mismatch() -> Error {
    Error::AlreadyExists(
        "the uploaded content does not match its sha256; the upload was discarded".to_owned(),
    )
}

/// Storage keys. Blobs carry their row's id besides the hash, so two writers of the
/// same content never write the same key, and a deleted blob's key is never reused.
pub mod keys {
    use uuid::Uuid;

    /// The object of one PATCH's bytes.
    pub fn part(upload: Uuid, start: u64) -> String {
        format!(
            "uploads/{}/{start:020}-{}",
            upload.simple(),
            Uuid::new_v4().simple()
        )
    }

    /// The object of a blob.
    pub fn blob(sha256: &str, id: Uuid) -> String {
        format!("blobs/{}/{sha256}-{}", &sha256[..2], id.simple())
    }

    /// The object of a thumbnail.
    pub fn thumbnail(blob: Uuid, size: i16) -> String {
        format!(
            "thumbs/{}/{size}-{}",
            blob.simple(),
            Uuid::new_v4().simple()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_64_lowercase_hex() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex("sha256", good).expect("valid"), good);
        for bad in [
            "",
            "abc",
            &good.to_uppercase(),
            &format!("{good}0"),
            &good.replace('e', "g"),
        ] {
            assert!(sha256_hex("sha256", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(filename("../../etc/passwd"), "passwd");
        assert_eq!(filename("C:\\Users\\me\\cat.png"), "cat.png");
        assert_eq!(filename("a\r\nb\0.txt"), "ab.txt");
        assert_eq!(filename("报告 2026.pdf"), "报告 2026.pdf");
        assert_eq!(
            filename(&"x".repeat(300)).chars().count(),
            MAX_FILENAME_CHARS
        );
        assert_eq!(filename(""), "");
    }

    #[test]
    fn content_types_are_mime_types() {
        assert_eq!(content_type("").expect("default"), DEFAULT_CONTENT_TYPE);
        assert_eq!(content_type("Image/PNG").expect("valid"), "image/png");
        assert_eq!(
            content_type("text/plain; charset=utf-8").expect("valid"),
            "text/plain; charset=utf-8"
        );
        for bad in [
            "png",
            "image/",
            "/png",
            "a/b\nc",
            "image/pn g",
            &"a/".repeat(200),
        ] {
            assert!(content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn offsets_must_match() {
        assert!(check_offset(5, 5).is_ok());
        let error = check_offset(5, 0).expect_err("mismatch");
        assert_eq!(error.code(), beehive_common::ErrorCode::AlreadyExists);
    }

    #[test]
    fn chunk_checksums() {
        // sha1("abc")
        let sha1 = hex::decode("a9993e364706816aba3e25717850c26c9cd0d89d").expect("hex");
        let mut c = ChunkChecksum::expect("sha1", &sha1)
            .expect("valid")
            .expect("some");
        c.update(b"a");
        c.update(b"bc");
        assert!(c.matches());
        let mut c = ChunkChecksum::expect("sha1", &sha1)
            .expect("valid")
            .expect("some");
        c.update(b"abd");
        assert!(!c.matches());
        let sha256 =
            hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .expect("hex");
        let mut c = ChunkChecksum::expect("sha256", &sha256)
            .expect("valid")
            .expect("some");
        c.update(b"abc");
        assert!(c.matches());
        assert!(ChunkChecksum::expect("", &[]).expect("none").is_none());
        assert!(ChunkChecksum::expect("md5", &[0; 16]).is_err());
        assert!(ChunkChecksum::expect("sha1", &[0; 19]).is_err());
    }

    #[test]
    fn keys_are_distinct_per_write() {
        let u = uuid::Uuid::now_v7();
        assert_ne!(keys::part(u, 0), keys::part(u, 0));
        assert!(keys::part(u, 7).contains("/00000000000000000007-"));
        let sha = "ab".repeat(32);
        assert!(keys::blob(&sha, u).starts_with("blobs/ab/abab"));
    }
}
