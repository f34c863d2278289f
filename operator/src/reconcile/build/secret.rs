//! Secrets the operator generates when absent and never overwrites: the JWT signing key and
//! the credentials of managed datastores.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::rngs::OsRng;

use super::datastore::{self, Datastore};
use super::{BuildError, ClusterRef};

/// Key of the JWT Secret holding the Ed25519 private key (PKCS#8 PEM).
pub const JWT_KEY: &str = "signing-key.pem";

/// Random material for generated Secrets. Passed in so the builders stay pure.
#[derive(Clone, Debug)]
pub struct Entropy {
    /// 32 bytes for an Ed25519 key.
    pub seed: [u8; 32],
    /// A password (URL-safe characters).
    pub password: String,
}

impl Entropy {
    /// Fresh random material from the OS.
    pub fn random() -> Self {
        let mut seed = [0u8; 32];
        OsRng.fill(&mut seed);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let password = (0..32)
            .map(|_| ALPHABET[OsRng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        Self { seed, password }
    }
}

fn secret(
    c: &ClusterRef<'_>,
    name: String,
    component: &str,
    data: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: c.meta(name, component),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The JWT Secret with a new Ed25519 key.
pub fn jwt(c: &ClusterRef<'_>, entropy: &Entropy) -> Result<Secret, BuildError> {
    let key = SigningKey::from_bytes(&entropy.seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| BuildError::Key(e.to_string()))?;
    Ok(secret(
        c,
        c.jwt_secret_name(),
        "jwt",
        BTreeMap::from([(JWT_KEY.to_string(), pem.to_string())]),
    ))
}

/// The credentials Secret of a managed datastore.
pub fn datastore_credentials(c: &ClusterRef<'_>, ds: Datastore, entropy: &Entropy) -> Secret {
    let host = datastore::host(c, ds);
    secret(
        c,
        c.child_name(ds.name()),
        ds.name(),
        BTreeMap::from([
            ("username".to_string(), ds.user_name().to_string()),
            ("password".to_string(), entropy.password.clone()),
            ("url".to_string(), ds.url(&host, &entropy.password)),
        ]),
    )
}

/// What to create for a Secret name the pods need that does not exist yet, or None when the
/// operator does not own that name (an external Secret that must be created by the user).
pub fn generated(
    c: &ClusterRef<'_>,
    name: &str,
    entropy: &Entropy,
) -> Result<Option<Secret>, BuildError> {
    if c.cluster.spec.jwt.secret_name.is_none() && name == c.jwt_secret_name() {
        return jwt(c, entropy).map(Some);
    }
    for ds in c.managed_datastores() {
        if name == c.child_name(ds.name()) {
            return Ok(Some(datastore_credentials(c, ds, entropy)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;
    use ed25519_dalek::pkcs8::DecodePrivateKey;

    fn entropy() -> Entropy {
        Entropy {
            seed: [7; 32],
            password: "pw".into(),
        }
    }

    #[test]
    fn jwt_secret_holds_a_pkcs8_ed25519_key() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let s = jwt(&ClusterRef::new(&c).unwrap(), &entropy()).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-jwt"));
        let pem = String::from_utf8(s.data.unwrap()[JWT_KEY].0.clone()).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(key.to_bytes(), [7; 32]);
    }

    #[test]
    fn datastore_credentials_have_a_full_url() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        let s = datastore_credentials(&r, Datastore::Postgres, &entropy());
        let data = s.data.unwrap();
        assert_eq!(
            String::from_utf8(data["url"].0.clone()).unwrap(),
            "postgres://beehive:pw@demo-postgres.chat.svc:5432/beehive"
        );
        assert!(generated(&r, "demo-redis", &entropy()).unwrap().is_some());
        assert!(
            generated(&r, "someone-elses", &entropy())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_named_jwt_secret_is_never_generated() {
        let mut spec = BeehiveClusterSpec::default();
        spec.jwt.secret_name = Some("my-jwt".into());
        let c = cluster("demo", spec);
        assert!(
            generated(&ClusterRef::new(&c).unwrap(), "my-jwt", &entropy())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn random_entropy_differs() {
        let a = Entropy::random();
        let b = Entropy::random();
        assert_ne!(a.seed, b.seed);
        assert_eq!(a.password.len(), 32);
        assert!(a.password.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
