//! One-shot search reindexes asked for with an annotation on the BeehiveCluster:
//!
//! ```sh
//! kubectl annotate bhc dev beehive.dev/reindex-request=2026-11-28 --overwrite
//! ```
//!
//! The annotation's value is the request id sent to the search component's `Reindex`, an
//! idempotency key: a retried reconcile, or another operator replica after a leader change,
//! sends the same id and starts nothing new. `status.search.reindex` records the last
//! request handled; while its value is the annotation's, nothing more is asked once the
//! rebuild ended. Setting another value asks again (the approach of CloudNativePG's and
//! ECK's one-shot annotations: the object says what is wanted, the status what was done).
//!
//! [`step`] decides from the annotation and the recorded status what to do, the functions
//! after it turn an answer (or a failure) into the next recorded status, [`event`] names
//! the transition worth an Event; all pure. [`run`] does the calls.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::build::ClusterRef;
use super::build::configmap::component_addr;
use super::status::{Progress, Transition};
use crate::component::Component;
use crate::crd::{ReindexState, ReindexStatus};
use crate::search::{self, RemoteReindex, RemoteState, SearchError};

/// Annotation on the BeehiveCluster whose value asks for one reindex.
pub const REINDEX_ANNOTATION: &str = "beehive.dev/reindex-request";
/// Longest request id the search component accepts (search.proto, `ReindexRequest`).
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// How often a running reindex is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Longest part of a rejected value quoted in messages.
const QUOTED_CHARS: usize = 64;

/// What the annotation and the recorded status ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No annotation, or its request has ended: nothing to do.
    Idle,
    /// The value is not a valid request id: record this (no call).
    Reject(ReindexStatus),
    /// A request not accepted yet: call `Reindex`.
    Start {
        /// The request id.
        request_id: String,
    },
    /// A running rebuild: call `GetReindex` on the pod that accepted it.
    Poll {
        /// The request id.
        request_id: String,
        /// The pod that runs it.
        endpoint: String,
    },
}

/// Checks an annotation value as the search component checks a request id: 1-128
/// characters of ASCII letters, digits, `-`, `_`, `.` and `:`.
pub fn check_request_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!(
            "the {REINDEX_ANNOTATION} annotation is empty: set it to a request id (1-{MAX_REQUEST_ID_CHARS} characters of letters, digits, '-', '_', '.' and ':')"
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_REQUEST_ID_CHARS {
        return Err(format!(
            "the {REINDEX_ANNOTATION} annotation is {chars} characters long; a request id has at most {MAX_REQUEST_ID_CHARS}"
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "the {REINDEX_ANNOTATION} annotation {:?} contains {bad:?}; a request id has only letters, digits, '-', '_', '.' and ':'",
            quote(value)
        ));
    }
    Ok(())
}

fn quote(value: &str) -> String {
    let mut quoted: String = value.chars().take(QUOTED_CHARS).collect();
    if value.chars().count() > QUOTED_CHARS {
        quoted.push('…');
    }
    quoted
}

/// What to do for `annotation` (the annotation's value, if set) given the `recorded`
/// status of the last request.
pub fn step(annotation: Option<&str>, recorded: Option<&ReindexStatus>) -> Step {
    let Some(value) = annotation else {
        // Removing the annotation cancels nothing the search component accepted: a
        // running rebuild is still followed to its end, so the status tells how it went.
        return match recorded {
            Some(ReindexStatus {
                request_id,
                state: ReindexState::Running,
                endpoint: Some(endpoint),
                ..
            }) => Step::Poll {
                request_id: request_id.clone(),
                endpoint: endpoint.clone(),
            },
            _ => Step::Idle,
        };
    };
    if let Err(message) = check_request_id(value) {
        return Step::Reject(ReindexStatus {
            // Bounded like the schema; the same value always gives the same status, so a
            // rejected value is recorded (and reported) once.
            request_id: value.chars().take(MAX_REQUEST_ID_CHARS).collect(),
            state: ReindexState::Rejected,
            documents: None,
            started_at: None,
            finished_at: None,
            message: Some(message),
            endpoint: None,
        });
    }
    match recorded {
        Some(r) if r.request_id == value => match (r.state, &r.endpoint) {
            (ReindexState::Running, Some(endpoint)) => Step::Poll {
                request_id: value.to_owned(),
                endpoint: endpoint.clone(),
            },
            (state, _) if state.is_final() => Step::Idle,
            // Pending, or running without a known pod: ask again (the same id starts
            // nothing new where it was accepted).
            _ => Step::Start {
                request_id: value.to_owned(),
            },
        },
        _ => Step::Start {
            request_id: value.to_owned(),
        },
    }
}

