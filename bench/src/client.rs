//! A Beehive client as API.md describes it: REST for accounts and friendships, one
//! WebSocket per device for everything live.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The writing half of a device's socket.
pub type WsSink = SplitSink<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, Message>;
/// The reading half of a device's socket.
pub type WsStream = SplitStream<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>;

/// A registered user with a valid access token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub token: String,
}

/// REST access to one installation.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// `base` is the gateway URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build()?,
        })
    }

    /// The gateway URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// Registers a fresh user (the server must run with rate limits off for bulk runs).
    pub async fn register(&self, username: &str) -> anyhow::Result<User> {
        let reply = self
            .call(
                reqwest::Method::POST,
                "/auth/register",
                Some(json!({"username": username, "password": "bench-password-1"})),
                None,
            )
            .await?;
        Ok(User {
            id: reply["user"]["id"]
                .as_str()
                .ok_or_else(|| anyhow!("no user id"))?
                .to_owned(),
            username: username.to_owned(),
            token: reply["access_token"]
                .as_str()
                .ok_or_else(|| anyhow!("no token"))?
                .to_owned(),
        })
    }

    /// Registers `count` users named `<prefix>_<n>`, `parallel` at a time.
    pub async fn register_many(
        &self,
        prefix: &str,
        count: usize,
        parallel: usize,
    ) -> anyhow::Result<Vec<User>> {
        let names: Vec<String> = (0..count).map(|n| format!("{prefix}_{n}")).collect();
        let users = futures::stream::iter(names)
            .map(|name| async move { self.register(&name).await })
            .buffered(parallel.max(1))
            .collect::<Vec<_>>()
            .await;
        users.into_iter().collect()
    }

    /// Makes `a` and `b` friends (request + accept).
    pub async fn befriend(&self, a: &User, b: &User) -> anyhow::Result<()> {
        let request = self
            .call(
                reqwest::Method::POST,
                "/friends/requests",
                Some(json!({"to_user_id": b.id})),
                Some(&a.token),
            )
            .await?;
        let id = request["request"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no request id"))?;
        self.call(
            reqwest::Method::POST,
            &format!("/friends/requests/{id}/accept"),
            None,
            Some(&b.token),
        )
        .await?;
        Ok(())
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn create_group(&self, owner: &User, members: &[User]) -> anyhow::Result<String> {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let reply = self
            .call(
                reqwest::Method::POST,
                "/groups",
                Some(json!({"name": "bench", "member_ids": ids})),
                Some(&owner.token),
            )
            .await?;
        Ok(reply["conversation"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no conversation id"))?
            .to_owned())
    }

    /// Sends a text message over REST into `conversation`; returns the stored message.
    pub async fn send_message(
        &self,
        from: &User,
        conversation: &str,
        content: &str,
    ) -> anyhow::Result<Value> {
        let reply = self
            .call(
                reqwest::Method::POST,
                "/messages",
                Some(json!({"client_msg_id": uuid::Uuid::new_v4().to_string(), "conversation_id": conversation, "msg_type": "text", "content": content})),
                Some(&from.token),
            )
            .await?;
        Ok(reply["message"].clone())
    }

    /// `GET /search/messages?q=<words>` as `user`: the hits.
    pub async fn search(&self, user: &User, words: &str) -> anyhow::Result<Vec<Value>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/search/messages", self.base))?;
        url.query_pairs_mut().append_pair("q", words);
        let response = self.http.get(url).bearer_auth(&user.token).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("GET /search/messages: {status} {text}");
        }
        let reply: Value = serde_json::from_str(&text)?;
        Ok(reply["hits"].as_array().cloned().unwrap_or_default())
    }

    /// Finds (by sending a first message over REST) the direct conversation of a pair.
    pub async fn direct_conversation(&self, from: &User, to: &User) -> anyhow::Result<String> {
        let reply = self
            .call(
                reqwest::Method::POST,
                "/messages",
                Some(json!({"client_msg_id": uuid::Uuid::new_v4().to_string(), "to_user_id": to.id, "msg_type": "text", "content": "hello"})),
                Some(&from.token),
            )
            .await?;
        Ok(reply["message"]["conversation_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no conversation id"))?
            .to_owned())
    }
}

/// Opens a device's WebSocket, from `source` when given (spreading over loopback
/// addresses lifts the ~28k ephemeral ports limit per address pair).
pub async fn connect_ws(
    base: &str,
    token: &str,
    device: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<(WsSink, WsStream)> {
    let url = format!(
        "{}/ws?token={token}&device_id={device}",
        base.replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let request = url.as_str().into_client_request()?;
    let host = request
        .uri()
        .host()
        .ok_or_else(|| anyhow!("no host"))?
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let target: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {host}"))?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(2 << 20));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws.split())
}

/// A `send` frame for a text message in a conversation (or to a user).
pub fn send_frame(
    id: u64,
    conversation: Option<&str>,
    to_user: Option<&str>,
    client_msg_id: &str,
    content: &str,
) -> String {
    let mut data = json!({"client_msg_id": client_msg_id, "msg_type": "text", "content": content});
    if let Some(c) = conversation {
        data["conversation_id"] = json!(c);
    }
    if let Some(u) = to_user {
        data["to_user_id"] = json!(u);
    }
    json!({"type": "send", "id": id.to_string(), "data": data}).to_string()
}

/// Sends a text frame.
pub async fn send_text(sink: &mut WsSink, text: String) -> anyhow::Result<()> {
    sink.send(Message::text(text)).await?;
    Ok(())
}

/// Nanoseconds since the Unix epoch (the clock both ends of a loopback run share).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `127.0.0.<first>` .. `127.0.0.<first+count-1>` as source addresses.
pub fn loopback_sources(first: u8, count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::from([127, 0, 0, first.saturating_add(i)]))
        .collect()
}
