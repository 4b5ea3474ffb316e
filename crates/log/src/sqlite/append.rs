//! Appending records: the one SQL path every publish takes, whether in a
//! write of the log's own or inside another component's transaction
//! ([`SqliteAppender`]).

use std::sync::Arc;

use neurite_storage::{StorageError, now_ms};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Shared, Topic, to_offset};
use crate::api::{LogError, PublishRecord, Record, check_record, check_topic};

/// Where [`append`] put a record: its offset, and whether it was appended
/// now (`false`: an earlier record with its de-duplication ID holds it).
pub(crate) type Placed = (u64, bool);

/// Appends `records` to `topic` in `tx` and returns where each went (the
/// earlier record's offset for a repeated de-duplication ID). Offsets
/// continue from the topic's highest record, or from `log_topics` when
/// pruning left none higher (see [`last_offset`]), so appends of several
/// transactions on the one writer connection never collide, and an undone
/// append gives its offsets back.
pub(crate) fn append(
    tx: &Transaction<'_>,
    topic: &str,
    records: &[PublishRecord],
) -> Result<Vec<Placed>, StorageError> {
    let now = now_ms() as i64;
    let mut offsets = Vec::with_capacity(records.len());
    let mut find_dedup = tx.prepare_cached("SELECT offset FROM log_records WHERE topic = ?1 AND dedup_id = ?2")?;
    let mut last = last_offset(tx, topic)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO log_records (topic, offset, key, payload, dedup_id, created_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for record in records {
        if let Some(dedup_id) = &record.dedup_id {
            // Invariant: earlier records of this call are visible here, so a
            // dedup ID repeated within one batch is appended once too.
            let earlier: Option<i64> = find_dedup.query_row((topic, dedup_id), |r| r.get(0)).optional()?;
            if let Some(earlier) = earlier {
                offsets.push((to_offset(earlier)?, false));
                continue;
            }
        }
        last += 1;
        insert.execute(params![topic, last as i64, record.key, record.payload, record.dedup_id, now])?;
        offsets.push((last, true));
    }
    Ok(offsets)
}

/// The last offset `topic` handed out: its highest record's, or the one
/// `log_topics` kept when pruning deleted the highest records.
///
/// An append writes only its records: updating a counter row as well cost
/// each append its own page in the write-ahead log (two of the ~20 pages a
/// send writes). Offsets are never reused because [`remember_last_offset`]
/// runs in every transaction that deletes records.
pub(crate) fn last_offset(tx: &Transaction<'_>, topic: &str) -> Result<u64, StorageError> {
    let (kept, highest): (Option<i64>, Option<i64>) = tx
        .prepare_cached(
            "SELECT (SELECT last_offset FROM log_topics WHERE topic = ?1),
                    (SELECT MAX(offset) FROM log_records WHERE topic = ?1)",
        )?
        .query_row([topic], |r| Ok((r.get(0)?, r.get(1)?)))?;
    to_offset(kept.unwrap_or(0).max(highest.unwrap_or(0)))
}

/// Keeps `topic`'s last offset in `log_topics`; runs before records are
/// deleted, in the same transaction (see [`last_offset`]).
pub(crate) fn remember_last_offset(tx: &Transaction<'_>, topic: &str) -> Result<(), StorageError> {
    let last = last_offset(tx, topic)?;
    tx.prepare_cached(
        "INSERT INTO log_topics (topic, last_offset) VALUES (?1, ?2)
         ON CONFLICT (topic) DO UPDATE SET last_offset = excluded.last_offset",
    )?
    .execute((topic, last as i64))?;
    Ok(())
}

/// The records [`append`] appended now, as readers get them.
pub(crate) fn new_records(placed: &[Placed], records: Vec<PublishRecord>) -> Vec<Record> {
    placed
        .iter()
        .zip(records)
        .filter(|((_, new), _)| *new)
        .map(|(&(offset, _), r)| Record { offset, key: r.key, payload: r.payload })
        .collect()
}

/// Records a [`SqliteAppender`] appended in a transaction, for
/// [`SqliteAppender::committed`] once it committed.
pub struct Appended {
    topic: Arc<Topic>,
    records: Vec<Record>,
}

impl Appended {
    /// The offsets of the records appended.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.records.iter().map(|r| r.offset)
    }
}

/// Appends records inside a write transaction of the database the log lives
/// in, so they commit, or are undone, with the caller's own rows: no outbox
/// and no commit of their own. From [`crate::Log::appender`], which gives
/// one only to a caller writing through the log's own pool.
///
/// Use: [`Self::ready`] before the write, [`Self::append`] in it, and
/// [`Self::committed`] once it committed, so subscribers see the records.
#[derive(Clone)]
pub struct SqliteAppender {
    pub(crate) shared: Arc<Shared>,
}

impl SqliteAppender {
    /// Waits until `topic`'s backlog is under the log's bound. Appends made
    /// in a transaction cannot wait, so a writer checks before it writes;
    /// the backlog may then exceed the bound by what that write appends.
    ///
    /// # Errors
    /// [`LogError::Invalid`] for a bad topic.
    pub async fn ready(&self, topic: &str) -> Result<(), LogError> {
        check_topic(topic)?;
        // A reservation taken and given straight back: it waits as a publish would.
        drop(self.shared.topic(topic).reserve(self.shared.backlog_records_max).await);
        Ok(())
    }

    /// Appends `records` to `topic` in `tx`, in order. Nobody sees them
    /// before [`Self::committed`] is given what this returns.
    ///
    /// # Errors
    /// [`LogError::RecordTooLarge`], [`LogError::Invalid`], or the SQL fails
    /// ([`LogError::Storage`]; the caller's transaction decides what is undone).
    pub fn append(&self, tx: &Transaction<'_>, topic: &str, records: Vec<PublishRecord>) -> Result<Appended, LogError> {
        check_topic(topic)?;
        for record in &records {
            check_record(&record.key, &record.payload, record.dedup_id.as_deref())?;
        }
        let placed = append(tx, topic, &records)?;
        Ok(Appended { topic: self.shared.topic(topic), records: new_records(&placed, records) })
    }

    /// After the transaction that appended `appended` committed: makes the
    /// records readable and wakes their topic's subscribers.
    pub fn committed(&self, appended: Appended) {
        appended.topic.announce(appended.records);
    }
}
