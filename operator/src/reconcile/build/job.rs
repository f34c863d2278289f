//! The migration Job (`beehive migrate`). Its name carries a hash of its pod template and of
//! the database URL, so a new image or database gets a new Job (Job templates are
//! immutable); old ones are removed as orphans.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, EmptyDirVolumeSource, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::datastore::Datastore;
use super::pod::{base_pod_spec, migrate_container};
use super::{BuildError, ClusterRef, Inputs, labels};

/// Component label of the migration Job.
pub const COMPONENT: &str = "migrate";

/// The Job.
pub fn migration(
    c: &ClusterRef<'_>,
    _config: &ConfigMap,
    inputs: &Inputs,
) -> Result<Job, BuildError> {
    let mut pod = base_pod_spec(
        c,
        vec![migrate_container(c, "migrate", false)],
        vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }],
    );
    pod.restart_policy = Some("OnFailure".into());
    let mut pod_labels = c.selector_labels(COMPONENT);
    pod_labels.insert(labels::PART_OF.into(), super::APP_NAME.into());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&template).map_err(|e| BuildError::Serialize("Job".into(), e))?);
    let db = c.datastore_url(Datastore::Postgres);
    h.update(format!("{}/{}", db.name, db.key));
    h.update(
        inputs
            .secret_hashes
            .get(&format!("{}/{}", db.name, db.key))
            .map(String::as_str)
            .unwrap_or(""),
    );
    let digest = h.finalize();
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Ok(Job {
        metadata: c.meta(c.child_name(&format!("migrate-{suffix}")), COMPONENT),
        spec: Some(JobSpec {
            backoff_limit: Some(20),
            template,
            ..JobSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::{configmap, tests::cluster};

    fn job(spec: BeehiveClusterSpec, inputs: &Inputs) -> Job {
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        migration(&r, &configmap::build(&r), inputs).unwrap()
    }

    #[test]
    fn migration_job_runs_beehive_migrate_restricted() {
        let j = job(BeehiveClusterSpec::default(), &Inputs::default());
        let name = j.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("demo-migrate-") && name.len() == "demo-migrate-".len() + 8,
            "{name}"
        );
        let pod = j.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(
            pod.containers[0].args.as_ref().unwrap(),
            &vec!["migrate".to_string()]
        );
        crate::reconcile::build::pod::tests::assert_restricted(&pod);
    }

    #[test]
    fn new_image_or_database_means_new_job() {
        let a = job(BeehiveClusterSpec::default(), &Inputs::default())
            .metadata
            .name
            .unwrap();
        let same = job(BeehiveClusterSpec::default(), &Inputs::default())
            .metadata
            .name
            .unwrap();
        assert_eq!(a, same);
        let mut spec = BeehiveClusterSpec::default();
        spec.image.tag = "9.9.9".into();
        assert_ne!(a, job(spec, &Inputs::default()).metadata.name.unwrap());
        let mut inputs = Inputs::default();
        inputs
            .secret_hashes
            .insert("demo-postgres/url".into(), "other".into());
        assert_ne!(
            a,
            job(BeehiveClusterSpec::default(), &inputs)
                .metadata
                .name
                .unwrap()
        );
        // Log level lives in the ConfigMap and does not re-run migrations.
        let mut spec = BeehiveClusterSpec::default();
        spec.logging.level = "debug".into();
        assert_eq!(a, job(spec, &Inputs::default()).metadata.name.unwrap());
    }
}
