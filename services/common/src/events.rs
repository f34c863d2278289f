//! The event bus: how frames reach the gateway instances that hold their recipients.
//!
//! One durable direct exchange per installation (`<installation>.events`). Each gateway
//! instance consumes its own queue (`<installation>.gateway.<instance_id>`, `x-expires`
//! so a dead instance's queue goes away) bound with its instance id as routing key.
//! Publishers look up, through the presence service, which instances hold connections
//! of an event's recipients and publish one copy per instance, narrowed to the
//! recipients on it. No per-user bindings exist, so bindings stay O(instances).
//!
//! Messages are persistent protobuf [`Event`]s; publishing waits for broker confirms.
//! Messages a gateway rejects go to the dead-letter exchange `<installation>.events.dlx`
//! and its queue `<installation>.events.dead`.
//!
//! The search component consumes its own durable queue `<installation>.search.index`,
//! bound with [`SEARCH_INDEX_ROUTING_KEY`]: the relay publishes one more copy of every
//! message event with that key (whoever is online), so indexing never depends on
//! presence. Message events are `message` (created), `message_edited` (the whole
//! message as it is now) and `message_deleted` (its id); the index applies each by
//! message id. The key starts with `@`, which no instance id (a pod name) contains.

use std::time::Duration;

use beehive_proto::v1::Event;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use prost::Message as _;
use tokio::sync::Mutex;

use crate::config::Settings;
use crate::error::Error;
use crate::grpc::ClientChannel;
use crate::infra;
use crate::routing;

/// How long an unused gateway queue survives its consumer (a gateway that restarts
/// with the same instance id within this time finds what was routed to it meanwhile).
pub const GATEWAY_QUEUE_EXPIRES: Duration = Duration::from_secs(120);

/// Routing key of the copies of message events meant for the search index.
pub const SEARCH_INDEX_ROUTING_KEY: &str = "@search.index";

/// RabbitMQ names of one installation.
#[derive(Clone, Debug)]
pub struct Names {
    pub exchange: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// The search component's durable index queue.
    pub search_index_queue: String,
    installation: String,
}

impl Names {
    /// The names for `settings.installation`.
    pub fn new(settings: &Settings) -> Self {
        let i = &settings.installation;
        Self {
            exchange: format!("{i}.events"),
            dead_letter_exchange: format!("{i}.events.dlx"),
            dead_letter_queue: format!("{i}.events.dead"),
            search_index_queue: format!("{i}.search.index"),
            installation: i.clone(),
        }
    }

    /// The queue of one gateway instance.
    pub fn gateway_queue(&self, instance_id: &str) -> String {
        format!("{}.gateway.{instance_id}", self.installation)
    }
}

fn short(s: &str) -> ShortString {
    ShortString::from(s.to_owned())
}

