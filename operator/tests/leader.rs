//! Leader election against the mocked API server: one holder at a time, renewals, takeover
//! of an expired Lease, and conflicts on concurrent writes.

mod support;

use std::time::Duration;

use beehive_operator::leader::{LeaseConfig, try_acquire_or_renew};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::FakeApi;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn cfg(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "beehive-operator".into(),
        namespace: "ops".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        retry: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_takeover_after_expiry() {
    let fake = FakeApi::new();
    let api: Api<Lease> = Api::namespaced(fake.client(), "ops");

    assert!(
        try_acquire_or_renew(&api, &cfg("a")).await.unwrap(),
        "a creates the Lease"
    );
    assert_eq!(
        fake.take_log(),
        vec![
            format!("GET {LEASES}/beehive-operator"),
            format!("POST {LEASES}")
        ]
    );
    assert!(
        !try_acquire_or_renew(&api, &cfg("b")).await.unwrap(),
        "b follows"
    );
    assert_eq!(
        fake.take_log(),
        vec![format!("GET {LEASES}/beehive-operator")],
        "a follower writes nothing"
    );
    assert!(
        try_acquire_or_renew(&api, &cfg("a")).await.unwrap(),
        "a renews"
    );
    assert_eq!(
        fake.take_log(),
        vec![
            format!("GET {LEASES}/beehive-operator"),
            format!("PUT {LEASES}/beehive-operator")
        ]
    );

    // a stops renewing: its Lease expires and b takes over.
    fake.modify(LEASES, "beehive-operator", false, |l| {
        l["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    });
    assert!(
        try_acquire_or_renew(&api, &cfg("b")).await.unwrap(),
        "b takes over"
    );
    let lease = fake.get(LEASES, "beehive-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        !try_acquire_or_renew(&api, &cfg("a")).await.unwrap(),
        "a is now a follower"
    );
}

#[tokio::test]
async fn a_concurrent_write_loses_without_error() {
    let fake = FakeApi::new();
    let api: Api<Lease> = Api::namespaced(fake.client(), "ops");
    assert!(try_acquire_or_renew(&api, &cfg("a")).await.unwrap());
    // Someone else writes between our read and our write: the PUT carries a stale
    // resourceVersion and gets 409, which means "not leader", not an error.
    fake.fail("PUT", &format!("{LEASES}/beehive-operator"), 409);
    assert!(!try_acquire_or_renew(&api, &cfg("a")).await.unwrap());
    fake.heal();
    fake.fail("GET", LEASES, 500);
    assert!(
        try_acquire_or_renew(&api, &cfg("a")).await.is_err(),
        "API errors are reported"
    );
}
