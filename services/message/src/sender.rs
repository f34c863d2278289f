//! Group commit for sends: concurrent SendMessage calls are collected and stored by
//! [`Store::send_batch`] in one statement and one commit, so the WAL flush and the
//! statement overhead are paid per batch instead of per message.
//!
//! There is no waiting for a batch to fill: a collector takes whatever is queued when
//! a worker is free. At low load every send goes alone (no added latency); under load
//! sends queue while `workers` batches are in flight and the next batch is larger.
//!
//! Part of the service layer: [`crate::service`] hands sends here and turns a
//! [`SendOutcome::NotMember`] into the API's answer.

use std::sync::Arc;

use beehive_common::{Error, Shutdown};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::conversation::NewMessage;
use crate::store::{SendOutcome, Store};

/// Largest batch: one statement with this many rows stays well under a millisecond
/// per row of work and far from PostgreSQL's parameter limits (arrays are one each).
const MAX_BATCH: usize = crate::conversation::MAX_SEND_BATCH;
/// Sends waiting for a batch. The gRPC server's in-flight limit bounds it first.
const QUEUE: usize = 8192;

struct Job {
    conversation_id: Uuid,
    message_id: Uuid,
    message: NewMessage,
    reply: oneshot::Sender<Result<SendOutcome, Error>>,
}

/// The entry point of sends.
#[derive(Clone)]
pub struct Sender {
    jobs: mpsc::Sender<Job>,
}

impl Sender {
    /// Starts the collector with `workers` concurrent batches (each holds one database
    /// connection while it runs).
    pub fn start(store: Store, workers: usize, shutdown: Shutdown) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(collect(store, queue, workers.max(1), shutdown));
        Self { jobs }
    }

    /// Stores one message (in whichever batch it lands).
    pub async fn send(
        &self,
        conversation_id: Uuid,
        message_id: Uuid,
        message: NewMessage,
    ) -> Result<SendOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            conversation_id,
            message_id,
            message,
            reply,
        };
        let stopped = || Error::Unavailable("the message service is shutting down".to_owned());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn collect(store: Store, mut queue: mpsc::Receiver<Job>, workers: usize, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(workers));
    loop {
        // A free worker first: while all are busy, jobs pile up into a bigger batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = tokio::select! {
            job = queue.recv() => job,
            () = shutdown.wait_owned() => None,
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            run(&store, batch).await;
            drop(permit);
        });
    }
}

async fn run(store: &Store, batch: Vec<Job>) {
    metrics::histogram!("beehive_send_batch_size").record(batch.len() as f64);
    tracing::trace!(sends = batch.len(), "send batch");
    if batch.len() == 1 {
        for job in batch {
            let result = store
                .send(job.conversation_id, job.message_id, &job.message)
                .await
                .map_err(Error::from);
            let _ = job.reply.send(result);
        }
        return;
    }
    let sends: Vec<(Uuid, Uuid, &NewMessage)> = batch
        .iter()
        .map(|j| (j.conversation_id, j.message_id, &j.message))
        .collect();
    match store.send_batch(&sends).await {
        Ok(stored) => {
            let mut outcome: Vec<Option<SendOutcome>> = batch.iter().map(|_| None).collect();
            for (index, row) in stored {
                if let Some(slot) = outcome.get_mut(index) {
                    *slot = Some(SendOutcome::Stored(row));
                }
            }
            for (job, outcome) in batch.into_iter().zip(outcome) {
                let result = match outcome {
                    Some(stored) => Ok(stored),
                    // Not stored now: a duplicate (of an earlier send or of one in this
                    // batch) or not a member; resolve it like a single send does.
                    None => store.unsent(&job.message).await.map_err(Error::from),
                };
                let _ = job.reply.send(result);
            }
        }
        Err(error) => {
            // A concurrent duplicate or a deadlock victim: nothing was written; every
            // send of the batch is retried on its own.
            tracing::debug!(%error, sends = batch.len(), "batched send failed; sending one by one");
            let singles = batch.into_iter().map(|job| async move {
                let result = store
                    .send(job.conversation_id, job.message_id, &job.message)
                    .await
                    .map_err(Error::from);
                let _ = job.reply.send(result);
            });
            futures::future::join_all(singles).await;
        }
    }
}
