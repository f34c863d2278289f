//! Load scenarios; each talks to a running Beehive exactly as clients do, except
//! `search`, which measures the embedded search index in this process.

pub mod chat;
pub mod connections;
pub mod fault;
pub mod group;
pub mod search;
pub mod search_lag;
