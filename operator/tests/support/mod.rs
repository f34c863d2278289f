//! A small in-memory Kubernetes API server for the reconcile tests (kube-rs tower-test
//! fixture pattern): every request the operator makes is answered from a store and logged,
//! so tests assert each call. It implements what the operator uses: get, list with label
//! selectors, create, server-side apply (spec and status), replace with resourceVersion
//! preconditions, merge patch, delete; failures can be injected.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    /// collection path (e.g. /apis/apps/v1/namespaces/chat/deployments) -> name -> object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    log: Vec<String>,
    failures: Vec<(String, String, u16)>,
    rv: u64,
    uid: u64,
}

/// A change, as a watch would report it: (collection, ADDED|MODIFIED|DELETED, object).
pub type Change = (String, &'static str, Value);

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changes: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

/// A parsed request path.
#[derive(Debug)]
pub struct ApiPath {
    /// Path of the collection (namespaced when a namespace is given).
    pub collection: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (status).
    pub sub: Option<String>,
    /// Plural of the kind.
    pub plural: String,
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub group_version: String,
    /// Namespace, if any.
    pub namespace: Option<String>,
}

/// Parses `/api/v1/namespaces/ns/plural/name/sub` and `/apis/g/v/...`.
pub fn parse_path(path: &str) -> Option<ApiPath> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (gv_len, rest) = match *segs.first()? {
        "api" => (2, &segs[2..]),
        "apis" => (3, &segs[3..]),
        _ => return None,
    };
    let group_version = format!("/{}", segs[..gv_len].join("/"));
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = rest.first()?.to_string();
    let collection = match &namespace {
        Some(ns) => format!("{group_version}/namespaces/{ns}/{plural}"),
        None => format!("{group_version}/{plural}"),
    };
    Some(ApiPath {
        collection,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        plural,
        group_version,
        namespace,
    })
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an object matches an equality-based label selector (`k=v,k2=v2`).
pub fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// Everything but metadata and status (what bumps the generation).
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes from now on (for watch requests).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn notify(&self, collection: &str, kind: &'static str, obj: &Value) {
        let _ = self
            .changes
            .send((collection.to_string(), kind, obj.clone()));
    }

    /// A kube client talking to this server through a tower-test mock.
    pub fn client(&self) -> Client {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (code, resp) =
                    fake.handle(parts.method.as_str(), &parts.uri.to_string(), &bytes);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(resp))
                    .expect("response");
                send.send_response(response);
            }
        });
        Client::new(mock, "default")
    }

    /// Stores an object as if created by someone else.
    pub fn seed(&self, collection: &str, obj: Value) {
        let (_, _) = self.create(collection, obj);
    }

    /// Reads an object.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects.get(collection).and_then(|c| c.get(name)).cloned()
    }

    /// Every object of a collection.
    pub fn list(&self, collection: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(collection)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes an object in place as another actor would (bumps resourceVersion, and the
    /// generation when `bump_generation`).
    pub fn modify(
        &self,
        collection: &str,
        name: &str,
        bump_generation: bool,
        f: impl FnOnce(&mut Value),
    ) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let obj = s
            .objects
            .get_mut(collection)
            .and_then(|c| c.get_mut(name))
            .expect("object to modify");
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if bump_generation {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        let obj = obj.clone();
        drop(s);
        self.notify(collection, "MODIFIED", &obj);
    }

    /// Takes the request log ("VERB path").
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }

    /// Makes requests with this method whose path starts with `prefix` fail with `code`.
    pub fn fail(&self, method: &str, prefix: &str, code: u16) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((method.to_string(), prefix.to_string(), code));
    }

    /// Clears injected failures.
    pub fn heal(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    fn create(&self, collection: &str, mut obj: Value) -> (u16, Value) {
        let mut s = self.state.lock().unwrap();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if s.objects
            .get(collection)
            .is_some_and(|c| c.contains_key(&name))
        {
            return status(409, "AlreadyExists", &format!("{name} already exists"));
        }
        s.rv += 1;
        s.uid += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{}", s.uid));
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        s.objects
            .entry(collection.to_string())
            .or_default()
            .insert(name, obj.clone());
        (201, obj)
    }

    /// Answers one request: (status code, JSON body).
    pub fn handle(&self, method: &str, uri: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let (code, value) = self.handle_value(method, uri, body);
        (code, serde_json::to_vec(&value).unwrap_or_default())
    }

    fn handle_value(&self, method: &str, uri: &str, body: &[u8]) -> (u16, Value) {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let path = path
            .strip_prefix("http://localhost")
            .or_else(|| path.strip_prefix("https://localhost"))
            .unwrap_or(path);
        let Some(p) = parse_path(path) else {
            return status(404, "NotFound", "unknown path");
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        };
        let is_apply =
            method == "PATCH" && query.contains("fieldManager") && body.get("apiVersion").is_some();
        let verb = match (method, &p.name, &p.sub) {
            ("GET", None, _) => "LIST".to_string(),
            ("PATCH", Some(_), Some(sub)) if is_apply => format!("APPLY-{}", sub.to_uppercase()),
            ("PATCH", Some(_), None) if is_apply => "APPLY".to_string(),
            (m, _, _) => m.to_string(),
        };
        let log_path = match &p.name {
            Some(n) => format!(
                "{}/{n}{}",
                p.collection,
                p.sub.as_ref().map(|s| format!("/{s}")).unwrap_or_default()
            ),
            None => p.collection.clone(),
        };
        {
            let mut s = self.state.lock().unwrap();
            s.log.push(format!("{verb} {log_path}"));
            if let Some((_, _, code)) = s.failures.iter().find(|(m, prefix, _)| {
                (m == method || m == &verb) && log_path.starts_with(prefix.as_str())
            }) {
                let code = *code;
                return status(code, "InternalError", "injected failure");
            }
        }
        match (method, &p.name) {
            ("GET", None) => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let s = self.state.lock().unwrap();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(c, _)| {
                        **c == p.collection
                            || (p.namespace.is_none()
                                && c.starts_with(&format!("{}/namespaces/", p.group_version))
                                && c.ends_with(&format!("/{}", p.plural)))
                    })
                    .flat_map(|(_, objs)| objs.values())
                    .filter(|o| matches_selector(o, &selector))
                    .cloned()
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(name)) => match self.get(&p.collection, name) {
                Some(o) => (200, o),
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            ("POST", None) => self.create(&p.collection, body),
            ("PUT", Some(name)) => {
                let mut s = self.state.lock().unwrap();
                s.rv += 1;
                let rv = s.rv;
                let Some(existing) = s
                    .objects
                    .get_mut(&p.collection)
                    .and_then(|c| c.get_mut(name))
                else {
                    return status(404, "NotFound", "not found");
                };
                if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let mut new = body.clone();
                new["metadata"]["resourceVersion"] = json!(rv.to_string());
                new["metadata"]["uid"] = existing["metadata"]["uid"].clone();
                *existing = new.clone();
                drop(s);
                self.notify(&p.collection, "MODIFIED", &new);
                (200, new)
            }
            ("PATCH", Some(name)) => {
                if is_apply && p.sub.is_none() {
                    let exists = self.get(&p.collection, name).is_some();
                    if !exists {
                        return self.create(&p.collection, body);
                    }
                }
                let mut s = self.state.lock().unwrap();
                s.rv += 1;
                let rv = s.rv;
                let Some(existing) = s
                    .objects
                    .get_mut(&p.collection)
                    .and_then(|c| c.get_mut(name))
                else {
                    return status(404, "NotFound", "not found");
                };
                let before = existing.clone();
                if p.sub.as_deref() == Some("status") {
                    existing["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                } else if is_apply {
                    let mut new = body.clone();
                    for key in ["uid", "creationTimestamp", "generation"] {
                        new["metadata"][key] = before["metadata"][key].clone();
                    }
                    // Annotations and labels others set survive (e.g. rollout restart).
                    if let (Some(old), Some(newa)) = (
                        before["metadata"]["annotations"].as_object(),
                        new["metadata"]["annotations"].as_object_mut(),
                    ) {
                        for (k, v) in old {
                            if k != "beehive.dev/spec-hash" {
                                newa.entry(k.clone()).or_insert(v.clone());
                            }
                        }
                    }
                    if let Some(st) = before.get("status") {
                        new["status"] = st.clone();
                    }
                    if spec_part(&new) != spec_part(&before) {
                        let g = before["metadata"]["generation"].as_i64().unwrap_or(1);
                        new["metadata"]["generation"] = json!(g + 1);
                    }
                    *existing = new;
                } else {
                    merge_patch(existing, &body);
                }
                let mut probe = existing.clone();
                probe["metadata"]["resourceVersion"] =
                    before["metadata"]["resourceVersion"].clone();
                let changed = probe != before;
                if changed {
                    existing["metadata"]["resourceVersion"] = json!(rv.to_string());
                }
                let obj = existing.clone();
                drop(s);
                if changed {
                    self.notify(&p.collection, "MODIFIED", &obj);
                }
                (200, obj)
            }
            ("DELETE", Some(name)) => {
                let mut s = self.state.lock().unwrap();
                match s
                    .objects
                    .get_mut(&p.collection)
                    .and_then(|c| c.remove(name))
                {
                    Some(_) => (
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                    ),
                    None => status(404, "NotFound", "not found"),
                }
            }
            _ => status(405, "MethodNotAllowed", "unsupported"),
        }
    }
}
