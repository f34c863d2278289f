//! What ships for monitoring besides the ServiceMonitor: a PrometheusRule with Beehive's
//! alerts (`spec.monitoring.prometheusRule`) and a ConfigMap holding the Grafana dashboard
//! (`spec.monitoring.grafanaDashboard`), labelled for Grafana's dashboard sidecar.
//!
//! Every series they read comes from the components' `/metrics` (scraped through the
//! `<cluster>-metrics` Service, so `job="<cluster>-metrics"`, with the `component` label the
//! ServiceMonitor adds). `scripts/test-operator.sh` checks the rules with `promtool check
//! rules` and `promtool test rules` (operator/monitoring/rules_test.yaml), and
//! `scripts/test-metrics.sh` checks that every metric named here is in a real scrape.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{BuildError, ClusterRef};
use crate::component::ComponentExt as _;

/// The Grafana dashboard (its datasource, namespace and job are template variables).
pub const DASHBOARD_JSON: &str = include_str!("../../../monitoring/beehive-dashboard.json");
/// Label Grafana's dashboard sidecar looks for.
pub const DASHBOARD_LABEL: &str = "grafana_dashboard";

/// `monitoring.coreos.com/v1` `PrometheusRule`.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// gRPC codes that mean the server failed (not the caller): they count as errors.
pub const GRPC_SERVER_ERROR_CODES: &str =
    "Unknown|DeadlineExceeded|ResourceExhausted|Unimplemented|Internal|Unavailable|DataLoss";

/// One alerting rule.
struct Alert {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: &'static str,
    description: &'static str,
}

