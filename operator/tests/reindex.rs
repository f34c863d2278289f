//! Reindex requests through the `beehive.dev/reindex-request` annotation: the operator
//! against a mocked Kubernetes API (tower-test, as in reconcile.rs) and a real tonic
//! `SearchService` server on loopback that behaves like the search component's (one
//! rebuild per request id, a different id refused while one runs, NOT_FOUND for an id it
//! does not know) and counts every call.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_common::grpc::tokio_stream_shim::TcpIncoming;
use beehive_operator::reconcile::build::secret::Entropy;
use beehive_operator::reconcile::reindex::{POLL_INTERVAL, REINDEX_ANNOTATION, SearchAddress};
use beehive_operator::reconcile::{self, Context};
use beehive_proto::v1 as pb;
use beehive_proto::v1::search_service_server::{SearchService, SearchServiceServer};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use support::FakeApi;
use tonic::{Request, Response, Status};

const CLUSTERS: &str = "/apis/beehive.dev/v1alpha1/namespaces/chat/beehiveclusters";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/chat/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/chat/statefulsets";
const JOBS: &str = "/apis/batch/v1/namespaces/chat/jobs";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/chat/events";

/// What the fake search component knows: like the real one, only its latest rebuild.
#[derive(Default)]
struct SearchState {
    latest: Option<pb::ReindexResponse>,
    /// GetReindex calls a rebuild answers Running before it succeeds.
    polls_until_done: u32,
    polls: u32,
    /// Reindex calls by request id.
    reindex_calls: BTreeMap<String, u32>,
    /// Rebuilds started by request id.
    started: BTreeMap<String, u32>,
    get_calls: u32,
}

#[derive(Clone, Default)]
struct FakeSearch {
    state: Arc<Mutex<SearchState>>,
}

fn started_at() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_767_225_600,
        nanos: 0,
    })
}

#[tonic::async_trait]
impl SearchService for FakeSearch {
    async fn search_messages(
        &self,
        _: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn reindex(
        &self,
        request: Request<pb::ReindexRequest>,
    ) -> Result<Response<pb::ReindexResponse>, Status> {
        let id = request.into_inner().request_id;
        let mut s = self.state.lock().unwrap();
        *s.reindex_calls.entry(id.clone()).or_default() += 1;
        match &s.latest {
            Some(latest) if latest.request_id == id => return Ok(Response::new(latest.clone())),
            Some(latest) if latest.state == pb::ReindexState::Running as i32 => {
                return Err(Status::failed_precondition(format!(
                    "a reindex is already running (request_id {})",
                    latest.request_id
                )));
            }
            _ => {}
        }
        let status = pb::ReindexResponse {
            request_id: id.clone(),
            state: pb::ReindexState::Running as i32,
            documents: 0,
            started_at: started_at(),
            finished_at: None,
            error: String::new(),
        };
        s.latest = Some(status.clone());
        s.polls = 0;
        *s.started.entry(id).or_default() += 1;
        Ok(Response::new(status))
    }

    async fn get_reindex(
        &self,
        request: Request<pb::GetReindexRequest>,
    ) -> Result<Response<pb::ReindexResponse>, Status> {
        let id = request.into_inner().request_id;
        let mut s = self.state.lock().unwrap();
        s.get_calls += 1;
        s.polls += 1;
        let (polls, until) = (s.polls, s.polls_until_done);
        let Some(latest) = s.latest.as_mut().filter(|l| l.request_id == id) else {
            return Err(Status::not_found(format!(
                "no reindex with request_id {id:?} is known here"
            )));
        };
        if latest.state == pb::ReindexState::Running as i32 {
            latest.documents = u64::from(polls) * 100;
            if polls > until {
                latest.state = pb::ReindexState::Succeeded as i32;
                latest.finished_at = Some(prost_types::Timestamp {
                    seconds: 1_767_225_660,
                    nanos: 0,
                });
            }
        }
        Ok(Response::new(latest.clone()))
    }
}

impl FakeSearch {
    async fn serve(polls_until_done: u32) -> (Self, SocketAddr) {
        let fake = FakeSearch::default();
        fake.state.lock().unwrap().polls_until_done = polls_until_done;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = SearchServiceServer::new(fake.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::new(listener))
                .await
        });
        (fake, addr)
    }

    fn reindex_calls(&self, id: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .reindex_calls
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn started(&self, id: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .started
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn get_calls(&self) -> u32 {
        self.state.lock().unwrap().get_calls
    }

    fn total_reindex_calls(&self) -> u32 {
        self.state.lock().unwrap().reindex_calls.values().sum()
    }

    /// Forgets every rebuild, as a restarted pod without a state file does.
    fn restart(&self) {
        self.state.lock().unwrap().latest = None;
    }
}

fn fixed_now() -> Timestamp {
    Timestamp::from_second(1_767_225_600).unwrap()
}

fn fixed_entropy() -> Entropy {
    Entropy {
        seed: [42; 32],
        password: "generated-password".into(),
    }
}

struct Harness {
    fake: FakeApi,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(search: SearchAddress) -> Self {
        let fake = FakeApi::new();
        let client = fake.client();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "beehive-operator".into(),
                instance: Some("test".into()),
            },
        );
        let mut ctx = Context::new(client, Some(recorder));
        ctx.now = fixed_now;
        ctx.entropy = fixed_entropy;
        ctx.search_address = search;
        fake.seed(
            CLUSTERS,
            json!({"apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
                   "metadata": {"name": "demo", "namespace": "chat"}, "spec": {}}),
        );
        Self {
            fake,
            ctx: Arc::new(ctx),
        }
    }

    fn fixed(addr: SocketAddr) -> Self {
        Self::new(SearchAddress::Fixed(format!("http://{addr}")))
    }

    async fn reconcile(&self) -> Action {
        let obj: DynamicObject =
            serde_json::from_value(self.fake.get(CLUSTERS, "demo").unwrap()).unwrap();
        reconcile::reconcile(Arc::new(obj), self.ctx.clone())
            .await
            .expect("reconcile")
    }

    /// A first reconcile, then every workload ready and the migration done.
    async fn ready_cluster(&self) {
        self.reconcile().await;
        for coll in [DEPLOYMENTS, STATEFULSETS] {
            for obj in self.fake.list(coll) {
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                let generation = obj["metadata"]["generation"].clone();
                self.fake.modify(coll, &name, false, |o| {
                    o["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                        "readyReplicas": replicas, "updatedReplicas": replicas});
                });
            }
        }
        for obj in self.fake.list(JOBS) {
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            self.fake.modify(JOBS, &name, false, |o| {
                o["status"] = json!({"succeeded": 1})
            });
        }
        self.reconcile().await;
        assert_eq!(
            self.fake.get(CLUSTERS, "demo").unwrap()["status"]["phase"],
            "Ready"
        );
        self.fake.take_log();
    }

    /// Sets the annotation as `kubectl annotate --overwrite` does (no generation bump).
    fn annotate(&self, value: &str) {
        self.fake.modify(CLUSTERS, "demo", false, |o| {
            o["metadata"]["annotations"][REINDEX_ANNOTATION] = json!(value);
        });
        self.fake.take_log();
    }

    fn reindex_status(&self) -> Value {
        self.fake.get(CLUSTERS, "demo").unwrap()["status"]["search"]["reindex"].clone()
    }

    /// (type, reason) of every event recorded so far.
    fn events(&self) -> Vec<(String, String)> {
        self.fake
            .list(EVENTS)
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn reindex_events(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter(|(_, reason)| reason.starts_with("Reindex"))
            .collect()
    }
}

fn writes(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| !l.starts_with("GET ") && !l.starts_with("LIST "))
        .cloned()
        .collect()
}

