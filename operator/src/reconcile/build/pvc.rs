//! The PersistentVolumeClaim of the file component's volume storage.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};

use super::ClusterRef;

/// Name of the file volume's claim.
pub fn file_volume_name(c: &ClusterRef<'_>) -> String {
    c.child_name("files")
}

/// The claim, when files are stored on a volume.
pub fn file_volume(c: &ClusterRef<'_>) -> Option<PersistentVolumeClaim> {
    let vol = c.cluster.spec.file.storage.volume.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: c.meta(file_volume_name(c), "file"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![vol.access_mode.as_str().into()]),
            storage_class_name: vol.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), vol.size.clone())])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, SecretKeyRef};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn volume_storage_gets_a_claim_and_s3_none() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let pvc = file_volume(&ClusterRef::new(&c).unwrap()).unwrap();
        let spec = pvc.spec.unwrap();
        assert_eq!(
            spec.access_modes.unwrap(),
            vec!["ReadWriteOnce".to_string()]
        );
        let mut s = BeehiveClusterSpec::default();
        s.file.storage.volume = None;
        s.file.storage.s3 = Some(SecretKeyRef {
            name: "s3".into(),
            key: "url".into(),
        });
        let c = cluster("demo", s);
        assert!(file_volume(&ClusterRef::new(&c).unwrap()).is_none());
    }
}
