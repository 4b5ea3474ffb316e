//! What components see of a log: the [`Log`] and [`Subscription`] traits,
//! [`Record`], [`Acker`] and [`LogError`]. Nothing here assumes SQLite, but
//! for [`Log::appender`], which only a log in the writer's own SQLite
//! database gives.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use neurite_storage::StorageError;
use neurite_storage::sqlite::SqlitePool;

use crate::sqlite::SqliteAppender;

use crate::limits::{DEDUP_ID_BYTES_MAX, KEY_BYTES_MAX, NAME_BYTES_MAX, RECORD_BYTES_MAX};

/// Topic of events for the room server to check and store, keyed by room ID.
pub const INPUT_ROOM_EVENT: &str = "input.room_event";

/// Topic of what the room server decided (new events with their state
/// changes, invites, redactions), keyed by room ID.
pub const OUTPUT_ROOM_EVENT: &str = "output.room_event";

/// One entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the record sits in its topic: 1, 2, 3, ... in publish order, never reused.
    pub offset: u64,
    /// The ordering key the publisher gave (a room ID for the room event topics).
    pub key: String,
    /// The publisher's bytes, opaque to the log.
    pub payload: Vec<u8>,
}

/// One record to publish with [`Log::publish_batch`].
#[derive(Debug, Clone)]
pub struct PublishRecord {
    /// The ordering key (a room ID for the room event topics).
    pub key: String,
    /// The bytes to publish.
    pub payload: Vec<u8>,
    /// The de-duplication ID, as for [`Log::publish`].
    pub dedup_id: Option<String>,
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database behind the log failed; the operation may be retried.
    #[error("log storage: {0}")]
    Storage(#[from] StorageError),
    /// The payload is larger than [`RECORD_BYTES_MAX`].
    #[error("record payload of {bytes} bytes exceeds the {max}-byte limit")]
    RecordTooLarge {
        /// Size of the refused payload.
        bytes: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// A topic name, subscription name, key or de-duplication ID is empty,
    /// too long or has characters the log does not accept.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// Which argument was refused.
        what: &'static str,
        /// The value refused, truncated to a readable length.
        value: String,
    },
    /// An acknowledgement named an offset this subscription was never given
    /// by `next`; acknowledging it could skip records nobody processed.
    #[error("offset {offset} was not delivered to this subscription")]
    NotDelivered {
        /// The offset acknowledged.
        offset: u64,
    },
    /// The log or this subscription handle is closed: the log's writer is
    /// gone, or a newer `subscribe` with the same name (or an `unsubscribe`)
    /// replaced this handle. Stop consuming with it.
    #[error("log closed")]
    Closed,
}

/// An ordered, durable, at-least-once log of topics.
///
/// Writers publish records to a topic; readers consume them through durable
/// named subscriptions. Delivery is at-least-once: a consumer may see a record
/// again after a restart, so **consumers must be idempotent** (e.g. skip an
/// event they already stored).
#[async_trait]
pub trait Log: Send + Sync {
    /// Appends a record to `topic` durably and returns its offset.
    ///
    /// When this returns `Ok`, the record is committed (on SQLite with
    /// `synchronous=FULL`) and survives a power cut. All records with one
    /// `key` (a room ID) are delivered in the order their publishes completed;
    /// records published concurrently have no order among themselves.
    ///
    /// `dedup_id`: if a record with the same `(topic, dedup_id)` was published
    /// before and is still retained (NATS: within the stream's duplicate
    /// window), nothing is appended and the earlier record's offset is returned.
    /// A publisher that gives one may retry after an error or a cancellation
    /// without risk of a duplicate.
    ///
    /// Backpressure: waits while the topic's backlog (records published but
    /// not yet acknowledged by every subscription of the topic) is at the
    /// implementation's bound ([`crate::limits::BACKLOG_RECORDS_MAX`] by
    /// default). A topic with no subscription has no bound.
    ///
    /// Cancelling the returned future may still append the record.
    ///
    /// # Errors
    /// [`LogError::RecordTooLarge`] above [`RECORD_BYTES_MAX`],
    /// [`LogError::Invalid`] for a bad topic, key or `dedup_id`,
    /// [`LogError::Storage`] when the commit fails, [`LogError::Closed`] when
    /// the log is shut down.
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>, dedup_id: Option<&str>) -> Result<u64, LogError>;