fn pair(kind: &str, reason: &str) -> (String, String) {
    (kind.to_string(), reason.to_string())
}

#[tokio::test]
async fn one_reindex_per_request_id_polled_to_completion() {
    let (search, addr) = FakeSearch::serve(2).await;
    let h = Harness::fixed(addr);
    h.ready_cluster().await;
    // Without the annotation the search component is never called.
    h.reconcile().await;
    assert_eq!((search.total_reindex_calls(), search.get_calls()), (0, 0));

    h.annotate("r1");
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(POLL_INTERVAL), "polled soon");
    assert_eq!(search.reindex_calls("r1"), 1);
    let st = h.reindex_status();
    assert_eq!(st["requestId"], "r1");
    assert_eq!(st["state"], "Running");
    assert_eq!(st["endpoint"], format!("http://{addr}"));
    assert_eq!(st["startedAt"], "2026-01-01T00:00:00Z");
    assert_eq!(
        writes(&h.fake.take_log()),
        vec![
            format!("APPLY-STATUS {CLUSTERS}/demo/status"),
            format!("POST {EVENTS}")
        ]
    );
    assert_eq!(h.reindex_events(), vec![pair("Normal", "ReindexStarted")]);

    // Later reconciles poll GetReindex and never ask Reindex again.
    for expected_documents in [100, 200] {
        let action = h.reconcile().await;
        assert_eq!(action, Action::requeue(POLL_INTERVAL));
        assert_eq!(h.reindex_status()["state"], "Running");
        assert_eq!(h.reindex_status()["documents"], expected_documents);
    }
    assert_eq!(search.get_calls(), 2);

    let action = h.reconcile().await;
    let st = h.reindex_status();
    assert_eq!(st["state"], "Succeeded", "{st}");
    assert_eq!(st["documents"], 300);
    assert_eq!(st["finishedAt"], "2026-01-01T00:01:00Z");
    assert_eq!(
        action,
        Action::requeue(reconcile::REQUEUE_READY),
        "back to the cluster's own pace"
    );
    assert_eq!(
        h.reindex_events(),
        vec![
            pair("Normal", "ReindexStarted"),
            pair("Normal", "ReindexSucceeded")
        ]
    );

    // Done: more reconciles neither call the search component nor write.
    h.fake.take_log();
    for _ in 0..3 {
        h.reconcile().await;
    }
    assert!(writes(&h.fake.take_log()).is_empty());
    assert_eq!(search.get_calls(), 3);
    assert_eq!(search.reindex_calls("r1"), 1, "exactly one Reindex for r1");
    assert_eq!(search.started("r1"), 1);

    // A new value is a new request.
    h.annotate("r2");
    h.reconcile().await;
    assert_eq!(search.reindex_calls("r2"), 1);
    assert_eq!(search.started("r2"), 1);
    assert_eq!(h.reindex_status()["requestId"], "r2");
    assert_eq!(search.reindex_calls("r1"), 1);
}

