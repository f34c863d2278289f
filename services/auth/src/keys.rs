//! Ed25519 signing keys for access tokens.
//!
//! The active key comes from `BEEHIVE_JWT_SECRET_FILE` (a PKCS#8 PEM, e.g. the
//! operator's Secret) when set; otherwise auth generates one into PostgreSQL on first
//! start. Generation is race-safe: every process inserts its candidate with
//! `ON CONFLICT DO NOTHING` against a one-active-key index and then reads the active
//! key back, so processes starting together all end up with the winner's key.
//! A key's `kid` is its RFC 7638 JWK thumbprint, so the same key has the same kid in
//! every process without coordination.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use crate::store::{KeyRow, Store};

/// The only algorithm Beehive signs with.
pub const ALGORITHM: &str = "EdDSA";

/// Largest key file read: a PEM Ed25519 key is about 120 bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read (missing, permissions).
    #[error("cannot read signing key file {path}: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file is far larger than a key: probably the wrong file.
    #[error("signing key file {path} is {size} bytes, more than a key ({MAX_KEY_FILE_BYTES} max)")]
    TooLarge {
        /// The configured path.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The key file holds something other than a PKCS#8 Ed25519 key.
    #[error("signing key file {path} is not a PKCS#8 PEM Ed25519 private key")]
    Format {
        /// The configured path.
        path: String,
    },
    /// A key in `auth.signing_keys` does not decode.
    #[error("stored signing key {kid} is unreadable")]
    Stored {
        /// The key's id.
        kid: String,
    },
    /// The key could not be encoded as PKCS#8 (should not happen).
    #[error("cannot encode the signing key")]
    Encode,
    /// The database claims a key was stored but none is active.
    #[error("no active signing key after generating one (database misbehaving?)")]
    NoActiveKey,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] beehive_common::Error),
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the
/// canonical JWK `{"crv":"Ed25519","kty":"OKP","x":...}`).
pub fn kid_for(public_key: &[u8; 32]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public_key);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A key tokens are verified with.
#[derive(Clone)]
pub struct PublicKey {
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// The raw Ed25519 public key, as ListSigningKeys and JWKS publish it.
    pub public_key: [u8; 32],
    /// When the key was made (loaded, for a key file).
    pub created_at: DateTime<Utc>,
    pub(crate) decoding: DecodingKey,
}

/// The key new tokens are signed with.
#[derive(Clone)]
pub struct ActiveKey {
    /// The key id written into every new token's header.
    pub kid: String,
    pub(crate) encoding: EncodingKey,
}

/// The active key and every key still accepted for verification.
#[derive(Clone)]
pub struct KeyRing {
    active: ActiveKey,
    keys: Vec<PublicKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("KeyRing")
            .field("active_kid", &self.active.kid)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeyRing {
    /// A ring signing with `key`, also verifying with `others` (e.g. keys that signed
    /// tokens before a switch to a key file).
    pub fn new(
        key: &ed25519_dalek::SigningKey,
        created_at: DateTime<Utc>,
        others: Vec<PublicKey>,
    ) -> Result<Self, KeyError> {
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Encode)?;
        let public = key.verifying_key().to_bytes();
        let kid = kid_for(&public);
        let mut keys = vec![public_key(kid.clone(), public, created_at)];
        keys.extend(others.into_iter().filter(|k| k.kid != kid));
        Ok(Self {
            active: ActiveKey {
                kid,
                encoding: EncodingKey::from_ed_der(der.as_bytes()),
            },
            keys,
        })
    }

    /// The signing key.
    pub fn active(&self) -> &ActiveKey {
        &self.active
    }

    /// Every verification key, the active one first.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The verification key named `kid`.
    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// A verification key from its raw bytes.
pub fn public_key(kid: String, public_key: [u8; 32], created_at: DateTime<Utc>) -> PublicKey {
    PublicKey {
        decoding: DecodingKey::from_ed_der(&public_key),
        kid,
        public_key,
        created_at,
    }
}

/// Reads a PKCS#8 PEM Ed25519 private key (what `openssl genpkey -algorithm ed25519`
/// writes and the operator stores in its Secret).
pub fn read_key_file(path: &Path) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let shown = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?
        .len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge { path: shown, size });
    }
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
        .map_err(|_| KeyError::Format { path: shown })
}

fn signing_key_from_row(row: &KeyRow) -> Result<ed25519_dalek::SigningKey, KeyError> {
    ed25519_dalek::SigningKey::from_pkcs8_der(&row.private_key).map_err(|_| KeyError::Stored {
        kid: row.kid.clone(),
    })
}

fn public_from_row(row: &KeyRow) -> Option<PublicKey> {
    let bytes: [u8; 32] = row.public_key.as_slice().try_into().ok()?;
    Some(public_key(row.kid.clone(), bytes, row.created_at))
}

/// Loads the key ring: from `key_file` when given, else the database's active key,
/// generating it when there is none yet. Keys stored in the database stay accepted
/// for verification either way.
pub async fn load(store: &Store, key_file: Option<&Path>) -> Result<KeyRing, KeyError> {
    let stored = store.signing_keys().await?;
    let others: Vec<PublicKey> = stored.iter().filter_map(public_from_row).collect();
    if let Some(path) = key_file {
        let key = read_key_file(path)?;
        let ring = KeyRing::new(&key, Utc::now(), others)?;
        tracing::info!(kid = %ring.active().kid, path = %path.display(), "signing key loaded from file");
        return Ok(ring);
    }
    let active = match stored.into_iter().find(|k| k.active) {
        Some(row) => row,
        None => {
            let candidate = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let der = candidate.to_pkcs8_der().map_err(|_| KeyError::Encode)?;
            let public = candidate.verifying_key().to_bytes();
            let kid = kid_for(&public);
            let inserted = store
                .insert_active_key(&kid, ALGORITHM, der.as_bytes(), &public)
                .await?;
            let row = store.active_key().await?.ok_or(KeyError::NoActiveKey)?;
            if inserted {
                tracing::info!(kid = %row.kid, "generated the installation's signing key");
            } else {
                tracing::info!(kid = %row.kid, "another process generated the signing key first");
            }
            row
        }
    };
    let key = signing_key_from_row(&active)?;
    let others = store
        .signing_keys()
        .await?
        .iter()
        .filter_map(public_from_row)
        .collect();
    KeyRing::new(&key, active.created_at, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("b64");
        let public: [u8; 32] = x.try_into().expect("32 bytes");
        assert_eq!(
            kid_for(&public),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn key_files_must_be_pkcs8_pem() {
        let dir = std::env::temp_dir().join(format!("beehive-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        let good = dir.join("good.pem");
        std::fs::write(&good, pem.as_bytes()).expect("write");
        let read = read_key_file(&good).expect("read");
        assert_eq!(read.to_bytes(), key.to_bytes());

        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a key").expect("write");
        let error = read_key_file(&bad).expect_err("bad");
        assert!(matches!(error, KeyError::Format { .. }));
        assert!(matches!(
            read_key_file(&dir.join("missing.pem")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn rings_put_the_active_key_first_without_duplicates() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let own = key.verifying_key().to_bytes();
        let old = other.verifying_key().to_bytes();
        let ring = KeyRing::new(
            &key,
            Utc::now(),
            vec![
                public_key(kid_for(&own), own, Utc::now()),
                public_key(kid_for(&old), old, Utc::now()),
            ],
        )
        .expect("ring");
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.keys()[0].kid, ring.active().kid);
        assert!(ring.find(&kid_for(&old)).is_some());
        assert!(!format!("{ring:?}").contains("encoding"));
    }
}
