//! The Redis rate limiter against the real Redis: counts are shared by every limiter
//! (every gateway replica) of one installation, windows reset, and `Retry-After` is
//! the time left in the window.

use std::net::IpAddr;
use std::time::Duration;

use beehive_common::{Error, ErrorCode, Settings};
use beehive_gateway::ratelimit::{Limit, Quota, RateLimiter};

async fn redis() -> redis::aio::ConnectionManager {
    let settings = Settings::local_defaults();
    let url = std::env::var("BEEHIVE_TEST_REDIS_URL")
        .unwrap_or_else(|_| settings.redis_url.expose().to_owned());
    let client = redis::Client::open(url).expect("redis url");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis reachable; run scripts/infra.sh")
}

fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[tokio::test]
async fn replicas_share_one_count_per_ip() {
    let prefix = prefix();
    let quota = Quota {
        max: 3,
        window: Duration::from_secs(60),
    };
    let a = RateLimiter::new(redis().await, &prefix, true).with_quota(Limit::Login, quota);
    let b = RateLimiter::new(redis().await, &prefix, true).with_quota(Limit::Login, quota);
    let client = ip("198.51.100.1");
    a.check(Limit::Login, client).await.expect("1st");
    b.check(Limit::Login, client).await.expect("2nd");
    a.check(Limit::Login, client).await.expect("3rd");
    let error = b
        .check(Limit::Login, client)
        .await
        .expect_err("4th is over");
    assert_eq!(error.code(), ErrorCode::RateLimited);
    let Error::RateLimited {
        retry_after_secs, ..
    } = error
    else {
        unreachable!("checked above")
    };
    assert!(
        (1..=60).contains(&retry_after_secs),
        "retry after the window: {retry_after_secs}"
    );
    // Another IP and another limit have their own counters.
    a.check(Limit::Login, ip("198.51.100.2"))
        .await
        .expect("other ip");
    a.check(Limit::Register, client).await.expect("other limit");
}

#[tokio::test]
async fn windows_reset() {
    let prefix = prefix();
    let limiter = RateLimiter::new(redis().await, &prefix, true).with_quota(
        Limit::SendCode,
        Quota {
            max: 1,
            window: Duration::from_millis(300),
        },
    );
    let client = ip("2001:db8::7");
    limiter.check(Limit::SendCode, client).await.expect("first");
    let error = limiter
        .check(Limit::SendCode, client)
        .await
        .expect_err("second in the window");
    let Error::RateLimited {
        retry_after_secs, ..
    } = error
    else {
        panic!("rate_limited expected, got {error:?}")
    };
    assert_eq!(retry_after_secs, 1, "sub-second remainders round up");
    // Wait for the window to end (the assertion is about state, not timing).
    let mut allowed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if limiter.check(Limit::SendCode, client).await.is_ok() {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "a new window admits requests again");
}

#[tokio::test]
async fn disabled_limiter_never_counts() {
    let prefix = prefix();
    let limiter = RateLimiter::new(redis().await, &prefix, false).with_quota(
        Limit::Register,
        Quota {
            max: 1,
            window: Duration::from_secs(60),
        },
    );
    for _ in 0..5 {
        limiter
            .check(Limit::Register, ip("192.0.2.1"))
            .await
            .expect("off");
    }
    let mut conn = redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "nothing written when off: {keys:?}");
}
