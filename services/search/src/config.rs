//! The search component's settings, from `BEEHIVE_SEARCH_BACKEND`,
//! `BEEHIVE_SEARCH_INDEX_DIR`, `BEEHIVE_SEARCH_BATCH_SIZE`,
//! `BEEHIVE_SEARCH_COMMIT_INTERVAL` and `BEEHIVE_ELASTICSEARCH_URL` (tests build it
//! directly to shorten the waits).

use std::path::PathBuf;
use std::time::Duration;

use beehive_common::Settings;
use beehive_common::config::SecretUrl;

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
    /// Messages per history page of a reindex.
    pub reindex_page_size: u32,
    /// Pause between history pages of a reindex (0: none), to spare the message
    /// service's database during a rebuild; tests use it to watch a rebuild run.
    pub reindex_page_pause: Duration,
    /// The elasticsearch backend's settings.
    pub elasticsearch: Option<ElasticsearchConfig>,
}

/// Where the Elasticsearch cluster is, from `BEEHIVE_ELASTICSEARCH_URL`.
#[derive(Clone, Debug)]
pub struct ElasticsearchConfig {
    /// The cluster URL; credentials in it (`https://user:password@host:9200`) are sent
    /// as HTTP basic authentication and never logged.
    pub url: SecretUrl,
    /// Prefix of the index template, the indices and the alias (the installation).
    pub prefix: String,
}

impl SearchConfig {
    /// The configuration for `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            backend: settings.search_backend.clone(),
            index_dir: settings.search_index_dir.clone(),
            batch_size: settings.search_batch_size as usize,
            batch_interval: settings.search_commit_interval,
            reindex_page_size: crate::reindex::HISTORY_PAGE,
            reindex_page_pause: Duration::ZERO,
            elasticsearch: settings
                .elasticsearch_url
                .clone()
                .map(|url| ElasticsearchConfig {
                    url,
                    prefix: settings.installation.to_ascii_lowercase(),
                }),
        }
    }
}
