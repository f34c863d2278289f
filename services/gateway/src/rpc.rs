//! gRPC calls as boxed `Send` futures, shared by the REST handlers and the WebSocket.
//!
//! Awaiting a tonic call on a `ClientChannel` directly inside a spawned task trips a
//! rustc limitation (higher-ranked lifetimes in the `fn(BoxError) -> BoxError` error
//! mapper are "not general enough" when auto traits of async state machines are
//! proven). Proving `Send` once here, on a concrete boxed future, sidesteps it, and
//! keeps the large call state off the socket task's future while no call is running.

use futures::future::BoxFuture;

/// Boxes one call: `rpc!(client, method, request)` → `BoxFuture<Result<Response, Status>>`.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client.clone();
        let request = $request;
        $crate::rpc::boxed(async move { client.$method(request).await.map(|r| r.into_inner()) })
    }};
}
pub(crate) use rpc;

/// Erases a call future into a boxed `Send` future.
pub(crate) fn boxed<T>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> BoxFuture<'static, T> {
    Box::pin(future)
}
