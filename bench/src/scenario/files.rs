//! `files`: the file path through the gateway, measured against the disk it lands on.
//!
//! 1. Throughput: one file of `size` random bytes uploaded with tus in `chunk`-byte
//!    PATCHes, one after another (as the console's tus client does, 1 MiB by default),
//!    then downloaded whole and in `range`-byte ranges, every byte compared with what
//!    was sent. Each rate is reported as a ratio of a plain copy of the same bytes in
//!    the same directory in the same run: read and write in 1 MiB blocks, then fsync
//!    (what `dd bs=1M conv=fsync` does), in this process, once before and once after the
//!    transfers; the faster of the two is the reference.
//! 2. Memory: `parallel` uploads at once, then `parallel` downloads at once, for each
//!    of `rss_sizes`, sampling the RSS (`VmRSS`) of the gateway and file processes
//!    (`--pid`, `--file-pid`) every 50 ms; the peaks per size show whether memory
//!    follows file size (it must not: bytes stream).
//!
//! The client hashes a file before creating its upload (tus metadata carries the
//! sha256), outside the timed part; content comes from a seeded generator, so nothing
//! but the 100 MiB file of part 1 is held in memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::report;

const MIB: f64 = 1024.0 * 1024.0;

/// What the scenario measures and where.
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// Gateway base URL.
    pub url: String,
    /// Size of the throughput file.
    pub size: u64,
    /// Bytes per tus PATCH.
    pub chunk: u64,
    /// Bytes per ranged download request.
    pub range: u64,
    /// Uploads (and downloads) at once in the memory part.
    pub parallel: usize,
    /// File sizes of the memory part.
    pub rss_sizes: Vec<u64>,
    /// Gateway process ids.
    pub gateway_pids: Vec<u32>,
    /// File service process ids.
    pub file_pids: Vec<u32>,
    /// Where the reference copy is made: the file service's storage directory (or
    /// another directory on the same disk).
    pub copy_dir: PathBuf,
}

/// Deterministic incompressible content: chunk `index` of a file `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Content {
    pub seed: u64,
    pub size: u64,
    pub chunk: u64,
}

impl Content {
    /// Number of chunks (PATCHes).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk.max(1))
    }

    /// The bytes of chunk `index`.
    pub fn chunk(&self, index: u64) -> Bytes {
        let start = index * self.chunk;
        let len = self.chunk.min(self.size.saturating_sub(start)) as usize;
        let mut buf = vec![0u8; len];
        fill(self.seed, index, &mut buf);
        Bytes::from(buf)
    }

    /// The whole content's sha256 (generates every chunk once).
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for i in 0..self.chunks() {
            hasher.update(self.chunk(i));
        }
        hex::encode(hasher.finalize())
    }
}

/// splitmix64 over (seed, chunk index).
fn fill(seed: u64, index: u64, buf: &mut [u8]) {
    let mut state = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for out in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        out.copy_from_slice(&bytes[..out.len()]);
    }
}

fn random_seed() -> u64 {
    let id = uuid::Uuid::new_v4();
    let (hi, lo) = id.as_u64_pair();
    hi ^ lo
}

