//! Email verification codes: how they are made, stored and delivered.
//!
//! A code is six random digits, valid [`CODE_TTL`], single use, and at most one is sent
//! per address per [`RESEND_INTERVAL`]. Only a SHA-256 of (email, code) is stored, so a
//! database dump does not hand out live codes. A code survives at most
//! [`MAX_ATTEMPTS`] wrong guesses, so the 10^6 space cannot be walked through.
//!
//! Delivery goes through SMTP (lettre) when `BEEHIVE_SMTP_URL` is set; otherwise the
//! dev sink writes one info line holding the address and the code, so local users and
//! tests can read it from the log.

use std::time::Duration;

use beehive_common::config::SecretUrl;
use beehive_common::{Error, Result};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};

/// How long a code stays valid.
pub const CODE_TTL: Duration = Duration::from_secs(300);
/// The least time between two codes sent to one address.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Wrong guesses after which a code is discarded.
pub const MAX_ATTEMPTS: i32 = 5;

/// A fresh six-digit code, uniformly drawn from 000000..=999999 with the OS RNG.
pub fn new_code() -> String {
    use rand::Rng as _;
    let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
    format!("{n:06}")
}

/// What is stored for `code` sent to the canonical `email`: binding the address in
/// means a code hash cannot be replayed for another address.
pub fn code_hash(email: &str, code: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(email.as_bytes());
    hasher.update([0u8]);
    hasher.update(code.as_bytes());
    hasher.finalize().to_vec()
}

/// Compares two hashes in constant time, so response timing says nothing about how
/// much of a guess was right.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the mailer could not be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// `BEEHIVE_SMTP_URL` does not parse (message without the password).
    #[error("BEEHIVE_SMTP_URL is not a valid SMTP URL: {0}")]
    Url(String),
    /// `BEEHIVE_SMTP_FROM` is not a mailbox such as `Beehive <no-reply@example.com>`.
    #[error("BEEHIVE_SMTP_FROM is not a valid mailbox: {0}")]
    From(String),
}

/// Where codes go.
#[derive(Clone)]
pub enum Mailer {
    /// A real SMTP relay.
    Smtp {
        /// Pooled connections to the relay.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender of every code.
        from: Mailbox,
    },
    /// The dev sink: one log line per code.
    Log,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { from, .. } => write!(f, "Mailer::Smtp(from {from})"),
            Self::Log => f.write_str("Mailer::Log"),
        }
    }
}

impl Mailer {
    /// SMTP when `smtp_url` is set (`smtp://user:pass@host:587?tls=required`,
    /// `smtps://...`), the log sink otherwise. The URL's password never reaches an
    /// error message or a log.
    pub fn new(smtp_url: Option<&SecretUrl>, from: &str) -> Result<Self, MailerError> {
        let Some(url) = smtp_url else {
            return Ok(Self::Log);
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailerError::From(e.to_string()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| MailerError::Url(redact_error(&e.to_string(), url)))?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Self::Smtp { transport, from })
    }

    /// Whether codes really leave the process.
    pub fn is_smtp(&self) -> bool {
        matches!(self, Self::Smtp { .. })
    }

    /// Delivers `code` to `email`.
    pub async fn send_code(&self, email: &str, code: &str) -> Result<()> {
        match self {
            Self::Log => {
                // The dev sink: by contract (API.md) one info line with address and code.
                tracing::info!(
                    email = %email,
                    code = %code,
                    valid_seconds = CODE_TTL.as_secs(),
                    "verification code for {email}: {code} (no SMTP configured)"
                );
                Ok(())
            }
            Self::Smtp { transport, from } => {
                let to: Mailbox = email
                    .parse()
                    .map_err(|_| Error::invalid("email", "email is not a valid address"))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(format!("Your Beehive verification code: {code}"))
                    .body(format!(
                        "Your Beehive verification code is {code}.\n\n\
                         It is valid for {} minutes and can be used once. If you did not \
                         ask for it, ignore this message.\n",
                        CODE_TTL.as_secs() / 60
                    ))
                    .map_err(Error::internal)?;
                transport.send(message).await.map_err(|error| {
                    tracing::warn!(%error, "SMTP delivery failed");
                    Error::Unavailable("the mail server is unavailable, retry later".to_owned())
                })?;
                tracing::info!(email = %email, "verification code mailed");
                Ok(())
            }
        }
    }
}

/// Removes the URL (and so any password in it) from a parser's message, in case the
/// parser echoes its input.
fn redact_error(message: &str, url: &SecretUrl) -> String {
    message.replace(url.expose(), &url.redacted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<String> = (0..50).map(|_| new_code()).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
        );
        assert!(codes.len() > 40, "50 draws from 10^6 should rarely collide");
    }

    #[test]
    fn hashes_bind_the_address() {
        let a = code_hash("a@example.com", "123456");
        assert!(hashes_equal(&a, &code_hash("a@example.com", "123456")));
        assert!(!hashes_equal(&a, &code_hash("b@example.com", "123456")));
        assert!(!hashes_equal(&a, &code_hash("a@example.com", "123457")));
        assert!(!hashes_equal(&a, &a[..31]));
    }

    #[tokio::test]
    async fn smtp_urls_build_a_transport() {
        for url in [
            "smtp://user:hunter2@mail.example.com:587?tls=required",
            "smtps://user:hunter2@mail.example.com",
            "smtp://localhost:2525",
        ] {
            let mailer = Mailer::new(Some(&SecretUrl::new(url)), "Beehive <no-reply@example.com>")
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(mailer.is_smtp());
            assert!(!format!("{mailer:?}").contains("hunter2"));
        }
    }

    #[tokio::test]
    async fn bad_smtp_settings_are_reported_without_secrets() {
        let error =
            Mailer::new(Some(&SecretUrl::new("not a url hunter2")), "a@b.c").expect_err("bad url");
        assert!(matches!(error, MailerError::Url(_)));
        assert!(!error.to_string().contains("hunter2"));
        let error = Mailer::new(Some(&SecretUrl::new("smtp://localhost")), "not a mailbox")
            .expect_err("bad from");
        assert!(matches!(error, MailerError::From(_)));
        assert!(!Mailer::new(None, "whatever").expect("log sink").is_smtp());
    }
}
