//! Batched events on the bus: many [`Event`]s in one RabbitMQ message.
//!
//! Every RabbitMQ message costs the broker a routing decision, a write to the queue's
//! store (messages are persistent), a confirm and a delivery, and costs the publisher
//! and the consumer a frame each. The outbox relay therefore publishes one
//! [`EventBatch`] per destination (a gateway instance, or the search index) per relay
//! batch. Events keep their outbox order inside a batch, and batches of one destination
//! are published in order on one channel, so per-conversation order holds as before.
//!
//! A batch is marked by the AMQP `type` property [`EVENT_BATCH_TYPE`]; a message
//! without it is one [`Event`] (what the other publishers send). [`decode_events`]
//! reads both.
//!
//! Encoding writes each event's payload once, however many destinations it has: an
//! event is the concatenation of an envelope (recipients, excluded device) and the
//! payload's bytes, which protobuf reads as one message (fields may come in any order).

use std::collections::HashMap;

use beehive_proto::v1::{Event, EventBatch};
use prost::Message as _;
use prost::encoding::{self, WireType};

/// AMQP `type` property of a message carrying an [`EventBatch`].
pub const EVENT_BATCH_TYPE: &str = "beehive.v1.EventBatch";

/// Largest batch a publisher builds. An event bigger than this travels alone. Kept
/// well under what consumers accept (the search indexer reads 1 MiB per message).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// One RabbitMQ message being built: the encoded [`EventBatch`] and which of the
/// caller's items (e.g. outbox events) it carries.
#[derive(Debug, Default)]
pub struct Batch {
    pub routing_key: String,
    pub bytes: Vec<u8>,
    /// The caller's item numbers, in the order given to [`Batches::push`] (repeats
    /// removed when consecutive).
    pub items: Vec<usize>,
    /// Events in the batch.
    pub events: usize,
}

/// Batches per routing key, each capped at `max_bytes`, in first-use order.
#[derive(Debug)]
pub struct Batches {
    max_bytes: usize,
    open: HashMap<String, usize>,
    batches: Vec<Batch>,
}

impl Default for Batches {
    fn default() -> Self {
        Self::new(MAX_BATCH_BYTES)
    }
}

