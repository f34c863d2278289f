//! Where events from the services go. The event consumer hands every decoded event to
//! an [`EventSink`] (the hub, in the running gateway), so neither depends on the other.

use beehive_proto::v1 as pb;

/// Takes events meant for this instance's sockets.
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event; returns how many sockets it was queued on. Must not block:
    /// it runs on the consumer's task, between deliveries.
    fn deliver(&self, event: pb::Event) -> usize;
}
