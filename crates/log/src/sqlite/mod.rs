//! The in-process log on the embedded SQLite database.
//!
//! Records and subscription positions live in `log_*` tables of the shared
//! database; everything else is in memory and rebuilt at open:
//! - per topic, a `watch` carrying the last committed offset, which wakes
//!   waiting `next` calls (no polling, no sleeps);
//! - per topic, each subscription's position (in memory it may run ahead of
//!   the stored one, see [`subscription`]) and a `Notify` that acknowledgements
//!   signal, on which publishers wait while the backlog is full;
//! - nothing else: publishes are writes on the shared pool, whose writer
//!   thread commits every write queued meanwhile together (group commit).
//!
//! Invariant: one process owns the log. Another process writing the tables
//! would not wake this one's subscribers or count towards its backlog.

mod append;
mod subscription;

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use neurite_storage::sqlite::{Durability, SqlitePool};
use neurite_storage::{Migration, StorageError};
use rusqlite::Transaction;
use tokio::sync::{Notify, watch};

use crate::api::{
    Log, LogError, PublishRecord, Record, Subscription, check_record, check_subscription_name, check_topic,
};
use crate::limits::{BACKLOG_RECORDS_MAX, PRUNE_BATCH_RECORDS_MAX, RECENT_BYTES_MAX, RECENT_RECORDS_MAX};
pub use append::{Appended, SqliteAppender};
use subscription::SubscriptionShared;

static MIGRATIONS: &[Migration] = &[
    ("0001_create_log", include_str!("../../migrations/sqlite/0001_create_log.sql")),
    ("0002_records_table_per_topic", include_str!("../../migrations/sqlite/0002_records_table_per_topic.sql")),
];

/// The in-process, durable log on an SQLite pool: cheap to clone.
///
/// Backpressure counts the subscriptions stored for a topic, open in this
/// process or not: a topic's records are kept for each of them, so a
/// subscription whose consumer is gone for good must be removed with
/// [`Log::unsubscribe`]. A topic with no subscription has no bound (nothing
/// would ever acknowledge its records); so the server must open its
/// subscriptions before it accepts requests, which bounds the input topic
/// from the first publish on. The first subscription ever opened on a topic
/// starts at its oldest record, so nothing published before it is missed.
#[derive(Clone)]
pub struct SqliteLog {
    shared: Arc<Shared>,
}

/// What every clone of one log shares.
pub(crate) struct Shared {
    pool: SqlitePool,
    backlog_records_max: u64,
    // Topics are few and named in code: the map grows only with the names used.
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    // Serialises subscribe and unsubscribe, so the stored subscriptions and
    // the in-memory ones cannot disagree after two concurrent calls.
    subscriptions_lock: tokio::sync::Mutex<()>,
}

/// The in-memory side of one topic.
pub(crate) struct Topic {
    name: String,
    /// The last committed offset. Invariant: updated only after the commit
    /// that appended the record, so a reader woken by it finds the record.
    latest: watch::Sender<u64>,
    state: Mutex<TopicState>,
    /// Signalled whenever the backlog may have shrunk: a position advanced, a
    /// reservation ended, a subscription opened or was removed.
    space: Notify,
    /// The records committed last, by offset (at most `RECENT_RECORDS_MAX`
    /// and `RECENT_BYTES_MAX`): readers take them from here. Invariant: only
    /// committed records enter; a missing offset means "read the database".
    recent: Mutex<Recent>,
}

/// See [`Topic::recent`].
#[derive(Default)]
struct Recent {
    records: BTreeMap<u64, Record>,
    bytes: usize,
}

#[derive(Default)]
struct TopicState {
    /// Publishes admitted past the backlog check but not yet committed.
    reserved: u64,
    /// Every stored subscription of the topic, by name.
    subscriptions: HashMap<String, SubscriptionSlot>,
}

struct SubscriptionSlot {
    /// Every record up to here is acknowledged (in memory; at least the stored position).
    position: u64,
    /// The handle that owns the name in this process, if one was opened.
    /// Weak: the handle holds its topic, so a strong reference here would
    /// be a cycle keeping both (and the pool) alive after the log is dropped.
    open: Weak<SubscriptionShared>,
}

