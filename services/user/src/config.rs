//! The user service's settings, taken from the process-wide [`Settings`].

use beehive_common::component::ComponentError;
use beehive_common::config::{Component, Settings};

use crate::verification::Mailer;

/// What the user service reads from the settings.
#[derive(Clone, Debug)]
pub struct UserConfig {
    /// Whether an email given at registration must come with a valid code
    /// (`BEEHIVE_EMAIL_VERIFICATION`, on by default).
    pub email_verification: bool,
    /// Where codes go: SMTP when `BEEHIVE_SMTP_URL` is set, the log otherwise.
    pub mailer: Mailer,
}

impl UserConfig {
    /// Reads the settings; a malformed SMTP URL or sender stops start-up instead of
    /// failing every code later.
    pub fn from_settings(settings: &Settings) -> Result<Self, ComponentError> {
        let mailer = Mailer::new(settings.smtp_url.as_ref(), &settings.smtp_from).map_err(|e| {
            ComponentError::Config {
                component: Component::User,
                message: e.to_string(),
            }
        })?;
        if !mailer.is_smtp() {
            tracing::info!("no BEEHIVE_SMTP_URL: verification codes are written to the log");
        }
        Ok(Self {
            email_verification: settings.email_verification,
            mailer,
        })
    }
}
