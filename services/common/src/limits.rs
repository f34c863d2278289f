//! The limits of a message that both the gateway (which answers first, identically on
//! REST and WebSocket) and the message service (which stores it) enforce: written once so
//! the two cannot disagree again. They once did: the gateway allowed a 128-byte
//! `client_msg_id` that the message service then refused at 64 characters.

use crate::error::Error;

/// API.md: text message content, in bytes of UTF-8 (`payload_too_large` beyond it).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;

/// Longest `client_msg_id`, in characters (Unicode scalar values). API.md sets no limit;
/// 64 covers UUIDs and counters and bounds the deduplication key the service stores.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 64;

/// The `client_msg_id` rule: 1-[`MAX_CLIENT_MSG_ID_CHARS`] characters, no control
/// characters; `invalid_argument` otherwise.
pub fn check_client_msg_id(client_msg_id: &str) -> Result<(), Error> {
    let chars = client_msg_id.chars().count();
    if chars == 0 || chars > MAX_CLIENT_MSG_ID_CHARS {
        return Err(Error::invalid(
            "client_msg_id",
            format!("client_msg_id must be 1-{MAX_CLIENT_MSG_ID_CHARS} characters"),
        ));
    }
    if client_msg_id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "client_msg_id",
            "client_msg_id must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_are_1_to_64_characters_without_control_characters() {
        assert!(check_client_msg_id("c-1").is_ok());
        assert!(check_client_msg_id(&"界".repeat(64)).is_ok());
        assert!(check_client_msg_id(&"界".repeat(65)).is_err());
        assert!(check_client_msg_id("").is_err());
        assert!(check_client_msg_id("a\nb").is_err());
    }
}
