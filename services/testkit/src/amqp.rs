//! Listening where a gateway listens: a test declares an instance's queue exactly as a
//! gateway does and consumes it, to see what publishers routed to that instance.

use beehive_common::Settings;
use beehive_common::events::{Names, declare_gateway_queue};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

/// A consumer of one gateway instance's queue, with the connection that keeps it alive.
pub struct GatewayConsumer {
    /// Drop it and the consumer stops.
    pub connection: lapin::Connection,
    /// Deliveries are auto-acknowledged: tests only read.
    pub consumer: lapin::Consumer,
}

/// Declares the queue of gateway `instance` in the test's installation (as a gateway
/// would) and starts consuming it. Panics with the step that failed.
pub async fn consume_gateway_queue(settings: &Settings, instance: &str) -> GatewayConsumer {
    let connection = beehive_common::infra::connect_amqp(&settings.amqp_url)
        .await
        .expect("connect to the test RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    let queue = declare_gateway_queue(&channel, &Names::new(settings), instance)
        .await
        .expect("declare the gateway queue");
    let consumer = channel
        .basic_consume(
            queue.into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume the gateway queue");
    GatewayConsumer {
        connection,
        consumer,
    }
}
