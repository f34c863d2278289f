//! The metrics the alerts and the dashboard read are really exported: a real
//! `beehive serve all` gets traffic (HTTP, WebSocket send/ack, the outbox relay, search
//! indexing), its admin `/metrics` is scraped, every `beehive_*` family named by the
//! operator's PrometheusRule (operator/monitoring/prometheus-rules.yaml) and Grafana
//! dashboard (operator/monitoring/beehive-dashboard.json) must be in the scrape, and
//! `promtool check metrics` must accept the scrape (help text on every family, naming
//! rules). promtool comes from Debian's `prometheus` package (scripts/test.sh installs
//! it); without it the promtool step is skipped with a note, unless
//! BEEHIVE_REQUIRE_PROMTOOL=1 makes its absence a failure.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::Server;
use support::ws::Ws;

const PATIENCE: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Every whole `beehive_*` identifier in `text`, histogram series reduced to their family.
fn metric_families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("beehive_") {
        let start = i + pos;
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |e| start + e);
        let whole =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if whole {
            let name = &text[start..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

/// The families the operator's alerts and dashboard read.
fn referenced() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../operator/monitoring");
    let mut names = BTreeSet::new();
    for file in ["prometheus-rules.yaml", "beehive-dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        names.extend(metric_families(&text));
    }
    names
}

/// The families present in a scrape (from its sample lines, not the HELP/TYPE comments).
fn scraped(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(metric_families)
        .collect()
}

#[test]
fn families_are_found_whole() {
    let names = metric_families(
        "rate(beehive_a_seconds_bucket{x=\"1\"}[5m]) / beehive_b_total + not_beehive_c",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["beehive_a_seconds".to_owned(), "beehive_b_total".to_owned()]
    );
}

#[tokio::test]
async fn every_metric_the_alerts_and_dashboard_read_is_exported() {
    let wanted = referenced();
    assert!(
        wanted.len() >= 10,
        "the alerts and dashboard name metrics: {wanted:?}"
    );
    let server = Server::start(&[]).await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for who in ["alice", "bob"] {
        let reply = server
            .call(
                "POST",
                "/auth/register",
                Some(json!({"username": unique(who), "password": "password-123"})),
                None,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        tokens.push(
            reply.body["access_token"]
                .as_str()
                .expect("token")
                .to_owned(),
        );
        ids.push(reply.body["user"]["id"].as_str().expect("id").to_owned());
    }
    let created = server
        .call(
            "POST",
            "/groups",
            Some(json!({"name": "metrics", "member_ids": [ids[1]]})),
            Some(&tokens[0]),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.body["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // A WebSocket send (frame handling, send-to-ack) and a REST send.
    let mut ws = Ws::connect(&server.http, &tokens[0], "metrics-device")
        .await
        .expect("websocket");
    ws.send(&json!({"type": "send", "id": "m1", "data": {
        "client_msg_id": unique("c"), "conversation_id": group, "msg_type": "text",
        "content": "hello metrics"}}))
        .await;
    let frames = ws.until_reply("m1", PATIENCE).await;
    assert_eq!(frames.last().expect("reply")["type"], "ack", "{frames:?}");
    let sent = server
        .call(
            "POST",
            "/messages",
            Some(
                json!({"client_msg_id": unique("c"), "conversation_id": group,
                        "msg_type": "text", "content": "searchable metrics"}),
            ),
            Some(&tokens[1]),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);

    // Until every family is there: the relay, the indexer and the samplers run
    // asynchronously (the backlog gauges every few seconds).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let scrape = loop {
        let _ = server
            .call(
                "GET",
                "/search/messages?q=searchable",
                None,
                Some(&tokens[1]),
            )
            .await;
        let scrape = server
            .client
            .get(format!("{}/metrics", server.admin))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body");
        let found = scraped(&scrape);
        let missing: Vec<&String> = wanted.difference(&found).collect();
        if missing.is_empty() {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not exported after {PATIENCE:?}: {missing:?}\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Latencies are Prometheus histograms (the alerts aggregate buckets across pods).
    for family in [
        "beehive_grpc_server_request_duration_seconds",
        "beehive_http_request_duration_seconds",
        "beehive_send_to_ack_seconds",
    ] {
        assert!(
            scrape.contains(&format!("# TYPE {family} histogram")),
            "{family} is not a histogram"
        );
    }
    assert!(
        scrape.contains("route=\"/api/v1/messages\""),
        "HTTP routes are labelled by template"
    );
    assert!(
        !scrape.contains(&group),
        "no id (here the group's) ever becomes a label"
    );

    let required = std::env::var("BEEHIVE_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    let file = std::env::temp_dir().join(format!("beehive-scrape-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&file, &scrape).expect("write scrape");
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("scrape file"))
        .output()
    {
        Ok(out) => {
            let _ = std::fs::remove_file(&file);
            assert!(
                out.status.success(),
                "promtool check metrics refused the scrape:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(error) => {
            let _ = std::fs::remove_file(&file);
            assert!(!required, "promtool is required but cannot run: {error}");
            eprintln!(
                "note: promtool not found ({error}); install Debian's prometheus package to check the scrape"
            );
        }
    }
}