impl Batches {
    /// Empty, with batches of at most `max_bytes` (an oversized single event excepted).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            open: HashMap::new(),
            batches: Vec::new(),
        }
    }

    /// Appends one event for `routing_key`, encoded as the concatenation of `parts`,
    /// on behalf of the caller's `item`.
    pub fn push(&mut self, routing_key: &str, item: usize, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let framed = 1 + encoding::encoded_len_varint(len as u64) + len;
        let index = match self.open.get(routing_key) {
            Some(&index)
                if self.batches[index].bytes.is_empty()
                    || self.batches[index].bytes.len() + framed <= self.max_bytes =>
            {
                index
            }
            _ => {
                self.batches.push(Batch {
                    routing_key: routing_key.to_owned(),
                    ..Batch::default()
                });
                let index = self.batches.len() - 1;
                self.open.insert(routing_key.to_owned(), index);
                index
            }
        };
        let batch = &mut self.batches[index];
        // Field 1 of EventBatch (repeated Event), length-delimited.
        encoding::encode_key(1, WireType::LengthDelimited, &mut batch.bytes);
        encoding::encode_varint(len as u64, &mut batch.bytes);
        for part in parts {
            batch.bytes.extend_from_slice(part);
        }
        if batch.items.last() != Some(&item) {
            batch.items.push(item);
        }
        batch.events += 1;
    }

    /// The batches, in the order their routing keys were first used (and, per key, in
    /// push order).
    pub fn finish(self) -> Vec<Batch> {
        self.batches
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Encodes the envelope of `event` (everything but the payload) into `buf`, for
/// `recipients` instead of the event's own recipient list.
pub fn encode_envelope(event: &Event, recipients: &[&String], buf: &mut Vec<u8>) {
    for recipient in recipients {
        encoding::string::encode(1, recipient, buf);
    }
    if !event.exclude_device_user_id.is_empty() {
        encoding::string::encode(2, &event.exclude_device_user_id, buf);
    }
    if !event.exclude_device_id.is_empty() {
        encoding::string::encode(3, &event.exclude_device_id, buf);
    }
}

/// Encodes the payload of `event` alone into `buf`: by itself, an [`Event`] without
/// recipients (what the search index gets).
pub fn encode_payload(event: &Event, buf: &mut Vec<u8>) {
    if let Some(payload) = &event.payload {
        payload.encode(buf);
    }
}

/// Why a delivery could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{bytes} bytes exceed the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("not a protobuf event: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// The events of one delivery: a batch when `kind` (the AMQP `type` property) says
/// [`EVENT_BATCH_TYPE`], one event otherwise. `limit` bounds the bytes read.
pub fn decode_events(
    kind: Option<&str>,
    data: &[u8],
    limit: usize,
) -> Result<Vec<Event>, DecodeError> {
    if data.len() > limit {
        return Err(DecodeError::TooLarge {
            bytes: data.len(),
            limit,
        });
    }
    if kind == Some(EVENT_BATCH_TYPE) {
        Ok(EventBatch::decode(data)?.events)
    } else {
        Ok(vec![Event::decode(data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beehive_proto::v1::event::Payload;
    use beehive_proto::v1::{Message, Receipt};

    fn message_event(id: &str, recipients: &[&str]) -> Event {
        Event {
            recipient_ids: recipients.iter().map(|r| (*r).to_owned()).collect(),
            exclude_device_user_id: "alice".to_owned(),
            exclude_device_id: "phone".to_owned(),
            payload: Some(Payload::Message(Message {
                id: id.to_owned(),
                content: "你好 hello".to_owned(),
                seq: 7,
                ..Message::default()
            })),
        }
    }

    fn split(event: &Event, recipients: &[&String]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_envelope(event, recipients, &mut bytes);
        encode_payload(event, &mut bytes);
        bytes
    }

    #[test]
    fn envelope_plus_payload_decodes_as_the_narrowed_event() {
        let event = message_event("m1", &["alice", "bob", "carol"]);
        let bob = &event.recipient_ids[1];
        let mut batches = Batches::default();
        let mut envelope = Vec::new();
        encode_envelope(&event, &[bob], &mut envelope);
        let mut payload = Vec::new();
        encode_payload(&event, &mut payload);
        batches.push("gw-a", 0, &[&envelope, &payload]);
        batches.push("@search", 0, &[&payload]);
        let batches = batches.finish();
        assert_eq!(batches.len(), 2);

        let on_a = decode_events(Some(EVENT_BATCH_TYPE), &batches[0].bytes, 1 << 20).unwrap();
        let mut expected = event.clone();
        expected.recipient_ids = vec!["bob".to_owned()];
        assert_eq!(on_a, vec![expected]);

        let searched = decode_events(Some(EVENT_BATCH_TYPE), &batches[1].bytes, 1 << 20).unwrap();
        assert_eq!(
            searched,
            vec![Event {
                payload: event.payload.clone(),
                ..Event::default()
            }]
        );
    }

    #[test]
    fn batches_keep_order_per_key_and_respect_the_size_cap() {
        let events: Vec<Event> = (0..50)
            .map(|i| message_event(&format!("m{i}"), &["bob"]))
            .collect();
        let one = split(&events[0], &[&events[0].recipient_ids[0]]).len();
        // Room for about ten events per batch.
        let mut batches = Batches::new(10 * (one + 2));
        for (item, event) in events.iter().enumerate() {
            let bytes = split(event, &[&event.recipient_ids[0]]);
            batches.push("gw-a", item, &[&bytes]);
            if item % 2 == 0 {
                batches.push("gw-b", item, &[&bytes]);
            }
        }
        let batches = batches.finish();
        let mut seen_a = Vec::new();
        let mut seen_b = Vec::new();
        for batch in &batches {
            assert!(
                batch.bytes.len() <= 10 * (one + 2),
                "a batch exceeds the cap"
            );
            let decoded = decode_events(Some(EVENT_BATCH_TYPE), &batch.bytes, 1 << 20).unwrap();
            assert_eq!(decoded.len(), batch.events);
            assert_eq!(batch.items.len(), batch.events);
            let ids = decoded.iter().map(|e| match &e.payload {
                Some(Payload::Message(m)) => m.id.clone(),
                _ => String::new(),
            });
            match batch.routing_key.as_str() {
                "gw-a" => seen_a.extend(ids),
                _ => seen_b.extend(ids),
            }
        }
        assert!(batches.len() > 2, "the cap split the batches");
        let expected_a: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let expected_b: Vec<String> = (0..50).step_by(2).map(|i| format!("m{i}")).collect();
        assert_eq!(seen_a, expected_a, "per-key order is push order");
        assert_eq!(seen_b, expected_b);
    }

    #[test]
    fn an_event_larger_than_the_cap_travels_alone() {
        let big = vec![b'x'; 100];
        let mut batches = Batches::new(50);
        batches.push("gw", 0, &[&big]);
        batches.push("gw", 1, &[&big]);
        let batches = batches.finish();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].items, vec![0]);
        assert_eq!(batches[1].items, vec![1]);
    }

    #[test]
    fn a_single_event_without_the_type_still_decodes() {
        let event = Event {
            recipient_ids: vec!["bob".to_owned()],
            payload: Some(Payload::Receipt(Receipt::default())),
            ..Event::default()
        };
        let decoded = decode_events(None, &event.encode_to_vec(), 1024).unwrap();
        assert_eq!(decoded, vec![event]);
    }

    #[test]
    fn oversized_and_garbage_deliveries_are_errors() {
        assert!(matches!(
            decode_events(None, &[0u8; 2048], 1024),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(decode_events(Some(EVENT_BATCH_TYPE), &[0xff, 0xff, 0xff], 1024).is_err());
        assert!(decode_events(None, &[0x0a, 0x05, 0x01], 1024).is_err());
    }
}