/// Declares the exchanges and the dead-letter queue (idempotent).
pub async fn declare_topology(channel: &lapin::Channel, names: &Names) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            short(&names.exchange),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            short(&names.dead_letter_exchange),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            short(&names.dead_letter_queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            short(&names.dead_letter_queue),
            short(&names.dead_letter_exchange),
            short(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares and binds one gateway instance's queue; returns its name.
pub async fn declare_gateway_queue(
    channel: &lapin::Channel,
    names: &Names,
    instance_id: &str,
) -> Result<String, lapin::Error> {
    declare_topology(channel, names).await?;
    let queue = names.gateway_queue(instance_id);
    let mut args = FieldTable::default();
    args.insert(
        short("x-expires"),
        AMQPValue::LongUInt(GATEWAY_QUEUE_EXPIRES.as_millis() as u32),
    );
    args.insert(
        short("x-dead-letter-exchange"),
        AMQPValue::LongString(names.dead_letter_exchange.clone().into()),
    );
    channel
        .queue_declare(
            short(&queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            short(&queue),
            short(&names.exchange),
            short(instance_id),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

/// Declares and binds the search component's durable index queue (idempotent);
/// returns its name. Rejected (poison) deliveries go to the dead-letter exchange.
pub async fn declare_search_queue(
    channel: &lapin::Channel,
    names: &Names,
) -> Result<String, lapin::Error> {
    declare_topology(channel, names).await?;
    let queue = names.search_index_queue.clone();
    let mut args = FieldTable::default();
    args.insert(
        short("x-dead-letter-exchange"),
        AMQPValue::LongString(names.dead_letter_exchange.clone().into()),
    );
    channel
        .queue_declare(
            short(&queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            short(&queue),
            short(&names.exchange),
            short(SEARCH_INDEX_ROUTING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

/// Whether the search index takes `event`: message events (created, edited, deleted).
/// Its copy is the payload alone, no recipients, no device exclusion
/// ([`crate::event_batch::encode_payload`]).
pub fn is_search_indexed(event: &Event) -> bool {
    use beehive_proto::v1::event::Payload;
    matches!(
        event.payload,
        Some(Payload::Message(_) | Payload::MessageEdited(_) | Payload::MessageDeleted(_))
    )
}

pub use crate::routing::split_by_instance;

/// Publishes events with confirms, reconnecting after a broker restart.
pub struct EventBus {
    settings: Settings,
    names: Names,
    presence: PresenceServiceClient<ClientChannel>,
    channel: Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

impl EventBus {
    /// A bus that connects on first publish.
    pub fn new(settings: &Settings, presence: PresenceServiceClient<ClientChannel>) -> Self {
        Self {
            settings: settings.clone(),
            names: Names::new(settings),
            presence,
            channel: Mutex::new(None),
        }
    }

    /// The installation's RabbitMQ names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Splits events by the gateway instances holding their recipients. Recipients
    /// with no live connection are dropped (they catch up with `sync`).
    pub async fn route(&self, events: Vec<Event>) -> Result<Vec<(String, Event)>, Error> {
        let users: Vec<String> = events
            .iter()
            .flat_map(|e| e.recipient_ids.iter().cloned())
            .collect();
        let instances = routing::route_users(&self.presence, users).await?;
        Ok(events
            .iter()
            .flat_map(|event| routing::split_event(event, &instances))
            .collect())
    }

    /// Routes and publishes `events`, returning once the broker confirmed them all.
    pub async fn send(&self, events: Vec<Event>) -> Result<(), Error> {
        let routed = self.route(events).await?;
        self.publish(&routed).await
    }

    /// Publishes pre-routed `(instance_id, event)` pairs as persistent messages and
    /// waits for every confirm. One reconnect-and-retry after a channel failure;
    /// duplicates are harmless because clients dedupe by seq.
    pub async fn publish(&self, routed: &[(String, Event)]) -> Result<(), Error> {
        if routed.is_empty() {
            return Ok(());
        }
        let payloads: Vec<(&str, Vec<u8>)> = routed
            .iter()
            .map(|(instance, event)| (instance.as_str(), event.encode_to_vec()))
            .collect();
        let mut guard = self.channel.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open().await?);
            }
            let Some((_, channel)) = guard.as_ref() else {
                continue;
            };
            match publish_confirmed(channel, &self.names.exchange, &payloads).await {
                Ok(()) => {
                    metrics::counter!("beehive_events_published_total")
                        .increment(payloads.len() as u64);
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "publishing events failed; reconnecting");
                    *guard = None;
                }
            }
        }
        Err(Error::Unavailable(
            "the message broker is unavailable".to_owned(),
        ))
    }

    async fn open(&self) -> Result<(lapin::Connection, lapin::Channel), Error> {
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(%error, "cannot reach the message broker");
            Error::Unavailable("the message broker is unavailable".to_owned())
        };
        let connection = infra::connect_amqp(&self.settings.amqp_url)
            .await
            .map_err(|e| unavailable(&e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable(&e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable(&e))?;
        declare_topology(&channel, &self.names)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok((connection, channel))
    }
}

/// Histogram: handing a batch of messages to the broker (one basic.publish each).
pub const PUBLISH_DURATION: &str = "beehive_amqp_publish_duration_seconds";
/// Histogram: waiting for the broker's confirms of a published batch.
pub const CONFIRM_DURATION: &str = "beehive_amqp_confirm_duration_seconds";
/// Gauge: messages ready in a queue, by `queue` (sampled by the outbox relay).
pub const QUEUE_MESSAGES: &str = "beehive_amqp_queue_messages";

/// Publishes every payload, then awaits every confirm (one round of confirms per
/// batch rather than per message); both phases are timed ([`PUBLISH_DURATION`],
/// [`CONFIRM_DURATION`]).
pub async fn publish_confirmed(
    channel: &lapin::Channel,
    exchange: &str,
    payloads: &[(&str, Vec<u8>)],
) -> Result<(), lapin::Error> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(short("application/x-protobuf"));
    let mut confirms = Vec::with_capacity(payloads.len());
    let started = std::time::Instant::now();
    for (routing_key, payload) in payloads {
        let confirm = channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions::default(),
                payload,
                properties.clone(),
            )
            .await?;
        confirms.push(confirm);
    }
    metrics::histogram!(PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
    let started = std::time::Instant::now();
    for confirm in confirms {
        let confirmation = confirm.await?;
        if confirmation.is_nack() {
            return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                "publish was nacked by the broker",
            )));
        }
    }
    metrics::histogram!(CONFIRM_DURATION).record(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use beehive_proto::v1::InstanceUsers;

    #[test]
    fn message_events_are_copied_to_the_search_index_without_recipients() {
        use beehive_proto::v1::event::Payload;
        use beehive_proto::v1::{Message, MessageDeleted, MessageEdited, TypingEvent};
        for payload in [
            Payload::Message(Message::default()),
            Payload::MessageEdited(MessageEdited::default()),
            Payload::MessageDeleted(MessageDeleted::default()),
        ] {
            let event = Event {
                recipient_ids: vec!["a".into()],
                exclude_device_user_id: "a".into(),
                exclude_device_id: "phone".into(),
                payload: Some(payload.clone()),
            };
            assert!(is_search_indexed(&event));
            let mut bytes = Vec::new();
            crate::event_batch::encode_payload(&event, &mut bytes);
            let copy = Event::decode(bytes.as_slice()).expect("an Event");
            assert!(copy.recipient_ids.is_empty() && copy.exclude_device_id.is_empty());
            assert_eq!(copy.payload, Some(payload));
        }
        let typing = Event {
            payload: Some(Payload::Typing(TypingEvent::default())),
            ..Event::default()
        };
        assert!(!is_search_indexed(&typing));
    }

    #[test]
    fn events_are_split_per_instance_with_only_local_recipients() {
        let event = Event {
            recipient_ids: vec!["a".into(), "b".into(), "offline".into()],
            ..Event::default()
        };
        let routes = vec![
            InstanceUsers {
                instance_id: "gw1".into(),
                user_ids: vec!["a".into()],
            },
            InstanceUsers {
                instance_id: "gw2".into(),
                user_ids: vec!["a".into(), "b".into()],
            },
        ];
        let mut routed = split_by_instance(vec![event], &routes);
        routed.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(routed.len(), 2);
        assert_eq!(routed[0].0, "gw1");
        assert_eq!(routed[0].1.recipient_ids, vec!["a".to_owned()]);
        assert_eq!(routed[1].0, "gw2");
        assert_eq!(
            routed[1].1.recipient_ids,
            vec!["a".to_owned(), "b".to_owned()]
        );
    }
}