/// The alerts, for one installation (`job` is its metrics Service).
fn alerts(namespace: &str, job: &str, components: &[&str]) -> Vec<Alert> {
    let sel = format!("namespace=\"{namespace}\",job=\"{job}\"");
    // absent() of a comparison has no labels: put them back, so the alert names the
    // component.
    let absent = components
        .iter()
        .map(|comp| {
            format!(
                "label_replace(label_replace(label_replace(absent(up{{{sel},component=\"{comp}\"}} == 1), \"component\", \"{comp}\", \"\", \"\"), \"job\", \"{job}\", \"\", \"\"), \"namespace\", \"{namespace}\", \"\", \"\")"
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    vec![
        Alert {
            name: "BeehiveComponentDown",
            expr: format!("up{{{sel}}} == 0"),
            for_: "2m",
            severity: "critical",
            summary: "A Beehive pod cannot be scraped",
            description: "{{ $labels.component }} pod {{ $labels.pod }} in {{ $labels.namespace }} has not answered on /metrics for 2 minutes.",
        },
        Alert {
            name: "BeehiveComponentMissing",
            expr: absent,
            for_: "5m",
            severity: "critical",
            summary: "A Beehive component has no pod up",
            description: "No {{ $labels.component }} pod of {{ $labels.job }} in {{ $labels.namespace }} has been up for 5 minutes.",
        },
        Alert {
            name: "BeehiveGrpcLatencyHigh",
            expr: format!(
                "histogram_quantile(0.99, sum by (namespace, job, component, method, le) (rate(beehive_grpc_server_request_duration_seconds_bucket{{{sel}}}[5m]))) > 1"
            ),
            for_: "10m",
            severity: "warning",
            summary: "gRPC p99 latency above 1 s",
            description: "p99 of {{ $labels.method }} served by {{ $labels.component }} is {{ $value | humanizeDuration }}.",
        },
        Alert {
            name: "BeehiveHttpLatencyHigh",
            expr: format!(
                "histogram_quantile(0.99, sum by (namespace, job, route, le) (rate(beehive_http_request_duration_seconds_bucket{{{sel}}}[5m]))) > 1"
            ),
            for_: "10m",
            severity: "warning",
            summary: "HTTP p99 latency above 1 s",
            description: "p99 of {{ $labels.route }} on the gateway is {{ $value | humanizeDuration }}.",
        },
        Alert {
            name: "BeehiveGrpcErrorRate",
            expr: format!(
                "sum by (namespace, job, component, method) (rate(beehive_grpc_server_request_duration_seconds_count{{{sel},code=~\"{GRPC_SERVER_ERROR_CODES}\"}}[5m])) / sum by (namespace, job, component, method) (rate(beehive_grpc_server_request_duration_seconds_count{{{sel}}}[5m])) > 0.01"
            ),
            for_: "10m",
            severity: "warning",
            summary: "gRPC server errors above 1 %",
            description: "{{ $value | humanizePercentage }} of {{ $labels.method }} calls to {{ $labels.component }} fail with a server error.",
        },
        Alert {
            name: "BeehiveHttpErrorRate",
            expr: format!(
                "sum by (namespace, job, route) (rate(beehive_http_request_duration_seconds_count{{{sel},status=~\"5..\"}}[5m])) / sum by (namespace, job, route) (rate(beehive_http_request_duration_seconds_count{{{sel}}}[5m])) > 0.01"
            ),
            for_: "10m",
            severity: "warning",
            summary: "HTTP 5xx responses above 1 %",
            description: "{{ $value | humanizePercentage }} of requests to {{ $labels.route }} answer 5xx.",
        },
        Alert {
            name: "BeehiveOutboxBacklog",
            expr: format!("max by (namespace, job) (beehive_outbox_depth{{{sel}}}) > 1000"),
            for_: "5m",
            severity: "warning",
            summary: "Message outbox backlog above 1000",
            description: "{{ $value }} committed messages wait in the outbox: live delivery lags (RabbitMQ or the relay is slow or down).",
        },
        Alert {
            name: "BeehiveQueueBacklog",
            expr: format!(
                "max by (namespace, job, queue) (beehive_amqp_queue_messages{{{sel}}}) > 1000"
            ),
            for_: "5m",
            severity: "warning",
            summary: "RabbitMQ queue backlog above 1000",
            description: "{{ $value }} messages wait in the {{ $labels.queue }} queue.",
        },
        Alert {
            name: "BeehiveSearchLag",
            expr: format!(
                "max by (namespace, job) (beehive_search_index_lag_seconds{{{sel}}}) > 60"
            ),
            for_: "10m",
            severity: "warning",
            summary: "Search index more than a minute behind",
            description: "New messages become searchable {{ $value | humanizeDuration }} after they are sent.",
        },
    ]
}

/// The rule groups, as Prometheus reads them (`spec` of the PrometheusRule, and a rules
/// file for `promtool`).
pub fn rule_groups(c: &ClusterRef<'_>) -> Value {
    let components: Vec<&str> = crate::component::ALL
        .iter()
        .filter(|comp| {
            let w = comp.workload(&c.cluster.spec);
            w.replicas > 0 || w.autoscaling.is_some()
        })
        .map(|comp| comp.name())
        .collect();
    let job = super::service::metrics_name(c);
    let rules: Vec<Value> = alerts(&c.namespace, &job, &components)
        .into_iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": {"severity": a.severity},
                "annotations": {"summary": a.summary, "description": a.description},
            })
        })
        .collect();
    json!({ "groups": [{ "name": format!("beehive-{}", c.name), "rules": rules }] })
}

fn extra_labels(c: &ClusterRef<'_>, component: &str) -> BTreeMap<String, String> {
    let mut labels = c.labels(component);
    labels.extend(c.cluster.spec.monitoring.labels.clone());
    labels
}

/// The PrometheusRule, when enabled.
pub fn prometheus_rule(c: &ClusterRef<'_>) -> Result<Option<DynamicObject>, BuildError> {
    if !c.cluster.spec.monitoring.prometheus_rule {
        return Ok(None);
    }
    let name = c.child_name("alerts");
    let mut obj = DynamicObject::new(&name, &prometheus_rule_resource());
    obj.metadata = c.meta(name, "alerts");
    obj.metadata.labels = Some(extra_labels(c, "alerts"));
    obj.data = json!({ "spec": rule_groups(c) });
    Ok(Some(obj))
}

