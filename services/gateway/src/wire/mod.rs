//! What travels to and from clients: WebSocket frames ([`frame`]), the JSON views the
//! frames carry ([`views`], borrowing, so a pushed event is serialised once for every
//! recipient) and the REST JSON objects with their OpenAPI schemas ([`model`]).
//!
//! Wire types render the core's and the services' values; they hold no rules beyond
//! the shape of the encoding (limits and checks live in [`crate::app`]).

/// The client frame decoder and server frame encoders: public so the fuzz targets
/// (fuzz/) can drive the decoder directly.
pub mod frame;
pub mod model;
pub mod search;
pub mod views;

pub use crate::app::messages::msg_type_name;

/// RFC 3339 in UTC with microseconds (PostgreSQL's precision), as both REST bodies and
/// WebSocket frames render it; `None` (JSON `null`) when the timestamp is missing or
/// out of range.
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_with_microseconds_and_bad_ones_become_null() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000,
        };
        assert_eq!(
            timestamp(Some(&ts)).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(timestamp(Some(&bad)), None);
        assert_eq!(timestamp(None), None);
    }
}
