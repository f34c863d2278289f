//! Load scenarios; each talks to a running Beehive exactly as clients do. A `search`
//! scenario joins them when search lands.

pub mod chat;
pub mod connections;
pub mod fault;
pub mod group;
