//! Talking to the API server: list the children, server-side apply what changed under one
//! field manager, delete orphans by label.
//!
//! "Changed" is decided without writing: each child carries the hash of what was last
//! applied ([`SPEC_HASH_ANNOTATION`]), and the operator remembers the generation (or
//! resourceVersion) each apply returned. An object is applied again only when its desired
//! hash differs, or someone else changed it since (its generation moved), or the operator
//! restarted. A steady state therefore causes no writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::build::{
    ChildKind, DesiredObject, FIELD_MANAGER, MANAGED_BY, SPEC_HASH_ANNOTATION, labels,
};

/// Label selector of a cluster's children.
pub fn children_selector(cluster: &str) -> String {
    format!(
        "{}={MANAGED_BY},{}={cluster}",
        labels::MANAGED_BY,
        labels::INSTANCE
    )
}

/// Children found in the cluster, by kind and name.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The objects.
    pub objects: BTreeMap<(ChildKind, String), DynamicObject>,
    /// Optional kinds the API server does not serve (404: CRD not installed) or the operator
    /// may not list (403), with that status code.
    pub unavailable: BTreeMap<ChildKind, u16>,
}

impl Observed {
    /// Looks an object up.
    pub fn get(&self, kind: ChildKind, name: &str) -> Option<&DynamicObject> {
        self.objects.get(&(kind, name.to_string()))
    }

    /// Records an object (e.g. the response of an apply).
    pub fn insert(&mut self, kind: ChildKind, obj: DynamicObject) {
        self.objects.insert((kind, obj.name_any()), obj);
    }

    /// Forgets an object (e.g. after deleting it).
    pub fn remove(&mut self, kind: ChildKind, name: &str) {
        self.objects.remove(&(kind, name.to_string()));
    }
}

/// What the operator last applied, per object: (spec hash, generation or resourceVersion
/// the apply returned).
#[derive(Debug, Default)]
pub struct ApplyCache {
    entries: Mutex<HashMap<String, (String, String)>>,
}

fn cache_key(namespace: &str, d: &DesiredObject) -> String {
    format!("{namespace}/{}", d.key())
}

/// The generation of objects that have one, else the resourceVersion.
fn version_of(obj: &DynamicObject) -> String {
    match obj.metadata.generation {
        Some(g) if g > 0 => format!("g{g}"),
        _ => format!(
            "r{}",
            obj.metadata.resource_version.clone().unwrap_or_default()
        ),
    }
}

impl ApplyCache {
    /// Whether `desired` must be applied, given what is in the cluster.
    pub fn needs_apply(
        &self,
        namespace: &str,
        desired: &DesiredObject,
        observed: Option<&DynamicObject>,
    ) -> bool {
        let Some(obs) = observed else { return true };
        let observed_hash = obs.annotations().get(SPEC_HASH_ANNOTATION);
        if observed_hash.map(String::as_str) != desired.spec_hash() {
            return true;
        }
        let entries = match self.entries.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        match entries.get(&cache_key(namespace, desired)) {
            Some((hash, version)) => {
                Some(hash.as_str()) != desired.spec_hash() || *version != version_of(obs)
            }
            None => true,
        }
    }

    /// Remembers an apply's result.
    pub fn record(&self, namespace: &str, desired: &DesiredObject, applied: &DynamicObject) {
        let mut entries = match self.entries.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.insert(
            cache_key(namespace, desired),
            (
                desired.spec_hash().unwrap_or_default().to_string(),
                version_of(applied),
            ),
        );
    }

    /// Forgets every object of a namespace/cluster prefix (after deletion).
    pub fn forget(&self, namespace: &str, key: &str) {
        let mut entries = match self.entries.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.remove(&format!("{namespace}/{key}"));
    }
}

