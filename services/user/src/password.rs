//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow and memory-hungry (OWASP's m=19 MiB, t=2, p=1), so it
//! runs on the blocking pool (never on a runtime worker) behind a semaphore sized to
//! the CPUs: a burst of logins then queues for CPU instead of allocating 19 MiB per
//! request on up to 512 blocking threads.
//!
//! The 19 MiB of argon2 working memory come from a small pool of buffers reused by
//! every hash, never from a fresh allocation per hash: with glibc, freed 19 MiB blocks
//! stay resident in whichever per-thread arena the blocking thread used, and a burst
//! of a hundred registrations left the process at ~1 GB RSS. Now the memory is bounded
//! by the number of permits and allocated once.

use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use beehive_common::{Error, Result};
use tokio::sync::Semaphore;

/// Bytes of random salt per hash (the PHC recommendation).
const SALT_LEN: usize = 16;
/// Bytes of argon2 output stored per hash.
const OUTPUT_LEN: usize = 32;

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
    /// Working memory of finished hashes, at most one per permit.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Passwords {
    /// OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane).
    pub fn owasp() -> Result<Self> {
        let params = Params::new(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
            Some(OUTPUT_LEN),
        )
        .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
        Self::with_params(params)
    }

    /// Hashing with explicit parameters (benchmarks, tests of rehashing).
    pub fn with_params(params: Params) -> Result<Self> {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut random = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut random[..]);
        let mut memory = vec![Block::new(); params.block_count()];
        let dummy = hash_with(&params, &random, &mut memory)?;
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
            memory: Arc::new(Mutex::new(vec![memory])),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self.permit().await?;
        let params = self.params.clone();
        let mut memory = self.take_memory();
        let (result, memory) = tokio::task::spawn_blocking(move || {
            let result = hash_with(&params, password.as_bytes(), &mut memory);
            (result, memory)
        })
        .await
        .map_err(Error::internal)?;
        self.return_memory(memory);
        result
    }

    /// Whether `password` matches `stored`. With `None` (no such account) a dummy hash
    /// is verified anyway and the answer is `false`. A malformed stored hash is an
    /// internal error, never a match.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool> {
        let _permit = self.permit().await?;
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let mut memory = self.take_memory();
        let (matched, memory) = tokio::task::spawn_blocking(move || {
            let matched = verify_with(password.as_bytes(), &stored, &mut memory);
            (matched, memory)
        })
        .await
        .map_err(Error::internal)?;
        self.return_memory(memory);
        Ok(exists && matched?)
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

    /// A pooled buffer sized for the current parameters (allocated on first use; a
    /// permit holder always finds one after that, since buffers never outnumber
    /// permits).
    fn take_memory(&self) -> Vec<Block> {
        let pooled = self.memory.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| vec![Block::new(); self.params.block_count()])
    }

    fn return_memory(&self, memory: Vec<Block>) {
        // A buffer grown for an old hash's larger parameters is not kept.
        if memory.len() == self.params.block_count() {
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(memory);
        }
    }
}

/// Hashes `password` with a fresh salt into a PHC string, using `memory` as argon2's
/// working memory (it must hold `params.block_count()` blocks).
fn hash_with(params: &Params, password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::internal(format!("argon2 hash: {e}"));
    let mut salt = [0u8; SALT_LEN];
    rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
    let mut out = [0u8; OUTPUT_LEN];
    fit(memory, params.block_count());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, &mut memory[..])
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored` (any argon2 variant, version and
/// parameters it names), computed in `memory`, compared in constant time.
fn verify_with(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> Result<bool> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::internal(format!("stored password hash unreadable: {e}"))
    };
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| unreadable(&e))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| unreadable(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(unreadable(&"no salt or no hash"));
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or_else(|| unreadable(&"hash too long"))?;
    fit(memory, params.block_count());
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, &salt, out, &mut memory[..])
        .map_err(|e| Error::internal(format!("argon2 verify: {e}")))?;
    let computed = Output::new(out).map_err(|e| unreadable(&e))?;
    // Output's equality is constant-time.
    Ok(computed == expected)
}

/// Makes `memory` exactly `blocks` long (only hashes with other parameters resize it).
fn fit(memory: &mut Vec<Block>, blocks: usize) {
    if memory.len() != blocks {
        memory.clear();
        memory.resize(blocks, Block::new());
        memory.shrink_to_fit();
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

    #[tokio::test]
    async fn hashes_interoperate_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let passwords = fast();
        let params = Params::new(64, 1, 1, None).expect("params");
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);

        // Ours verifies with the reference implementation...
        let ours = passwords.hash("pa55word".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(reference.verify_password(b"pa55word", &parsed).is_ok());
        assert!(reference.verify_password(b"pa55worD", &parsed).is_err());

        // ...and hashes stored by it (or with other parameters) verify with ours.
        let theirs = reference
            .hash_password(b"hunter42")
            .expect("hash")
            .to_string();
        assert!(
            passwords
                .verify("hunter42".into(), Some(theirs.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("hunter43".into(), Some(theirs))
                .await
                .expect("verify")
        );
        let bigger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 2, 1, None).expect("params"),
        )
        .hash_password(b"old")
        .expect("hash")
        .to_string();
        assert!(passwords.needs_rehash(&bigger));
        assert!(
            passwords
                .verify("old".into(), Some(bigger))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn working_memory_is_reused_not_reallocated() {
        let passwords = fast();
        let hashes = (0..32).map(|i| passwords.hash(format!("password {i}")));
        for hash in futures::future::join_all(hashes).await {
            hash.expect("hash");
        }
        let pooled = passwords.memory.lock().expect("pool").len();
        assert!(pooled >= 1, "buffers are returned to the pool");
        assert!(
            pooled <= passwords.permits.available_permits(),
            "at most one buffer per permit: {pooled}"
        );
    }

    #[test]
    fn owasp_parameters_are_the_default() {
        let passwords = Passwords::owasp().expect("hasher");
        assert!(!passwords.needs_rehash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        assert!(passwords.needs_rehash("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA"));
    }
}
