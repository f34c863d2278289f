//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow and memory-hungry (OWASP's m=19 MiB, t=2, p=1), so it
//! runs on the blocking pool (never on a runtime worker) behind a semaphore sized to
//! the CPUs: a burst of logins then queues for CPU instead of allocating 19 MiB per
//! request on up to 512 blocking threads.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use beehive_common::{Error, Result};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// A hash of a random password, verified against when a login names no account so
    /// that "no such user" costs as much time as "wrong password" (no timing oracle).
    dummy_hash: Arc<str>,
    /// The PHC prefix of hashes made with the current parameters; others are rehashed
    /// on the next successful login.
    current_prefix: Arc<str>,
    permits: Arc<Semaphore>,
}

impl Passwords {
    /// OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane).
    pub fn owasp() -> Result<Self> {
        let params = Params::new(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
            None,
        )
        .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
        Self::with_params(params)
    }

    /// Hashing with explicit parameters (benchmarks, tests of rehashing).
    pub fn with_params(params: Params) -> Result<Self> {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut random = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut random[..]);
        let dummy = hasher
            .hash_password(&random)
            .map_err(|e| Error::internal(format!("argon2 dummy hash: {e}")))?
            .to_string();
        let current_prefix = format!(
            "$argon2id$v=19$m={},t={},p={}$",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        );
        Ok(Self {
            params,
            dummy_hash: dummy.into(),
            current_prefix: current_prefix.into(),
            permits: Arc::new(Semaphore::new(parallel.max(1) * 2)),
        })
    }

    fn hasher(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self.permit().await?;
        let hasher = self.hasher();
        tokio::task::spawn_blocking(move || {
            hasher
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("argon2 hash: {e}")))
        })
        .await
        .map_err(Error::internal)?
    }

    /// Whether `password` matches `stored`. With `None` (no such account) a dummy hash
    /// is verified anyway and the answer is `false`. A malformed stored hash is an
    /// internal error, never a match.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool> {
        let _permit = self.permit().await?;
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let hasher = self.hasher();
        let matched = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::internal(format!("stored password hash unreadable: {e}")))?;
            Ok::<bool, Error>(hasher.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(Error::internal)??;
        Ok(exists && matched)
    }

    /// Whether `stored` was made with other parameters than the current ones (so a
    /// successful login should store a fresh hash).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        !stored.starts_with(&*self.current_prefix)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("password hashing is shutting down".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Passwords {
        Passwords::with_params(Params::new(64, 1, 1, None).expect("params")).expect("hasher")
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let passwords = fast();
        let a = passwords.hash("correct horse".into()).await.expect("hash");
        let b = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "salts differ");
        assert!(
            passwords
                .verify("correct horse".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(!passwords.needs_rehash(&a));
    }

    #[tokio::test]
    async fn missing_accounts_never_match() {
        let passwords = fast();
        assert!(
            !passwords
                .verify("anything".into(), None)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn malformed_hashes_are_errors_not_matches() {
        let passwords = fast();
        assert!(
            passwords
                .verify("x".into(), Some("plain".into()))
                .await
                .is_err()
        );
    }

    #[test]
    fn owasp_parameters_are_the_default() {
        let passwords = Passwords::owasp().expect("hasher");
        assert!(!passwords.needs_rehash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        assert!(passwords.needs_rehash("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA"));
    }
}
