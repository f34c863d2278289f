//! The application core: one function per use case, shared by both transports.
//!
//! REST handlers (`crate::rest`) and WebSocket frame dispatch (`crate::ws`) are thin
//! adapters: they decode their wire format into the inputs here, call one use case,
//! and encode the result. Every rule (limits, friendship and membership checks,
//! visibility) is written once in this module, so the two transports cannot drift.
//! Nothing here knows HTTP, WebSocket frames or JSON.

pub mod conversations;
pub mod events;
pub mod files;
pub mod limits;
pub mod messages;
pub mod presence;
pub mod search;
pub mod social;
pub mod validate;