/// A tus client of one user (API.md, Files).
#[derive(Clone)]
struct Tus {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// How one download is checked.
enum Expect<'a> {
    /// Equal to these bytes (starting at the range's start).
    Bytes(&'a [u8]),
    /// Of this sha256.
    Sha256(&'a str),
}

impl Tus {
    async fn create(&self, size: u64, sha256: &str, filename: &str) -> anyhow::Result<String> {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let metadata = format!(
            "filename {},sha256 {},content_type {}",
            b64(filename),
            b64(sha256),
            b64("application/octet-stream")
        );
        let response = self
            .http
            .post(format!("{}/api/v1/files/uploads", self.base))
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", size.to_string())
            .header("Upload-Metadata", metadata)
            .send()
            .await
            .context("tus create")?;
        let status = response.status();
        if status.as_u16() != 201 {
            bail!("tus create: {status} {}", response.text().await?);
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("tus create: no Location"))?;
        Ok(format!("{}{location}", self.base))
    }

    /// One PATCH; the new offset and, once complete, the file id.
    async fn patch(
        &self,
        url: &str,
        offset: u64,
        body: Bytes,
    ) -> anyhow::Result<(u64, Option<String>)> {
        let response = self
            .http
            .patch(url)
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .with_context(|| format!("tus PATCH at {offset}"))?;
        let status = response.status();
        if status.as_u16() != 204 {
            bail!("tus PATCH at {offset}: {status} {}", response.text().await?);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let new_offset = header("upload-offset")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("tus PATCH at {offset}: no Upload-Offset"))?;
        Ok((new_offset, header("beehive-file-id")))
    }

    /// Uploads `chunks` (which must add up to `size`); returns the file id and how
    /// long each PATCH took (the last one includes the completion).
    async fn upload(
        &self,
        size: u64,
        sha256: &str,
        chunks: impl Iterator<Item = Bytes>,
    ) -> anyhow::Result<(String, Vec<Duration>)> {
        let url = self.create(size, sha256, "bench.bin").await?;
        let mut offset = 0;
        let mut file_id = None;
        let mut took = Vec::new();
        for chunk in chunks {
            let len = chunk.len() as u64;
            let started = Instant::now();
            let (next, id) = self.patch(&url, offset, chunk).await?;
            took.push(started.elapsed());
            ensure!(
                next == offset + len,
                "offset {next} after a PATCH of {len} at {offset}"
            );
            offset = next;
            file_id = id;
        }
        ensure!(offset == size, "uploaded {offset} of {size} bytes");
        let file_id =
            file_id.ok_or_else(|| anyhow!("the completing PATCH carried no Beehive-File-Id"))?;
        Ok((file_id, took))
    }

    /// Downloads the file (or `range`, inclusive) and checks it; returns the bytes.
    async fn download(
        &self,
        file_id: &str,
        range: Option<(u64, u64)>,
        expect: Expect<'_>,
    ) -> anyhow::Result<u64> {
        let mut request = self
            .http
            .get(format!("{}/api/v1/files/{file_id}", self.base))
            .bearer_auth(&self.token);
        if let Some((first, last)) = range {
            request = request.header("Range", format!("bytes={first}-{last}"));
        }
        let mut response = request.send().await.context("download")?;
        let status = response.status().as_u16();
        let wanted = if range.is_some() { 206 } else { 200 };
        if status != wanted {
            bail!("download: {status} (expected {wanted})");
        }
        let mut received: u64 = 0;
        let mut hasher = Sha256::new();
        while let Some(piece) = response.chunk().await.context("download body")? {
            match &expect {
                Expect::Bytes(all) => {
                    let at = received as usize;
                    ensure!(
                        all.get(at..at + piece.len()) == Some(&piece[..]),
                        "downloaded bytes differ at {} of {file_id}",
                        range.map_or(0, |r| r.0) + received
                    );
                }
                Expect::Sha256(_) => hasher.update(&piece),
            }
            received += piece.len() as u64;
        }
        match expect {
            Expect::Bytes(all) => ensure!(
                received == all.len() as u64,
                "downloaded {received} of {} bytes",
                all.len()
            ),
            Expect::Sha256(sha) => {
                let got = hex::encode(hasher.finalize());
                ensure!(got == sha, "downloaded sha256 {got}, uploaded {sha}");
            }
        }
        Ok(received)
    }

    async fn delete(&self, file_id: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/api/v1/files/{file_id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "delete {file_id}: {}",
            response.status()
        );
        Ok(())
    }
}

/// The reference: `src` copied to `dst` in 1 MiB blocks, then fsync (what
/// `dd bs=1M conv=fsync` does). Returns MiB/s.
fn plain_copy(src: &Path, dst: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied: u64 = 0;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
        copied += n as u64;
    }
    output.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(dst)?;
    Ok(copied as f64 / MIB / seconds)
}

/// Samples the RSS of processes every 50 ms until stopped; keeps each one's peak.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Option<u64>>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut peaks: Vec<Option<u64>> = pids.iter().map(|p| report::rss_kib(*p)).collect();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Some(now) = report::rss_kib(*pid) {
                        *peak = Some(peak.map_or(now, |p| p.max(now)));
                    }
                }
            }
            peaks
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Option<u64>> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

