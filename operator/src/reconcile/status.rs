//! Status: pure functions from what was observed to `BeehiveClusterStatus`, conditions whose
//! `lastTransitionTime` only moves on a transition, and the events worth emitting.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::Value;

use super::apply::Observed;
use super::build::{ChildKind, ClusterRef, operated};
use crate::component::Component;
use crate::component::ComponentExt as _;
use crate::crd::{BeehiveClusterStatus, ComponentStatus, ServiceType};

/// Condition types.
pub const READY: &str = "Ready";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// How far the migration Job got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migration {
    /// Not observed yet.
    Pending,
    /// Running (or retrying).
    Running,
    /// Completed.
    Succeeded,
    /// Gave up (backoffLimit reached).
    Failed(String),
}

/// Where reconciliation stopped, if it stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// spec.paused.
    Paused,
    /// The object could not be read or its spec is invalid (reason, message).
    Invalid(&'static str, String),
    /// Secrets the pods need do not exist.
    MissingSecrets(Vec<String>),
    /// Applying or deleting failed.
    ApplyFailed(String),
    /// Everything was applied; the observation says how far the rollout is.
    Applied,
}

/// Observed progress of the workloads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Replicas by component (and managed datastore).
    pub components: BTreeMap<String, ComponentStatus>,
    /// Components not ready yet, e.g. "gateway 1/2".
    pub waiting: Vec<String>,
    /// The migration.
    pub migration: Option<Migration>,
    /// The image tag every component has rolled out to, when they all have.
    pub rolled_out_version: Option<String>,
    /// Kinds the installation needs that the API server does not serve or the operator may
    /// not use: (condition reason, message).
    pub unavailable: Vec<(String, String)>,
}

/// The optional kinds a cluster's spec asks for.
fn wanted_optional_kinds(c: &ClusterRef<'_>) -> Vec<ChildKind> {
    let spec = &c.cluster.spec;
    let mut kinds: Vec<ChildKind> = operated::operated(c).into_iter().map(|(_, k)| k).collect();
    if spec
        .monitoring
        .service_monitor
        .as_ref()
        .is_some_and(|s| s.enabled)
    {
        kinds.push(ChildKind::ServiceMonitor);
    }
    if spec.monitoring.prometheus_rule {
        kinds.push(ChildKind::PrometheusRule);
    }
    kinds
}