fn pending(request_id: &str, message: String, previous: Option<&ReindexStatus>) -> ReindexStatus {
    let same = previous.filter(|p| p.request_id == request_id);
    ReindexStatus {
        request_id: request_id.to_owned(),
        state: ReindexState::Pending,
        documents: None,
        started_at: None,
        finished_at: None,
        message: Some(message),
        endpoint: same.and_then(|p| p.endpoint.clone()),
    }
}

/// The search component has no ready pod: wait for it.
pub fn search_not_ready(
    request_id: &str,
    ready: i32,
    desired: i32,
    previous: Option<&ReindexStatus>,
) -> ReindexStatus {
    let message = if desired == 0 {
        "waiting for the search component: spec.search.replicas is 0".to_owned()
    } else {
        format!("waiting for the search component to be ready ({ready}/{desired})")
    };
    pending(request_id, message, previous)
}

/// The search pod at `endpoint` answered about `request_id`.
pub fn answered(request_id: &str, endpoint: &str, remote: &RemoteReindex) -> ReindexStatus {
    let (state, message) = match remote.state {
        RemoteState::Running => (ReindexState::Running, None),
        RemoteState::Succeeded => (ReindexState::Succeeded, None),
        RemoteState::Failed => (
            ReindexState::Failed,
            Some(if remote.error.is_empty() {
                "the rebuild failed; the previous index stays in use".to_owned()
            } else {
                format!(
                    "the rebuild failed; the previous index stays in use: {}",
                    remote.error
                )
            }),
        ),
        RemoteState::Unknown => (
            ReindexState::Running,
            Some("the search component reports a state this operator does not know".to_owned()),
        ),
    };
    ReindexStatus {
        request_id: request_id.to_owned(),
        state,
        documents: Some(i64::try_from(remote.documents).unwrap_or(i64::MAX)),
        started_at: remote.started_at.map(Time),
        finished_at: remote.finished_at.map(Time),
        message,
        endpoint: Some(endpoint.to_owned()),
    }
}

/// `Reindex` got no acceptance. Refusals that asking again cannot change end the request;
/// the rest (unreachable, another rebuild running, overloaded) leave it pending.
pub fn not_started(
    request_id: &str,
    error: &SearchError,
    previous: Option<&ReindexStatus>,
) -> ReindexStatus {
    match error.code() {
        Some(tonic::Code::InvalidArgument) => ReindexStatus {
            state: ReindexState::Rejected,
            message: Some(format!(
                "the search component refused the request id: {}",
                error.reason()
            )),
            ..pending(request_id, String::new(), None)
        },
        Some(tonic::Code::Unimplemented) => ReindexStatus {
            state: ReindexState::Failed,
            message: Some(
                "the search component does not implement Reindex (an image older than the reindex feature): upgrade spec.image"
                    .to_owned(),
            ),
            ..pending(request_id, String::new(), None)
        },
        Some(tonic::Code::FailedPrecondition) => pending(
            request_id,
            format!(
                "another reindex is running, retrying: {}",
                error.reason()
            ),
            previous,
        ),
        _ => pending(
            request_id,
            format!("cannot start the reindex, retrying: {error}"),
            previous,
        ),
    }
}

/// `GetReindex` about the running `recorded` request got no answer.
pub fn poll_failed(recorded: &ReindexStatus, error: &SearchError, now: Timestamp) -> ReindexStatus {
    let mut next = recorded.clone();
    if error.code() == Some(tonic::Code::NotFound) {
        // The pod that accepted it restarted without its state (Elasticsearch backend) or
        // was replaced: nobody will finish or report this rebuild.
        next.state = ReindexState::Failed;
        next.finished_at = Some(Time(now));
        next.message = Some(format!(
            "the search pod that ran the reindex no longer knows it (restarted or replaced); set a new {REINDEX_ANNOTATION} value to reindex again: {}",
            error.reason()
        ));
    } else {
        next.message = Some(format!(
            "cannot ask the search component about the reindex, retrying: {error}"
        ));
    }
    next
}

/// When to look again at a request in `status`, given how many calls in a row failed.
pub fn requeue(status: &ReindexStatus, failed_calls: u32) -> Option<Duration> {
    match status.state {
        _ if status.state.is_final() => None,
        ReindexState::Running if status.message.is_none() => Some(POLL_INTERVAL),
        _ => Some(super::backoff(failed_calls.max(1))),
    }
}