    /// Publishes `records` to `topic` in order, as one [`Log::publish`] each
    /// but without waiting for one commit before sending the next, so an
    /// implementation can commit them together. Records with one key keep
    /// their order. Returns their offsets.
    ///
    /// # Errors
    /// As [`Log::publish`]; on an error some records may be appended (retry
    /// with the same de-duplication IDs).
    async fn publish_batch(&self, topic: &str, records: Vec<PublishRecord>) -> Result<Vec<u64>, LogError> {
        let mut offsets = Vec::with_capacity(records.len());
        for record in records {
            offsets.push(self.publish(topic, &record.key, record.payload, record.dedup_id.as_deref()).await?);
        }
        Ok(offsets)
    }

    /// [`Log::publish`] for a record whose publisher promises nobody
    /// anything until a durable result of it exists (the room server's
    /// verdict on an input, which its writer waits for): the log may commit
    /// it without waiting for the disk, durable with its next durable commit
    /// (on SQLite, [`neurite_storage::sqlite::SqlitePool::write_deferred`]).
    /// A power cut may lose it; it is then lost before anyone relied on it.
    /// Logs whose every publish is durable publish it as usual (the default).
    ///
    /// # Errors
    /// As [`Log::publish`].
    async fn publish_provisional(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        dedup_id: Option<&str>,
    ) -> Result<u64, LogError> {
        self.publish(topic, key, payload, dedup_id).await
    }

    /// For a writer whose transactions run on `pool`: if this log lives in
    /// that same database, an appender that puts records in the writer's own
    /// transaction (committed or undone with its rows; no outbox, no commit
    /// of their own). `None` (the default) for a log anywhere else: the
    /// writer then publishes after its commit.
    fn appender(&self, pool: &SqlitePool) -> Option<SqliteAppender> {
        let _ = pool;
        None
    }

    /// Opens the durable subscription `name` on `topic`, resuming after the
    /// records it acknowledged; a subscription never seen before starts at the
    /// first record the topic still holds, and from now on counts towards the
    /// topic's backlog.
    ///
    /// Opening a name that is already open replaces the earlier handle (a
    /// restart): that handle and its ackers then fail with [`LogError::Closed`],
    /// and records it was given but had not acknowledged are given again.
    ///
    /// # Errors
    /// [`LogError::Invalid`] for a bad name, [`LogError::Storage`].
    async fn subscribe(&self, topic: &str, name: &str) -> Result<Box<dyn Subscription>, LogError>;

    /// Deletes the durable subscription `name` on `topic`: its position is
    /// forgotten, it no longer holds back the topic's backlog or retention,
    /// and an open handle of it fails with [`LogError::Closed`]. For consumers
    /// that are retired or renamed; deleting a name that does not exist is `Ok`.
    ///
    /// # Errors
    /// [`LogError::Invalid`] for a bad name, [`LogError::Storage`].
    async fn unsubscribe(&self, topic: &str, name: &str) -> Result<(), LogError>;

    /// The offset of the last record committed to `topic` (0 if none): a
    /// reader that has applied up to it has seen everything published so far.
    ///
    /// # Errors
    /// [`LogError::Invalid`] for a bad topic name.
    async fn latest_offset(&self, topic: &str) -> Result<u64, LogError>;
}

/// One open durable subscription: a stream of records and their acknowledgements.
///
/// Reading and acknowledging are split so a consumer can read with one task
/// and acknowledge from many: [`Subscription::next`] takes `&mut self` (one
/// reader), while [`Subscription::acker`] hands out cheap cloneable [`Acker`]s
/// for worker tasks (the room server: one dispatcher calling `next`, one
/// worker per room acknowledging), with no lock around the whole subscription.
///
/// Acknowledgements may arrive in any order. The durable position is the
/// highest offset such that every record up to it is acknowledged; after a
/// restart, delivery resumes after it. So a restart redelivers every record
/// not acknowledged, and possibly acknowledged ones above the first gap:
/// consumers must be idempotent.
#[async_trait]
pub trait Subscription: Send {
    /// Waits until records this handle has not given out yet exist, and returns
    /// between 1 and `max` of them in offset order (`max` is clamped to
    /// `1..=SUBSCRIPTION_BATCH_RECORDS_MAX`, and a batch is cut at
    /// `SUBSCRIPTION_BATCH_BYTES_MAX`). Records of one key come in publish order.
    ///
    /// Cancel-safe: a cancelled call gives out nothing.
    ///
    /// # Errors
    /// [`LogError::Closed`] once the handle was replaced or unsubscribed,
    /// [`LogError::Storage`] when reading fails.
    async fn next(&mut self, max: usize) -> Result<Vec<Record>, LogError>;

