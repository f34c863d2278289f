//! `beehive-bench search`: the embedded search index (tantivy + jieba) at scale,
//! in this process, without the network or the message service.
//!
//! Generates N messages (mixed Chinese and English, realistic lengths, a few thousand
//! conversations of skewed sizes, words drawn from a Zipf-like distribution so some
//! are common and most are rare), indexes them in bulk through the same
//! `Backend::apply` the indexer uses (batches, one commit each), then measures query
//! latency through `Backend::search` for: one word, two words, one word with sender
//! and time filters, and a user who is in 1,000 conversations (some joined late, so
//! their seq bound applies). Reports docs/s, p50/p99 per query kind, index size on disk
//! and the process's RSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use beehive_proto::v1 as pb;
use beehive_search::analysis::query_terms;
use beehive_search::backend::embedded::EmbeddedIndex;
use beehive_search::backend::{Backend, Change};
use beehive_search::query::{Order, Readable, SearchQuery};
use serde_json::{Value, json};

use crate::report::{latency_histogram, latency_json, latency_line, rss_kib};

/// What to generate and measure.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub messages: usize,
    pub conversations: usize,
    /// Messages per commit.
    pub batch: usize,
    /// Queries per kind.
    pub queries: usize,
    /// Where the index goes (a fresh temporary directory when absent); removed at the
    /// end unless `keep`.
    pub dir: Option<PathBuf>,
    pub keep: bool,
    pub seed: u64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            messages: 1_000_000,
            conversations: 3_000,
            batch: 10_000,
            queries: 500,
            dir: None,
            keep: false,
            seed: 42,
        }
    }
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A rank in `0..n`, small ranks much more likely (roughly Zipf, s≈1).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = ((n as f64 + 1.0).powf(u) - 1.0) as usize;
        r.min(n - 1)
    }
}

const CHINESE: &[&str] = &[
    "我们",
    "你们",
    "今天",
    "明天",
    "消息",
    "会议",
    "项目",
    "进度",
    "需要",
    "确认",
    "已经",
    "添加",
    "好友",
    "朋友",
    "时间",
    "地点",
    "文件",
    "上传",
    "下载",
    "服务器",
    "数据库",
    "问题",
    "解决",
    "方案",
    "测试",
    "发布",
    "版本",
    "更新",
    "用户",
    "登录",
    "密码",
    "验证码",
    "手机",
    "电脑",
    "网络",
    "连接",
    "失败",
    "成功",
    "重启",
    "部署",
    "集群",
    "监控",
    "告警",
    "日志",
    "性能",
    "优化",
    "延迟",
    "吞吐",
    "搜索",
    "索引",
    "中文",
    "分词",
    "周末",
    "晚上",
    "早上",
    "中午",
    "吃饭",
    "咖啡",
    "开会",
    "讨论",
    "客户",
    "合同",
    "报价",
    "发票",
    "付款",
    "财务",
    "老板",
    "同事",
    "团队",
    "招聘",
    "面试",
    "简历",
    "周报",
    "月报",
    "计划",
    "目标",
    "完成",
    "延期",
    "风险",
    "预算",
    "采购",
    "设备",
    "办公室",
    "出差",
    "机票",
    "酒店",
    "报销",
    "假期",
    "生日",
    "快乐",
    "谢谢",
    "不客气",
    "好的",
    "收到",
    "明白",
    "稍等",
    "马上",
    "回来",
    "北京",
    "上海",
    "深圳",
    "广州",
    "杭州",
    "天气",
    "下雨",
    "照片",
    "视频",
    "语音",
    "电话",
    "地址",
    "快递",
    "订单",
    "退款",
    "售后",
    "产品",
    "设计",
    "原型",
    "评审",
    "代码",
    "接口",
    "文档",
    "需求",
    "排期",
    "上线",
    "回滚",
    "故障",
    "恢复",
    "备份",
    "安全",
    "权限",
    "账号",
    "注册",
    "通知",
    "提醒",
    "群聊",
    "频道",
    "表情",
    "红包",
    "转账",
    "支付",
    "余额",
    "积分",
    "活动",
    "优惠",
    "价格",
    "库存",
    "物流",
    "仓库",
    "配送",
    "签收",
    "评价",
    "推荐",
    "排行",
    "热门",
    "新闻",
    "体育",
    "音乐",
    "电影",
    "游戏",
    "学习",
    "考试",
    "老师",
    "学生",
    "作业",
    "图书馆",
];

