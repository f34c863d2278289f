//! The process's TLS crypto provider.
//!
//! reqwest 0.13 (the OTLP exporter, `object_store`'s S3 client) is built with
//! `rustls-no-provider`, so that no aws-lc is linked: a client built before a provider is
//! installed panics. [`install_crypto_provider`] makes ring the process default; every
//! entry point calls it before building any HTTP client (logging first of all).

/// Makes ring rustls's process-wide default provider. Idempotent: when a provider is
/// already installed (by an earlier call, or by a test) that one stays.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_and_a_second_call_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
