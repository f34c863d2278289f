//! Starts the social and presence services in-process against the real PostgreSQL,
//! Redis and RabbitMQ of a private [`TestEnv`], and consumes a gateway instance's
//! queue the way a gateway would.
#![allow(dead_code)]

use std::time::Duration;

use beehive_common::{Component, Context, Shutdown};
use beehive_presence::PresenceConfig;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use beehive_proto::v1::{Connection, Event, RegisterConnectionRequest, event};
use beehive_testkit::amqp::{GatewayConsumer, consume_gateway_queue};
use beehive_testkit::{TestEnv, serve};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::transport::Channel;

/// Both services, their clients and the private environment.
pub struct Stack {
    pub env: TestEnv,
    pub ctx: Context,
    pub social: SocialServiceClient<Channel>,
    pub presence: PresenceServiceClient<Channel>,
}

impl Stack {
    /// Starts social and presence (registration TTL `ttl`).
    pub async fn start(ttl: Duration) -> Self {
        let env = TestEnv::new(&[&beehive_social::MIGRATOR]).await;
        let social_listener = serve::loopback().await;
        let presence_listener = serve::loopback().await;
        let social_url = format!("http://{}", social_listener.local_addr().expect("addr"));
        let presence_url = format!("http://{}", presence_listener.local_addr().expect("addr"));
        let mut settings = env.settings.clone();
        settings.set_component_addr(Component::Social, social_url.clone());
        settings.set_component_addr(Component::Presence, presence_url.clone());
        let ctx = serve::context(&settings, &Shutdown::new());
        let social = beehive_social::bind(&ctx, social_listener)
            .await
            .expect("social binds");
        let presence =
            beehive_presence::bind_with(&ctx, presence_listener, PresenceConfig::with_ttl(ttl))
                .await
                .expect("presence binds");
        tokio::spawn(social.serve);
        tokio::spawn(presence.serve);
        let connect = |url: String| async move {
            Channel::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect")
        };
        Self {
            social: SocialServiceClient::new(connect(social_url).await),
            presence: PresenceServiceClient::new(connect(presence_url).await),
            env,
            ctx,
        }
    }

    /// Registers one connection of `user` on `instance`; returns came_online.
    pub async fn connect_user(&self, instance: &str, user: &str, device: &str) -> bool {
        self.presence
            .clone()
            .register_connection(RegisterConnectionRequest {
                instance_id: instance.to_owned(),
                connection: Some(connection(user, device)),
            })
            .await
            .expect("register")
            .into_inner()
            .came_online
    }

    /// Starts consuming `instance`'s gateway queue.
    pub async fn gateway_queue(&self, instance: &str) -> GatewayQueue {
        GatewayQueue::open(&self.ctx.settings, instance).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.ctx.shutdown.trigger();
    }
}

/// A connection of `user` whose id is derived from the device, so tests can name it
/// again to unregister it.
pub fn connection(user: &str, device: &str) -> Connection {
    Connection {
        user_id: user.to_owned(),
        device_id: device.to_owned(),
        connection_id: format!("{}-{device}", &user[..8]),
        session_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// A fresh user id.
pub fn user() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A consumer of one gateway instance's queue.
pub struct GatewayQueue {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl GatewayQueue {
    async fn open(settings: &beehive_common::Settings, instance: &str) -> Self {
        let GatewayConsumer {
            connection,
            consumer,
        } = consume_gateway_queue(settings, instance).await;
        Self {
            _connection: connection,
            consumer,
        }
    }

    /// The next event within `wait`, if any.
    pub async fn next(&mut self, wait: Duration) -> Option<Event> {
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        Some(Event::decode(delivery.data.as_slice()).expect("an Event"))
    }

    /// Waits (up to 15 s) for the first event whose payload satisfies `wanted`,
    /// skipping others.
    pub async fn expect(&mut self, what: &str, wanted: impl Fn(&event::Payload) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no {what} event arrived"));
            if event.payload.as_ref().is_some_and(&wanted) {
                return event;
            }
        }
    }

    /// Collects every event arriving within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(event) = self.next(wait).await {
            out.push(event);
        }
        out
    }
}
