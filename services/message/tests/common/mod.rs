//! The harness of the message service's integration tests: a private database, the
//! real user service (UsersExist), the message service started with `bind_with`, an
//! in-test presence routing table (RouteUsers) and RabbitMQ consumers of gateway
//! queues, all against the machine's real PostgreSQL and RabbitMQ.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_common::events::Names;
use beehive_common::{Component, Error, ErrorCode, Settings, Shutdown};
use beehive_message::{MessageConfig, RelayConfig};
use beehive_proto::v1 as pb;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::presence_service_server::{PresenceService, PresenceServiceServer};
use beehive_proto::v1::user_service_client::UserServiceClient;
use beehive_testkit::amqp::{GatewayConsumer, consume_gateway_queue};
use beehive_testkit::{TestEnv, serve};
use futures::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long any "eventually" wait may take before the test fails. Generous: these
/// are correctness deadlines, not performance assertions.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Relay settings that keep tests quick.
pub fn quick_relay() -> RelayConfig {
    RelayConfig {
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        rebalance_interval: Duration::from_millis(200),
        max_attempts: 3,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        outage_backoff_max: Duration::from_millis(300),
        confirm_timeout: Duration::from_secs(5),
        vacuum_after_deletes: beehive_message::relay::VACUUM_AFTER_DELETES,
    }
}

/// Which gateway instances hold which users: the in-test RouteUsers.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl Routes {
    /// Puts `user` online at `instance`.
    pub fn connect(&self, user: &str, instance: &str) {
        let mut table = self.0.lock().expect("routes lock");
        let instances = table.entry(user.to_owned()).or_default();
        if !instances.iter().any(|i| i == instance) {
            instances.push(instance.to_owned());
        }
    }
}

#[tonic::async_trait]
impl PresenceService for Routes {
    async fn register_connection(
        &self,
        _: Request<pb::RegisterConnectionRequest>,
    ) -> Result<Response<pb::RegisterConnectionResponse>, Status> {
        Err(Status::unimplemented("routing only"))
    }
    async fn unregister_connection(
        &self,
        _: Request<pb::UnregisterConnectionRequest>,
    ) -> Result<Response<pb::UnregisterConnectionResponse>, Status> {
        Err(Status::unimplemented("routing only"))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("routing only"))
    }
    async fn get_presence(
        &self,
        _: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        Err(Status::unimplemented("routing only"))
    }
    async fn route_users(
        &self,
        request: Request<pb::RouteUsersRequest>,
    ) -> Result<Response<pb::RouteUsersResponse>, Status> {
        let table = self.0.lock().expect("routes lock");
        let mut by_instance: HashMap<String, Vec<String>> = HashMap::new();
        for user in request.into_inner().user_ids {
            for instance in table.get(&user).into_iter().flatten() {
                by_instance
                    .entry(instance.clone())
                    .or_default()
                    .push(user.clone());
            }
        }
        Ok(Response::new(pb::RouteUsersResponse {
            routes: by_instance
                .into_iter()
                .map(|(instance_id, user_ids)| pb::InstanceUsers {
                    instance_id,
                    user_ids,
                })
                .collect(),
        }))
    }
}

/// One test's running world.
pub struct Harness {
    pub env: TestEnv,
    pub settings: Settings,
    pub message: MessageServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    pub routes: Routes,
    pub shutdown: Shutdown,
    message_shutdown: Shutdown,
    message_server: Option<tokio::task::JoinHandle<()>>,
    registered: usize,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn listener() -> TcpListener {
    serve::loopback().await
}

impl Harness {
    /// Starts user, the routing table and message (with `relay`, or none).
    pub async fn start(relay: Option<RelayConfig>) -> Self {
        Self::start_with(relay, |_| {}).await
    }

    /// [`Harness::start`], letting the test adjust the message service's settings
    /// (e.g. its AMQP URL).
    pub async fn start_with(
        relay: Option<RelayConfig>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        // RUST_LOG=beehive_message=debug shows what the service did when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::new(&[&beehive_user::MIGRATOR, &beehive_message::MIGRATOR]).await;
        let shutdown = Shutdown::new();
        let mut settings = env.settings.clone();

        let user = beehive_user::bind(&serve::context(&settings, &shutdown), listener().await)
            .await
            .expect("bind user");
        let user_addr = serve::run(user).await;
        settings.set_component_addr(Component::User, format!("http://{user_addr}"));

        let routes = Routes::default();
        let presence_listener = listener().await;
        let presence_addr = presence_listener.local_addr().expect("addr");
        let presence = PresenceServiceServer::new(routes.clone());
        let presence_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(presence)
                .serve_with_incoming_shutdown(
                    beehive_common::grpc::tokio_stream_shim::TcpIncoming::new(presence_listener),
                    presence_shutdown.wait_owned(),
                )
                .await;
        });
        settings.set_component_addr(Component::Presence, format!("http://{presence_addr}"));

