//! Times on the wire: protobuf `Timestamp`s from database and Redis times, and the
//! RFC 3339 text the public API shows.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::Timestamp;

/// The protobuf timestamp of a time (PostgreSQL `timestamptz` as read by sqlx).
pub fn to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Always below 2e9 (a leap second adds at most 1e9 to 999_999_999).
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The protobuf timestamp of milliseconds since the Unix epoch (Redis `TIME`-based
/// clocks, e.g. presence's last-seen times).
pub fn timestamp_from_millis(ms: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// The time of a protobuf timestamp; `None` when it is out of chrono's range or its
/// nanos are negative.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// RFC 3339 in UTC with microseconds (PostgreSQL's precision), as the REST API and
/// WebSocket frames render times; `None` when the timestamp is missing or out of range.
pub fn to_rfc3339(ts: Option<&Timestamp>) -> Option<String> {
    from_timestamp(ts?).map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_microsecond_precision() {
        let time = DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("in range");
        let ts = to_timestamp(time);
        assert_eq!(from_timestamp(&ts), Some(time));
        assert_eq!(
            to_rfc3339(Some(&ts)).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(to_rfc3339(None), None);
        let bad = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(to_rfc3339(Some(&bad)), None);
    }

    #[test]
    fn millis_split_into_seconds_and_nanos() {
        let ts = timestamp_from_millis(1_700_000_000_250);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 250_000_000));
    }

    #[test]
    fn negative_nanos_are_out_of_range() {
        let ts = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(to_rfc3339(Some(&ts)), None);
    }
}
