//! The rate-limit extractor: a handler that takes `Limited<L>` counts the request
//! against limit `L` for the client IP before its body is even read, so malformed
//! requests count too.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use beehive_common::Error;
use beehive_common::config::IpNet;

use crate::http::{ClientIp, HasTrustedProxies};
use crate::ratelimit::Limit;
use crate::state::AppState;

/// A limit known at compile time.
pub trait LimitKind: Send + Sync + 'static {
    /// Which limit.
    const LIMIT: Limit;
}

/// `POST /auth/register`.
pub struct RegisterLimit;
impl LimitKind for RegisterLimit {
    const LIMIT: Limit = Limit::Register;
}

/// `POST /auth/login`.
pub struct LoginLimit;
impl LimitKind for LoginLimit {
    const LIMIT: Limit = Limit::Login;
}

/// `POST /auth/send-code`.
pub struct SendCodeLimit;
impl LimitKind for SendCodeLimit {
    const LIMIT: Limit = Limit::SendCode;
}

/// The request passed limit `L`; carries the client IP it was counted for.
pub struct Limited<L>(pub ClientIp, pub PhantomData<L>);

impl<L: LimitKind> FromRequestParts<AppState> for Limited<L> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = ClientIp::from_request_parts(parts, state).await?;
        state.limiter.check(L::LIMIT, ip.0).await?;
        Ok(Self(ip, PhantomData))
    }
}

impl HasTrustedProxies for AppState {
    fn trusted_proxies(&self) -> &[IpNet] {
        &self.config.trusted_proxies
    }
}