/// Why a wanted kind cannot be used: (reason, message).
fn unavailable_kind(kind: ChildKind, code: u16) -> (String, String) {
    let ar = kind.api_resource();
    if code == 403 {
        (
            "Forbidden".into(),
            format!(
                "the operator may not use {} {} ({}): grant it in the operator's RBAC (upgrade the chart or charts/install.yaml)",
                ar.api_version, ar.kind, ar.plural
            ),
        )
    } else {
        (
            "CRDNotInstalled".into(),
            format!(
                "{} {} is not served by the API server (its CRD is not installed): {}",
                ar.api_version,
                ar.kind,
                kind.missing_hint()
            ),
        )
    }
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

fn workload_status(
    name: &str,
    desired: i32,
    obj: Option<&DynamicObject>,
) -> (ComponentStatus, bool) {
    let Some(obj) = obj else {
        return (
            ComponentStatus {
                replicas: desired,
                ready_replicas: 0,
                updated_replicas: 0,
            },
            desired == 0,
        );
    };
    let _ = name;
    let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let ready = int(&status, &["readyReplicas"]) as i32;
    let updated = int(&status, &["updatedReplicas"]) as i32;
    let total = int(&status, &["replicas"]) as i32;
    let observed_gen = int(&status, &["observedGeneration"]);
    let generation = obj.metadata.generation.unwrap_or(0);
    let current = observed_gen >= generation;
    let done = current && ready >= desired && updated >= desired && total <= desired.max(ready);
    (
        ComponentStatus {
            replicas: desired,
            ready_replicas: ready,
            updated_replicas: updated,
        },
        done,
    )
}

/// Reads the migration Job's state.
pub fn migration_state(job: Option<&DynamicObject>) -> Migration {
    let Some(job) = job else {
        return Migration::Pending;
    };
    let status = job.data.get("status").cloned().unwrap_or(Value::Null);
    if int(&status, &["succeeded"]) >= 1 {
        return Migration::Succeeded;
    }
    if let Some(conds) = status.get("conditions").and_then(Value::as_array) {
        for c in conds {
            if c.get("type").and_then(Value::as_str) == Some("Failed")
                && c.get("status").and_then(Value::as_str) == Some("True")
            {
                let msg = c
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the migration Job failed");
                return Migration::Failed(msg.to_string());
            }
        }
    }
    Migration::Running
}

/// Progress of a cluster's workloads as observed.
pub fn progress(c: &ClusterRef<'_>, observed: &Observed, migration_job: &str) -> Progress {
    let mut p = Progress::default();
    let mut all_rolled_out = true;
    for comp in crate::component::ALL {
        let name = c.child_name(comp.name());
        let workload = comp.workload(&c.cluster.spec);
        let obj = observed
            .get(ChildKind::Deployment, &name)
            .or_else(|| observed.get(ChildKind::StatefulSet, &name));
        // With an autoscaler, the target is what it last set on the workload.
        let desired = match &workload.autoscaling {
            None => workload.replicas,
            Some(auto) => obj
                .and_then(|o| o.data["spec"]["replicas"].as_i64())
                .and_then(|r| i32::try_from(r).ok())
                .unwrap_or(auto.min_replicas),
        };
        let (st, done) = workload_status(comp.name(), desired, obj);
        if !done {
            all_rolled_out = false;
            p.waiting.push(format!(
                "{} {}/{}",
                comp.name(),
                st.ready_replicas,
                st.replicas
            ));
        }
        p.components.insert(comp.name().into(), st);
    }
    // The workloads were applied with spec.image before they were observed, so once all
    // of them are done every pod runs that image.
    p.rolled_out_version = all_rolled_out.then(|| c.cluster.spec.image.tag.clone());
    for ds in c.managed_datastores() {
        let obj = observed.get(ChildKind::StatefulSet, &c.child_name(ds.name()));
        let (st, done) = workload_status(ds.name(), 1, obj);
        if !done {
            p.waiting.push(format!(
                "{} {}/{}",
                ds.name(),
                st.ready_replicas,
                st.replicas
            ));
        }
        p.components.insert(ds.name().into(), st);
    }
    for (ds, kind) in operated::operated(c) {
        if observed.unavailable.contains_key(&kind) {
            continue;
        }
        let desired = operated::desired_size(c, ds);
        let obj = observed.get(kind, &operated::object_name(c, ds));
        let r = operated::readiness(kind, desired, obj);
        if !r.ready_for_use {
            p.waiting.push(format!(
                "{} {}/{} ({})",
                ds.name(),
                r.ready,
                desired,
                r.detail
            ));
        }
        p.components.insert(
            ds.name().into(),
            ComponentStatus {
                replicas: desired,
                ready_replicas: r.ready,
                updated_replicas: r.ready,
            },
        );
    }
    for kind in wanted_optional_kinds(c) {
        if let Some(code) = observed.unavailable.get(&kind) {
            p.unavailable.push(unavailable_kind(kind, *code));
        }
    }
    p.migration = Some(migration_state(observed.get(ChildKind::Job, migration_job)));
    p
}

/// Where clients reach the gateway.
pub fn gateway_endpoint(c: &ClusterRef<'_>, observed: &Observed) -> String {
    let spec = &c.cluster.spec.gateway;
    if let Some(ing) = &spec.ingress {
        let scheme = if ing.tls.is_some() { "https" } else { "http" };
        return format!("{scheme}://{}{}", ing.host, ing.path);
    }
    let internal = format!(
        "http://{}.{}.svc:{}",
        c.child_name(Component::Gateway.name()),
        c.namespace,
        spec.service.port
    );
    match spec.service.type_ {
        ServiceType::ClusterIP => internal,
        ServiceType::NodePort => {
            let port = observed
                .get(ChildKind::Service, &c.child_name(Component::Gateway.name()))
                .and_then(|s| s.data["spec"]["ports"][0]["nodePort"].as_i64())
                .or(spec.service.node_port.map(i64::from));
            match port {
                Some(p) => format!("http://<node>:{p}"),
                None => internal,
            }
        }
        ServiceType::LoadBalancer => {
            let lb = observed
                .get(ChildKind::Service, &c.child_name(Component::Gateway.name()))
                .and_then(|s| {
                    let i = &s.data["status"]["loadBalancer"]["ingress"][0];
                    i["hostname"]
                        .as_str()
                        .or(i["ip"].as_str())
                        .map(str::to_owned)
                });
            match lb {
                Some(host) => format!("http://{host}:{}", spec.service.port),
                None => internal,
            }
        }
    }
}

/// Sets a condition, keeping `lastTransitionTime` unless the status changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    let new = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The new status from the previous one and what happened.
pub fn compute(
    previous: Option<&BeehiveClusterStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    progress: Option<&Progress>,
    endpoint: Option<String>,
    now: Timestamp,
) -> BeehiveClusterStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let conds = &mut s.conditions;
    let phase;
    match outcome {
        Outcome::Paused => {
            set_condition(
                conds,
                PROGRESSING,
                false,
                "Paused",
                "spec.paused is true; reconciliation is stopped",
                generation,
                now,
            );
            phase = "Paused";
        }
        Outcome::Invalid(reason, msg) => {
            set_condition(conds, READY, false, reason, msg, generation, now);
            set_condition(
                conds,
                PROGRESSING,
                false,
                reason,
                "fix the spec",
                generation,
                now,
            );
            set_condition(conds, DEGRADED, true, reason, msg, generation, now);
            phase = "Degraded";
        }
        Outcome::MissingSecrets(missing) => {
            let msg = format!("Secrets not found: {}", missing.join(", "));
            set_condition(conds, READY, false, "SecretNotFound", &msg, generation, now);
            set_condition(
                conds,
                PROGRESSING,
                false,
                "SecretNotFound",
                &msg,
                generation,
                now,
            );
            set_condition(
                conds,
                DEGRADED,
                true,
                "SecretNotFound",
                &msg,
                generation,
                now,
            );
            phase = "Degraded";
        }
        Outcome::ApplyFailed(msg) => {
            set_condition(conds, READY, false, "ApplyFailed", msg, generation, now);
            set_condition(
                conds,
                PROGRESSING,
                false,
                "ApplyFailed",
                msg,
                generation,
                now,
            );
            set_condition(conds, DEGRADED, true, "ApplyFailed", msg, generation, now);
            phase = "Degraded";
        }
        Outcome::Applied => {
            let p = progress.cloned().unwrap_or_default();
            s.components = p.components.clone();
            if let Some(version) = &p.rolled_out_version {
                s.version = Some(version.clone());
            }
            let unavailable = p.unavailable.first().map(|(reason, _)| reason.clone());
            match &p.migration {
                _ if unavailable.is_some() => {
                    let reason = unavailable.as_deref().unwrap_or("CRDNotInstalled");
                    let msg = p
                        .unavailable
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    set_condition(conds, READY, false, reason, &msg, generation, now);
                    set_condition(conds, PROGRESSING, false, reason, &msg, generation, now);
                    set_condition(conds, DEGRADED, true, reason, &msg, generation, now);
                    phase = "Degraded";
                }
                Some(Migration::Failed(msg)) => {
                    let msg = format!("migration Job failed: {msg}");
                    set_condition(
                        conds,
                        READY,
                        false,
                        "MigrationFailed",
                        &msg,
                        generation,
                        now,
                    );
                    set_condition(
                        conds,
                        PROGRESSING,
                        false,
                        "MigrationFailed",
                        &msg,
                        generation,
                        now,
                    );
                    set_condition(
                        conds,
                        DEGRADED,
                        true,
                        "MigrationFailed",
                        &msg,
                        generation,
                        now,
                    );
                    phase = "Degraded";
                }
                Some(Migration::Succeeded) if p.waiting.is_empty() => {
                    set_condition(
                        conds,
                        READY,
                        true,
                        "AllComponentsReady",
                        "every component is ready",
                        generation,
                        now,
                    );
                    set_condition(
                        conds,
                        PROGRESSING,
                        false,
                        "RolloutComplete",
                        "every component runs the desired version",
                        generation,
                        now,
                    );
                    set_condition(
                        conds,
                        DEGRADED,
                        false,
                        "AsExpected",
                        "no problem found",
                        generation,
                        now,
                    );
                    phase = "Ready";
                }
                m => {
                    let mut waiting = p.waiting.clone();
                    if m != &Some(Migration::Succeeded) {
                        waiting.insert(0, "migration".into());
                    }
                    let msg = format!("waiting for {}", waiting.join(", "));
                    let reason = if m == &Some(Migration::Succeeded) {
                        "RollingOut"
                    } else {
                        "Migrating"
                    };
                    set_condition(
                        conds,
                        READY,
                        false,
                        "ComponentsNotReady",
                        &msg,
                        generation,
                        now,
                    );
                    set_condition(conds, PROGRESSING, true, reason, &msg, generation, now);
                    set_condition(
                        conds,
                        DEGRADED,
                        false,
                        "AsExpected",
                        "no problem found",
                        generation,
                        now,
                    );
                    phase = "Progressing";
                }
            }
        }
    }
    // Keep a stable order: Ready, Progressing, Degraded.
    conds.sort_by_key(|c| match c.type_.as_str() {
        READY => 0,
        PROGRESSING => 1,
        DEGRADED => 2,
        _ => 3,
    });
    s.phase = Some(phase.into());
    if endpoint.is_some() {
        s.gateway_endpoint = endpoint;
    }
    s
}

