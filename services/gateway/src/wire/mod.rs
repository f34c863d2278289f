//! What travels to and from clients: WebSocket frames ([`frame`]), the JSON views the
//! frames carry ([`views`], borrowing, so a pushed event is serialised once for every
//! recipient) and the REST JSON objects with their OpenAPI schemas ([`model`]).
//!
//! Wire types render the core's and the services' values; they hold no rules beyond
//! the shape of the encoding (limits and checks live in [`crate::app`]).

pub mod files;
/// The client frame decoder and server frame encoders: public so the fuzz targets
/// (fuzz/) can drive the decoder directly.
pub mod frame;
pub mod model;
pub mod search;
pub mod views;

pub use crate::app::messages::msg_type_name;