fn rss_now(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|p| report::rss_kib(*p)).collect()
}

/// RSS figures of one group of processes during one phase.
fn rss_json(pids: &[u32], before: &[Option<u64>], peak: &[Option<u64>]) -> Value {
    json!({"pids": pids, "before_kib": before, "peak_kib": peak, "after_kib": rss_now(pids)})
}

fn total(values: &[Option<u64>]) -> u64 {
    values.iter().map(|v| v.unwrap_or(0)).sum()
}

/// One memory phase: `parallel` transfers of `size`-byte files at once.
async fn memory_phase(
    tus: &Tus,
    options: &FilesOptions,
    size: u64,
) -> anyhow::Result<(Value, Vec<String>)> {
    let contents: Vec<(Content, String)> = {
        let mut out = Vec::new();
        for _ in 0..options.parallel {
            let content = Content {
                seed: random_seed(),
                size,
                chunk: options.chunk,
            };
            let sha = tokio::task::spawn_blocking(move || content.sha256()).await?;
            out.push((content, sha));
        }
        out
    };
    let pids: Vec<u32> = options
        .gateway_pids
        .iter()
        .chain(&options.file_pids)
        .copied()
        .collect();
    let gateways = options.gateway_pids.len();

    let before = rss_now(&pids);
    let sampler = RssSampler::start(pids.clone());
    let started = Instant::now();
    let uploads = contents.iter().map(|(content, sha)| {
        let tus = tus.clone();
        let content = *content;
        let sha = sha.clone();
        tokio::spawn(async move {
            let chunks = (0..content.chunks()).map(move |i| content.chunk(i));
            tus.upload(content.size, &sha, chunks)
                .await
                .map(|(id, _)| id)
        })
    });
    let mut ids = Vec::new();
    for task in futures::future::join_all(uploads).await {
        ids.push(task??);
    }
    let upload_seconds = started.elapsed().as_secs_f64();
    let upload_peak = sampler.finish().await;
    let upload_rss = json!({
        "gateway": rss_json(&pids[..gateways], &before[..gateways], &upload_peak[..gateways]),
        "file": rss_json(&pids[gateways..], &before[gateways..], &upload_peak[gateways..]),
    });

    let before_down = rss_now(&pids);
    let sampler = RssSampler::start(pids.clone());
    let started = Instant::now();
    let downloads = ids.iter().zip(&contents).map(|(id, (_, sha))| {
        let tus = tus.clone();
        let id = id.clone();
        let sha = sha.clone();
        tokio::spawn(async move { tus.download(&id, None, Expect::Sha256(&sha)).await })
    });
    for task in futures::future::join_all(downloads).await {
        task??;
    }
    let download_seconds = started.elapsed().as_secs_f64();
    let download_peak = sampler.finish().await;
    let download_rss = json!({
        "gateway": rss_json(&pids[..gateways], &before_down[..gateways], &download_peak[..gateways]),
        "file": rss_json(&pids[gateways..], &before_down[gateways..], &download_peak[gateways..]),
    });
    for id in &ids {
        tus.delete(id).await?;
    }
    let moved = (size * options.parallel as u64) as f64 / MIB;
    let line = format!(
        "{} x {:.1} MiB: uploads {:.0} MiB/s, peak RSS gateway {:.1} MiB, file {:.1} MiB; downloads {:.0} MiB/s, peak RSS gateway {:.1} MiB, file {:.1} MiB",
        options.parallel,
        size as f64 / MIB,
        moved / upload_seconds,
        total(&upload_peak[..gateways]) as f64 / 1024.0,
        total(&upload_peak[gateways..]) as f64 / 1024.0,
        moved / download_seconds,
        total(&download_peak[..gateways]) as f64 / 1024.0,
        total(&download_peak[gateways..]) as f64 / 1024.0,
    );
    Ok((
        json!({
            "file_bytes": size,
            "parallel": options.parallel,
            "uploads": {"seconds": upload_seconds, "mib_per_s": moved / upload_seconds, "rss": upload_rss},
            "downloads": {"seconds": download_seconds, "mib_per_s": moved / download_seconds, "rss": download_rss},
            "peak_kib": {
                "gateway_uploads": total(&upload_peak[..gateways]),
                "file_uploads": total(&upload_peak[gateways..]),
                "gateway_downloads": total(&download_peak[..gateways]),
                "file_downloads": total(&download_peak[gateways..]),
            },
        }),
        vec![line],
    ))
}

