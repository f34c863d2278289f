//! The reconciler, a pipeline:
//!
//! 1. read the object (a malformed one is reported on its status, never breaks the watch),
//! 2. validate the spec ([`validate`]),
//! 3. resolve Secrets (generate the JWT key and managed credentials when absent, never
//!    overwrite), hashing their content so pods roll when it changes,
//! 4. build every desired child with pure functions ([`build`]),
//! 5. server-side apply what changed under one field manager, delete orphans by label
//!    ([`apply`]),
//! 6. write the status if it changed and record events for transitions ([`status`]).
//!
//! Once the children are applied, a reindex asked for with the
//! `beehive.dev/reindex-request` annotation is started or followed ([`reindex`]).
//!
//! An unchanged cluster causes reads only: no apply, no status write, no event.

pub mod apply;
pub mod build;
pub mod reindex;
pub mod status;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{BeehiveCluster, BeehiveClusterStatus, ReindexStatus};
use crate::metrics;
use apply::ApplyCache;
use build::secret::Entropy;
use build::{BuildError, ChildKind, ClusterRef, FIELD_MANAGER, Inputs, SecretSource, sha256_hex};
use reindex::SearchAddress;
use status::Outcome;

/// Requeue interval of a ready cluster (picks up changed external Secrets).
pub const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout is in progress (owned objects also trigger).
pub const REQUEUE_PROGRESSING: Duration = Duration::from_secs(30);

/// Errors of a reconcile; each backs off and retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Applying or deleting a child failed.
    #[error("{action} {key}: {source}")]
    Child {
        /// "applying" or "deleting".
        action: &'static str,
        /// `Kind/name`.
        key: String,
        /// The API error.
        source: kube::Error,
    },
    /// The desired state could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Error {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Child { .. } => "apply",
            Error::Build(_) => "build",
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (None: events off).
    pub recorder: Option<Recorder>,
    /// What was last applied.
    pub cache: ApplyCache,
    /// Consecutive failures per object, for the back-off.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The clock (tests fix it).
    pub now: fn() -> Timestamp,
    /// Random material for generated Secrets (tests fix it).
    pub entropy: fn() -> Entropy,
    /// Where the search component of a cluster is reached (tests point it at their own).
    pub search_address: SearchAddress,
    /// Consecutive failed calls to the search component per object, for the back-off of
    /// a pending reindex.
    pub reindex_failures: Mutex<HashMap<String, u32>>,
    /// The namespace the operator runs in, admitted to the search component by the
    /// NetworkPolicy (None: not known, e.g. outside a cluster).
    pub operator_namespace: Option<String>,
}

impl Context {
    /// A context with the real clock and randomness.
    pub fn new(client: Client, recorder: Option<Recorder>) -> Self {
        Self {
            client,
            recorder,
            cache: ApplyCache::default(),
            failures: Mutex::new(HashMap::new()),
            now: Timestamp::now,
            entropy: Entropy::random,
            search_address: SearchAddress::InCluster,
            reindex_failures: Mutex::new(HashMap::new()),
            operator_namespace: None,
        }
    }
}

/// The kind reconciled.
pub fn cluster_resource() -> ApiResource {
    ApiResource::erase::<BeehiveCluster>(&())
}

fn object_key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reconciles one BeehiveCluster, measured.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    metrics::reconciled(start.elapsed(), result.as_ref().err().map(Error::kind));
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&object_key(&obj));
    }
    result
}

/// Backs off exponentially per object: 5s, 10s, 20s ... up to 5 minutes.
pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempts = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(object_key(&obj)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(attempts);
    tracing::warn!(cluster = %object_key(&obj), error = %err, attempts, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The delay after `attempts` consecutive failures.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(10));
    Duration::from_secs(secs.min(300))
}

