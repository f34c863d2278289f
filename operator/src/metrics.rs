//! Prometheus metrics of the operator.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Reconciles, by result (`ok` or `error`).
pub const RECONCILES: &str = "beehive_operator_reconciles_total";
/// Failed reconciles, by error kind.
pub const RECONCILE_ERRORS: &str = "beehive_operator_reconcile_errors_total";
/// Reconcile duration in seconds.
pub const RECONCILE_DURATION: &str = "beehive_operator_reconcile_duration_seconds";
/// Objects applied (or created), by kind.
pub const APPLIES: &str = "beehive_operator_applied_objects_total";
/// Objects deleted as orphans, by kind.
pub const DELETES: &str = "beehive_operator_deleted_objects_total";
/// Status writes.
pub const STATUS_WRITES: &str = "beehive_operator_status_writes_total";
/// 1 while this replica holds the leader Lease.
pub const LEADER: &str = "beehive_operator_leader";

/// Installs the global recorder and returns the handle that renders /metrics.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(RECONCILE_DURATION.into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// Describes the metrics (HELP lines).
pub fn describe() {
    metrics::describe_counter!(RECONCILES, "Reconciles of BeehiveClusters, by result");
    metrics::describe_counter!(RECONCILE_ERRORS, "Failed reconciles, by error kind");
    metrics::describe_histogram!(
        RECONCILE_DURATION,
        metrics::Unit::Seconds,
        "Duration of one reconcile"
    );
    metrics::describe_counter!(APPLIES, "Child objects applied or created, by kind");
    metrics::describe_counter!(
        DELETES,
        "Child objects deleted because no longer desired, by kind"
    );
    metrics::describe_counter!(STATUS_WRITES, "BeehiveCluster status writes");
    metrics::describe_gauge!(LEADER, "1 while this replica holds the leader Lease");
}

/// Records one reconcile.
pub fn reconciled(elapsed: Duration, error: Option<&'static str>) {
    metrics::histogram!(RECONCILE_DURATION).record(elapsed.as_secs_f64());
    match error {
        None => metrics::counter!(RECONCILES, "result" => "ok").increment(1),
        Some(kind) => {
            metrics::counter!(RECONCILES, "result" => "error").increment(1);
            metrics::counter!(RECONCILE_ERRORS, "kind" => kind).increment(1);
        }
    }
}

/// Records an applied object.
pub fn applied(kind: &str) {
    metrics::counter!(APPLIES, "kind" => kind.to_string()).increment(1);
}

/// Records a deleted object.
pub fn deleted(kind: &str) {
    metrics::counter!(DELETES, "kind" => kind.to_string()).increment(1);
}

/// Records a status write.
pub fn status_written() {
    metrics::counter!(STATUS_WRITES).increment(1);
}

/// Records leadership.
pub fn leader(is_leader: bool) {
    metrics::gauge!(LEADER).set(if is_leader { 1.0 } else { 0.0 });
}