/// Runs the scenario.
pub async fn run(options: FilesOptions, token: String) -> anyhow::Result<Value> {
    ensure!(
        options.size > 0 && options.chunk > 0 && options.range > 0 && options.parallel > 0,
        "--size, --chunk, --range and --parallel must be positive"
    );
    let tus = Tus {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .pool_max_idle_per_host(options.parallel.max(8) * 2)
            .build()?,
        base: options.url.trim_end_matches('/').to_owned(),
        token,
    };
    let mut lines = Vec::new();

    // The throughput file, in memory, and its reference copy on disk.
    let content = Content {
        seed: random_seed(),
        size: options.size,
        chunk: options.chunk,
    };
    let (all, sha) = tokio::task::spawn_blocking(move || {
        let mut all = Vec::with_capacity(content.size as usize);
        for i in 0..content.chunks() {
            all.extend_from_slice(&content.chunk(i));
        }
        let sha = hex::encode(Sha256::digest(&all));
        (Bytes::from(all), sha)
    })
    .await?;
    std::fs::create_dir_all(&options.copy_dir)?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let src = options.copy_dir.join(format!("bench-copy-{tag}.src"));
    let dst = options.copy_dir.join(format!("bench-copy-{tag}.dst"));
    {
        let mut f = std::fs::File::create(&src)?;
        f.write_all(&all)?;
        f.sync_all()?;
    }
    let copy =
        |src: PathBuf, dst: PathBuf| tokio::task::spawn_blocking(move || plain_copy(&src, &dst));
    let copy_before = copy(src.clone(), dst.clone()).await??;

    let size_mib = options.size as f64 / MIB;
    let started = Instant::now();
    let chunk = options.chunk as usize;
    let pieces = {
        let all = all.clone();
        (0..all.len())
            .step_by(chunk)
            .map(move |at| all.slice(at..(at + chunk).min(all.len())))
    };
    let (file_id, patches) = tus.upload(options.size, &sha, pieces).await?;
    let upload_seconds = started.elapsed().as_secs_f64();
    let mut patch_ms = report::latency_histogram();
    if let Some((_, all_but_last)) = patches.split_last() {
        for took in all_but_last {
            let _ = patch_ms.record(took.as_micros().max(1) as u64);
        }
    }
    let last_patch_ms = patches.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);

    let started = Instant::now();
    tus.download(&file_id, None, Expect::Bytes(&all)).await?;
    let full_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut first = 0;
    let mut ranges = 0;
    while first < options.size {
        let last = (first + options.range).min(options.size) - 1;
        let expect = &all[first as usize..=last as usize];
        tus.download(&file_id, Some((first, last)), Expect::Bytes(expect))
            .await?;
        first = last + 1;
        ranges += 1;
    }
    let ranged_seconds = started.elapsed().as_secs_f64();
    tus.delete(&file_id).await?;

    let copy_after = copy(src.clone(), dst.clone()).await??;
    std::fs::remove_file(&src)?;
    drop(all);
    let reference = copy_before.max(copy_after);
    let rate = |seconds: f64| size_mib / seconds;
    let upload = rate(upload_seconds);
    let full = rate(full_seconds);
    let ranged = rate(ranged_seconds);
    lines.push(format!(
        "files: {size_mib:.1} MiB: plain copy (1 MiB blocks + fsync) {copy_before:.0} / {copy_after:.0} MiB/s (reference {reference:.0})"
    ));
    lines.push(format!(
        "  tus upload in {} KiB PATCHes {upload:.0} MiB/s = {:.0}% of the copy; download {full:.0} MiB/s = {:.0}%; {ranges} ranged downloads of {} KiB {ranged:.0} MiB/s = {:.0}%",
        options.chunk / 1024,
        100.0 * upload / reference,
        100.0 * full / reference,
        options.range / 1024,
        100.0 * ranged / reference,
    ));

    lines.push(format!(
        "  {} PATCHes: {}; the completing one (verifies the sha256, builds the blob) {last_patch_ms:.1} ms",
        patches.len(),
        if patches.len() > 1 {
            report::latency_line(&patch_ms)
        } else {
            "one".to_owned()
        },
    ));

    let mut phases = Vec::new();
    for &size in options.rss_sizes.iter().filter(|s| **s > 0) {
        let (phase, phase_lines) = memory_phase(&tus, &options, size).await?;
        phases.push(phase);
        lines.extend(phase_lines.into_iter().map(|l| format!("  {l}")));
    }
    let growth = |key: &str| -> Option<f64> {
        let first = phases.first()?["peak_kib"][key].as_u64()? as f64;
        let last = phases.last()?["peak_kib"][key].as_u64()? as f64;
        (phases.len() > 1 && first > 0.0).then(|| last / first)
    };
    let ratios = json!({
        "gateway_uploads": growth("gateway_uploads"),
        "file_uploads": growth("file_uploads"),
        "gateway_downloads": growth("gateway_downloads"),
        "file_downloads": growth("file_downloads"),
    });
    if phases.len() > 1 {
        lines.push(format!(
            "  peak RSS, largest / smallest size: gateway {:.2} (uploads) {:.2} (downloads), file {:.2} / {:.2}",
            ratios["gateway_uploads"].as_f64().unwrap_or(0.0),
            ratios["gateway_downloads"].as_f64().unwrap_or(0.0),
            ratios["file_uploads"].as_f64().unwrap_or(0.0),
            ratios["file_downloads"].as_f64().unwrap_or(0.0),
        ));
    }
    Ok(json!({
        "scenario": "files",
        "size_bytes": options.size,
        "chunk_bytes": options.chunk,
        "range_bytes": options.range,
        "copy": {
            "method": "in-process read/write in 1 MiB blocks then fsync (dd bs=1M conv=fsync), same directory",
            "dir": options.copy_dir,
            "before_mib_per_s": copy_before,
            "after_mib_per_s": copy_after,
            "reference_mib_per_s": reference,
        },
        "upload": {
            "seconds": upload_seconds,
            "mib_per_s": upload,
            "ratio_to_copy": upload / reference,
            "patches": patches.len(),
            "patch_latency_but_last": report::latency_json(&patch_ms),
            "completing_patch_ms": last_patch_ms,
        },
        "download_full": {"seconds": full_seconds, "mib_per_s": full, "ratio_to_copy": full / reference},
        "download_ranged": {"requests": ranges, "seconds": ranged_seconds, "mib_per_s": ranged, "ratio_to_copy": ranged / reference},
        "memory": phases,
        "peak_rss_largest_over_smallest": ratios,
        "lines": lines,
    }))
}

/// The human summary.
pub fn summary(v: &Value) -> String {
    v["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses a byte size: `100MiB`, `512KiB`, `1GiB`, `4096`.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} is not a size"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(byte_size("100MiB"), Ok(100 << 20));
        assert_eq!(byte_size("512KiB"), Ok(512 << 10));
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("1GiB"), Ok(1 << 30));
        assert!(byte_size("1TB").is_err());
        assert!(byte_size("MiB").is_err());
    }

    #[test]
    fn content_is_deterministic_chunked_and_varied() {
        let c = Content {
            seed: 7,
            size: 10_000,
            chunk: 4096,
        };
        assert_eq!(c.chunks(), 3);
        assert_eq!(c.chunk(2).len(), 10_000 - 8192);
        assert_eq!(c.chunk(1), c.chunk(1));
        assert_ne!(c.chunk(0), c.chunk(1));
        assert_eq!(c.sha256(), c.sha256());
        let other = Content { seed: 8, ..c };
        assert_ne!(c.sha256(), other.sha256());
        // Incompressible enough: every byte value shows up.
        let mut seen = [false; 256];
        for b in c.chunk(0).iter() {
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