        let mut message_settings = settings.clone();
        adjust(&mut message_settings);
        let message_shutdown = shutdown.child();
        let (addr, server) =
            start_message(&message_settings, &message_shutdown, relay, relay_tasks()).await;
        let message = MessageServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect message");
        let users = UserServiceClient::connect(format!("http://{user_addr}"))
            .await
            .expect("connect user");
        Self {
            env,
            settings,
            message,
            users,
            routes,
            shutdown,
            message_shutdown,
            message_server: Some(server),
            registered: 0,
        }
    }

    /// Starts one more message service (another replica) on the same database;
    /// returns a client of it and its shutdown switch.
    pub async fn another_replica(
        &self,
        relay: Option<RelayConfig>,
    ) -> (MessageServiceClient<Channel>, Shutdown) {
        self.another_replica_with_tasks(relay, relay_tasks()).await
    }

    /// [`Harness::another_replica`] running `tasks` relays in its process.
    pub async fn another_replica_with_tasks(
        &self,
        relay: Option<RelayConfig>,
        tasks: usize,
    ) -> (MessageServiceClient<Channel>, Shutdown) {
        let shutdown = self.shutdown.child();
        let (addr, _server) = start_message(&self.settings, &shutdown, relay, tasks).await;
        let client = MessageServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect replica");
        (client, shutdown)
    }

    /// Stops the first message service (its relay included) and waits for it.
    pub async fn stop_message(&mut self) {
        self.message_shutdown.trigger();
        if let Some(server) = self.message_server.take() {
            server.await.expect("message server task");
        }
    }

    /// Registers `n` users through the real user service; returns their ids.
    pub async fn register(&mut self, n: usize) -> Vec<String> {
        let start = self.registered;
        self.registered += n;
        let calls = (start..start + n).map(|i| {
            let mut users = self.users.clone();
            async move {
                users
                    .register(pb::RegisterUserRequest {
                        username: format!("user{i}"),
                        password: "correct horse battery".to_owned(),
                        ..Default::default()
                    })
                    .await
                    .expect("register")
                    .into_inner()
                    .user
                    .expect("user")
                    .id
            }
        });
        futures::future::join_all(calls).await
    }

    /// Creates a group owned by `owner` with `members`.
    pub async fn group(&self, owner: &str, members: &[String]) -> pb::Conversation {
        self.message
            .clone()
            .create_group(pb::CreateGroupRequest {
                owner_id: owner.to_owned(),
                name: "team".to_owned(),
                member_ids: members.to_vec(),
            })
            .await
            .expect("create group")
            .into_inner()
            .conversation
            .expect("conversation")
    }

    /// Sends a text to a conversation.
    pub async fn send(
        &self,
        sender: &str,
        conversation: &str,
        client_msg_id: &str,
    ) -> pb::SendMessageResponse {
        self.message
            .clone()
            .send_message(text(sender, conversation, client_msg_id))
            .await
            .expect("send")
            .into_inner()
    }

    /// Rows still waiting in the outbox.
    pub async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM message.outbox")
            .fetch_one(&self.env.pool)
            .await
            .expect("count outbox")
    }

    /// Rows in the dead-letter table.
    pub async fn dead_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM message.outbox_dead")
            .fetch_one(&self.env.pool)
            .await
            .expect("count dead")
    }

    /// Sends `from`'s first message to `to` (client id `client_msg_id`), opening their
    /// direct conversation; returns the stored message.
    pub async fn open_direct(&self, from: &str, to: &str, client_msg_id: &str) -> pb::Message {
        let mut request = text(from, "", client_msg_id);
        request.target = Some(pb::send_message_request::Target::ToUserId(to.to_owned()));
        self.message
            .clone()
            .send_message(request)
            .await
            .expect("open a direct conversation")
            .into_inner()
            .message
            .expect("the stored message")
    }

    /// Waits until the outbox is empty.
    pub async fn drained(&self) {
        eventually("the outbox drains", || async {
            self.outbox_len().await == 0
        })
        .await;
    }

    /// Removes this test's exchanges and queues from the shared broker.
    pub async fn cleanup_broker(&self, instances: &[&str]) {
        let Ok(conn) = amqp(&self.settings).await else {
            return;
        };
        let Ok(channel) = conn.create_channel().await else {
            return;
        };
        let names = Names::new(&self.settings);
        for instance in instances {
            let _ = channel
                .queue_delete(
                    ShortString::from(names.gateway_queue(instance)),
                    Default::default(),
                )
                .await;
        }
        let _ = channel
            .queue_delete(
                ShortString::from(names.dead_letter_queue.clone()),
                Default::default(),
            )
            .await;
        for exchange in [&names.exchange, &names.dead_letter_exchange] {
            let _ = channel
                .exchange_delete(ShortString::from(exchange.clone()), Default::default())
                .await;
        }
        let _ = conn.close(200, ShortString::from("done".to_owned())).await;
    }
}

async fn start_message(
    settings: &Settings,
    shutdown: &Shutdown,
    relay: Option<RelayConfig>,
    relay_tasks: usize,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let ctx = serve::context(settings, shutdown);
    let config = MessageConfig {
        run_relay: relay.is_some(),
        relay: relay.unwrap_or_default(),
        relay_tasks,
    };
    let bound = beehive_message::bind_with(&ctx, listener().await, config)
        .await
        .expect("bind message");
    for check in &bound.readiness {
        check.run().await.expect("ready");
    }
    let addr = bound.addr;
    let server = tokio::spawn(async move {
        bound.serve.await.expect("message serves");
    });
    (addr, server)
}

