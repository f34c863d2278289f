//! Sends leave the gateway in batches: the `send` frames and POST /messages of all
//! sockets that arrive while earlier calls are in flight travel together in one
//! SendMessages call, instead of one gRPC call each (per message, a call's HTTP/2
//! framing, headers and buffers cost more CPU on both sides than storing the message).
//!
//! There is no waiting for a batch to fill: a collector takes whatever is queued when
//! one of [`CALLS_IN_FLIGHT`] calls is free. At low load every send goes alone (no
//! added latency); under load sends queue while the calls are in flight and the next
//! call carries more. Each send still gets its own answer: its stored message or the
//! error its own SendMessage call would have returned.

use std::sync::Arc;

use beehive_common::Error;
use beehive_common::grpc::{ClientChannel, Retry};
use beehive_proto::v1 as pb;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::send_result::Result as SendResult;
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clients::{broken_is_unavailable, retried};

/// Sends per call: the message service's limit.
pub const MAX_SENDS_PER_CALL: usize = 256;
/// A call stops taking sends past this many encoded bytes (the message service
/// accepts 4 MiB; one send is at most 16 KiB of content).
const MAX_CALL_BYTES: usize = 1 << 20;
/// Concurrent SendMessages calls of one gateway.
pub const CALLS_IN_FLIGHT: usize = 8;
/// Sends waiting for a call. Sockets' own in-flight limits bound it first.
const QUEUE: usize = 8192;

/// Where one send's answer goes.
type Reply = oneshot::Sender<Result<pb::SendMessageResponse, Error>>;

struct Job {
    request: pb::SendMessageRequest,
    reply: Reply,
}

/// The entry point of the gateway's sends; cheap to clone.
#[derive(Clone)]
pub struct SendBatcher {
    jobs: mpsc::Sender<Job>,
}

impl SendBatcher {
    /// Starts the collector (a task that ends once every clone of this value is gone).
    pub fn start(client: MessageServiceClient<ClientChannel>, retry: Retry) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(collect(client, retry, queue));
        Self { jobs }
    }

    /// Stores one message, in whichever call it lands.
    pub async fn send(
        &self,
        request: pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, Error> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::Unavailable("the gateway is shutting down".to_owned());
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn collect(
    client: MessageServiceClient<ClientChannel>,
    retry: Retry,
    mut queue: mpsc::Receiver<Job>,
) {
    let permits = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    loop {
        // A free call first: while all are busy, sends pile up into a bigger one.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut bytes = first.request.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_SENDS_PER_CALL && bytes < MAX_CALL_BYTES {
            match queue.try_recv() {
                Ok(job) => {
                    bytes += job.request.encoded_len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (client, retry) = (client.clone(), retry.clone());
        tokio::spawn(async move {
            call(client, retry, batch).await;
            drop(permit);
        });
    }
}

/// One SendMessages call for `batch`, answering each send. Sends are idempotent
/// (deduplicated by `client_msg_id`), so the call is retried when the service is
/// unavailable.
async fn call(client: MessageServiceClient<ClientChannel>, retry: Retry, batch: Vec<Job>) {
    metrics::histogram!("beehive_gateway_send_call_size").record(batch.len() as f64);
    let (sends, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|j| (j.request, j.reply)).unzip();
    let request = pb::SendMessagesRequest { sends };
    let result = retry
        .idempotent(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                client
                    .send_messages(request)
                    .await
                    .map_err(broken_is_unavailable)
            }
        })
        .await;
    match result {
        Ok(response) => answer_each(replies, response.into_inner().results),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            // A message service older than this gateway (during a rolling upgrade):
            // one SendMessage call per send.
            let singles = request.sends.into_iter().zip(replies).map(|(send, reply)| {
                let client = client.clone();
                let call = retried(&retry, send, move |send| {
                    let mut client = client.clone();
                    async move { client.send_message(send).await }
                });
                async move {
                    let _ = reply.send(call.await);
                }
            });
            futures::future::join_all(singles).await;
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(Error::from_status(&status)));
            }
        }
    }
}

/// Hands each send its result; a malformed answer fails the sends it does not cover.
fn answer_each(replies: Vec<Reply>, results: Vec<pb::SendResult>) {
    let complete = results.len() == replies.len();
    let mut results = results.into_iter();
    for reply in replies {
        let answer = match results.next().and_then(|r| r.result).filter(|_| complete) {
            Some(SendResult::Sent(sent)) => Ok(sent),
            Some(SendResult::Error(status)) => Err(Error::from_item_status(status)),
            None => Err(Error::internal(
                "SendMessages answered a different number of sends",
            )),
        };
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beehive_common::ErrorCode;

    fn sent(seq: u64) -> pb::SendResult {
        pb::SendResult {
            result: Some(SendResult::Sent(pb::SendMessageResponse {
                message: Some(pb::Message {
                    seq,
                    ..Default::default()
                }),
                duplicate: false,
            })),
        }
    }

    type Answer = oneshot::Receiver<Result<pb::SendMessageResponse, Error>>;

    fn replies(n: usize) -> (Vec<Reply>, Vec<Answer>) {
        (0..n).map(|_| oneshot::channel()).unzip()
    }

    #[test]
    fn each_send_gets_its_own_result_in_order() {
        let (tx, mut rx) = replies(3);
        let failed = pb::SendResult {
            result: Some(SendResult::Error(
                Error::PermissionDenied("not a member".into()).into_item_status(),
            )),
        };
        answer_each(tx, vec![sent(1), failed, sent(2)]);
        let seq = |r: Result<pb::SendMessageResponse, Error>| {
            r.ok().and_then(|s| s.message).map(|m| m.seq)
        };
        assert_eq!(seq(rx[0].try_recv().expect("answered")), Some(1));
        let error = rx[1].try_recv().expect("answered").expect_err("failed");
        assert_eq!(error.code(), ErrorCode::PermissionDenied);
        assert_eq!(error.public_message(), "not a member");
        assert_eq!(seq(rx[2].try_recv().expect("answered")), Some(2));
    }

    #[test]
    fn an_answer_of_the_wrong_length_fails_every_send() {
        let (tx, mut rx) = replies(2);
        answer_each(tx, vec![sent(1)]);
        for r in &mut rx {
            let error = r.try_recv().expect("answered").expect_err("failed");
            assert_eq!(error.code(), ErrorCode::Internal);
        }
    }
}