const ENGLISH: &[&str] = &[
    "the",
    "meeting",
    "deploy",
    "release",
    "build",
    "server",
    "database",
    "latency",
    "throughput",
    "cluster",
    "index",
    "search",
    "query",
    "message",
    "review",
    "merge",
    "branch",
    "commit",
    "test",
    "failed",
    "passed",
    "green",
    "red",
    "alert",
    "incident",
    "rollback",
    "hotfix",
    "customer",
    "invoice",
    "contract",
    "budget",
    "deadline",
    "sprint",
    "backlog",
    "ticket",
    "bug",
    "feature",
    "design",
    "prototype",
    "api",
    "endpoint",
    "token",
    "session",
    "login",
    "password",
    "upload",
    "download",
    "file",
    "image",
    "video",
    "voice",
    "call",
    "tomorrow",
    "today",
    "tonight",
    "morning",
    "lunch",
    "coffee",
    "weekend",
    "holiday",
    "birthday",
    "thanks",
    "please",
    "sorry",
    "okay",
    "sure",
    "great",
    "awesome",
    "kubernetes",
    "operator",
    "helm",
    "chart",
    "pod",
    "node",
    "volume",
    "storage",
    "backup",
    "restore",
    "metrics",
    "dashboard",
    "grafana",
    "prometheus",
    "rust",
    "tokio",
    "tantivy",
    "rabbitmq",
    "postgres",
    "redis",
    "elastic",
    "benchmark",
    "profile",
    "memory",
    "cpu",
    "disk",
    "network",
    "packet",
    "timeout",
    "retry",
    "queue",
    "consumer",
    "producer",
    "shard",
    "replica",
    "leader",
    "follower",
    "quorum",
    "raft",
    "migration",
    "schema",
    "table",
    "column",
    "row",
    "join",
    "order",
    "payment",
    "refund",
    "shipping",
    "warehouse",
    "inventory",
    "price",
    "discount",
    "coupon",
    "marketing",
    "sales",
    "report",
    "weekly",
    "monthly",
    "quarterly",
    "plan",
    "goal",
    "risk",
    "office",
    "travel",
    "flight",
    "hotel",
    "taxi",
    "expense",
    "approve",
    "reject",
    "pending",
];

const PUNCTUATION_ZH: &[&str] = &["，", "。", "！", "？", "、", "："];
const PUNCTUATION_EN: &[&str] = &[",", ".", "!", "?", ";", ":"];

/// Words in a message: mostly short chat lines, some paragraphs.
fn length(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 2 + rng.below(10),
        60..=89 => 12 + rng.below(28),
        _ => 40 + rng.below(110),
    }
}

fn content(rng: &mut Rng) -> String {
    let words = length(rng);
    let style = rng.below(10); // 0-4 Chinese, 5-7 English, 8-9 mixed
    let mut out = String::new();
    for n in 0..words {
        let chinese = match style {
            0..=4 => true,
            5..=7 => false,
            _ => rng.below(2) == 0,
        };
        if chinese {
            out.push_str(CHINESE[rng.zipf(CHINESE.len())]);
            if n % 7 == 6 {
                out.push_str(PUNCTUATION_ZH[rng.below(PUNCTUATION_ZH.len())]);
            }
        } else {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            let word = ENGLISH[rng.zipf(ENGLISH.len())];
            if n == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            } else {
                out.push_str(word);
            }
            if n % 9 == 8 {
                out.push_str(PUNCTUATION_EN[rng.below(PUNCTUATION_EN.len())]);
            }
        }
    }
    out
}

fn uuid_of(kind: u64, n: u64) -> String {
    uuid::Uuid::from_u64_pair(0x0190_a6f2_0000_7000 | kind, 0x8000_0000_0000_0000 | n).to_string()
}

/// Conversation of the i-th message: skewed, a few busy conversations and many quiet.
fn conversation_of(rng: &mut Rng, conversations: usize) -> usize {
    rng.zipf(conversations)
}

/// Members of conversation `c`: 2 for most (direct), more for every 10th (a group).
fn members(c: usize) -> usize {
    if c.is_multiple_of(10) { 3 + c % 50 } else { 2 }
}

fn sender(c: usize, k: usize) -> u64 {
    // Users 0..10_000; member k of conversation c.
    ((c * 7919 + k * 104_729) % 10_000) as u64
}

