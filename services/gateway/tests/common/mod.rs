//! The harness of the WebSocket integration tests: every component the message path
//! needs (user, auth, social, message, presence) started in-process with its real
//! `bind` against the machine's PostgreSQL, Redis and RabbitMQ, plus any number of
//! gateway instances sharing one installation prefix, and real WebSocket clients.

#![allow(dead_code)]

pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beehive_common::{Component, Settings, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use beehive_testkit::TestEnv;
use beehive_testkit::serve::{context, loopback};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::transport::Channel;

/// How long any "eventually" wait may take before the test fails. These are
/// correctness deadlines on a loaded 2-core machine, not performance assertions.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One running gateway instance.
pub struct Gateway {
    pub instance_id: String,
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

/// One test's world: the services and the gateways.
pub struct Cluster {
    pub env: TestEnv,
    /// Settings with every component's real address filled in.
    pub settings: Settings,
    pub auth: AuthServiceClient<Channel>,
    pub social: SocialServiceClient<Channel>,
    pub message: MessageServiceClient<Channel>,
    pub gateways: Vec<Gateway>,
    services: Shutdown,
    users: AtomicUsize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for gateway in &self.gateways {
            gateway.shutdown.trigger();
        }
        self.services.trigger();
        let _ = std::fs::remove_dir_all(&self.settings.file_storage_dir);
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

/// A registered user with a fresh session.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub token: String,
    pub session_id: String,
}

impl Cluster {
    /// Starts the services and `gateways` gateway instances (ids `gw-1`, `gw-2`, ...).
    pub async fn start(gateways: usize) -> Self {
        Self::start_with(gateways, |_| {}).await
    }

    /// [`Cluster::start`] with adjusted settings (e.g. a short idle timeout).
    pub async fn start_with(gateways: usize, adjust: impl FnOnce(&mut Settings)) -> Self {
        let env = TestEnv::new(&[
            &beehive_user::MIGRATOR,
            &beehive_auth::MIGRATOR,
            &beehive_social::MIGRATOR,
            &beehive_message::MIGRATOR,
            &beehive_file::MIGRATOR,
        ])
        .await;
        let mut settings = env.settings.clone();
        // Stopped gateways close their sockets at once unless a test asks for a drain
        // window (ws_drain.rs), so stopping one does not wait out the 30 s default.
        settings.gateway_drain_window = Duration::ZERO;
        // Files in a private directory, removed with the cluster.
        settings.file_storage_dir = std::env::temp_dir().join(format!(
            "beehive-gw-files-{}",
            uuid::Uuid::new_v4().simple()
        ));
        adjust(&mut settings);
        let components = [
            Component::User,
            Component::Auth,
            Component::Social,
            Component::Message,
            Component::Presence,
            Component::File,
        ];
        let mut listeners = Vec::new();
        for component in components {
            let l = loopback().await;
            let addr = l.local_addr().expect("addr");
            settings.set_component_addr(component, format!("http://{addr}"));
            listeners.push((component, l, addr));
        }
        let services = Shutdown::new();
        let ctx = context(&settings, &services);
        let mut addrs = HashMap::new();
        for (component, l, addr) in listeners {
            let bound = match component {
                Component::User => beehive_user::bind(&ctx, l).await,
                Component::Auth => beehive_auth::bind(&ctx, l).await,
                Component::Social => beehive_social::bind(&ctx, l).await,
                Component::Message => beehive_message::bind(&ctx, l).await,
                Component::Presence => beehive_presence::bind(&ctx, l).await,
                Component::File => beehive_file::bind(&ctx, l).await,
                _ => unreachable!("only the listed components"),
            }
            .unwrap_or_else(|e| panic!("{component} starts: {e}"));
            tokio::spawn(async move {
                if let Err(error) = bound.serve.await {
                    eprintln!("{component} stopped: {error}");
                }
            });
            addrs.insert(component, addr);
        }
        let mut cluster = Self {
            auth: AuthServiceClient::new(channel(addrs[&Component::Auth]).await),
            social: SocialServiceClient::new(channel(addrs[&Component::Social]).await),
            message: MessageServiceClient::new(channel(addrs[&Component::Message]).await),
            env,
            settings,
            gateways: Vec::new(),
            services,
            users: AtomicUsize::new(0),
        };
        for n in 1..=gateways {
            let gateway = cluster.start_gateway(&format!("gw-{n}")).await;
            cluster.gateways.push(gateway);
        }
        cluster
    }

    /// Starts a gateway instance and waits until it is ready.
    pub async fn start_gateway(&self, instance_id: &str) -> Gateway {
        self.start_gateway_with(instance_id, |_| {}).await
    }

    /// [`Cluster::start_gateway`] with adjusted settings (e.g. another broker URL).
    pub async fn start_gateway_with(
        &self,
        instance_id: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> Gateway {
        let mut settings = self.settings.clone();
        settings.instance_id = instance_id.to_owned();
        adjust(&mut settings);
        let shutdown = Shutdown::new();
        let ctx = context(&settings, &shutdown);
        let l = loopback().await;
        let addr = l.local_addr().expect("addr");
        let bound = beehive_gateway::bind(&ctx, l)
            .await
            .unwrap_or_else(|e| panic!("gateway {instance_id} starts: {e}"));
        let task = tokio::spawn(async move {
            if let Err(error) = bound.serve.await {
                eprintln!("gateway stopped: {error}");
            }
        });
        let gateway = Gateway {
            instance_id: instance_id.to_owned(),
            addr,
            shutdown,
            task,
        };
        wait_ready(addr).await;
        gateway
    }

    /// Stops gateway `index` (its sockets see a close) and waits until it stopped
    /// serving; returns its instance id for a restart.
    pub async fn stop_gateway(&mut self, index: usize) -> String {
        let gateway = self.gateways.remove(index);
        gateway.shutdown.trigger();
        let _ = tokio::time::timeout(PATIENCE, gateway.task).await;
        gateway.instance_id
    }

    /// Tells gateway `index` to shut down without waiting: it drains (fails /readyz,
    /// sends `reconnect`, closes its sockets over its drain window) while the test
    /// watches; [`Stopping::stopped`] waits for the end.
    pub fn begin_stop(&mut self, index: usize) -> Stopping {
        let gateway = self.gateways.remove(index);
        gateway.shutdown.trigger();
        Stopping {
            instance_id: gateway.instance_id,
            addr: gateway.addr,
            task: gateway.task,
        }
    }

    /// The address of gateway `index`.
    pub fn gw(&self, index: usize) -> SocketAddr {
        self.gateways[index].addr
    }

    /// Registers a new user through auth and returns its token.
    pub async fn user(&self) -> User {
        let n = self.users.fetch_add(1, Ordering::Relaxed);
        let username = format!("u{n}_{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        self.login_new(&username).await
    }

    async fn login_new(&self, username: &str) -> User {
        let response = self
            .auth
            .clone()
            .register(pb::AuthRegisterRequest {
                username: username.to_owned(),
                password: "correct horse battery".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("register {username}: {s:?}"))
            .into_inner();
        let user = response.user.expect("registered user");
        User {
            id: user.id,
            username: username.to_owned(),
            token: response.access_token,
            session_id: response.session_id,
        }
    }

    /// A second session (another login) of `user`.
    pub async fn login(&self, user: &User) -> User {
        let response = self
            .auth
            .clone()
            .login(pb::LoginRequest {
                login: user.username.clone(),
                password: "correct horse battery".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("login {}: {s:?}", user.username))
            .into_inner();
        User {
            token: response.access_token,
            session_id: response.session_id,
            ..user.clone()
        }
    }

    /// Makes `a` and `b` friends (request and accept through social).
    pub async fn befriend(&self, a: &User, b: &User) {
        let request = self
            .social
            .clone()
            .send_friend_request(pb::SendFriendRequestRequest {
                from_user_id: a.id.clone(),
                to_user_id: b.id.clone(),
                message: "hi".to_owned(),
            })
            .await
            .expect("friend request")
            .into_inner()
            .request
            .expect("request");
        self.social
            .clone()
            .accept_friend_request(pb::AcceptFriendRequestRequest {
                user_id: b.id.clone(),
                request_id: request.id,
            })
            .await
            .expect("accept");
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn group(&self, owner: &User, members: &[User]) -> String {
        self.message
            .clone()
            .create_group(pb::CreateGroupRequest {
                owner_id: owner.id.clone(),
                name: "test group".to_owned(),
                member_ids: members.iter().map(|m| m.id.clone()).collect(),
            })
            .await
            .expect("create group")
            .into_inner()
            .conversation
            .expect("conversation")
            .id
    }

    /// Logs `user`'s session out through auth (revocation reaches the gateways).
    pub async fn logout(&self, user: &User) {
        self.auth
            .clone()
            .logout(pb::LogoutRequest {
                session_id: user.session_id.clone(),
                user_id: user.id.clone(),
            })
            .await
            .expect("logout");
    }

    /// Every stored message of a conversation, as `user` sees it, in seq order.
    pub async fn history(&self, user: &User, conversation_id: &str) -> Vec<pb::Message> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .message
                .clone()
                .list_messages(pb::ListMessagesRequest {
                    user_id: user.id.clone(),
                    conversation_id: conversation_id.to_owned(),
                    anchor: Some(pb::list_messages_request::Anchor::AfterSeq(after)),
                    limit: 200,
                })
                .await
                .expect("list messages")
                .into_inner()
                .messages;
            let Some(last) = page.last() else {
                return all;
            };
            after = last.seq;
            all.extend(page);
        }
    }
}

/// A gateway told to shut down (see [`Cluster::begin_stop`]).
pub struct Stopping {
    pub instance_id: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Stopping {
    /// Waits until the gateway's serving future completed (the process would exit);
    /// panics if that takes longer than PATIENCE.
    pub async fn stopped(self) -> String {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the gateway stops within PATIENCE")
            .expect("the gateway task does not panic");
        self.instance_id
    }
}

/// The status of the gateway's `/readyz`.
pub async fn readyz(addr: SocketAddr) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("/readyz answers")
        .status()
}

/// Waits until the gateway's `/readyz` answers 200 (keys and deny set loaded).
async fn wait_ready(addr: SocketAddr) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a client passes its token.
#[derive(Clone, Copy, Debug)]
pub enum TokenVia {
    Header,
    Subprotocol,
    Query,
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `Sec-WebSocket-Protocol` the server selected, if any.
    pub protocol: Option<String>,
    next_id: u64,
}

/// The upgrade request for `token` passed `via`.
pub fn request(
    addr: SocketAddr,
    token: &str,
    device: Option<&str>,
    via: TokenVia,
) -> tungstenite::handshake::client::Request {
    let mut query = Vec::new();
    if let Some(device) = device {
        query.push(format!("device_id={device}"));
    }
    if let TokenVia::Query = via {
        query.push(format!("token={token}"));
    }
    let url = if query.is_empty() {
        format!("ws://{addr}/ws")
    } else {
        format!("ws://{addr}/ws?{}", query.join("&"))
    };
    let mut request = url.into_client_request().expect("request");
    match via {
        TokenVia::Header => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        TokenVia::Subprotocol => {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("beehive.v1, bearer.{token}")).expect("header"),
            );
        }
        TokenVia::Query => {}
    }
    request
}

impl Ws {
    /// Connects `user` to the gateway at `addr` as `device`, token in a header.
    pub async fn connect(addr: SocketAddr, user: &User, device: &str) -> Self {
        Self::connect_via(addr, &user.token, Some(device), TokenVia::Header)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", user.username))
    }

    /// Connects with full control; the error of a refused upgrade is returned.
    pub async fn connect_via(
        addr: SocketAddr,
        token: &str,
        device: Option<&str>,
        via: TokenVia,
    ) -> Result<Self, tungstenite::Error> {
        let (stream, response) =
            tokio_tungstenite::connect_async(request(addr, token, device, via)).await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            stream,
            protocol,
            next_id: 0,
        })
    }

    /// Sends a frame as raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream
            .send(Message::text(text.into()))
            .await
            .expect("send frame");
    }

    /// Sends `{"type", "id", "data"}` and returns the id used.
    pub async fn request(&mut self, kind: &str, data: Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let frame = json!({"type": kind, "id": id, "data": data});
        self.send_text(frame.to_string()).await;
        id
    }

    /// The next JSON frame (pings are skipped). Panics on close or after PATIENCE.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(value) => value,
            Event::Closed(frame) => panic!("socket closed unexpectedly: {frame:?}"),
        }
    }

    /// The next frame or the close, whichever comes first.
    pub async fn next_event(&mut self) -> Event {
        let wait = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let value: Value = serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"));
                        return Event::Frame(value);
                    }
                    Some(Ok(Message::Close(frame))) => return Event::Closed(frame),
                    Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        return Event::Closed(Some(CloseFrame {
                            code: tungstenite::protocol::frame::coding::CloseCode::Abnormal,
                            reason: e.to_string().into(),
                        }));
                    }
                    None => return Event::Closed(None),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("no frame within PATIENCE")
    }

    /// Skips frames until one of type `kind` arrives; returns it.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
            assert_ne!(
                frame["type"], "error",
                "unexpected error frame while waiting for {kind}: {frame}"
            );
        }
    }

    /// The next frame, which must be of type `kind` (no skipping).
    pub async fn expect_next(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "unexpected frame: {frame}");
        frame
    }

    /// Sends a `send` and returns its `ack`.
    pub async fn send_message(
        &mut self,
        target: Target<'_>,
        client_msg_id: &str,
        content: &str,
    ) -> Value {
        let mut data =
            json!({"client_msg_id": client_msg_id, "msg_type": "text", "content": content});
        match target {
            Target::Conversation(c) => data["conversation_id"] = json!(c),
            Target::User(u) => data["to_user_id"] = json!(u),
        }
        let id = self.request("send", data).await;
        let reply = self.expect_reply(&id).await;
        assert_eq!(reply["type"], "ack", "send was not acked: {reply}");
        reply
    }

    /// Waits for the reply carrying `id`, skipping pushed frames.
    pub async fn expect_reply(&mut self, id: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["id"] == id {
                return frame;
            }
        }
    }

    /// Waits for a `message` frame with this content; returns the message object.
    pub async fn expect_message(&mut self, content: &str) -> Value {
        loop {
            let frame = self.expect("message").await;
            if frame["data"]["message"]["content"] == content {
                return frame["data"]["message"].clone();
            }
        }
    }

    /// Calls `sync` until `has_more` is false; returns every message in arrival order
    /// and the final cursors.
    pub async fn sync_all(&mut self, cursors: Value) -> (Vec<Value>, Value) {
        let mut cursors = cursors;
        let mut messages = Vec::new();
        loop {
            let id = self.request("sync", json!({"cursors": cursors})).await;
            loop {
                let frame = self.recv().await;
                if frame["type"] == "message" {
                    messages.push(frame["data"]["message"].clone());
                } else if frame["id"] == id.as_str() {
                    assert_eq!(frame["type"], "sync_done", "sync failed: {frame}");
                    cursors = frame["data"]["cursors"].clone();
                    if frame["data"]["has_more"] == false {
                        return (messages, cursors);
                    }
                    break;
                }
            }
        }
    }

    /// A ping round trip: every frame the server queued before the pong was read.
    pub async fn barrier(&mut self) -> Vec<Value> {
        let id = self.request("ping", json!({})).await;
        let mut before = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame["id"] == id.as_str() {
                assert_eq!(frame["type"], "pong");
                return before;
            }
            before.push(frame);
        }
    }

    /// Waits for the server to close the socket; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next_event().await {
                Event::Closed(frame) => return frame,
                Event::Frame(_) => continue,
            }
        }
    }
}

/// What a socket yields.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(Option<CloseFrame>),
}

/// Where a test message goes.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Conversation(&'a str),
    User(&'a str),
}

/// Shared handle for tests that spawn clients.
pub type Shared<T> = Arc<tokio::sync::Mutex<T>>;

/// Calls the REST API of the gateway at `addr` as `user`: `body` is sent as JSON when
/// given. Returns the status and the JSON body (`null` when empty).
pub async fn rest(
    addr: SocketAddr,
    user: &User,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(&user.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("REST request");
    let status = response.status();
    let text = response.text().await.expect("REST body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
    };
    (status, value)
}