/// The dashboard ConfigMap, when enabled.
pub fn dashboard(c: &ClusterRef<'_>) -> Option<ConfigMap> {
    if !c.cluster.spec.monitoring.grafana_dashboard {
        return None;
    }
    let mut metadata = c.meta(c.child_name("dashboard"), "dashboard");
    let mut labels = extra_labels(c, "dashboard");
    labels.insert(DASHBOARD_LABEL.into(), "1".into());
    metadata.labels = Some(labels);
    Some(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            "beehive.json".to_string(),
            DASHBOARD_JSON.to_string(),
        )])),
        ..ConfigMap::default()
    })
}

/// Every `beehive_*` metric the rules and the dashboard read (histogram series reduced to
/// their family name), so a test can check that the components export them.
pub fn referenced_metrics(rules: &Value) -> std::collections::BTreeSet<String> {
    let mut text = DASHBOARD_JSON.to_string();
    text.push_str(&rules.to_string());
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("beehive_") {
        let start = i + pos;
        let end = text[start..]
            .find(|ch: char| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'))
            .map_or(text.len(), |e| start + e);
        // Only whole identifiers (not e.g. the middle of `x_beehive_y`).
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if boundary {
            let name = &text[start..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn off_by_default() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        assert!(prometheus_rule(&r).unwrap().is_none());
        assert!(dashboard(&r).is_none());
    }

    #[test]
    fn rule_and_dashboard_when_enabled() {
        let mut spec = BeehiveClusterSpec::default();
        spec.monitoring.prometheus_rule = true;
        spec.monitoring.grafana_dashboard = true;
        spec.monitoring
            .labels
            .insert("release".into(), "kube-prometheus-stack".into());
        spec.file.workload.replicas = 0;
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let rule = prometheus_rule(&r).unwrap().unwrap();
        assert_eq!(rule.metadata.name.as_deref(), Some("demo-alerts"));
        assert_eq!(
            rule.metadata.labels.as_ref().unwrap()["release"],
            "kube-prometheus-stack"
        );
        let rules = rule.data["spec"]["groups"][0]["rules"].as_array().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        for expected in [
            "BeehiveComponentDown",
            "BeehiveComponentMissing",
            "BeehiveGrpcLatencyHigh",
            "BeehiveHttpLatencyHigh",
            "BeehiveGrpcErrorRate",
            "BeehiveHttpErrorRate",
            "BeehiveOutboxBacklog",
            "BeehiveQueueBacklog",
            "BeehiveSearchLag",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        for r in rules {
            let expr = r["expr"].as_str().unwrap();
            assert!(
                expr.contains("namespace=\"chat\",job=\"demo-metrics\""),
                "every rule is scoped to the installation: {expr}"
            );
        }
        let missing = rules[1]["expr"].as_str().unwrap();
        assert!(missing.contains("component=\"gateway\""));
        assert!(
            !missing.contains("component=\"file\""),
            "a component scaled to 0 is not missing"
        );
        let cm = dashboard(&r).unwrap();
        assert_eq!(cm.metadata.labels.as_ref().unwrap()[DASHBOARD_LABEL], "1");
        let dash: Value = serde_json::from_str(&cm.data.unwrap()["beehive.json"]).unwrap();
        assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    }

    #[test]
    fn referenced_metrics_are_families() {
        let rules =
            json!({"expr": "rate(beehive_x_seconds_bucket[5m]) + beehive_y + up + not_beehive_z"});
        let names = referenced_metrics(&rules);
        assert!(names.contains("beehive_x_seconds"));
        assert!(names.contains("beehive_y"));
        assert!(!names.iter().any(|n| n.contains('z')), "{names:?}");
        assert!(
            names.contains("beehive_outbox_depth"),
            "read from the dashboard"
        );
    }
}