/// Generates and indexes everything; returns (docs/s, seconds, last seq per conversation).
async fn index_all(
    index: &EmbeddedIndex,
    options: &SearchOptions,
) -> anyhow::Result<(f64, f64, Vec<u64>)> {
    let mut rng = Rng(options.seed.max(1));
    let mut seqs = vec![0u64; options.conversations];
    // A year of history, in order.
    let start_micros: i64 = 1_735_689_600_000_000; // 2025-01-01
    let span_micros: i64 = 365 * 86_400 * 1_000_000;
    let started = Instant::now();
    let mut done = 0usize;
    while done < options.messages {
        let size = options.batch.min(options.messages - done);
        let mut batch = Vec::with_capacity(size);
        for i in done..done + size {
            let c = conversation_of(&mut rng, options.conversations);
            seqs[c] += 1;
            let micros = start_micros + (span_micros / options.messages as i64) * i as i64;
            let member = rng.below(members(c));
            batch.push(Change::Put(pb::Message {
                id: uuid_of(1, i as u64),
                conversation_id: uuid_of(2, c as u64),
                seq: seqs[c],
                sender_id: uuid_of(3, sender(c, member)),
                client_msg_id: format!("bench-{i}"),
                msg_type: pb::MessageType::Text as i32,
                content: content(&mut rng),
                file_id: None,
                created_at: Some(prost_types::Timestamp {
                    seconds: micros / 1_000_000,
                    nanos: ((micros % 1_000_000) * 1_000) as i32,
                }),
            }));
        }
        let applied = index.apply(batch).await?;
        anyhow::ensure!(applied.rejected.is_empty(), "documents refused");
        done += size;
        if done.is_multiple_of(options.batch * 10) {
            eprintln!(
                "indexed {done} of {} ({:.0} docs/s)",
                options.messages,
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((options.messages as f64 / seconds, seconds, seqs))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The conversations a typical user is in (20 of them, busy and quiet ones).
fn typical_scope(rng: &mut Rng, conversations: usize) -> Vec<usize> {
    let mut scope: Vec<usize> = (0..20)
        .map(|_| conversation_of(rng, conversations))
        .collect();
    scope.sort_unstable();
    scope.dedup();
    scope
}

fn readable(conversations: &[usize]) -> Vec<Readable> {
    conversations
        .iter()
        .map(|c| Readable {
            conversation_id: uuid_of(2, *c as u64),
            after_seq: 0,
        })
        .collect()
}

/// A user in 1,000 conversations; every 10th joined late (its seq bound applies).
fn wide_scope(rng: &mut Rng, conversations: usize, seqs: &[u64]) -> Vec<Readable> {
    let first = rng.below(conversations);
    (0..1000.min(conversations))
        .map(|k| {
            let c = (first + k * 7) % conversations;
            Readable {
                conversation_id: uuid_of(2, c as u64),
                after_seq: if k.is_multiple_of(10) { seqs[c] / 2 } else { 0 },
            }
        })
        .collect()
}

fn word(rng: &mut Rng) -> &'static str {
    // Queries pick words uniformly: common and rare ones alike.
    if rng.below(3) == 0 {
        ENGLISH[rng.below(ENGLISH.len())]
    } else {
        CHINESE[rng.below(CHINESE.len())]
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    OneWord,
    TwoWords,
    Filtered,
    WideUser,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::OneWord => "one_word",
            Self::TwoWords => "two_words",
            Self::Filtered => "filtered",
            Self::WideUser => "user_in_1000_conversations",
        }
    }
}

fn query_for(kind: Kind, rng: &mut Rng, options: &SearchOptions, seqs: &[u64]) -> SearchQuery {
    let text = match kind {
        Kind::TwoWords => format!("{} {}", word(rng), word(rng)),
        _ => word(rng).to_owned(),
    };
    let typical = typical_scope(rng, options.conversations);
    let scope = match kind {
        Kind::WideUser => wide_scope(rng, options.conversations, seqs),
        _ => readable(&typical),
    };
    let (sender_id, from_micros, to_micros) = match kind {
        Kind::Filtered => {
            // Messages from someone the user shares a conversation with, in a quarter.
            let c = typical[rng.below(typical.len())];
            let from = 1_735_689_600_000_000 + rng.below(270) as i64 * 86_400_000_000;
            (
                Some(uuid_of(3, sender(c, rng.below(members(c))))),
                Some(from),
                Some(from + 90 * 86_400_000_000),
            )
        }
        _ => (None, None, None),
    };
    SearchQuery {
        terms: query_terms(&text),
        text,
        scope,
        sender_id,
        from_micros,
        to_micros,
        order: Order::Recent,
        limit: 20,
        cursor: None,
    }
}

/// Runs the benchmark; returns the JSON report.
pub async fn run(options: SearchOptions) -> anyhow::Result<Value> {
    let dir = options.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("beehive-bench-search-{}", uuid::Uuid::now_v7()))
    });
    let index = EmbeddedIndex::open(&dir)?;
    let rss_before = rss_kib(std::process::id()).unwrap_or(0);
    let (docs_per_s, index_seconds, seqs) = index_all(&index, &options).await?;
    let count = index.count();
    anyhow::ensure!(
        count == options.messages as u64,
        "{count} documents indexed of {}",
        options.messages
    );
    let backend: Arc<dyn Backend> = Arc::new(index.clone());
    let mut rng = Rng(options.seed.wrapping_mul(31).max(1));
    let mut kinds = serde_json::Map::new();
    let mut lines = Vec::new();
    for kind in [
        Kind::OneWord,
        Kind::TwoWords,
        Kind::Filtered,
        Kind::WideUser,
    ] {
        let mut histogram = latency_histogram();
        let mut with_hits = 0usize;
        // Warm-up: the first queries of a kind fault index pages in.
        for _ in 0..10 {
            backend
                .search(query_for(kind, &mut rng, &options, &seqs))
                .await?;
        }
        for _ in 0..options.queries {
            let query = query_for(kind, &mut rng, &options, &seqs);
            let started = Instant::now();
            let page = backend.search(query).await?;
            let micros = started.elapsed().as_micros() as u64;
            let _ = histogram.record(micros.max(1));
            if !page.hits.is_empty() {
                with_hits += 1;
            }
        }
        lines.push(format!(
            "{:<28} {} ({} of {} with hits)",
            kind.name(),
            latency_line(&histogram),
            with_hits,
            options.queries
        ));
        let mut report = latency_json(&histogram);
        report["queries_with_hits"] = json!(with_hits);
        kinds.insert(kind.name().to_owned(), report);
    }
    let rss_after = rss_kib(std::process::id()).unwrap_or(0);
    let size = dir_size(&dir);
    let result = json!({
        "scenario": "search",
        "backend": "embedded",
        "messages": options.messages,
        "conversations": options.conversations,
        "batch": options.batch,
        "indexing_seconds": index_seconds,
        "indexing_docs_per_s": docs_per_s,
        "queries": kinds,
        "index_bytes": size,
        "index_mib": size as f64 / (1024.0 * 1024.0),
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "lines": lines,
    });
    drop(backend);
    drop(index);
    if !options.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(result)
}

