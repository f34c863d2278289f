//! The WebSocket transport: `GET /ws` of API.md.
//!
//! [`upgrade`] authenticates and registers the socket with the [`crate::hub`] before
//! the 101; [`socket`] runs one task per socket that reads client frames (decoded by
//! [`crate::wire::frame`]), answers them through [`dispatch`], which calls the same
//! core use cases ([`crate::app`]) as the REST handlers, and writes the live frames the
//! hub queued in the socket's outbox.

mod dispatch;
mod socket;
mod upgrade;

use crate::state::AppState;

pub use upgrade::SUBPROTOCOL;

/// The WebSocket routes (`GET /ws`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/ws", axum::routing::get(upgrade::upgrade))
}
