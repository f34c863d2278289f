//! Load scenarios; each talks to a running Beehive exactly as clients do, except
//! `search`, which measures the embedded search index in this process (`files` also
//! copies a file on the local disk for its reference).

pub mod chat;
pub mod connections;
pub mod fault;
pub mod files;
pub mod group;
pub mod search;
pub mod search_lag;
