//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder reconciles. kube 5 has none built in; this is the client-go algorithm in
//! short: take the Lease when it is free or expired, renew it well before it expires, and
//! stop (the process exits and restarts as a follower) when renewing fails for a whole
//! lease duration. Writes use the Lease's resourceVersion, so two candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews / a follower retries.
    pub retry: Duration,
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Follow(String),
}

/// Decides from the Lease as read (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.or(spec.acquire_time) {
        Some(MicroTime(renewed)) if renewed + duration > now => Decision::Follow(holder),
        _ => Decision::Acquire,
    }
}

fn lease_spec(
    cfg: &LeaseConfig,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
    acquire: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().clamp(1, i32::MAX as u64) as i32),
        acquire_time: if acquire {
            Some(MicroTime(now))
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if acquire && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// One round: returns whether this replica holds the Lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    let decision = decide(current.as_ref(), &cfg.identity, now);
    let result = match (&decision, current) {
        (Decision::Follow(_), _) => return Ok(false),
        (Decision::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(lease_spec(cfg, None, now, true)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (d, Some(mut lease)) => {
            lease.spec = Some(lease_spec(
                cfg,
                lease.spec.as_ref(),
                now,
                *d == Decision::Acquire,
            ));
            // replace carries the resourceVersion we read: a concurrent writer makes it 409.
            api.replace(&cfg.name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => {
            if decision != Decision::Renew {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps trying to acquire, then renewing, the Lease; publishes leadership on `tx`. Returns
/// when leadership is lost (renewal failed for longer than the lease duration).
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &cfg).await {
            Ok(true) => {
                last_renewed = Some(std::time::Instant::now());
                crate::metrics::leader(true);
                let _ = tx.send(true);
            }
            Ok(false) => {
                if *tx.borrow() {
                    tracing::error!(lease = %cfg.name, "lost the leader Lease to another replica");
                    crate::metrics::leader(false);
                    let _ = tx.send(false);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "leader election call failed");
                if let Some(t) = last_renewed
                    && t.elapsed() > cfg.duration
                {
                    tracing::error!(lease = %cfg.name, "could not renew the leader Lease in time");
                    crate::metrics::leader(false);
                    let _ = tx.send(false);
                    return;
                }
            }
        }
        tokio::time::sleep(cfg.retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(secs),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let ago = |s: i64| now - SignedDuration::from_secs(s);
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), ago(100), 15)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), ago(5), 15)), "a", now),
            Decision::Follow("b".into())
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), ago(20), 15)), "a", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&lease(None, ago(1), 15)), "a", now),
            Decision::Acquire
        );
    }

    #[test]
    fn acquiring_counts_transitions() {
        let cfg = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let prev = LeaseSpec {
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        assert_eq!(
            lease_spec(&cfg, Some(&prev), now, true).lease_transitions,
            Some(4)
        );
        assert_eq!(
            lease_spec(&cfg, Some(&prev), now, false).lease_transitions,
            Some(3)
        );
        assert_eq!(
            lease_spec(&cfg, None, now, true).lease_duration_seconds,
            Some(15)
        );
    }
}
