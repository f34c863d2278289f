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
/// Units (one send, or the sends of one SendMessages call) waiting for a batch. The
/// gRPC server's in-flight limit bounds it first.
const QUEUE: usize = 1024;

struct Job {
    conversation_id: Uuid,
    message_id: Uuid,
    message: NewMessage,
    reply: oneshot::Sender<Result<SendOutcome, Error>>,
}

/// The entry point of sends.
#[derive(Clone)]
pub struct Sender {
    /// Units of jobs: the sends of one call travel together, so a collector never
    /// takes the first send of a call into one batch and the rest into the next (a
    /// gateway's call of 24 sends was stored as 1 + 23 when the collector, on the
    /// other core, woke between two of its sends).
    jobs: mpsc::Sender<Vec<Job>>,
}

impl Sender {
    /// Starts the collector with `workers` concurrent batches (each holds one database
    /// connection while it runs).
    pub fn start(store: Store, workers: usize, shutdown: Shutdown) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(collect(store, queue, workers.max(1), shutdown));
        Self { jobs }
    }

    /// Stores several messages (conversation, message id, message), all in the same
    /// batch when they fit; one outcome per send, in order.
    pub async fn send_all(
        &self,
        sends: Vec<(Uuid, Uuid, NewMessage)>,
    ) -> Vec<Result<SendOutcome, Error>> {
        if sends.is_empty() {
            return Vec::new();
        }
        let (jobs, answers): (Vec<Job>, Vec<_>) = sends
            .into_iter()
            .map(|(conversation_id, message_id, message)| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    conversation_id,
                    message_id,
                    message,
                    reply,
                };
                (job, answer)
            })
            .unzip();
        if self.jobs.send(jobs).await.is_err() {
            return answers.iter().map(|_| Err(stopped())).collect();
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.unwrap_or_else(|_| Err(stopped())));
        }
        outcomes
    }
}

fn stopped() -> Error {
    Error::Unavailable("the message service is shutting down".to_owned())
}

async fn collect(
    store: Store,
    mut queue: mpsc::Receiver<Vec<Job>>,
    workers: usize,
    shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(workers));
    // A unit that did not fit into the last batch starts the next one.
    let mut carried: Option<Vec<Job>> = None;
    loop {
        // A free worker first: while all are busy, jobs pile up into a bigger batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(unit) => Some(unit),
            None => tokio::select! {
                unit = queue.recv() => unit,
                () = shutdown.wait_owned() => None,
            },
        };
        let Some(first) = first else {
            return;
        };
        let (batch, rest) = fill(first, || queue.try_recv().ok(), MAX_BATCH);
        carried = rest;
        if batch.is_empty() {
            continue;
        }
        let store = store.clone();
        tokio::spawn(async move {
            run(&store, batch).await;
            drop(permit);
        });
    }
}

/// A batch: `first` and the units `next` has ready, whole, up to `max` items. A unit
/// that does not fit is returned to start the next batch (a unit is never split).
fn fill<T>(
    first: Vec<T>,
    mut next: impl FnMut() -> Option<Vec<T>>,
    max: usize,
) -> (Vec<T>, Option<Vec<T>>) {
    let mut batch = first;
    while batch.len() < max {
        match next() {
            Some(unit) if batch.len() + unit.len() <= max => batch.extend(unit),
            Some(unit) => return (batch, Some(unit)),
            None => break,
        }
    }
    (batch, None)
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

#[cfg(test)]
mod tests {
    use super::fill;

    fn queue(units: Vec<Vec<u32>>) -> impl FnMut() -> Option<Vec<u32>> {
        let mut units = units.into_iter();
        move || units.next()
    }

    #[test]
    fn a_batch_takes_whole_units_while_they_fit() {
        let (batch, rest) = fill(vec![1], queue(vec![vec![2, 3], vec![4]]), 8);
        assert_eq!(batch, vec![1, 2, 3, 4]);
        assert_eq!(rest, None);
    }

    #[test]
    fn a_unit_that_does_not_fit_starts_the_next_batch_whole() {
        let mut next = queue(vec![vec![3, 4, 5], vec![6]]);
        let (batch, rest) = fill(vec![1, 2], &mut next, 4);
        assert_eq!(batch, vec![1, 2]);
        assert_eq!(rest, Some(vec![3, 4, 5]));
        let (batch, rest) = fill(rest.unwrap_or_default(), &mut next, 4);
        assert_eq!(batch, vec![3, 4, 5, 6]);
        assert_eq!(rest, None);
    }

    #[test]
    fn a_full_batch_leaves_the_queue_alone() {
        let mut taken = 0;
        let next = || {
            taken += 1;
            Some(vec![9])
        };
        let (batch, rest) = fill(vec![1, 2], next, 2);
        assert_eq!((batch, rest), (vec![1, 2], None));
        assert_eq!(taken, 0);
    }
}
