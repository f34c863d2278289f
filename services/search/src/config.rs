//! The search component's settings, from `BEEHIVE_SEARCH_BACKEND`,
//! `BEEHIVE_SEARCH_INDEX_DIR`, `BEEHIVE_SEARCH_BATCH_SIZE` and
//! `BEEHIVE_SEARCH_COMMIT_INTERVAL` (tests build it directly to shorten the waits).

use std::path::PathBuf;
use std::time::Duration;

use beehive_common::Settings;

/// How the search component runs.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// `embedded` or `elasticsearch`.
    pub backend: String,
    /// Directory of the embedded index.
    pub index_dir: PathBuf,
    /// Events indexed in one commit at most.
    pub batch_size: usize,
    /// Longest wait between the first event of a batch and its commit.
    pub batch_interval: Duration,
}

impl SearchConfig {
    /// The configuration for `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            backend: settings.search_backend.clone(),
            index_dir: settings.search_index_dir.clone(),
            batch_size: settings.search_batch_size as usize,
            batch_interval: settings.search_commit_interval,
        }
    }
}