/// The Event for the change from `old` to `new`, if any: Normal when a request is seen,
/// starts and succeeds, Warning when it fails or is rejected. Only a change of request id
/// or state is an event, so progress and retries stay quiet.
pub fn event(old: Option<&ReindexStatus>, new: &ReindexStatus) -> Option<Transition> {
    if old.is_some_and(|o| o.request_id == new.request_id && o.state == new.state) {
        return None;
    }
    let id = &new.request_id;
    let message = new.message.as_deref().unwrap_or_default();
    let (warning, reason, note) = match new.state {
        ReindexState::Pending => (
            false,
            "ReindexPending",
            format!("reindex {id} requested: {message}"),
        ),
        ReindexState::Running => (
            false,
            "ReindexStarted",
            format!(
                "reindex {id} started on the search pod at {}",
                new.endpoint.as_deref().unwrap_or("?")
            ),
        ),
        ReindexState::Succeeded => (
            false,
            "ReindexSucceeded",
            format!(
                "reindex {id} succeeded: {} documents; the new index is in use",
                new.documents.unwrap_or(0)
            ),
        ),
        ReindexState::Failed => (true, "ReindexFailed", format!("reindex {id}: {message}")),
        ReindexState::Rejected => (true, "ReindexRejected", message.to_owned()),
    };
    Some(Transition {
        warning,
        reason: reason.into(),
        note,
    })
}

/// Where the operator reaches a cluster's search component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SearchAddress {
    /// Its Service in the cluster, `http://<cluster>-search.<namespace>.svc:50055`.
    #[default]
    InCluster,
    /// This address for every cluster (tests; an operator outside the cluster reaching
    /// the search component through `kubectl port-forward`).
    Fixed(String),
}

/// What one reindex step did: the status to record (None: keep it) and whether a call
/// failed (for the back-off).
pub struct Ran {
    /// The new status of the request.
    pub status: Option<ReindexStatus>,
    /// A call to the search component failed (or could not be made).
    pub call_failed: bool,
}

