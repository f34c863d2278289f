//! Every limit the gateway enforces, in one place, for both transports.
//!
//! API.md's "Limits" (defaults) that the gateway checks itself:
//! - text message content <= 16 KiB ([`MAX_CONTENT_BYTES`]; `payload_too_large`, 413);
//! - JSON request body <= 1 MiB ([`MAX_BODY_BYTES`]; `payload_too_large`, 413);
//! - WebSocket message <= 1 MiB ([`MAX_WS_MESSAGE_BYTES`]; the socket is closed);
//! - list pages: `limit` default 50, max 200 ([`DEFAULT_PAGE_LIMIT`], [`MAX_PAGE_LIMIT`]);
//! - `sync`: at most 1000 messages per call ([`SYNC_LIMIT`]).
//!
//! `client_msg_id` has no limit in API.md. The gateway used to allow 1-128 bytes while
//! the message service (services/message/src/conversation.rs, which stores it) allows
//! 1-64 characters without control characters: a REST or WebSocket send could pass the
//! gateway and then fail in the service, and the two disagreed on what they counted.
//! Decided: the stricter rule, the message service's, is THE rule for both transports
//! (written once, in `beehive_common::limits`, which both use):
//! 1-[`MAX_CLIENT_MSG_ID_CHARS`] characters (Unicode scalar values), no control
//! characters, `invalid_argument` (400) otherwise. A client that uses UUIDs or
//! counters (36 ASCII characters or fewer) is never affected.
//!
//! Everything else a client can send and the gateway checks (ids, device ids, frame
//! ids, id lists) is bounded here too, so no unbounded input costs an RPC.

/// The message limits the gateway shares with the message service
/// (beehive_common::limits), so the two enforce the same numbers.
pub use beehive_common::limits::{MAX_CLIENT_MSG_ID_CHARS, MAX_CONTENT_BYTES, check_client_msg_id};
/// API.md: a JSON request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// API.md: one WebSocket message.
pub const MAX_WS_MESSAGE_BYTES: usize = 1 << 20;
/// API.md: default page size of lists.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// API.md: largest page size of lists (larger values are clamped, as the services do).
pub const MAX_PAGE_LIMIT: u32 = 200;
/// Longest opaque paging cursor accepted from a client.
pub const MAX_CURSOR_BYTES: usize = 512;
/// API.md: messages per `sync` reply.
pub const SYNC_LIMIT: u32 = 1000;
/// Longest id accepted where ids are opaque strings (ours are 36-character UUIDs).
pub const MAX_ID_BYTES: usize = 64;
/// Most users asked about in one presence query.
pub const MAX_PRESENCE_USERS: usize = 200;
/// Longest `device_id` of a socket (the message service's limit, in bytes).
pub const MAX_DEVICE_ID_BYTES: usize = 128;
/// Longest frame `id` (string or number text), so echoing it costs little.
pub const MAX_FRAME_ID_BYTES: usize = 128;