impl TopicState {
    /// Records published or admitted but not acknowledged by the slowest
    /// subscription; `None` without subscriptions (no bound).
    fn backlog(&self, latest: u64) -> Option<u64> {
        let slowest = self.subscriptions.values().map(|s| s.position).min()?;
        Some((latest + self.reserved).saturating_sub(slowest))
    }
}

/// A publish admitted under the backlog bound; dropping it (after the commit,
/// or if the publish is abandoned) gives the room back.
pub(crate) struct Reservation {
    topic: Arc<Topic>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.topic.state).reserved -= 1;
        self.topic.space.notify_waiters();
    }
}

/// Locks a mutex that guards plain bookkeeping: a panic elsewhere cannot
/// leave it half-updated in a way later code relies on, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Topic {
    fn new(name: String, latest: u64) -> Self {
        Self {
            name,
            latest: watch::Sender::new(latest),
            state: Mutex::new(TopicState::default()),
            space: Notify::new(),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Keeps committed `records` for readers, dropping the oldest beyond the bounds.
    fn remember(&self, records: impl IntoIterator<Item = Record>) {
        let mut recent = lock(&self.recent);
        for record in records {
            recent.bytes += record.payload.len();
            if let Some(replaced) = recent.records.insert(record.offset, record) {
                recent.bytes -= replaced.payload.len();
            }
        }
        while recent.records.len() > RECENT_RECORDS_MAX || recent.bytes > RECENT_BYTES_MAX {
            let Some((_, oldest)) = recent.records.pop_first() else { break };
            recent.bytes -= oldest.payload.len();
        }
    }

    /// Drops kept records through `offset` (pruned from the database):
    /// memory never holds a record the database no longer has.
    fn forget_through(&self, offset: u64) {
        let mut recent = lock(&self.recent);
        let kept = recent.records.split_off(&(offset + 1));
        let dropped = std::mem::replace(&mut recent.records, kept);
        recent.bytes -= dropped.values().map(|r| r.payload.len()).sum::<usize>();
    }

    /// The records after `after` up to `through` (at most `max`, and at most
    /// `bytes_max` payload bytes but at least one), if memory holds every one
    /// of them; `None`: read the database.
    fn recall(&self, after: u64, through: u64, max: usize, bytes_max: usize) -> Option<Vec<Record>> {
        let recent = lock(&self.recent);
        let (mut records, mut bytes, mut expected) = (Vec::new(), 0, after + 1);
        for (&offset, record) in recent.records.range(expected..=through) {
            if records.len() == max || (!records.is_empty() && bytes + record.payload.len() > bytes_max) {
                // A full batch: the rest comes with the next call.
                return Some(records);
            }
            if offset != expected {
                return None;
            }
            bytes += record.payload.len();
            records.push(record.clone());
            expected += 1;
        }
        (expected > through && !records.is_empty()).then_some(records)
    }

    /// Admits one publish now if the backlog is under `max`.
    fn try_reserve(self: &Arc<Self>, max: u64) -> Option<Reservation> {
        let mut state = lock(&self.state);
        let latest = *self.latest.borrow();
        if state.backlog(latest).is_none_or(|backlog| backlog < max) {
            state.reserved += 1;
            return Some(Reservation { topic: self.clone() });
        }
        None
    }

    /// Waits until the backlog is under `max`, then admits one publish.
    async fn reserve(self: &Arc<Self>, max: u64) -> Reservation {
        loop {
            let mut space = pin!(self.space.notified());
            // Registered before the check, so a signal between the check and
            // the await is not missed.
            space.as_mut().enable();
            if let Some(reservation) = self.try_reserve(max) {
                return reservation;
            }
            space.await;
        }
    }

    /// Makes committed `records` readable: keeps them in memory, then raises
    /// the last committed offset to the highest and wakes waiting readers.
    fn announce(&self, records: Vec<Record>) {
        let Some(last) = records.iter().map(|r| r.offset).max() else { return };
        self.remember(records);
        self.committed(last);
    }

    /// Raises the last committed offset to `offset` and wakes waiting readers.
    fn committed(&self, offset: u64) {
        self.latest.send_if_modified(|latest| {
            let raised = offset > *latest;
            if raised {
                *latest = offset;
            }
            raised
        });
    }
}

impl Shared {
    /// The topic named `name`, created empty if this is its first use.
    fn topic(&self, name: &str) -> Arc<Topic> {
        lock(&self.topics).entry(name.to_owned()).or_insert_with(|| Arc::new(Topic::new(name.to_owned(), 0))).clone()
    }
}

impl SqliteLog {
    /// Runs the log's migrations on `pool` and loads its topics, with the
    /// default backlog bound [`BACKLOG_RECORDS_MAX`].
    ///
    /// # Errors
    /// A migration or the loading query fails.
    pub async fn open(pool: SqlitePool) -> Result<Self, LogError> {
        Self::with_backlog_max(pool, BACKLOG_RECORDS_MAX).await
    }

    /// As [`SqliteLog::open`], bounding each topic's backlog at
    /// `backlog_records_max` records (at least 1).
    ///
    /// # Errors
    /// A migration or the loading query fails.
    pub async fn with_backlog_max(pool: SqlitePool, backlog_records_max: u64) -> Result<Self, LogError> {
        pool.migrate("log", MIGRATIONS).await?;
        pool.write(append::move_records_of_0001).await?;
        let (topics, subscriptions) = pool
            .read(|tx| {
                let numbered = tx
                    .prepare("SELECT topic, topic_nid, last_offset FROM log_topics")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut topics = Vec::with_capacity(numbered.len());
                for (topic, nid, kept) in numbered {
                    let highest = append::edge_offset(tx, nid, true)?.unwrap_or(0);
                    topics.push((topic, to_offset(kept)?.max(highest)));
                }
                let subscriptions = tx
                    .prepare("SELECT topic, name, acked_offset FROM log_subscriptions")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StorageError>((topics, subscriptions))
            })
            .await?;
        let mut map: HashMap<String, Arc<Topic>> = HashMap::new();
        for (name, last_offset) in topics {
            map.insert(name.clone(), Arc::new(Topic::new(name, last_offset)));
        }
        for (topic, name, acked) in subscriptions {
            let topic = map.entry(topic.clone()).or_insert_with(|| Arc::new(Topic::new(topic, 0)));
            lock(&topic.state)
                .subscriptions
                .insert(name, SubscriptionSlot { position: to_offset(acked)?, open: Weak::new() });
        }
        let shared = Arc::new(Shared {
            pool,
            backlog_records_max: backlog_records_max.max(1),
            topics: Mutex::new(map),
            subscriptions_lock: tokio::sync::Mutex::new(()),
        });
        Ok(Self { shared })
    }

    /// Appends `records` to `topic` in one write with `durability`, in order,
    /// within the backlog bound: when the bound admits no more, the records
    /// admitted so far are committed first (so acknowledgements can free
    /// room), then the rest wait.
    async fn append_batch(
        &self,
        topic: &str,
        records: Vec<PublishRecord>,
        durability: Durability,
    ) -> Result<Vec<u64>, LogError> {
        check_topic(topic)?;
        for record in &records {
            check_record(&record.key, &record.payload, record.dedup_id.as_deref())?;
        }
        let topic = self.shared.topic(topic);
        let max = self.shared.backlog_records_max;
        let mut offsets = Vec::with_capacity(records.len());
        let (mut admitted, mut reservations) = (Vec::new(), Vec::new());
        for record in records {
            let reservation = match topic.try_reserve(max) {
                Some(reservation) => reservation,
                None => {
                    self.commit(&topic, std::mem::take(&mut admitted), &mut reservations, durability, &mut offsets)
                        .await?;
                    topic.reserve(max).await
                }
            };
            admitted.push(record);
            reservations.push(reservation);
        }
        self.commit(&topic, admitted, &mut reservations, durability, &mut offsets).await?;
        Ok(offsets)
    }

    /// [`Self::append_batch`] of one record; returns its offset.
    async fn append_one(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        dedup_id: Option<&str>,
        durability: Durability,
    ) -> Result<u64, LogError> {
        let record = PublishRecord { key: key.to_owned(), payload, dedup_id: dedup_id.map(str::to_owned) };
        let offsets = self.append_batch(topic, vec![record], durability).await?;
        Ok(offsets[0])
    }

    /// One write appending `records`; then raises the topic's committed
    /// offset and releases their reservations.
    async fn commit(
        &self,
        topic: &Arc<Topic>,
        records: Vec<PublishRecord>,
        reservations: &mut Vec<Reservation>,
        durability: Durability,
        offsets: &mut Vec<u64>,
    ) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let name = topic.name.clone();
        let result = self
            .shared
            .pool
            .write_with(durability, move |tx| append::append(tx, &name, &records).map(|offsets| (offsets, records)))
            .await;
        let appended = result.map(|(offsets, records)| {
            topic.announce(append::new_records(&offsets, records));
            offsets
        });
        // Invariant: released after `announce`, so the backlog never
        // undercounts: a record is in `latest` before it leaves `reserved`.
        reservations.clear();
        offsets.extend(appended?.into_iter().map(|(offset, _)| offset));
        Ok(())
    }

    /// Deletes the records of `topic` that every stored subscription has
    /// acknowledged (by its stored position, so a crash can never need a
    /// deleted record) and returns how many it deleted. A topic without
    /// subscriptions keeps its records, for the first subscriber. Safe to
    /// call at any time, e.g. periodically; offsets are never reused.
    ///
    /// # Errors
    /// [`LogError::Invalid`] for a bad topic, [`LogError::Storage`].
    pub async fn prune(&self, topic: &str) -> Result<u64, LogError> {
        check_topic(topic)?;
        let started = std::time::Instant::now();
        let mut deleted = 0;
        let kept = self.shared.topic(topic);
        // Bounded: each pass deletes the oldest record and up to
        // PRUNE_BATCH_RECORDS_MAX offsets after it, until it reaches the
        // acknowledged position.
        loop {
            let topic = topic.to_owned();
            // Deferred: a power cut that undoes a deletion leaves records
            // the next pass deletes again; one that keeps it kept the
            // positions it read too (committed before it, in one log).
            let (count, upto, done) =
                self.shared.pool.write_deferred(move |tx| prune_step(tx, &topic, PRUNE_BATCH_RECORDS_MAX)).await?;
            kept.forget_through(upto);
            deleted += count;
            if done {
                break;
            }
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(topic, deleted, elapsed_ms, "pruned log records");
        Ok(deleted)
    }
}

/// Deletes, in `tx`, up to `max` of `topic`'s oldest records that every
/// stored subscription has acknowledged (their stored positions, read in
/// `tx`); returns how many it deleted, the offset it deleted through (0 for
/// none) and whether nothing acknowledged is left (`max` below 1 counts as
/// 1). When it deletes the topic's highest record, the last offset is kept
/// in `log_topics` in the same transaction, so offsets are never reused.
pub(crate) fn prune_step(tx: &Transaction<'_>, topic: &str, max: u64) -> Result<(u64, u64, bool), StorageError> {
    let acked: Option<i64> = tx
        .prepare_cached("SELECT MIN(acked_offset) FROM log_subscriptions WHERE topic = ?1")?
        .query_row([topic], |r| r.get(0))?;
    let Some((nid, last)) = append::last_offset(tx, topic)? else { return Ok((0, 0, true)) };
    let first = append::edge_offset(tx, nid, false)?;
    let (Some(acked), Some(first)) = (acked, first) else { return Ok((0, 0, true)) };
    let acked = to_offset(acked)?;
    if first > acked {
        return Ok((0, 0, true));
    }
    let upto = acked.min(first.saturating_add(max.saturating_sub(1)));
    // Only a deletion of the highest record loses the last offset: below
    // it, appends go on from the record that stays (and the acknowledgement
    // writes that prune, most of them, skip this row's page).
    if upto >= last {
        append::remember_last_offset(tx, topic, last)?;
    }
    let count = tx
        .prepare_cached(&format!("DELETE FROM {} WHERE offset <= ?1", append::records_table(nid)))?
        .execute([upto as i64])?;
    Ok((count as u64, upto, upto == acked))
}

/// An offset read back from the database, which stores them as `INTEGER`.
fn to_offset(value: i64) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| StorageError::Corrupt(format!("negative log offset {value}")))
}