/// Does what [`step`] decides for a cluster whose children were applied and observed.
pub async fn run(
    address: &SearchAddress,
    c: &ClusterRef<'_>,
    annotation: Option<&str>,
    recorded: Option<&ReindexStatus>,
    progress: &Progress,
    now: Timestamp,
) -> Ran {
    let cluster = format!("{}/{}", c.namespace, c.name);
    match step(annotation, recorded) {
        Step::Idle => Ran {
            status: None,
            call_failed: false,
        },
        Step::Reject(status) => {
            tracing::warn!(%cluster, annotation = REINDEX_ANNOTATION, reason = ?status.message, "reindex request rejected");
            Ran {
                status: Some(status),
                call_failed: false,
            }
        }
        Step::Start { request_id } => {
            let search = progress.components.get(Component::Search.name());
            let (ready, desired) = search.map_or((0, 0), |s| (s.ready_replicas, s.replicas));
            if ready == 0 {
                tracing::info!(%cluster, %request_id, ready, desired, "reindex waits for the search component");
                return Ran {
                    status: Some(search_not_ready(&request_id, ready, desired, recorded)),
                    call_failed: true,
                };
            }
            let addr = match address {
                SearchAddress::InCluster => component_addr(c, Component::Search),
                SearchAddress::Fixed(addr) => addr.clone(),
            };
            let result = match search::pin(&addr).await {
                Ok(endpoint) => search::reindex(&endpoint, &request_id)
                    .await
                    .map(|remote| (endpoint, remote)),
                Err(e) => Err(e),
            };
            match result {
                Ok((endpoint, remote)) => {
                    tracing::info!(%cluster, %request_id, %endpoint, state = ?remote.state, documents = remote.documents, "reindex accepted by the search component");
                    Ran {
                        status: Some(answered(&request_id, &endpoint, &remote)),
                        call_failed: false,
                    }
                }
                Err(error) => {
                    tracing::warn!(%cluster, %request_id, %error, "reindex not started");
                    Ran {
                        status: Some(not_started(&request_id, &error, recorded)),
                        call_failed: true,
                    }
                }
            }
        }
        Step::Poll {
            request_id,
            endpoint,
        } => match search::get_reindex(&endpoint, &request_id).await {
            Ok(remote) => {
                tracing::debug!(%cluster, %request_id, %endpoint, state = ?remote.state, documents = remote.documents, "reindex polled");
                Ran {
                    status: Some(answered(&request_id, &endpoint, &remote)),
                    call_failed: false,
                }
            }
            Err(error) => {
                tracing::warn!(%cluster, %request_id, %endpoint, %error, "cannot poll the reindex");
                let status = recorded.map(|r| poll_failed(r, &error, now));
                Ran {
                    status,
                    call_failed: true,
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(id: &str, state: ReindexState, endpoint: Option<&str>) -> ReindexStatus {
        ReindexStatus {
            request_id: id.into(),
            state,
            documents: None,
            started_at: None,
            finished_at: None,
            message: None,
            endpoint: endpoint.map(str::to_owned),
        }
    }

    fn start(id: &str) -> Step {
        Step::Start {
            request_id: id.into(),
        }
    }

    #[test]
    fn request_ids_are_checked_like_the_search_component_does() {
        assert!(check_request_id("2026-11-28T12:00:00Z").is_ok());
        assert!(check_request_id(&"a".repeat(128)).is_ok());
        let empty = check_request_id("").unwrap_err();
        assert!(empty.contains("is empty"), "{empty}");
        let long = check_request_id(&"a".repeat(129)).unwrap_err();
        assert!(long.contains("129 characters"), "{long}");
        let bad = check_request_id("x/y").unwrap_err();
        assert!(bad.contains("'/'"), "{bad}");
        assert!(check_request_id("naïve").is_err());
        assert!(check_request_id("a b").is_err());
        // A huge value is quoted in part only.
        let huge = format!("{}!", "b".repeat(100_000));
        assert!(check_request_id(&huge).unwrap_err().len() < 300);
    }

    #[test]
    fn no_annotation_does_nothing() {
        assert_eq!(step(None, None), Step::Idle);
        let pending = recorded("a", ReindexState::Pending, None);
        assert_eq!(step(None, Some(&pending)), Step::Idle);
        // Except following a running rebuild to its end.
        let running = recorded("a", ReindexState::Running, Some("http://10.0.0.1:50055"));
        assert_eq!(
            step(None, Some(&running)),
            Step::Poll {
                request_id: "a".into(),
                endpoint: "http://10.0.0.1:50055".into()
            }
        );
    }

    #[test]
    fn a_new_value_starts_and_a_handled_one_does_not() {
        assert_eq!(step(Some("a"), None), start("a"));
        for done in [ReindexState::Succeeded, ReindexState::Failed] {
            let r = recorded("a", done, Some("http://10.0.0.1:50055"));
            assert_eq!(step(Some("a"), Some(&r)), Step::Idle, "{done:?}");
            assert_eq!(step(Some("b"), Some(&r)), start("b"), "{done:?}");
        }
        // Not accepted yet: ask again with the same id.
        let pending = recorded("a", ReindexState::Pending, None);
        assert_eq!(step(Some("a"), Some(&pending)), start("a"));
        // A previously rejected value that is now valid starts.
        let rejected = recorded("a", ReindexState::Rejected, None);
        assert_eq!(step(Some("b"), Some(&rejected)), start("b"));
    }

    #[test]
    fn a_running_request_is_polled_on_the_pod_that_accepted_it() {
        let r = recorded("a", ReindexState::Running, Some("http://10.0.0.1:50055"));
        assert_eq!(
            step(Some("a"), Some(&r)),
            Step::Poll {
                request_id: "a".into(),
                endpoint: "http://10.0.0.1:50055".into()
            }
        );
        // Another value while one runs: asked for (the search component refuses it until
        // the running one ends, which leaves it pending).
        assert_eq!(step(Some("b"), Some(&r)), start("b"));
        let lost = recorded("a", ReindexState::Running, None);
        assert_eq!(step(Some("a"), Some(&lost)), start("a"));
    }

    #[test]
    fn invalid_values_are_rejected_the_same_way_every_time() {
        for value in ["", "has space", &"x".repeat(5000)] {
            let Step::Reject(first) = step(Some(value), None) else {
                panic!("{value:?} not rejected");
            };
            assert_eq!(first.state, ReindexState::Rejected);
            assert!(first.request_id.chars().count() <= MAX_REQUEST_ID_CHARS);
            assert!(first.message.as_deref().is_some_and(|m| m.len() < 400));
            // Recorded, then seen again: the same status (no write, no second event).
            assert_eq!(step(Some(value), Some(&first)), Step::Reject(first.clone()));
            assert!(event(Some(&first), &first).is_none());
            let ev = event(None, &first).expect("an event");
            assert!(ev.warning && ev.reason == "ReindexRejected", "{ev:?}");
        }
    }

    fn remote(state: RemoteState, documents: u64) -> RemoteReindex {
        RemoteReindex {
            request_id: "a".into(),
            state,
            documents,
            started_at: Timestamp::new(1_767_225_600, 0).ok(),
            finished_at: None,
            error: String::new(),
        }
    }

    #[test]
    fn answers_become_status_and_events() {
        let ep = "http://10.0.0.1:50055";
        let running = answered("a", ep, &remote(RemoteState::Running, 10));
        assert_eq!(running.state, ReindexState::Running);
        assert_eq!(running.endpoint.as_deref(), Some(ep));
        assert_eq!(running.documents, Some(10));
        let started = event(None, &running).expect("started");
        assert_eq!(
            (started.warning, started.reason.as_str()),
            (false, "ReindexStarted")
        );
        // Progress is no event.
        let more = answered("a", ep, &remote(RemoteState::Running, 20));
        assert!(event(Some(&running), &more).is_none());
        assert_eq!(requeue(&more, 0), Some(POLL_INTERVAL));
        let done = answered("a", ep, &remote(RemoteState::Succeeded, 30));
        let ok = event(Some(&more), &done).expect("succeeded");
        assert_eq!(
            (ok.warning, ok.reason.as_str()),
            (false, "ReindexSucceeded")
        );
        assert!(ok.note.contains("30 documents"), "{}", ok.note);
        assert_eq!(requeue(&done, 0), None);
        let mut failing = remote(RemoteState::Failed, 5);
        failing.error = "reading the message history failed".into();
        let failed = answered("a", ep, &failing);
        let bad = event(Some(&more), &failed).expect("failed");
        assert_eq!((bad.warning, bad.reason.as_str()), (true, "ReindexFailed"));
        assert!(bad.note.contains("message history"), "{}", bad.note);
    }

    fn rpc(code: tonic::Code) -> SearchError {
        SearchError::Rpc {
            addr: "http://10.0.0.1:50055".into(),
            code,
            message: "details".into(),
        }
    }

    #[test]
    fn refusals_end_or_retry_by_code() {
        let busy = not_started("b", &rpc(tonic::Code::FailedPrecondition), None);
        assert_eq!(busy.state, ReindexState::Pending);
        assert!(busy.message.as_deref().unwrap().contains("another reindex"));
        assert_eq!(requeue(&busy, 1), Some(Duration::from_secs(5)));
        assert_eq!(requeue(&busy, 3), Some(Duration::from_secs(20)));
        let down = not_started("b", &rpc(tonic::Code::Unavailable), None);
        assert_eq!(down.state, ReindexState::Pending);
        assert!(event(Some(&busy), &down).is_none(), "still pending: quiet");
        assert_eq!(
            not_started("b", &rpc(tonic::Code::InvalidArgument), None).state,
            ReindexState::Rejected
        );
        assert_eq!(
            not_started("b", &rpc(tonic::Code::Unimplemented), None).state,
            ReindexState::Failed
        );
        let waiting = search_not_ready("b", 0, 1, None);
        assert_eq!(waiting.state, ReindexState::Pending);
        assert!(waiting.message.as_deref().unwrap().contains("(0/1)"));
        let pending = event(None, &waiting).expect("seen");
        assert_eq!(
            (pending.warning, pending.reason.as_str()),
            (false, "ReindexPending")
        );
    }

    #[test]
    fn a_poll_that_fails_keeps_running_unless_the_pod_forgot_it() {
        let now = Timestamp::new(1_767_225_700, 0).unwrap();
        let running = answered(
            "a",
            "http://10.0.0.1:50055",
            &remote(RemoteState::Running, 1),
        );
        let unreachable = poll_failed(&running, &rpc(tonic::Code::Unavailable), now);
        assert_eq!(unreachable.state, ReindexState::Running);
        assert!(unreachable.message.is_some());
        assert_eq!(requeue(&unreachable, 2), Some(Duration::from_secs(10)));
        let forgotten = poll_failed(&running, &rpc(tonic::Code::NotFound), now);
        assert_eq!(forgotten.state, ReindexState::Failed);
        assert_eq!(forgotten.finished_at, Some(Time(now)));
        assert!(event(Some(&running), &forgotten).is_some_and(|e| e.warning));
        // A successful poll after an unreachable one clears the message.
        let back = answered(
            "a",
            "http://10.0.0.1:50055",
            &remote(RemoteState::Running, 2),
        );
        assert!(back.message.is_none());
    }
}
