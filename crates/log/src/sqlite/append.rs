//! Appending records: the one SQL path every publish takes, whether in a
//! write of the log's own or inside another component's transaction
//! ([`SqliteAppender`]).

use std::sync::Arc;

use neurite_storage::{StorageError, now_ms};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Shared, Topic, to_offset};
use crate::api::{LogError, PublishRecord, Record, check_record, check_topic};

/// The table holding the records of the topic numbered `topic_nid`: each
/// topic has its own (migration 0002), keyed by offset, so every append
/// goes to the right edge of its table's one B-tree.
pub(crate) fn records_table(topic_nid: i64) -> String {
    format!("log_records_{topic_nid}")
}

/// `topic`'s number, if it was ever published to.
pub(crate) fn topic_nid(conn: &Connection, topic: &str) -> Result<Option<i64>, StorageError> {
    Ok(conn
        .prepare_cached("SELECT topic_nid FROM log_topics WHERE topic = ?1")?
        .query_row([topic], |r| r.get(0))
        .optional()?)
}

/// The offset of the highest (`last`) or lowest record of the topic
/// numbered `topic_nid`, if it has any.
pub(crate) fn edge_offset(conn: &Connection, topic_nid: i64, last: bool) -> Result<Option<u64>, StorageError> {
    let edge = if last { "MAX" } else { "MIN" };
    let offset: Option<i64> = conn
        .prepare_cached(&format!("SELECT {edge}(offset) FROM {}", records_table(topic_nid)))?
        .query_row([], |r| r.get(0))?;
    offset.map(to_offset).transpose()
}

/// Gives `topic`, never published to, the next number and its table; returns the number.
fn number_topic(tx: &Transaction<'_>, topic: &str) -> Result<i64, StorageError> {
    let nid: i64 = tx.query_row("SELECT COALESCE(MAX(topic_nid), 0) + 1 FROM log_topics", [], |r| r.get(0))?;
    tx.prepare_cached("INSERT INTO log_topics (topic, topic_nid, last_offset) VALUES (?1, ?2, 0)")?
        .execute((topic, nid))?;
    create_records_table(tx, nid)?;
    Ok(nid)
}

/// Creates the records table of the topic numbered `topic_nid` (see
/// [`records_table`]) unless it exists.
pub(crate) fn create_records_table(tx: &Transaction<'_>, topic_nid: i64) -> Result<(), StorageError> {
    let table = records_table(topic_nid);
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             -- 1, 2, 3, ... assigned in the transaction that appends.
             offset INTEGER PRIMARY KEY,
             -- Orders records: a room ID for the room event topics.
             key TEXT NOT NULL,
             payload BLOB NOT NULL,
             -- The publisher's de-duplication ID (e.g. an event ID), if it gave one.
             dedup_id TEXT,
             created_ts INTEGER NOT NULL
         );
         CREATE UNIQUE INDEX IF NOT EXISTS {table}_dedup ON {table} (dedup_id) WHERE dedup_id IS NOT NULL;"
    ))?;
    Ok(())
}

/// Where [`append`] put a record: its offset, and whether it was appended
/// now (`false`: an earlier record with its de-duplication ID holds it).
pub(crate) type Placed = (u64, bool);

/// Appends `records` to `topic` in `tx` and returns where each went (the
/// earlier record's offset for a repeated de-duplication ID). Offsets
/// continue from the topic's highest record, or from `log_topics` when
/// pruning left none higher (see [`last_offset`]), so appends of several
/// transactions on the one writer connection never collide, and an undone
/// append gives its offsets back. A topic's first append gives it a number.
pub(crate) fn append(
    tx: &Transaction<'_>,
    topic: &str,
    records: &[PublishRecord],
) -> Result<Vec<Placed>, StorageError> {
    let now = now_ms() as i64;
    let mut offsets = Vec::with_capacity(records.len());
    let (nid, mut last) = match last_offset(tx, topic)? {
        Some(found) => found,
        None => (number_topic(tx, topic)?, 0),
    };
    let table = records_table(nid);
    let mut find_dedup = tx.prepare_cached(&format!("SELECT offset FROM {table} WHERE dedup_id = ?1"))?;
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO {table} (offset, key, payload, dedup_id, created_ts) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?;
    for record in records {
        if let Some(dedup_id) = &record.dedup_id {
            // Invariant: earlier records of this call are visible here, so a
            // dedup ID repeated within one batch is appended once too.
            let earlier: Option<i64> = find_dedup.query_row([dedup_id], |r| r.get(0)).optional()?;
            if let Some(earlier) = earlier {
                offsets.push((to_offset(earlier)?, false));
                continue;
            }
        }
        last += 1;
        insert.execute(params![last as i64, record.key, record.payload, record.dedup_id, now])?;
        offsets.push((last, true));
    }
    Ok(offsets)
}

/// `topic`'s number and the last offset it handed out: its highest
/// record's, or the one `log_topics` kept when pruning deleted the highest
/// records; `None` if it was never published to.
///
/// An append writes only its records: updating a counter row as well cost
/// each append its own page in the write-ahead log (two of the ~20 pages a
/// send writes). Offsets are never reused because [`remember_last_offset`]
/// runs in every transaction that deletes the highest record.
pub(crate) fn last_offset(tx: &Transaction<'_>, topic: &str) -> Result<Option<(i64, u64)>, StorageError> {
    let row: Option<(i64, i64)> = tx
        .prepare_cached("SELECT topic_nid, last_offset FROM log_topics WHERE topic = ?1")?
        .query_row([topic], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((nid, kept)) = row else { return Ok(None) };
    let highest = edge_offset(tx, nid, true)?.unwrap_or(0);
    Ok(Some((nid, to_offset(kept)?.max(highest))))
}

/// Keeps `last`, `topic`'s last offset (from [`last_offset`]), in
/// `log_topics`; runs in the transaction that deletes the highest record.
pub(crate) fn remember_last_offset(tx: &Transaction<'_>, topic: &str, last: u64) -> Result<(), StorageError> {
    tx.prepare_cached("UPDATE log_topics SET last_offset = ?2 WHERE topic = ?1")?.execute((topic, last as i64))?;
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

/// Moves the records migration 0002 left in the one table of before into
/// each topic's own table, then drops that table; nothing to do once done.
/// One transaction: a crash leaves either everything moved or nothing.
pub(crate) fn move_records_of_0001(tx: &Transaction<'_>) -> Result<(), StorageError> {
    let exists: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'log_records')", [], |r| r.get(0))?;
    if !exists {
        return Ok(());
    }
    let topics = tx
        .prepare("SELECT topic_nid, topic FROM log_topics")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    for (nid, topic) in topics {
        create_records_table(tx, nid)?;
        tx.execute(
            &format!(
                "INSERT INTO {} (offset, key, payload, dedup_id, created_ts)
                 SELECT offset, key, payload, dedup_id, created_ts FROM log_records WHERE topic = ?1 ORDER BY offset",
                records_table(nid)
            ),
            [&topic],
        )?;
    }
    tx.execute_batch("DROP TABLE log_records")?;
    Ok(())
}