/// What one pass of the pipeline decided: the status to write, then what to do.
struct Verdict {
    outcome: Outcome,
    progress: Option<status::Progress>,
    endpoint: Option<String>,
    next: Next,
    /// The reindex request's new status, when it changed.
    reindex: Option<ReindexStatus>,
    /// When the reindex request needs another look.
    reindex_requeue: Option<Duration>,
}

/// What the controller does after the status is written.
enum Next {
    /// Nothing until the object changes.
    AwaitChange,
    /// Look again after this long.
    Requeue(Duration),
    /// Rarely once Ready, often while progressing.
    ByPhase,
    /// Back off and retry; the status already says what failed.
    Fail(Error),
}

impl Verdict {
    fn stop(outcome: Outcome, next: Next) -> Self {
        Self {
            outcome,
            progress: None,
            endpoint: None,
            next,
            reindex: None,
            reindex_requeue: None,
        }
    }
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let generation = obj.metadata.generation;
    tracing::debug!(cluster = %object_key(obj), generation, "reconciling");
    if obj.metadata.deletion_timestamp.is_some() {
        // Children are owned: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let previous: Option<BeehiveClusterStatus> = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());

    // Every pass that gets an answer ends here: the status is written once (only if it
    // changed), then the verdict decides the requeue. API errors before an answer back off
    // without touching the status.
    let verdict = pipeline(obj, ctx, previous.as_ref()).await?;
    let new = finish(ctx, obj, previous.as_ref(), generation, &verdict).await?;
    let after = match verdict.next {
        Next::AwaitChange => None,
        Next::Requeue(after) => Some(after),
        Next::ByPhase if new.phase.as_deref() == Some("Ready") => Some(REQUEUE_READY),
        Next::ByPhase => Some(REQUEUE_PROGRESSING),
        Next::Fail(err) => return Err(err),
    };
    // A reindex in flight is looked at sooner than the cluster needs.
    let after = match (after, verdict.reindex_requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(after.map_or_else(Action::await_change, Action::requeue))
}

/// Read, validate, resolve Secrets, build, apply and prune, observe.
async fn pipeline(
    obj: &DynamicObject,
    ctx: &Context,
    previous: Option<&BeehiveClusterStatus>,
) -> Result<Verdict, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();

    // 1. read
    let cluster = match validate::parse(obj) {
        Ok(c) => c,
        Err(msg) => {
            return Ok(Verdict::stop(
                Outcome::Invalid("InvalidObject", msg),
                Next::AwaitChange,
            ));
        }
    };
    // Paused: touch nothing but the status.
    if cluster.spec.paused {
        return Ok(Verdict::stop(Outcome::Paused, Next::AwaitChange));
    }

    // 2. validate
    let problems = validate::validate(&cluster);
    if !problems.is_empty() {
        return Ok(Verdict::stop(
            Outcome::Invalid("InvalidSpec", problems.join("; ")),
            Next::AwaitChange,
        ));
    }
    let c = ClusterRef::new(&cluster)?;

    // 3. secrets
    let (inputs, missing) = resolve_secrets(ctx, &c, obj).await?;
    if !missing.is_empty() {
        return Ok(Verdict::stop(
            Outcome::MissingSecrets(missing),
            Next::Requeue(REQUEUE_PROGRESSING),
        ));
    }

    // 4. build
    let desired = match build::build_all(&cluster, &inputs) {
        Ok(d) => d,
        Err(e) => {
            return Ok(Verdict::stop(
                Outcome::Invalid("InvalidSpec", e.to_string()),
                Next::AwaitChange,
            ));
        }
    };

    // 5. apply, then remove orphans
    let wanted: Vec<ChildKind> = desired.objects.iter().map(|d| d.kind).collect();
    let mut observed = apply::list_children(&ctx.client, &ns, &name, &wanted).await?;
    let migration_job = desired
        .objects
        .iter()
        .find(|d| d.kind == ChildKind::Job)
        .map(|d| d.name())
        .unwrap_or_default();
    for d in &desired.objects {
        // A kind whose CRD is not installed: reported on the status, retried later.
        if observed.unavailable.contains_key(&d.kind) {
            continue;
        }
        let existing = observed.get(d.kind, &d.name());
        if !ctx.cache.needs_apply(&ns, d, existing) {
            continue;
        }
        let created = existing.is_none();
        match apply::apply(&ctx.client, &ns, d).await {
            Ok(applied) => {
                metrics::applied(d.kind.as_str());
                ctx.cache.record(&ns, d, &applied);
                tracing::info!(cluster = %format!("{ns}/{name}"), object = %d.key(), created, "applied");
                if created && d.kind == ChildKind::Job {
                    publish(
                        ctx,
                        obj,
                        false,
                        "MigrationStarted",
                        &format!("created migration Job {}", d.name()),
                    )
                    .await;
                }
                observed.insert(d.kind, applied);
            }
            // Listing found no such kind only if nothing was listed yet; an apply can still
            // meet a CRD removed meanwhile.
            Err(kube::Error::Api(s)) if d.kind.optional() && s.code == 404 => {
                tracing::debug!(object = %d.key(), "kind not served; skipped");
                observed.unavailable.insert(d.kind, 404);
            }
            Err(source) => return Ok(child_failed("applying", d.key(), source)),
        }
    }
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let orphans: Vec<(ChildKind, String)> = apply::orphans(&desired.objects, &observed, &uid)
        .into_iter()
        .filter(|(kind, _)| !observed.unavailable.contains_key(kind))
        .map(|(kind, o)| (kind, o.name_any()))
        .collect();
    for (kind, child) in &orphans {
        let key = format!("{kind}/{child}");
        if let Err(source) = apply::delete(&ctx.client, &ns, *kind, child).await {
            return Ok(child_failed("deleting", key, source));
        }
        metrics::deleted(kind.as_str());
        ctx.cache.forget(&ns, &key);
        observed.remove(*kind, child);
        tracing::info!(cluster = %format!("{ns}/{name}"), object = %key, "deleted: no longer desired");
    }
    if !orphans.is_empty() {
        let names: Vec<String> = orphans.iter().map(|(k, n)| format!("{k}/{n}")).collect();
        publish(
            ctx,
            obj,
            false,
            "Pruned",
            &format!("deleted {}", names.join(", ")),
        )
        .await;
    }

    // 6. observe
    let progress = status::progress(&c, &observed, &migration_job);

    // 7. a reindex asked for with the annotation
    let recorded = previous.and_then(|s| s.search.reindex.as_ref());
    let annotation = obj.annotations().get(reindex::REINDEX_ANNOTATION);
    let ran = reindex::run(
        &ctx.search_address,
        &c,
        annotation.map(String::as_str),
        recorded,
        &progress,
        (ctx.now)(),
    )
    .await;
    let failed_calls = count_reindex_failures(ctx, obj, &ran);
    let reindex_requeue = ran
        .status
        .as_ref()
        .and_then(|s| reindex::requeue(s, failed_calls));

    Ok(Verdict {
        outcome: Outcome::Applied,
        endpoint: Some(status::gateway_endpoint(&c, &observed)),
        progress: Some(progress),
        next: Next::ByPhase,
        reindex: ran.status,
        reindex_requeue,
    })
}

/// Failed calls to the search component in a row for this object, this one included.
fn count_reindex_failures(ctx: &Context, obj: &DynamicObject, ran: &reindex::Ran) -> u32 {
    let Ok(mut failures) = ctx.reindex_failures.lock() else {
        return 1;
    };
    let key = object_key(obj);
    if ran.call_failed {
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    } else {
        failures.remove(&key);
        0
    }
}

/// A child could not be applied or deleted: say so on the status, then back off.
fn child_failed(action: &'static str, key: String, source: kube::Error) -> Verdict {
    let err = Error::Child {
        action,
        key,
        source,
    };
    Verdict::stop(Outcome::ApplyFailed(err.to_string()), Next::Fail(err))
}

/// Reads every Secret the pods need; creates the generated ones that are absent. Returns the
/// content hashes and what is missing.
async fn resolve_secrets(
    ctx: &Context,
    c: &ClusterRef<'_>,
    obj: &DynamicObject,
) -> Result<(Inputs, Vec<String>), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &c.namespace);
    let mut inputs = Inputs {
        operator_namespace: ctx.operator_namespace.clone(),
        ..Inputs::default()
    };
    let mut missing = Vec::new();
    let mut generated_names: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, (SecretSource, BTreeSet<String>)> = BTreeMap::new();
    for (r, source) in c.secret_refs() {
        let e = by_name
            .entry(r.name.clone())
            .or_insert((source, BTreeSet::new()));
        // Generated wins over required: the operator can create it.
        if source == SecretSource::Generated {
            e.0 = source;
        }
        e.1.insert(r.key.clone());
    }
    for (name, (source, keys)) in by_name {
        let mut secret = api.get_opt(&name).await?;
        if secret.is_none() && source == SecretSource::Generated {
            let entropy = (ctx.entropy)();
            if let Some(new) = build::secret::generated(c, &name, &entropy)? {
                match api.create(&PostParams::default(), &new).await {
                    Ok(s) => {
                        metrics::applied("Secret");
                        tracing::info!(secret = %name, namespace = %c.namespace, "generated Secret");
                        generated_names.push(name.clone());
                        secret = Some(s);
                    }
                    // Another writer won the race: use theirs.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        secret = api.get_opt(&name).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let Some(secret) = secret else {
            // A datastore operator creates it once its cluster is up: the pods wait for it
            // (and roll once when it appears), the status waits for the datastore.
            if source != SecretSource::DatastoreOperator {
                for k in keys {
                    missing.push(format!("{name}/{k}"));
                }
            }
            continue;
        };
        for k in keys {
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&k))
                .map(|v| v.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(&k))
                        .map(|v| v.clone().into_bytes())
                });
            match value {
                Some(v) => {
                    inputs
                        .secret_hashes
                        .insert(format!("{name}/{k}"), sha256_hex(&v));
                }
                None if source == SecretSource::DatastoreOperator => {}
                None => missing.push(format!("{name}/{k}")),
            }
        }
    }
    if !generated_names.is_empty() {
        let note = format!("generated Secrets {}", generated_names.join(", "));
        publish(ctx, obj, false, "SecretsGenerated", &note).await;
    }
    Ok((inputs, missing))
}