/// An event to record on the BeehiveCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Reason (CamelCase).
    pub reason: String,
    /// Human-readable note.
    pub note: String,
}

/// Events for the changes between two statuses: phase changes and new Degraded reasons.
pub fn transitions(
    old: Option<&BeehiveClusterStatus>,
    new: &BeehiveClusterStatus,
) -> Vec<Transition> {
    let mut out = Vec::new();
    let old_phase = old.and_then(|s| s.phase.as_deref());
    let new_phase = new.phase.as_deref();
    let cond = |s: Option<&BeehiveClusterStatus>, t: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == t).cloned())
    };
    let old_degraded = cond(old, DEGRADED).filter(|c| c.status == "True");
    let new_degraded = cond(Some(new), DEGRADED).filter(|c| c.status == "True");
    if let Some(d) = &new_degraded
        && old_degraded.as_ref().map(|o| (&o.reason, &o.message)) != Some((&d.reason, &d.message))
    {
        out.push(Transition {
            warning: true,
            reason: d.reason.clone(),
            note: d.message.clone(),
        });
    }
    if old_phase != new_phase {
        match new_phase {
            Some("Ready") => out.push(Transition {
                warning: false,
                reason: "Ready".into(),
                note: "every component is ready".into(),
            }),
            Some("Paused") => out.push(Transition {
                warning: false,
                reason: "Paused".into(),
                note: "reconciliation paused (spec.paused)".into(),
            }),
            Some("Progressing") if old_phase == Some("Ready") => out.push(Transition {
                warning: false,
                reason: "Progressing".into(),
                note: cond(Some(new), PROGRESSING)
                    .map(|c| c.message)
                    .unwrap_or_default(),
            }),
            _ => {}
        }
        if old_phase == Some("Paused") {
            out.push(Transition {
                warning: false,
                reason: "Resumed".into(),
                note: "reconciliation resumed".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::{Inputs, build_all, tests::cluster};
    use serde_json::json;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ready_progress() -> Progress {
        Progress {
            components: BTreeMap::new(),
            waiting: vec![],
            migration: Some(Migration::Succeeded),
            rolled_out_version: Some("1.2.3".into()),
            unavailable: vec![],
        }
    }

    #[test]
    fn version_is_set_once_every_component_rolled_out_and_kept_during_a_rollout() {
        let ready = compute(
            None,
            Some(1),
            &Outcome::Applied,
            Some(&ready_progress()),
            None,
            t(0),
        );
        assert_eq!(ready.version.as_deref(), Some("1.2.3"));
        let rolling = Progress {
            waiting: vec!["gateway 1/2".into()],
            rolled_out_version: None,
            ..ready_progress()
        };
        let during = compute(
            Some(&ready),
            Some(2),
            &Outcome::Applied,
            Some(&rolling),
            None,
            t(1),
        );
        assert_eq!(during.version.as_deref(), Some("1.2.3"));
    }

    #[test]
    fn transition_time_only_moves_on_transitions() {
        let s1 = compute(
            None,
            Some(1),
            &Outcome::Applied,
            Some(&Progress::default()),
            None,
            t(0),
        );
        assert_eq!(s1.phase.as_deref(), Some("Progressing"));
        let ready1 = s1
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap()
            .clone();
        assert_eq!(ready1.status, "False");
        let mut p = Progress::default();
        p.waiting.push("gateway 0/1".into());
        let s2 = compute(Some(&s1), Some(1), &Outcome::Applied, Some(&p), None, t(10));
        let ready2 = s2.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            ready2.last_transition_time, ready1.last_transition_time,
            "same status, message changed"
        );
        assert_ne!(ready2.message, ready1.message);
        let s3 = compute(
            Some(&s2),
            Some(1),
            &Outcome::Applied,
            Some(&ready_progress()),
            None,
            t(20),
        );
        let ready3 = s3.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready3.status, "True");
        assert_eq!(ready3.last_transition_time, Time(t(20)));
        assert_eq!(s3.phase.as_deref(), Some("Ready"));
        // Same inputs again: identical status (so nothing is written).
        let s4 = compute(
            Some(&s3),
            Some(1),
            &Outcome::Applied,
            Some(&ready_progress()),
            None,
            t(30),
        );
        assert_eq!(s3, s4);
        assert_eq!(
            s3.conditions
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            vec![READY, PROGRESSING, DEGRADED]
        );
    }

    #[test]
    fn events_only_on_transitions() {
        let s1 = compute(
            None,
            Some(1),
            &Outcome::Applied,
            Some(&Progress::default()),
            None,
            t(0),
        );
        assert!(transitions(None, &s1).is_empty());
        let s2 = compute(
            Some(&s1),
            Some(1),
            &Outcome::Applied,
            Some(&ready_progress()),
            None,
            t(1),
        );
        assert_eq!(transitions(Some(&s1), &s2)[0].reason, "Ready");
        assert!(transitions(Some(&s2), &s2).is_empty());
        let s3 = compute(
            Some(&s2),
            Some(2),
            &Outcome::MissingSecrets(vec!["pg/url".into()]),
            None,
            None,
            t(2),
        );
        let ev = transitions(Some(&s2), &s3);
        assert!(ev[0].warning && ev[0].reason == "SecretNotFound", "{ev:?}");
        assert!(
            transitions(Some(&s3), &s3).is_empty(),
            "same problem, no new event"
        );
        let s4 = compute(Some(&s3), Some(2), &Outcome::Paused, None, None, t(3));
        assert_eq!(s4.phase.as_deref(), Some("Paused"));
        let s5 = compute(
            Some(&s4),
            Some(3),
            &Outcome::Applied,
            Some(&Progress::default()),
            None,
            t(4),
        );
        assert!(
            transitions(Some(&s4), &s5)
                .iter()
                .any(|e| e.reason == "Resumed")
        );
    }

    #[test]
    fn progress_reads_workload_and_job_status() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        let desired = build_all(&c, &Inputs::default()).unwrap();
        let job = desired
            .objects
            .iter()
            .find(|d| d.kind == ChildKind::Job)
            .unwrap();
        let mut observed = Observed::default();
        for d in &desired.objects {
            let mut o = d.object.clone();
            o.metadata.generation = Some(1);
            o.data["status"] = match d.kind {
                ChildKind::Deployment | ChildKind::StatefulSet => {
                    json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1})
                }
                ChildKind::Job => json!({"succeeded": 1}),
                _ => json!({}),
            };
            observed.insert(d.kind, o);
        }
        let p = progress(&r, &observed, &job.name());
        assert!(p.waiting.is_empty(), "{:?}", p.waiting);
        assert_eq!(p.migration, Some(Migration::Succeeded));
        assert_eq!(p.rolled_out_version, Some(c.spec.image.tag.clone()));
        assert_eq!(p.components["gateway"].ready_replicas, 1);
        assert_eq!(p.components["postgres"].ready_replicas, 1);
        // An old generation is not done yet.
        let mut stale = observed
            .get(ChildKind::Deployment, "demo-auth")
            .unwrap()
            .clone();
        stale.metadata.generation = Some(2);
        observed.insert(ChildKind::Deployment, stale);
        let p = progress(&r, &observed, &job.name());
        assert_eq!(p.waiting, vec!["auth 1/1".to_string()]);
        assert_eq!(p.rolled_out_version, None);
    }

    #[test]
    fn failed_migration_degrades() {
        let job: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}
        }))
        .unwrap();
        let m = migration_state(Some(&job));
        assert_eq!(m, Migration::Failed("BackoffLimitExceeded".into()));
        let p = Progress {
            migration: Some(m),
            ..Progress::default()
        };
        let s = compute(None, Some(1), &Outcome::Applied, Some(&p), None, t(0));
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
    }

    #[test]
    fn gateway_endpoint_by_exposure() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        assert_eq!(
            gateway_endpoint(&r, &Observed::default()),
            "http://demo-gateway.chat.svc:8080"
        );
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.service.type_ = ServiceType::NodePort;
        spec.gateway.service.node_port = Some(30080);
        let c = cluster("demo", spec);
        assert_eq!(
            gateway_endpoint(&ClusterRef::new(&c).unwrap(), &Observed::default()),
            "http://<node>:30080"
        );
    }
}