/// Relay tasks per message service: 1 in tests, so a test's replicas are its relays (`BEEHIVE_TEST_RELAY_TASKS` for the
/// load generator).
fn relay_tasks() -> usize {
    std::env::var("BEEHIVE_TEST_RELAY_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A text message request.
pub fn text(sender: &str, conversation: &str, client_msg_id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        sender_id: sender.to_owned(),
        client_msg_id: client_msg_id.to_owned(),
        target: Some(pb::send_message_request::Target::ConversationId(
            conversation.to_owned(),
        )),
        msg_type: pb::MessageType::Text as i32,
        content: format!("hello from {sender}: {client_msg_id}"),
        file_id: None,
        device_id: "phone".to_owned(),
    }
}

/// The public error code of a failed call.
pub fn code(status: tonic::Status) -> ErrorCode {
    Error::from_status(&status).code()
}

/// Polls `check` until it holds; fails the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A direct AMQP connection (not through any test proxy).
pub async fn amqp(settings: &Settings) -> Result<lapin::Connection, lapin::Error> {
    lapin::Connection::connect(
        settings.amqp_url.expose(),
        lapin::ConnectionProperties::default(),
    )
    .await
}

/// Everything published to one gateway instance's queue, decoded.
pub struct GatewayQueue {
    pub events: Arc<Mutex<Vec<pb::Event>>>,
    arrived: Arc<Mutex<Vec<std::time::Instant>>>,
    _connection: lapin::Connection,
}

impl GatewayQueue {
    /// Declares the queue of `instance` (as a gateway would) and consumes it.
    pub async fn consume(settings: &Settings, instance: &str) -> Self {
        let GatewayConsumer {
            connection,
            mut consumer,
        } = consume_gateway_queue(settings, instance).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let (sink, times) = (events.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let now = std::time::Instant::now();
                // One event, or a batch of them (what the relay publishes).
                let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
                let decoded =
                    beehive_common::event_batch::decode_events(kind, &delivery.data, 1 << 22)
                        .expect("an Event or an EventBatch");
                let mut events = sink.lock().expect("events lock");
                let mut times = times.lock().expect("times lock");
                for event in decoded {
                    events.push(event);
                    times.push(now);
                }
            }
        });
        Self {
            events,
            arrived,
            _connection: connection,
        }
    }

    /// A copy of what arrived so far.
    pub fn snapshot(&self) -> Vec<pb::Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// When each message event arrived, by (conversation, seq).
    pub fn arrivals(&self) -> Vec<((String, u64), std::time::Instant)> {
        let events = self.events.lock().expect("events lock");
        let times = self.arrived.lock().expect("times lock");
        events
            .iter()
            .zip(times.iter())
            .filter_map(|(e, t)| match &e.payload {
                Some(pb::event::Payload::Message(m)) => {
                    Some(((m.conversation_id.clone(), m.seq), *t))
                }
                _ => None,
            })
            .collect()
    }

    /// The message events that arrived so far.
    pub fn messages(&self) -> Vec<pb::Message> {
        self.snapshot()
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(pb::event::Payload::Message(m)) => Some(m),
                _ => None,
            })
            .collect()
    }
}

/// Declares a queue for `instance` that refuses every publish (max length 0 with
/// reject-publish), so the broker nacks what is routed to it: a real poison target.
pub async fn refusing_queue(settings: &Settings, instance: &str) -> lapin::Connection {
    let connection = amqp(settings).await.expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    let names = Names::new(settings);
    beehive_common::events::declare_topology(&channel, &names)
        .await
        .expect("topology");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-max-length".to_owned()),
        AMQPValue::LongInt(0),
    );
    args.insert(
        ShortString::from("x-overflow".to_owned()),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = names.gateway_queue(instance);
    channel
        .queue_declare(
            ShortString::from(queue.clone()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .expect("declare refusing queue");
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(names.exchange.clone()),
            ShortString::from(instance.to_owned()),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind refusing queue");
    connection
}

/// A TCP proxy in front of RabbitMQ that the test can cut (every proxied connection
/// is reset and new ones are refused) and restore: a broker outage without touching
/// the machine's RabbitMQ.
pub struct BrokerProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl BrokerProxy {
    /// A proxy to the broker of `settings`.
    pub async fn start(settings: &Settings) -> Self {
        let url = settings.amqp_url.expose().to_owned();
        let target = broker_host_port(&url);
        let listener = listener().await;
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (accept_up, accept_links) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                accept_links
                    .lock()
                    .expect("links")
                    .push(task.abort_handle());
            }
        });
        Self { addr, up, links }
    }

    /// The broker URL through this proxy.
    pub fn url(&self, settings: &Settings) -> String {
        let url = settings.amqp_url.expose();
        url.replacen(&broker_host_port(url), &self.addr.to_string(), 1)
    }

    /// The outage: resets every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// The broker is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn broker_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}