/// Computes the status, writes it when it changed and records transition events.
async fn finish(
    ctx: &Context,
    obj: &DynamicObject,
    previous: Option<&BeehiveClusterStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
) -> Result<BeehiveClusterStatus, Error> {
    let mut new = status::compute(
        previous,
        generation,
        &verdict.outcome,
        verdict.progress.as_ref(),
        verdict.endpoint.clone(),
        (ctx.now)(),
    );
    if let Some(reindex) = &verdict.reindex {
        new.search.reindex = Some(reindex.clone());
    }
    if previous == Some(&new) {
        return Ok(new);
    }
    let ar = cluster_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_default(),
        &ar,
    );
    let patch = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "status": new,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    metrics::status_written();
    let mut events = status::transitions(previous, &new);
    if let Some(now) = &new.search.reindex {
        let before = previous.and_then(|p| p.search.reindex.as_ref());
        events.extend(reindex::event(before, now));
    }
    for t in events {
        publish(ctx, obj, t.warning, &t.reason, &t.note).await;
    }
    Ok(new)
}

/// Records an event on the cluster; failures are logged only.
async fn publish(ctx: &Context, obj: &DynamicObject, warning: bool, reason: &str, note: &str) {
    let Some(recorder) = &ctx.recorder else {
        return;
    };
    let reference = obj.object_ref(&cluster_resource());
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, reason, "could not record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(20), Duration::from_secs(300));
        let _ = BeehiveCluster::kind(&());
    }
}