/// Lists every child of a cluster. Datastores run by other operators are listed only when
/// desired (`wanted`), so they are never pruned. Optional kinds the API server does not
/// serve or the operator may not list count as empty and are recorded as unavailable.
pub async fn list_children(
    client: &Client,
    namespace: &str,
    cluster: &str,
    wanted: &[ChildKind],
) -> Result<Observed, kube::Error> {
    let mut observed = Observed::default();
    let lp = ListParams::default().labels(&children_selector(cluster));
    for kind in ChildKind::ALL {
        if kind.is_datastore() && !wanted.contains(&kind) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        match api.list(&lp).await {
            Ok(list) => {
                for obj in list.items {
                    observed.insert(kind, obj);
                }
            }
            Err(kube::Error::Api(s)) if kind.optional() && (s.code == 404 || s.code == 403) => {
                tracing::debug!(%kind, code = s.code, "kind not available; skipped");
                observed.unavailable.insert(kind, s.code);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(observed)
}

/// Server-side applies one object under the operator's field manager.
pub async fn apply(
    client: &Client,
    namespace: &str,
    desired: &DesiredObject,
) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &desired.kind.api_resource());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&desired.name(), &params, &Patch::Apply(&desired.object))
        .await
}

/// Children that exist, are controlled by the cluster (owner uid) and are not desired.
pub fn orphans<'a>(
    desired: &[DesiredObject],
    observed: &'a Observed,
    owner_uid: &str,
) -> Vec<(ChildKind, &'a DynamicObject)> {
    observed
        .objects
        .iter()
        .filter(|((kind, _), _)| !kind.is_datastore())
        .filter(|((kind, name), _)| !desired.iter().any(|d| d.kind == *kind && &d.name() == name))
        .filter(|(_, obj)| {
            obj.owner_references()
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
        })
        .map(|((kind, _), obj)| (*kind, obj))
        .collect()
}

/// Deletes an object (children in the background). Already gone is fine.
pub async fn delete(
    client: &Client,
    namespace: &str,
    kind: ChildKind,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::{Inputs, build_all, tests::cluster};

    fn desired() -> Vec<DesiredObject> {
        build_all(
            &cluster("demo", BeehiveClusterSpec::default()),
            &Inputs::default(),
        )
        .unwrap()
        .objects
    }

    fn as_observed(d: &DesiredObject, generation: i64) -> DynamicObject {
        let mut o = d.object.clone();
        o.metadata.generation = Some(generation);
        o.metadata.resource_version = Some("1".into());
        o
    }

    #[test]
    fn applies_when_missing_changed_drifted_or_unknown() {
        let cache = ApplyCache::default();
        let d = &desired()[0];
        assert!(cache.needs_apply("chat", d, None), "missing");
        let obs = as_observed(d, 1);
        assert!(
            cache.needs_apply("chat", d, Some(&obs)),
            "never applied by this process"
        );
        cache.record("chat", d, &obs);
        assert!(!cache.needs_apply("chat", d, Some(&obs)), "unchanged");
        let drifted = as_observed(d, 2);
        assert!(
            cache.needs_apply("chat", d, Some(&drifted)),
            "someone changed it"
        );
        let mut stale = obs.clone();
        stale
            .annotations_mut()
            .insert(SPEC_HASH_ANNOTATION.into(), "old".into());
        assert!(cache.needs_apply("chat", d, Some(&stale)), "spec changed");
    }

    #[test]
    fn orphans_are_owned_and_undesired_only() {
        let all = desired();
        let mut observed = Observed::default();
        for d in &all {
            observed.insert(d.kind, as_observed(d, 1));
        }
        // An old migration Job and a foreign object with our labels.
        let mut old_job = all
            .iter()
            .find(|d| d.kind == ChildKind::Job)
            .unwrap()
            .object
            .clone();
        old_job.metadata.name = Some("demo-migrate-00000000".into());
        observed.insert(ChildKind::Job, old_job);
        let mut foreign = all[0].object.clone();
        foreign.metadata.name = Some("someone-else".into());
        foreign.metadata.owner_references = None;
        observed.insert(ChildKind::ConfigMap, foreign);
        let o = orphans(&all, &observed, "uid-1");
        let names: Vec<String> = o.iter().map(|(_, obj)| obj.name_any()).collect();
        assert_eq!(names, vec!["demo-migrate-00000000".to_string()]);
    }
}
