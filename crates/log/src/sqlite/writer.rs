//! The writer task: commits queued publishes, many per transaction.
//!
//! Publishers queue a [`PublishRequest`] and wait for its answer. The task
//! takes every request already queued (up to the batch limits), appends them
//! in one write transaction, and only after the commit raises each topic's
//! last committed offset and answers. One fsync then covers a whole batch,
//! which is where publish throughput comes from.

use std::collections::HashMap;
use std::sync::Arc;

use neurite_storage::sqlite::SqlitePool;
use neurite_storage::{StorageError, now_ms};
use rusqlite::{OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::{Reservation, Topic, to_offset};
use crate::api::LogError;
use crate::limits::{PUBLISH_BATCH_BYTES_MAX, PUBLISH_BATCH_RECORDS_MAX};

/// One publish waiting for the writer task.
pub(crate) struct PublishRequest {
    pub(crate) topic: Arc<Topic>,
    pub(crate) key: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) dedup_id: Option<String>,
    pub(crate) reply: oneshot::Sender<Result<u64, LogError>>,
    /// Released when the request is dropped, after its answer is sent.
    pub(crate) reservation: Reservation,
}

/// A record as the append transaction needs it.
struct Row {
    topic: String,
    key: String,
    payload: Vec<u8>,
    dedup_id: Option<String>,
}

/// Commits queued publishes until every sender is dropped and the queue is empty.
pub(crate) async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<PublishRequest>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < PUBLISH_BATCH_RECORDS_MAX && bytes < PUBLISH_BATCH_BYTES_MAX {
            let Ok(request) = queue.try_recv() else { break };
            bytes += request.payload.len();
            batch.push(request);
        }
        commit(&pool, batch).await;
    }
}

/// Appends `batch` in one transaction and answers each request. If the
/// transaction fails, each record is retried in a transaction of its own,
/// so one bad record fails only its own publish and each gets its own error.
async fn commit(pool: &SqlitePool, mut batch: Vec<PublishRequest>) {
    let rows: Arc<Vec<Row>> = Arc::new(
        batch
            .iter_mut()
            .map(|r| Row {
                topic: r.topic.name.clone(),
                key: std::mem::take(&mut r.key),
                payload: std::mem::take(&mut r.payload),
                dedup_id: r.dedup_id.take(),
            })
            .collect(),
    );
    let all = rows.clone();
    match pool.write(move |tx| append(tx, &all)).await {
        Ok(offsets) => {
            for (request, offset) in batch.into_iter().zip(offsets) {
                answer(request, Ok(offset));
            }
        }
        Err(error) if batch.len() == 1 => {
            tracing::error!(%error, "log publish failed");
            answer(batch.pop().expect("the batch has one request"), Err(error.into()));
        }
        Err(error) => {
            tracing::warn!(%error, records = batch.len(), "log publish batch failed, retrying one by one");
            for (index, request) in batch.into_iter().enumerate() {
                let rows = rows.clone();
                let result = pool.write(move |tx| append(tx, &rows[index..=index])).await;
                let result = result.map(|offsets| offsets[0]).map_err(|error| {
                    tracing::error!(%error, "log publish failed");
                    LogError::from(error)
                });
                answer(request, result);
            }
        }
    }
}

/// Makes a committed record visible to readers, then answers its publisher.
fn answer(request: PublishRequest, result: Result<u64, LogError>) {
    let PublishRequest { topic, reply, reservation, .. } = request;
    if let Ok(offset) = result {
        topic.committed(offset);
    }
    // The publisher may have given up waiting; the record stays committed.
    let _ = reply.send(result);
    // Invariant: released after `committed`, so the backlog never
    // undercounts: the record is in `latest` before it leaves `reserved`.
    drop(reservation);
}

/// Appends `rows` in `tx` and returns each one's offset (the earlier record's
/// for a repeated de-duplication ID). Offsets continue from `log_topics`.
fn append(tx: &Transaction<'_>, rows: &[Row]) -> Result<Vec<u64>, StorageError> {
    let now = now_ms() as i64;
    let mut last_offsets: HashMap<&str, u64> = HashMap::new();
    let mut offsets = Vec::with_capacity(rows.len());
    let mut find_dedup = tx.prepare_cached("SELECT offset FROM log_records WHERE topic = ?1 AND dedup_id = ?2")?;
    let mut find_last = tx.prepare_cached("SELECT last_offset FROM log_topics WHERE topic = ?1")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO log_records (topic, offset, key, payload, dedup_id, created_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for row in rows {
        if let Some(dedup_id) = &row.dedup_id {
            // Invariant: earlier rows of this batch are visible here, so a
            // dedup ID repeated within one batch is appended once too.
            let earlier: Option<i64> = find_dedup.query_row((&row.topic, dedup_id), |r| r.get(0)).optional()?;
            if let Some(earlier) = earlier {
                offsets.push(to_offset(earlier)?);
                continue;
            }
        }
        let last = match last_offsets.get_mut(row.topic.as_str()) {
            Some(last) => last,
            None => {
                let stored: Option<i64> = find_last.query_row([&row.topic], |r| r.get(0)).optional()?;
                last_offsets.entry(&row.topic).or_insert(to_offset(stored.unwrap_or(0))?)
            }
        };
        *last += 1;
        insert.execute(params![row.topic, *last as i64, row.key, row.payload, row.dedup_id, now])?;
        offsets.push(*last);
    }
    let mut store_last = tx.prepare_cached(
        "INSERT INTO log_topics (topic, last_offset) VALUES (?1, ?2)
         ON CONFLICT (topic) DO UPDATE SET last_offset = excluded.last_offset",
    )?;
    for (topic, last) in last_offsets {
        store_last.execute((topic, last as i64))?;
    }
    Ok(offsets)
}
