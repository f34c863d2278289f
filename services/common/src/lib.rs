//! What every Beehive component shares, so that each service crate only holds its own
//! domain: settings, telemetry, the one error type, gRPC plumbing (balanced channels,
//! load shedding, retries), the admin HTTP server, infrastructure connections and the
//! shutdown signal; and the helpers every crate needs: id parsing, proto timestamps
//! and instance routing.

pub mod admin;
pub mod component;
pub mod config;
pub mod error;
pub mod event_batch;
pub mod events;
pub mod grpc;
pub mod id;
pub mod infra;
pub mod limits;
pub mod migrate;
pub mod routing;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use component::{Bound, ComponentError, Context, Infra};
pub use config::{Component, Settings};
pub use error::{Error, ErrorCode, Result};
pub use shutdown::Shutdown;