#[tokio::test]
async fn a_replica_with_a_stale_view_starts_nothing_new() {
    let (search, addr) = FakeSearch::serve(0).await;
    let h = Harness::fixed(addr);
    h.ready_cluster().await;
    h.annotate("once");
    // The object as another operator replica (or a retry after a failed status write)
    // still sees it: annotated, with no reindex in the status.
    let stale: DynamicObject =
        serde_json::from_value(h.fake.get(CLUSTERS, "demo").unwrap()).unwrap();
    h.reconcile().await;
    assert_eq!(h.reindex_status()["state"], "Running");
    reconcile::reconcile(Arc::new(stale), h.ctx.clone())
        .await
        .expect("reconcile");
    // It asks again with the same request id, which the search component answers with
    // the rebuild it already runs.
    assert_eq!(search.reindex_calls("once"), 2);
    assert_eq!(search.started("once"), 1, "one rebuild");
    h.reconcile().await;
    assert_eq!(h.reindex_status()["state"], "Succeeded");
    assert_eq!(search.started("once"), 1);
}

#[tokio::test]
async fn unreachable_search_leaves_the_request_pending_with_backoff() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::fixed(closed);
    h.ready_cluster().await;
    h.annotate("r1");
    let first = h.reconcile().await;
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    let st = h.reindex_status();
    assert_eq!(st["state"], "Pending");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the search component"),
        "{st}"
    );
    assert_eq!(h.reindex_events(), vec![pair("Normal", "ReindexPending")]);
    h.fake.take_log();
    assert_eq!(
        h.reconcile().await,
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        h.reconcile().await,
        Action::requeue(Duration::from_secs(20))
    );
    assert!(
        writes(&h.fake.take_log()).is_empty(),
        "the same problem is neither written nor reported again"
    );
    assert_eq!(h.reindex_events().len(), 1);
}

#[tokio::test]
async fn waits_for_a_ready_search_component() {
    let (search, addr) = FakeSearch::serve(0).await;
    let h = Harness::fixed(addr);
    h.reconcile().await; // created, nothing ready yet
    h.annotate("early");
    h.reconcile().await;
    let st = h.reindex_status();
    assert_eq!(st["state"], "Pending");
    assert_eq!(
        st["message"],
        "waiting for the search component to be ready (0/1)"
    );
    assert_eq!(search.total_reindex_calls(), 0);
    h.ready_cluster().await;
    assert_eq!(search.reindex_calls("early"), 1);
    assert_eq!(h.reindex_status()["state"], "Running");
}

#[tokio::test]
async fn invalid_values_are_rejected_without_a_call() {
    let (search, addr) = FakeSearch::serve(0).await;
    let h = Harness::fixed(addr);
    h.ready_cluster().await;
    for value in ["", "two words", &"x".repeat(300)] {
        h.annotate(value);
        let action = h.reconcile().await;
        assert_eq!(action, Action::requeue(reconcile::REQUEUE_READY));
        let st = h.reindex_status();
        assert_eq!(st["state"], "Rejected", "{value:?}");
        assert!(st["message"].as_str().unwrap().contains(REINDEX_ANNOTATION));
        // The status and one Warning (the recorder folds repeats of a reason into a
        // series: a POST, then PATCHes of it).
        let log = writes(&h.fake.take_log());
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], format!("APPLY-STATUS {CLUSTERS}/demo/status"));
        assert!(log[1].contains(EVENTS), "{log:?}");
        // Seen again: nothing written.
        h.reconcile().await;
        assert!(writes(&h.fake.take_log()).is_empty(), "{value:?}");
    }
    assert_eq!(search.total_reindex_calls(), 0);
    assert_eq!(h.reindex_events(), vec![pair("Warning", "ReindexRejected")]);
}

#[tokio::test]
async fn a_search_pod_that_forgot_the_rebuild_fails_the_request() {
    let (search, addr) = FakeSearch::serve(5).await;
    let h = Harness::fixed(addr);
    h.ready_cluster().await;
    h.annotate("r1");
    h.reconcile().await;
    search.restart();
    let action = h.reconcile().await;
    let st = h.reindex_status();
    assert_eq!(st["state"], "Failed", "{st}");
    assert!(st["message"].as_str().unwrap().contains("no longer knows"));
    assert_eq!(action, Action::requeue(reconcile::REQUEUE_READY));
    assert_eq!(
        h.reindex_events(),
        vec![
            pair("Normal", "ReindexStarted"),
            pair("Warning", "ReindexFailed")
        ]
    );
    // Not asked again for the same value.
    h.reconcile().await;
    assert_eq!(search.reindex_calls("r1"), 1);
}