    /// A handle that acknowledges records of this subscription, for other tasks.
    fn acker(&self) -> Acker;

    /// Acknowledges one record; the same as `self.acker().ack(offset)`.
    ///
    /// # Errors
    /// As [`Acker::ack`].
    async fn ack(&mut self, offset: u64) -> Result<(), LogError> {
        self.acker().ack(offset).await
    }
}

/// What an implementation does to acknowledge records; wrapped by [`Acker`].
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// Acknowledges the record at `offset`; see [`Acker::ack`].
    async fn ack(&self, offset: u64) -> Result<(), LogError>;

    /// Acknowledges every record in `offsets`; see [`Acker::ack_all`].
    async fn ack_all(&self, offsets: &[u64]) -> Result<(), LogError> {
        for offset in offsets {
            self.ack(*offset).await?;
        }
        Ok(())
    }
}

/// Acknowledges records of one subscription: cheap to clone, `Send + Sync`,
/// usable from any task while another task calls [`Subscription::next`].
#[derive(Clone)]
pub struct Acker {
    inner: Arc<dyn Acknowledge>,
}

impl Acker {
    /// Wraps an implementation's acknowledgement target.
    pub fn new(inner: Arc<dyn Acknowledge>) -> Self {
        Self { inner }
    }

    /// Acknowledges the record at `offset`, to be called after the consumer
    /// committed what it derived from the record. Acknowledging a record twice
    /// is `Ok`.
    ///
    /// Durability: when this returns `Ok`, the durable position (every record
    /// up to it acknowledged) is committed, including what this
    /// acknowledgement added to it. An acknowledgement above a gap (a record
    /// below it not yet acknowledged) is kept in memory until the gap closes.
    /// A crash therefore forgets at most acknowledgements above a gap, which
    /// means redelivery, never a lost record.
    ///
    /// # Errors
    /// [`LogError::NotDelivered`] for an offset this handle never gave out,
    /// [`LogError::Closed`] once the handle was replaced or unsubscribed,
    /// [`LogError::Storage`] when storing the position fails (the
    /// acknowledgement stays counted in memory; the next `ack` of any record,
    /// or a retry of this one, stores it).
    pub async fn ack(&self, offset: u64) -> Result<(), LogError> {
        self.inner.ack(offset).await
    }

    /// Acknowledges every record in `offsets` (a processed batch), storing
    /// the durable position once; otherwise as [`Acker::ack`]. On an error,
    /// the offsets before the failing one may be acknowledged.
    ///
    /// # Errors
    /// As [`Acker::ack`].
    pub async fn ack_all(&self, offsets: &[u64]) -> Result<(), LogError> {
        self.inner.ack_all(offsets).await
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker").finish_non_exhaustive()
    }
}

fn invalid(what: &'static str, value: &str) -> LogError {
    LogError::Invalid { what, value: value.chars().take(80).collect() }
}

/// Checks a topic name: 1 to [`NAME_BYTES_MAX`] bytes of `a-z 0-9 . _ -`.
pub(crate) fn check_topic(topic: &str) -> Result<(), LogError> {
    let ok = !topic.is_empty()
        && topic.len() <= NAME_BYTES_MAX
        && topic.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(invalid("topic", topic)) }
}

/// Checks a subscription name: 1 to [`NAME_BYTES_MAX`] bytes of
/// `A-Z a-z 0-9 _ -` (no `.`, which NATS durable consumer names forbid).
pub(crate) fn check_subscription_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok { Ok(()) } else { Err(invalid("subscription name", name)) }
}

/// Checks what a publish carries besides the topic.
pub(crate) fn check_record(key: &str, payload: &[u8], dedup_id: Option<&str>) -> Result<(), LogError> {
    if payload.len() > RECORD_BYTES_MAX {
        return Err(LogError::RecordTooLarge { bytes: payload.len(), max: RECORD_BYTES_MAX });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(invalid("key", key));
    }
    if let Some(id) = dedup_id
        && (id.is_empty() || id.len() > DEDUP_ID_BYTES_MAX)
    {
        return Err(invalid("dedup_id", id));
    }
    Ok(())
}
