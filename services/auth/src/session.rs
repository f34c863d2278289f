//! Sessions and their revocation, as plain types: why a session ended, and the message
//! gateways receive when it does.

use beehive_common::{Error, Result};
use beehive_proto::v1::RevocationReason;
use uuid::Uuid;

/// Why a session ended. The strings are the wire contract with gateways (Redis
/// payload, the `kicked` frame) and the values of `auth.sessions.revoked_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The user logged out of this session.
    Logout,
    /// The password changed; every other session of the user ends.
    PasswordChanged,
    /// Refresh-token reuse or an administrator ended the session.
    SessionRevoked,
}

impl Reason {
    /// The contract string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::PasswordChanged => "password_changed",
            Self::SessionRevoked => "session_revoked",
        }
    }

    /// Parses [`Reason::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "logout" => Some(Self::Logout),
            "password_changed" => Some(Self::PasswordChanged),
            "session_revoked" => Some(Self::SessionRevoked),
            _ => None,
        }
    }

    /// From the proto enum; `UNSPECIFIED` and unknown values are invalid.
    pub fn from_proto(value: i32) -> Result<Self> {
        match RevocationReason::try_from(value) {
            Ok(RevocationReason::Logout) => Ok(Self::Logout),
            Ok(RevocationReason::PasswordChanged) => Ok(Self::PasswordChanged),
            Ok(RevocationReason::SessionRevoked) => Ok(Self::SessionRevoked),
            Ok(RevocationReason::Unspecified) | Err(_) => Err(Error::invalid(
                "reason",
                "reason must be logout, password_changed or session_revoked",
            )),
        }
    }

    /// To the proto enum.
    pub fn to_proto(self) -> RevocationReason {
        match self {
            Self::Logout => RevocationReason::Logout,
            Self::PasswordChanged => RevocationReason::PasswordChanged,
            Self::SessionRevoked => RevocationReason::SessionRevoked,
        }
    }
}

/// A session that was just revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The session (JWT `sid`) whose tokens stop working.
    pub session_id: Uuid,
    /// Its user, so gateways can find the sockets to kick.
    pub user_id: Uuid,
    /// Why, shown to the client in the `kicked` frame.
    pub reason: Reason,
}

/// The JSON published on `<installation>:auth:revocations`:
/// `{"session_id","user_id","reason"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationMessage {
    /// The revoked session id.
    pub session_id: String,
    /// The session's user id.
    pub user_id: String,
    /// `logout`, `password_changed` or `session_revoked`.
    pub reason: String,
}

impl From<&Revoked> for RevocationMessage {
    fn from(revoked: &Revoked) -> Self {
        Self {
            session_id: revoked.session_id.to_string(),
            user_id: revoked.user_id.to_string(),
            reason: revoked.reason.as_str().to_owned(),
        }
    }
}

/// Where a login came from, trimmed to the stored limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP as the gateway saw it.
    pub ip: String,
    /// The client's User-Agent, for the user's device list.
    pub user_agent: String,
}

/// Longest client IP kept (an IPv6 address with zone fits).
pub const IP_MAX: usize = 64;
/// Longest user agent kept; longer ones are cut, not refused (browsers send long ones).
pub const USER_AGENT_MAX: usize = 512;

impl ClientInfo {
    /// Keeps at most the stored limits, at character boundaries, without control
    /// characters (they would corrupt device lists and logs).
    pub fn new(ip: &str, user_agent: &str) -> Self {
        let clean = |s: &str, max: usize| -> String {
            s.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(max)
                .collect()
        };
        Self {
            ip: clean(ip, IP_MAX),
            user_agent: clean(user_agent, USER_AGENT_MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for reason in [
            Reason::Logout,
            Reason::PasswordChanged,
            Reason::SessionRevoked,
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(
                Reason::from_proto(reason.to_proto() as i32).expect("valid"),
                reason
            );
        }
        assert!(Reason::from_proto(0).is_err());
        assert!(Reason::from_proto(99).is_err());
        assert_eq!(Reason::parse("other"), None);
    }

    #[test]
    fn the_message_is_the_gateway_contract() {
        let revoked = Revoked {
            session_id: Uuid::nil(),
            user_id: Uuid::max(),
            reason: Reason::PasswordChanged,
        };
        let json = serde_json::to_value(RevocationMessage::from(&revoked)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "session_id": "00000000-0000-0000-0000-000000000000",
                "user_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "reason": "password_changed",
            })
        );
    }

    #[test]
    fn client_info_is_trimmed() {
        let info = ClientInfo::new(" 10.0.0.1 ", &format!("agent\n{}", "x".repeat(600)));
        assert_eq!(info.ip, "10.0.0.1");
        assert_eq!(info.user_agent.chars().count(), USER_AGENT_MAX);
        assert!(!info.user_agent.contains('\n'));
    }
}
