//! The file service's settings.

use std::time::Duration;

use beehive_common::Settings;

use crate::storage::StorageConfig;
use crate::storage::s3::S3Location;

/// How the file service runs.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Where content is stored.
    pub storage: StorageConfig,
    /// Largest file (`BEEHIVE_FILE_MAX_SIZE`, 100 MiB).
    pub max_size: u64,
    /// An unfinished upload's lifetime (`BEEHIVE_FILE_UPLOAD_EXPIRY`, 24 h).
    pub upload_expiry: Duration,
    /// Delay before unreferenced content and expired uploads are removed
    /// (`BEEHIVE_FILE_GC_GRACE`, 1 h).
    pub gc_grace: Duration,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// Objects deleted per sweeper statement.
    pub sweep_batch: i64,
    /// Longest a streaming call (one PATCH, one download) may take; also how long an
    /// object being written is protected from the sweeper.
    pub stream_timeout: Duration,
}

impl FileConfig {
    /// The configuration for `settings`: S3 when `BEEHIVE_FILE_S3_URL` is set, else
    /// the directory.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let storage = match &settings.file_s3_url {
            Some(url) => StorageConfig::S3(
                S3Location::parse(url.expose()).map_err(|e| format!("BEEHIVE_FILE_S3_URL: {e}"))?,
            ),
            None => StorageConfig::Dir(settings.file_storage_dir.clone()),
        };
        Ok(Self {
            storage,
            max_size: settings.file_max_size,
            upload_expiry: settings.file_upload_expiry,
            gc_grace: settings.file_gc_grace,
            // Often enough that nothing outlives its grace period by much.
            sweep_interval: (settings.file_gc_grace / 4)
                .clamp(Duration::from_millis(500), Duration::from_secs(60)),
            sweep_batch: 500,
            stream_timeout: Duration::from_secs(3600),
        })
    }
}
