//! Access tokens (EdDSA JWTs) and refresh tokens (opaque random strings).
//!
//! Access token: header `{"alg":"EdDSA","typ":"JWT","kid":...}`, claims `sub` (user
//! id), `sid` (session id), `jti` (unique per token), `iat`, `exp`. Anyone holding the
//! public keys verifies it; revocation is checked separately against the session.
//!
//! Refresh token: 256 random bits, base64url; only its SHA-256 is stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use beehive_common::{Error, Result};
use jsonwebtoken::{Algorithm, Header, Validation};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::KeyRing;

/// Longest access token accepted for verification; ours are about 350 bytes.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 4096;
/// Length of a refresh token string (32 bytes base64url without padding).
pub const REFRESH_TOKEN_LEN: usize = 43;

/// The claims of a Beehive access token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// A unique token id.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The token's `sub`.
    pub user_id: Uuid,
    /// The token's `sid`.
    pub session_id: Uuid,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// A freshly minted access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs and verifies access tokens with a [`KeyRing`].
#[derive(Clone)]
pub struct Tokens {
    keys: KeyRing,
    ttl: Duration,
    validation: Validation,
}

impl Tokens {
    /// Tokens valid for `ttl`, signed with the ring's active key.
    pub fn new(keys: KeyRing, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // One cluster, one clock: an expired token is expired, no grace.
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        Self {
            keys,
            ttl,
            validation,
        }
    }

    /// The key ring (for ListSigningKeys).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints an access token for a session.
    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> Result<AccessToken> {
        self.issue_at(user_id, session_id, now_secs())
    }

    /// Mints a token as if issued at `iat` (tests and benchmarks of expiry).
    pub fn issue_at(&self, user_id: Uuid, session_id: Uuid, iat: u64) -> Result<AccessToken> {
        let active = self.keys.active();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(active.kid.clone());
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            jti: Uuid::now_v7().to_string(),
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        let token = jsonwebtoken::encode(&header, &claims, &active.encoding)
            .map_err(|e| Error::internal(format!("cannot sign an access token: {e}")))?;
        Ok(AccessToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks signature, key id and expiry. Revocation is not checked here. Every
    /// failure is the one `unauthenticated` error.
    pub fn verify(&self, token: &str) -> Result<Verified> {
        if token.is_empty() || token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(Error::unauthenticated());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::unauthenticated())?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.find(kid))
            .ok_or_else(Error::unauthenticated)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|_| Error::unauthenticated())?;
        let claims = data.claims;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| Error::unauthenticated())?;
        let session_id = Uuid::parse_str(&claims.sid).map_err(|_| Error::unauthenticated())?;
        Ok(Verified {
            user_id,
            session_id,
            expires_at: claims.exp,
        })
    }
}

/// A new refresh token: 256 bits from the OS RNG, base64url.
pub fn new_refresh_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a refresh token.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a string can be a refresh token at all (checked before any lookup).
pub fn plausible_refresh_token(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, kid_for, public_key};
    use chrono::Utc;

    fn ring() -> KeyRing {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        KeyRing::new(&key, Utc::now(), Vec::new()).expect("ring")
    }

    fn decode_part(token: &str, index: usize) -> serde_json::Value {
        let part = token.split('.').nth(index).expect("part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
    }

    #[test]
    fn tokens_carry_the_documented_header_and_claims() {
        let tokens = Tokens::new(ring(), Duration::from_secs(900));
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let minted = tokens.issue(user, session).expect("issue");
        let header = decode_part(&minted.token, 0);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], tokens.keys().active().kid.as_str());
        let claims = decode_part(&minted.token, 1);
        assert_eq!(claims["sub"], user.to_string());
        assert_eq!(claims["sid"], session.to_string());
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 900));

        let verified = tokens.verify(&minted.token).expect("verify");
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.session_id, session);
        let again = tokens.issue(user, session).expect("issue");
        assert_ne!(decode_part(&again.token, 1)["jti"], claims["jti"]);
    }

    #[test]
    fn expired_forged_and_foreign_tokens_fail() {
        let tokens = Tokens::new(ring(), Duration::from_secs(60));
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let expired = tokens
            .issue_at(user, session, now_secs() - 61)
            .expect("issue");
        assert!(tokens.verify(&expired.token).is_err(), "expired");

        let good = tokens.issue(user, session).expect("issue").token;
        // Tamper with the claims but keep the signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut claims = decode_part(&good, 1);
        claims["sub"] = serde_json::Value::String(Uuid::now_v7().to_string());
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(tokens.verify(&parts.join(".")).is_err(), "tampered");

        let other = Tokens::new(ring(), Duration::from_secs(60));
        let foreign = other.issue(user, session).expect("issue").token;
        assert!(tokens.verify(&foreign).is_err(), "unknown kid");

        // A foreign key announced under our kid still fails on the signature.
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let public = key.verifying_key().to_bytes();
        let impostor_ring = KeyRing::new(
            &key,
            Utc::now(),
            vec![public_key(kid_for(&public), public, Utc::now())],
        )
        .expect("ring");
        let impostor = Tokens::new(impostor_ring, Duration::from_secs(60));
        let mut forged_parts: Vec<String> = impostor
            .issue(user, session)
            .expect("issue")
            .token
            .split('.')
            .map(str::to_owned)
            .collect();
        let mut header = decode_part(&good, 0);
        header["kid"] = serde_json::Value::String(tokens.keys().active().kid.clone());
        forged_parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
        assert!(tokens.verify(&forged_parts.join(".")).is_err(), "wrong key");

        for junk in ["", "a.b.c", "not a token", &"x".repeat(5000)] {
            assert!(tokens.verify(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn refresh_tokens_are_256_bit_and_hashed() {
        let a = new_refresh_token();
        let b = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), REFRESH_TOKEN_LEN);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("b64").len(), 32);
        assert!(plausible_refresh_token(&a));
        assert!(!plausible_refresh_token("short"));
        assert!(!plausible_refresh_token(&format!("{}!", &a[..42])));
        assert_eq!(refresh_token_hash(&a), refresh_token_hash(&a));
        assert_ne!(refresh_token_hash(&a), refresh_token_hash(&b));
    }
}
