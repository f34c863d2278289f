//! Opaque, stable page cursors.
//!
//! Newest-first pages continue strictly after the last hit's `(created_at, id)`, so
//! messages indexed meanwhile never shift or repeat a page. Relevance pages continue
//! at an offset (scores move as the index grows; an offset is the stable choice there).
//! A cursor names its order, so one cannot be replayed under the other.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest cursor accepted (bytes), before decoding.
pub const MAX_CURSOR_BYTES: usize = 256;

/// Deepest relevance page start.
pub const MAX_OFFSET: u32 = 10_000;

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// After the hit created at `micros` (µs since the epoch) with message id `id`.
    After { micros: i64, id: String },
    /// At this many hits into the relevance ranking.
    Offset(u32),
}

/// Why a cursor was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cursor is not a cursor of this search")]
pub struct BadCursor;

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let plain = match self {
            Self::After { micros, id } => format!("1|r|{micros}|{id}"),
            Self::Offset(offset) => format!("1|s|{offset}"),
        };
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// Parses [`Cursor::encode`]'s output.
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(BadCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let plain = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let parts: Vec<&str> = plain.split('|').collect();
        match parts.as_slice() {
            ["1", "r", micros, id] => {
                let micros = micros.parse().map_err(|_| BadCursor)?;
                let id = uuid::Uuid::parse_str(id).map_err(|_| BadCursor)?;
                Ok(Self::After {
                    micros,
                    id: id.hyphenated().to_string(),
                })
            }
            ["1", "s", offset] => {
                let offset: u32 = offset.parse().map_err(|_| BadCursor)?;
                if offset > MAX_OFFSET {
                    return Err(BadCursor);
                }
                Ok(Self::Offset(offset))
            }
            _ => Err(BadCursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_opaque() {
        let after = Cursor::After {
            micros: 1_764_000_000_123_456,
            id: "0190a6f2-0000-7000-8000-000000000001".into(),
        };
        let text = after.encode();
        assert!(!text.contains('|') && !text.contains("0190a6f2"));
        assert_eq!(Cursor::decode(&text), Ok(after));
        assert_eq!(
            Cursor::decode(&Cursor::Offset(40).encode()),
            Ok(Cursor::Offset(40))
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "!!!",
            "x",
            &URL_SAFE_NO_PAD.encode("1|r|notanumber|0190a6f2-0000-7000-8000-000000000001"),
            &URL_SAFE_NO_PAD.encode("1|r|5|not-a-uuid"),
            &URL_SAFE_NO_PAD.encode("1|s|-1"),
            &URL_SAFE_NO_PAD.encode("1|s|99999999"),
            &URL_SAFE_NO_PAD.encode("2|s|1"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"a".repeat(MAX_CURSOR_BYTES + 1),
        ] {
            assert_eq!(Cursor::decode(bad), Err(BadCursor), "{bad}");
        }
    }
}