#[async_trait]
impl Log for SqliteLog {
    async fn latest_offset(&self, topic: &str) -> Result<u64, LogError> {
        check_topic(topic)?;
        Ok(*self.shared.topic(topic).latest.borrow())
    }

    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>, dedup_id: Option<&str>) -> Result<u64, LogError> {
        self.append_one(topic, key, payload, dedup_id, Durability::Full).await
    }

    async fn publish_batch(&self, topic: &str, records: Vec<PublishRecord>) -> Result<Vec<u64>, LogError> {
        self.append_batch(topic, records, Durability::Full).await
    }

    async fn publish_provisional(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        dedup_id: Option<&str>,
    ) -> Result<u64, LogError> {
        self.append_one(topic, key, payload, dedup_id, Durability::Deferred).await
    }

    fn appender(&self, pool: &SqlitePool) -> Option<SqliteAppender> {
        pool.same_pool(&self.shared.pool).then(|| SqliteAppender { shared: self.shared.clone() })
    }

    async fn subscribe(&self, topic: &str, name: &str) -> Result<Box<dyn Subscription>, LogError> {
        check_topic(topic)?;
        check_subscription_name(name)?;
        let _serial = self.shared.subscriptions_lock.lock().await;
        let (topic_name, sub_name) = (topic.to_owned(), name.to_owned());
        let acked = self
            .shared
            .pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO log_subscriptions (topic, name, acked_offset) VALUES (?1, ?2, 0)
                     ON CONFLICT (topic, name) DO NOTHING",
                    (&topic_name, &sub_name),
                )?;
                let acked: i64 = tx.query_row(
                    "SELECT acked_offset FROM log_subscriptions WHERE topic = ?1 AND name = ?2",
                    (&topic_name, &sub_name),
                    |r| r.get(0),
                )?;
                to_offset(acked)
            })
            .await?;
        let topic = self.shared.topic(topic);
        let shared = Arc::new(SubscriptionShared::new(topic.clone(), name.to_owned(), self.shared.pool.clone(), acked));
        let replaced = {
            let mut state = lock(&topic.state);
            let slot = SubscriptionSlot { position: acked, open: Arc::downgrade(&shared) };
            let replaced = state.subscriptions.insert(name.to_owned(), slot).and_then(|slot| slot.open.upgrade());
            // Invariant: a handle is closed under the topic lock, where its
            // acknowledgements update the slot, so a replaced handle never
            // moves its successor's position.
            if let Some(old) = &replaced {
                old.mark_closed();
            }
            replaced
        };
        if let Some(old) = replaced {
            old.wake_closed();
        }
        topic.space.notify_waiters();
        tracing::debug!(topic = %topic.name, subscription = name, position = acked, "log subscription opened");
        Ok(Box::new(subscription::SqliteSubscription::new(shared, topic.latest.subscribe())))
    }

    async fn unsubscribe(&self, topic: &str, name: &str) -> Result<(), LogError> {
        check_topic(topic)?;
        check_subscription_name(name)?;
        let _serial = self.shared.subscriptions_lock.lock().await;
        let (topic_name, sub_name) = (topic.to_owned(), name.to_owned());
        self.shared
            .pool
            .write(move |tx| {
                tx.execute("DELETE FROM log_subscriptions WHERE topic = ?1 AND name = ?2", (&topic_name, &sub_name))?;
                Ok::<_, StorageError>(())
            })
            .await?;
        let topic = self.shared.topic(topic);
        let removed = {
            let mut state = lock(&topic.state);
            let removed = state.subscriptions.remove(name).and_then(|slot| slot.open.upgrade());
            if let Some(old) = &removed {
                old.mark_closed();
            }
            removed
        };
        if let Some(old) = removed {
            old.wake_closed();
        }
        topic.space.notify_waiters();
        tracing::debug!(topic = %topic.name, subscription = name, "log subscription removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upgrading_to_0002_keeps_records_offsets_positions_and_dedup_ids() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        pool.migrate("log", &MIGRATIONS[..1]).await.unwrap();
        // The 0001 shape: the input topic pruned through 2 (its last offset
        // kept), the output topic whole, one topic pruned empty.
        pool.write(|tx| {
            tx.execute_batch(
                "INSERT INTO log_topics (topic, last_offset) VALUES ('input.room_event', 2), ('empty', 7);
                 INSERT INTO log_records (topic, offset, key, payload, dedup_id, created_ts) VALUES
                     ('input.room_event', 3, '!a:x', x'33', NULL, 1),
                     ('input.room_event', 4, '!a:x', x'34', '$dup', 1),
                     ('output.room_event', 1, '!a:x', x'6f31', NULL, 1),
                     ('output.room_event', 2, '!b:x', x'6f32', '$dup', 1);
                 INSERT INTO log_subscriptions (topic, name, acked_offset) VALUES
                     ('input.room_event', 'reader', 2), ('output.room_event', 'reader', 0);",
            )
            .map_err(StorageError::from)
        })
        .await
        .unwrap();

        let log = SqliteLog::open(pool.clone()).await.unwrap();
        let latest = [INPUT, OUTPUT, "empty"].map(|t| *log.shared.topic(t).latest.borrow());
        assert_eq!(latest, [4, 2, 7]);
        let mut input = log.subscribe(INPUT, "reader").await.unwrap();
        let read = input.next(10).await.unwrap();
        assert_eq!(
            read.iter().map(|r| (r.offset, r.payload.clone())).collect::<Vec<_>>(),
            [(3, b"3".to_vec()), (4, b"4".to_vec())]
        );
        let mut output = log.subscribe(OUTPUT, "reader").await.unwrap();
        let read = output.next(10).await.unwrap();
        assert_eq!(read.iter().map(|r| (r.offset, r.key.as_str())).collect::<Vec<_>>(), [(1, "!a:x"), (2, "!b:x")]);

        // A de-duplication ID holds within its topic only; offsets continue.
        assert_eq!(log.publish(INPUT, "!a:x", b"again".to_vec(), Some("$dup")).await.unwrap(), 4);
        assert_eq!(log.publish(INPUT, "!a:x", b"5".to_vec(), Some("$new")).await.unwrap(), 5);
        assert_eq!(log.publish("empty", "!a:x", b"8".to_vec(), Some("$dup")).await.unwrap(), 8);
        assert_eq!(log.publish("new.topic", "!a:x", b"1".to_vec(), None).await.unwrap(), 1);
        let (numbers, tables) = pool
            .read(|tx| {
                let numbers = tx
                    .prepare("SELECT topic, topic_nid FROM log_topics ORDER BY topic_nid")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let tables = tx
                    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'log_records%' ORDER BY name")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StorageError>((numbers, tables))
            })
            .await
            .unwrap();
        let numbers: Vec<(&str, i64)> = numbers.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        assert_eq!(numbers, [("empty", 1), (INPUT, 2), (OUTPUT, 3), ("new.topic", 4)]);
        assert_eq!(tables, ["log_records_1", "log_records_2", "log_records_3", "log_records_4"], "one table per topic");

        // Opening again finds everything where it is.
        drop((input, output, log));
        let log = SqliteLog::open(pool).await.unwrap();
        let latest = [INPUT, OUTPUT, "empty", "new.topic"].map(|t| *log.shared.topic(t).latest.borrow());
        assert_eq!(latest, [5, 2, 8, 1]);
    }

    const INPUT: &str = crate::INPUT_ROOM_EVENT;
    const OUTPUT: &str = crate::OUTPUT_ROOM_EVENT;
}