/// One paragraph for humans.
pub fn summary(v: &Value) -> String {
    let mut out = format!(
        "search: {} messages in {} conversations, indexed at {:.0} docs/s ({:.1} s); index {:.1} MiB; RSS {} MiB",
        v["messages"],
        v["conversations"],
        v["indexing_docs_per_s"].as_f64().unwrap_or(0.0),
        v["indexing_seconds"].as_f64().unwrap_or(0.0),
        v["index_mib"].as_f64().unwrap_or(0.0),
        v["rss_kib_after"].as_u64().unwrap_or(0) / 1024,
    );
    for line in v["lines"].as_array().into_iter().flatten() {
        out.push_str("\n  ");
        out.push_str(line.as_str().unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_content_is_mixed_and_varied() {
        let mut rng = Rng(7);
        let texts: Vec<String> = (0..2000).map(|_| content(&mut rng)).collect();
        let chinese = texts
            .iter()
            .filter(|t| t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
            .count();
        let english = texts
            .iter()
            .filter(|t| t.chars().any(|c| c.is_ascii_alphabetic()))
            .count();
        assert!(chinese > 1000 && english > 500, "{chinese} {english}");
        let long = texts.iter().filter(|t| t.chars().count() > 100).count();
        assert!(long > 50 && long < 600, "{long}");
        let mut rng = Rng(7);
        let ranks: Vec<usize> = (0..10_000).map(|_| rng.zipf(100)).collect();
        let top = ranks.iter().filter(|r| **r < 10).count();
        assert!(top > 3_000, "skewed: {top}");
        assert!(ranks.iter().all(|r| *r < 100));
    }

    /// The smoke run CI does: a small corpus end to end, every query kind answered and
    /// finding something.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke_20k_messages() {
        let options = SearchOptions {
            messages: 20_000,
            conversations: 500,
            batch: 5_000,
            queries: 50,
            ..SearchOptions::default()
        };
        let result = run(options).await.expect("benchmark");
        eprintln!("{}", summary(&result));
        assert!(result["indexing_docs_per_s"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(result["index_bytes"].as_u64().unwrap_or(0) > 0);
        for kind in [
            "one_word",
            "two_words",
            "filtered",
            "user_in_1000_conversations",
        ] {
            let report = &result["queries"][kind];
            assert_eq!(report["count"], 50, "{kind}");
            assert!(
                report["queries_with_hits"].as_u64().unwrap_or(0) > 0,
                "{kind} never found anything: {report}"
            );
        }
    }
}
