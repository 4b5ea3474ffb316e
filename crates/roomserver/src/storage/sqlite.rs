//! [`RoomTables`] on an SQLite transaction.

use std::collections::BTreeMap;

use neurite_storage::packed::PackedJson;
use neurite_storage::{Migration, StorageError};
use ruma::{EventId, RoomId};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{EventRow, Res, RoomRow, RoomTables};
use crate::api::{TxnKey, Verdict};
use crate::state::{BlockRef, StateKeyTuple};

/// The room server's migrations.
pub(crate) static MIGRATIONS: &[Migration] = &[
    ("0001_create_roomserver", include_str!("../../migrations/sqlite/0001_create_roomserver.sql")),
    ("0002_create_directory", include_str!("../../migrations/sqlite/0002_create_directory.sql")),
    ("0003_compact_transactions_inputs", include_str!("../../migrations/sqlite/0003_compact_transactions_inputs.sql")),
    ("0004_hashed_transaction_keys", include_str!("../../migrations/sqlite/0004_hashed_transaction_keys.sql")),
    ("0005_input_offsets", include_str!("../../migrations/sqlite/0005_input_offsets.sql")),
    ("0006_room_led_event_ids", include_str!("../../migrations/sqlite/0006_room_led_event_ids.sql")),
    ("0007_verdicts_by_offset", include_str!("../../migrations/sqlite/0007_verdicts_by_offset.sql")),
    (
        "0008_drop_unused_room_event_index",
        include_str!("../../migrations/sqlite/0008_drop_unused_room_event_index.sql"),
    ),
];

/// Bytes of a client transaction's key: 128 bits, so two different
/// transactions sharing one is not a practical concern.
const TXN_KEY_BYTES: usize = 16;

/// Leading bytes of a transaction's key that name its device (a hash of
/// the user and device ID), so one device's transactions sit side by side
/// in `roomserver_txn_keys` (see [`txn_keys`]).
const TXN_KEY_DEVICE_BYTES: usize = 4;

/// SHA-256 over `parts`, each length-prefixed so no two different tuples
/// hash the same input.
fn sha256_of(parts: &[&str]) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// The keys of a client transaction in `roomserver_txn_keys`: as written
/// now, then as written before (both from one hash of the whole tuple).
///
/// Now: 4 bytes of a hash of its user and device, then 12 of a hash of
/// user, device, scope and transaction ID. Keys of wholly random bytes put
/// each send's row on a random page of the index: a quarter of the
/// distinct database pages the sends between two restarts of the
/// write-ahead log dirtied, each copied and synced at the restart (issue
/// 6). Led by the device, a sending device's rows share a page or two.
/// Before: the first 16 bytes of the whole hash; rows stored so are still
/// looked up.
fn txn_keys(txn: &TxnKey) -> [[u8; TXN_KEY_BYTES]; 2] {
    let device = sha256_of(&[txn.user_id.as_str(), txn.device_id.as_str()]);
    let whole = sha256_of(&[txn.user_id.as_str(), txn.device_id.as_str(), txn.scope.as_str(), txn.txn_id.as_str()]);
    let mut led = [0; TXN_KEY_BYTES];
    led[..TXN_KEY_DEVICE_BYTES].copy_from_slice(&device[..TXN_KEY_DEVICE_BYTES]);
    led[TXN_KEY_DEVICE_BYTES..].copy_from_slice(&whole[..TXN_KEY_BYTES - TXN_KEY_DEVICE_BYTES]);
    let mut unled = [0; TXN_KEY_BYTES];
    unled.copy_from_slice(&whole[..TXN_KEY_BYTES]);
    [led, unled]
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        nid: r.get(0)?,
        room_nid: r.get(1)?,
        event_id: r.get(2)?,
        type_nid: r.get(3)?,
        state_key_nid: r.get(4)?,
        depth: r.get(5)?,
        snapshot: r.get(6)?,
        rejected: r.get(7)?,
        // TEXT for rows written before packing, a zstd BLOB since.
        json: r.get::<_, PackedJson>(8)?.0,
        redacted_by: r.get(9)?,
    })
}

/// An accepted verdict as its room's NID and its events' NIDs (a JSON
/// array), when the room and every event are stored and `verdict` is exactly
/// how [`Verdict`] serializes, so [`accepted_verdict`] gives back the same
/// text: room and event IDs map one-to-one to their NIDs (`UNIQUE` columns,
/// rows never deleted). `None`: store the JSON as it is.
fn accepted_nids(t: &Transaction<'_>, verdict: &str) -> Res<Option<(i64, String)>> {
    let Ok(parsed) = serde_json::from_str::<Verdict>(verdict) else { return Ok(None) };
    if serde_json::to_string(&parsed).ok().as_deref() != Some(verdict) {
        return Ok(None);
    }
    let Verdict::Accepted { room_id, event_ids } = parsed else { return Ok(None) };
    let Some(room_nid) = t
        .prepare_cached("SELECT room_nid FROM roomserver_rooms WHERE room_id = ?1")?
        .query_row([room_id.as_str()], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = t.prepare_cached("SELECT event_nid FROM roomserver_events WHERE room_nid = ?1 AND event_id = ?2")?;
    let mut nids = Vec::with_capacity(event_ids.len());
    for event_id in &event_ids {
        let Some(nid) = stmt.query_row(params![room_nid, event_id.as_str()], |r| r.get::<_, i64>(0)).optional()? else {
            return Ok(None);
        };
        nids.push(nid);
    }
    Ok(Some((room_nid, serde_json::to_string(&nids).map_err(corrupt)?)))
}

/// The JSON of an accepted verdict stored by [`accepted_nids`].
fn accepted_verdict(t: &Transaction<'_>, room_nid: i64, event_nids: &str) -> Res<String> {
    let room_id: String = t
        .prepare_cached("SELECT room_id FROM roomserver_rooms WHERE room_nid = ?1")?
        .query_row([room_nid], |r| r.get(0))?;
    let nids: Vec<i64> = serde_json::from_str(event_nids).map_err(corrupt)?;
    let mut stmt = t.prepare_cached("SELECT event_id FROM roomserver_events WHERE event_nid = ?1")?;
    let mut event_ids = Vec::with_capacity(nids.len());
    for nid in nids {
        let event_id: String = stmt.query_row([nid], |r| r.get(0))?;
        event_ids.push(EventId::parse(event_id).map_err(corrupt)?);
    }
    let verdict = Verdict::Accepted { room_id: RoomId::parse(room_id).map_err(corrupt)?, event_ids };
    serde_json::to_string(&verdict).map_err(corrupt)
}

const EVENT_COLUMNS: &str = "event_nid, room_nid, event_id, event_type_nid, state_key_nid, depth, \
                             state_snapshot_nid, is_rejected, json, redacted_by";

impl RoomTables for Transaction<'_> {
    fn event_type_nid(&self, event_type: &str) -> Res<Option<i64>> {
        Ok(self
            .prepare_cached("SELECT event_type_nid FROM roomserver_event_types WHERE event_type = ?1")?
            .query_row([event_type], |r| r.get(0))
            .optional()?)
    }

    fn assign_event_type_nid(&self, event_type: &str) -> Res<i64> {
        if let Some(nid) = self.event_type_nid(event_type)? {
            return Ok(nid);
        }
        self.execute("INSERT INTO roomserver_event_types (event_type) VALUES (?1)", [event_type])?;
        Ok(self.last_insert_rowid())
    }

    fn state_key_nid(&self, state_key: &str) -> Res<Option<i64>> {
        Ok(self
            .prepare_cached("SELECT state_key_nid FROM roomserver_state_keys WHERE state_key = ?1")?
            .query_row([state_key], |r| r.get(0))
            .optional()?)
    }

    fn assign_state_key_nid(&self, state_key: &str) -> Res<i64> {
        if let Some(nid) = self.state_key_nid(state_key)? {
            return Ok(nid);
        }
        self.execute("INSERT INTO roomserver_state_keys (state_key) VALUES (?1)", [state_key])?;
        Ok(self.last_insert_rowid())
    }

    fn event_type(&self, nid: i64) -> Res<String> {
        Ok(self
            .prepare_cached("SELECT event_type FROM roomserver_event_types WHERE event_type_nid = ?1")?
            .query_row([nid], |r| r.get(0))?)
    }

    fn state_key(&self, nid: i64) -> Res<String> {
        Ok(self
            .prepare_cached("SELECT state_key FROM roomserver_state_keys WHERE state_key_nid = ?1")?
            .query_row([nid], |r| r.get(0))?)
    }

    fn room(&self, room_id: &str) -> Res<Option<RoomRow>> {
        let row: Option<(i64, String, i64, String)> = self
            .prepare_cached(
                "SELECT room_nid, room_version, state_snapshot_nid, latest_event_nids
                 FROM roomserver_rooms WHERE room_id = ?1",
            )?
            .query_row([room_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        row.map(|(nid, version, snapshot, latest)| {
            Ok(RoomRow { nid, version, snapshot, latest: serde_json::from_str(&latest).map_err(corrupt)? })
        })
        .transpose()
    }

    fn insert_room(&self, room_id: &str, version: &str) -> Res<i64> {
        self.execute("INSERT INTO roomserver_rooms (room_id, room_version) VALUES (?1, ?2)", [room_id, version])?;
        Ok(self.last_insert_rowid())
    }

    fn update_room(&self, room_nid: i64, snapshot: i64, latest: &[i64]) -> Res<()> {
        let latest = serde_json::to_string(latest).map_err(corrupt)?;
        self.prepare_cached(
            "UPDATE roomserver_rooms SET state_snapshot_nid = ?2, latest_event_nids = ?3 WHERE room_nid = ?1",
        )?
        .execute(params![room_nid, snapshot, latest])?;
        Ok(())
    }

    fn event_by_id(&self, room_nid: i64, event_id: &str) -> Res<Option<EventRow>> {
        Ok(self
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM roomserver_events WHERE room_nid = ?1 AND event_id = ?2"
            ))?
            .query_row(params![room_nid, event_id], event_row)
            .optional()?)
    }

    fn event_by_nid(&self, nid: i64) -> Res<Option<EventRow>> {
        Ok(self
            .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM roomserver_events WHERE event_nid = ?1"))?
            .query_row([nid], event_row)
            .optional()?)
    }

    fn insert_event(&self, e: &EventRow) -> Res<i64> {
        self.prepare_cached(
            "INSERT INTO roomserver_events (room_nid, event_id, event_type_nid, state_key_nid, depth,
                 state_snapshot_nid, is_rejected, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            e.room_nid,
            e.event_id,
            e.type_nid,
            e.state_key_nid,
            e.depth,
            e.snapshot,
            e.rejected,
            // Packed as `PackedJson` writes it, without copying the text first.
            neurite_storage::packed::pack(&e.json)?
        ])?;
        Ok(self.last_insert_rowid())
    }

    fn set_redacted_by(&self, event_nid: i64, redaction_id: &str) -> Res<()> {
        self.execute(
            "UPDATE roomserver_events SET redacted_by = ?2 WHERE event_nid = ?1 AND redacted_by IS NULL",
            params![event_nid, redaction_id],
        )?;
        Ok(())
    }

    fn block(&self, nid: i64) -> Res<BTreeMap<StateKeyTuple, i64>> {
        let mut stmt = self.prepare_cached(
            "SELECT event_type_nid, state_key_nid, event_nid FROM roomserver_state_blocks WHERE state_block_nid = ?1",
        )?;
        let rows = stmt.query_map([nid], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_block(&self, entries: &BTreeMap<StateKeyTuple, i64>) -> Res<i64> {
        let nid: i64 = self
            .prepare_cached("SELECT COALESCE(MAX(state_block_nid), 0) + 1 FROM roomserver_state_blocks")?
            .query_row([], |r| r.get(0))?;
        let mut stmt = self.prepare_cached(
            "INSERT INTO roomserver_state_blocks (state_block_nid, event_type_nid, state_key_nid, event_nid)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for ((type_nid, key_nid), event_nid) in entries {
            stmt.execute(params![nid, type_nid, key_nid, event_nid])?;
        }
        Ok(nid)
    }

    fn snapshot(&self, nid: i64) -> Res<Vec<BlockRef>> {
        if nid == 0 {
            return Ok(Vec::new());
        }
        let text: String = self
            .prepare_cached("SELECT state_blocks FROM roomserver_state_snapshots WHERE state_snapshot_nid = ?1")?
            .query_row([nid], |r| r.get(0))?;
        serde_json::from_str(&text).map_err(corrupt)
    }

    fn insert_snapshot(&self, room_nid: i64, blocks: &[BlockRef]) -> Res<i64> {
        let text = serde_json::to_string(blocks).map_err(corrupt)?;
        self.prepare_cached("INSERT INTO roomserver_state_snapshots (room_nid, state_blocks) VALUES (?1, ?2)")?
            .execute(params![room_nid, text])?;
        Ok(self.last_insert_rowid())
    }

    fn set_membership(&self, room_nid: i64, user_id: &str, membership: &str, event_nid: i64) -> Res<()> {
        self.prepare_cached(
            "INSERT INTO roomserver_memberships (room_nid, user_id, membership, event_nid) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid",
        )?
        .execute(params![room_nid, user_id, membership, event_nid])?;
        Ok(())
    }

    fn membership(&self, room_nid: i64, user_id: &str) -> Res<Option<String>> {
        Ok(self
            .prepare_cached("SELECT membership FROM roomserver_memberships WHERE room_nid = ?1 AND user_id = ?2")?
            .query_row(params![room_nid, user_id], |r| r.get(0))
            .optional()?)
    }

    fn rooms_with_membership(&self, user_id: &str, membership: &str) -> Res<Vec<String>> {
        let mut stmt = self.prepare_cached(
            "SELECT r.room_id FROM roomserver_memberships m JOIN roomserver_rooms r ON r.room_nid = m.room_nid
             WHERE m.user_id = ?1 AND m.membership = ?2 ORDER BY r.room_nid",
        )?;
        let rows = stmt.query_map([user_id, membership], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn txn_event(&self, txn: &TxnKey) -> Res<Option<i64>> {
        // Keys as they are now, then as they were before they were led by the device.
        for key in txn_keys(txn) {
            let hashed: Option<i64> = self
                .prepare_cached("SELECT event_nid FROM roomserver_txn_keys WHERE txn_key = ?1")?
                .query_row([&key[..]], |r| r.get(0))
                .optional()?;
            if hashed.is_some() {
                return Ok(hashed);
            }
        }
        // A transaction stored before 0004.
        Ok(self
            .prepare_cached(
                "SELECT event_nid FROM roomserver_transactions
                 WHERE user_id = ?1 AND device_id = ?2 AND scope = ?3 AND txn_id = ?4",
            )?
            .query_row([txn.user_id.as_str(), txn.device_id.as_str(), txn.scope.as_str(), txn.txn_id.as_str()], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn insert_txn(&self, txn: &TxnKey, event_nid: i64) -> Res<()> {
        // Only for a stored event (a rowid probe of a row just written).
        let inserted = self
            .prepare_cached(
                "INSERT INTO roomserver_txn_keys (txn_key, event_nid)
                 SELECT ?1, event_nid FROM roomserver_events WHERE event_nid = ?2",
            )?
            .execute(params![&txn_keys(txn)[0][..], event_nid])?;
        if inserted != 1 {
            return Err(StorageError::Corrupt(format!("txn event {event_nid} is not stored")));
        }
        Ok(())
    }

    fn input_verdict(&self, offset: u64, request_id: &str) -> Res<Option<String>> {
        let offset = i64::try_from(offset).map_err(corrupt)?;
        let row = self
            .prepare_cached(
                "SELECT request_id, verdict, room_nid, event_nids FROM roomserver_verdicts WHERE input_offset = ?1",
            )?
            .query_row([offset], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .optional()?;
        let row: Option<(Option<String>, Option<i64>, Option<String>)> = match row {
            Some((stored_for, row)) if stored_for == request_id => Some(row),
            // Another record's verdict at this offset: not this one's.
            Some(_) => None,
            // Stored before 0005 (without an offset), if at all.
            None => self
                .prepare_cached("SELECT verdict, room_nid, event_nids FROM roomserver_inputs WHERE request_id = ?1")?
                .query_row([request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?,
        };
        match row {
            None => Ok(None),
            Some((Some(verdict), _, _)) => Ok(Some(verdict)),
            Some((None, Some(room_nid), Some(event_nids))) => Ok(Some(accepted_verdict(self, room_nid, &event_nids)?)),
            Some(_) => Err(corrupt(format!("input {request_id} has no verdict"))),
        }
    }

    fn insert_input_verdict(&self, request_id: &str, verdict: &str, offset: u64, now: u64) -> Res<()> {
        // REPLACE: a row at this offset is another record's (see input_verdict).
        let mut stmt = self.prepare_cached(
            "INSERT OR REPLACE INTO roomserver_verdicts
                 (input_offset, request_id, verdict, room_nid, event_nids, created_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let offset = i64::try_from(offset).map_err(corrupt)?;
        match accepted_nids(self, verdict)? {
            Some((room_nid, event_nids)) => {
                stmt.execute(params![offset, request_id, None::<&str>, room_nid, event_nids, now as i64])
            }
            None => stmt.execute(params![offset, request_id, verdict, None::<i64>, None::<&str>, now as i64]),
        }?;
        Ok(())
    }

    fn delete_input_verdicts(
        &self,
        created_through: u64,
        acked_through: u64,
        legacy_offset: u64,
        max: usize,
    ) -> Res<usize> {
        let created_through = i64::try_from(created_through).map_err(corrupt)?;
        let acked_through = i64::try_from(acked_through).map_err(corrupt)?;
        // The oldest first: a run of rows at the start of the table.
        let deleted = self
            .prepare_cached(
                "DELETE FROM roomserver_verdicts WHERE input_offset IN (
                     SELECT input_offset FROM roomserver_verdicts
                     WHERE input_offset <= ?2 AND created_ts <= ?1
                     ORDER BY input_offset LIMIT ?3)",
            )?
            .execute(params![created_through, acked_through, i64::try_from(max).map_err(corrupt)?])?;
        if deleted == max || i64::try_from(legacy_offset).map_err(corrupt)? > acked_through {
            return Ok(deleted);
        }
        // Stored before 0005: no index on their age (the table only shrinks).
        let legacy = self
            .prepare_cached(
                "DELETE FROM roomserver_inputs WHERE request_id IN (
                     SELECT request_id FROM roomserver_inputs WHERE created_ts <= ?1 LIMIT ?2)",
            )?
            .execute(params![created_through, i64::try_from(max - deleted).map_err(corrupt)?])?;
        Ok(deleted + legacy)
    }

    fn insert_outbox(&self, room_id: &str, payload: &[u8]) -> Res<i64> {
        self.execute("INSERT INTO roomserver_outbox (room_id, payload) VALUES (?1, ?2)", params![room_id, payload])?;
        Ok(self.last_insert_rowid())
    }
}

#[cfg(test)]
mod tests {
    use neurite_storage::sqlite::SqlitePool;
    use ruma::{OwnedEventId, OwnedRoomId};

    use super::*;
    use crate::api::InvalidCode;

    const ROOM: &str = "!room:test.local";

    fn event(room_nid: i64, event_id: &str) -> EventRow {
        EventRow {
            nid: 0,
            room_nid,
            event_id: event_id.into(),
            type_nid: 14,
            state_key_nid: 0,
            depth: 1,
            snapshot: 0,
            rejected: false,
            json: "{}".into(),
            redacted_by: None,
        }
    }

    fn txn(txn_id: &str) -> TxnKey {
        TxnKey {
            user_id: "@alice:test.local".try_into().unwrap(),
            device_id: "DEVICE".into(),
            txn_id: txn_id.into(),
            scope: format!("send:{ROOM}:m.room.message"),
        }
    }

    fn accepted(room_id: &str, event_ids: &[&str]) -> String {
        let room_id = OwnedRoomId::try_from(room_id).unwrap();
        let event_ids = event_ids.iter().map(|id| OwnedEventId::try_from(*id).unwrap()).collect();
        serde_json::to_string(&Verdict::Accepted { room_id, event_ids }).unwrap()
    }

    /// Whether `request_id`'s verdict is stored as NIDs rather than JSON.
    fn stored_as_nids(tx: &Transaction<'_>, request_id: &str) -> bool {
        tx.query_row("SELECT verdict IS NULL FROM roomserver_verdicts WHERE request_id = ?1", [request_id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[tokio::test]
    async fn event_json_is_stored_packed_and_old_text_rows_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let pdu = r#"{"auth_events":["$a","$b"],"content":{"body":"hello","msgtype":"m.text"},"depth":3,"type":"m.room.message"}"#;
        let (old, new, kinds) = pool
            .write(move |tx| {
                let room = tx.insert_room(ROOM, "11")?;
                // A row as written before packing: the JSON as TEXT.
                tx.execute(
                    "INSERT INTO roomserver_events (room_nid, event_id, event_type_nid, state_key_nid, depth,
                         state_snapshot_nid, is_rejected, json)
                     VALUES (?1, '$old', 14, 0, 1, 0, 0, ?2)",
                    params![room, pdu],
                )?;
                let new_nid = tx.insert_event(&EventRow { json: pdu.into(), ..event(room, "$new") })?;
                let kinds: Vec<(String, String)> = tx
                    .prepare("SELECT event_id, typeof(json) FROM roomserver_events ORDER BY event_nid")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let old = tx.event_by_id(room, "$old")?.expect("old row");
                let new = tx.event_by_nid(new_nid)?.expect("new row");
                Ok::<_, StorageError>((old, new, kinds))
            })
            .await
            .unwrap();
        assert_eq!(kinds, [("$old", "text"), ("$new", "blob")].map(|(id, kind)| (id.to_owned(), kind.to_owned())));
        assert_eq!(old.json, pdu);
        assert_eq!(new.json, pdu);
        assert_eq!(new.event_id, "$new");
    }

    /// Stores a verdict the way rows from before 0005 are: by request ID, without an offset.
    fn legacy_verdict(tx: &Transaction<'_>, request_id: &str, verdict: &str, created: i64) -> Res<()> {
        tx.execute(
            "INSERT INTO roomserver_inputs (request_id, verdict, created_ts) VALUES (?1, ?2, ?3)",
            params![request_id, verdict, created],
        )?;
        Ok(())
    }

    /// The request IDs of every stored verdict, sorted.
    fn stored_verdicts(tx: &Transaction<'_>) -> Res<Vec<String>> {
        let mut ids: Vec<String> = tx
            .prepare("SELECT request_id FROM roomserver_verdicts UNION ALL SELECT request_id FROM roomserver_inputs")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    }

    #[tokio::test]
    async fn deleting_verdicts_takes_only_old_enough_acknowledged_ones_oldest_first_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let rejected = serde_json::to_string(&Verdict::Rejected { reason: "no".into() }).unwrap();
        let (after_one, left) = pool
            .write(move |tx| {
                // (request ID, offset, created at): acknowledged through 10,
                // verdicts from before 0005 counted at offset 5, old through 99.
                for (request_id, offset, created) in
                    [("old-acked-2", 10, 99), ("old-acked-1", 4, 50), ("old-unacked", 11, 1), ("new-acked", 3, 100)]
                {
                    tx.insert_input_verdict(request_id, &rejected, offset, created)?;
                }
                legacy_verdict(tx, "old-legacy", &rejected, 1)?;
                assert_eq!(tx.delete_input_verdicts(99, 10, 5, 1)?, 1, "one per call at most");
                let after_one = stored_verdicts(tx)?;
                assert_eq!(tx.delete_input_verdicts(99, 10, 5, 1)?, 1);
                assert_eq!(tx.delete_input_verdicts(99, 10, 5, 1)?, 1);
                assert_eq!(tx.delete_input_verdicts(99, 10, 5, 1)?, 0);
                // A verdict from before 0005 waits until its stand-in offset is acknowledged.
                legacy_verdict(tx, "old-legacy-2", &rejected, 1)?;
                assert_eq!(tx.delete_input_verdicts(99, 10, 11, 1000)?, 0);
                Ok::<_, StorageError>((after_one, stored_verdicts(tx)?))
            })
            .await
            .unwrap();
        assert_eq!(
            after_one,
            ["new-acked", "old-acked-2", "old-legacy", "old-unacked"],
            "the lowest offset went first"
        );
        assert_eq!(left, ["new-acked", "old-legacy-2", "old-unacked"]);
    }

    #[tokio::test]
    async fn a_verdict_is_found_by_its_inputs_offset_and_request_id_and_another_inputs_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let rejected = serde_json::to_string(&Verdict::Rejected { reason: "no".into() }).unwrap();
        let invalid =
            serde_json::to_string(&Verdict::Invalid { reason: "gone".into(), code: InvalidCode::NotFound }).unwrap();
        let written = (rejected.clone(), invalid.clone());
        let (found, other_id, other_offset, replaced, gone, legacy) = pool
            .write(move |tx| {
                let (rejected, invalid) = written;
                tx.insert_input_verdict("first", &rejected, 7, 1)?;
                let found = tx.input_verdict(7, "first")?;
                let (other_id, other_offset) = (tx.input_verdict(7, "other")?, tx.input_verdict(8, "first")?);
                // The log was replaced: offset 7 is another record now.
                tx.insert_input_verdict("other", &invalid, 7, 2)?;
                let (replaced, gone) = (tx.input_verdict(7, "other")?, tx.input_verdict(7, "first")?);
                legacy_verdict(tx, "legacy", &rejected, 1)?;
                Ok::<_, StorageError>((found, other_id, other_offset, replaced, gone, tx.input_verdict(99, "legacy")?))
            })
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(&rejected));
        assert_eq!((other_id, other_offset), (None, None), "another request ID or offset is not this verdict");
        assert_eq!(replaced, Some(invalid));
        assert_eq!(gone, None);
        assert_eq!(legacy, Some(rejected), "a verdict from before 0005 is found by its request ID");
    }

    #[tokio::test]
    async fn upgrading_to_0007_moves_verdicts_with_an_offset_and_keeps_older_ones_by_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        pool.migrate("roomserver", &MIGRATIONS[..6]).await.unwrap();
        let rejected = serde_json::to_string(&Verdict::Rejected { reason: "no".into() }).unwrap();
        let accepted_json = accepted(ROOM, &["$create"]);
        let written = rejected.clone();
        pool.write(move |tx| {
            let room = tx.insert_room(ROOM, "11")?;
            let create = tx.insert_event(&event(room, "$create"))?;
            // The 0005 shape: an accepted verdict as NIDs, a rejected one as
            // JSON, and one stored before 0005 (no offset).
            tx.execute(
                "INSERT INTO roomserver_inputs (request_id, verdict, room_nid, event_nids, created_ts, input_offset)
                 VALUES ('accepted', NULL, ?1, ?2, 1, 5), ('rejected', ?3, NULL, NULL, 2, 6),
                        ('legacy', ?3, NULL, NULL, 3, NULL)",
                params![room, format!("[{create}]"), written],
            )?;
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();

        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let (by_offset, legacy, moved, kept) = pool
            .write(|tx| {
                let by_offset = (tx.input_verdict(5, "accepted")?, tx.input_verdict(6, "rejected")?);
                let count = |table: &str| -> Result<i64, StorageError> {
                    Ok(tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
                };
                let (moved, kept) = (count("roomserver_verdicts")?, count("roomserver_inputs")?);
                Ok::<_, StorageError>((by_offset, tx.input_verdict(1, "legacy")?, moved, kept))
            })
            .await
            .unwrap();
        assert_eq!(by_offset, (Some(accepted_json), Some(rejected.clone())));
        assert_eq!(legacy, Some(rejected));
        assert_eq!((moved, kept), (2, 1), "only the verdict without an offset stays in roomserver_inputs");
    }

    #[tokio::test]
    async fn upgrading_to_0003_keeps_transactions_and_verdicts_and_stores_them_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("neurite.db")).unwrap();
        let rejected = serde_json::to_string(&Verdict::Rejected { reason: "no".into() }).unwrap();
        let invalid =
            serde_json::to_string(&Verdict::Invalid { reason: "gone".into(), code: InvalidCode::NotFound }).unwrap();

        // Rows written before 0003, in the 0001 shape.
        pool.migrate("roomserver", &MIGRATIONS[..2]).await.unwrap();
        let old = (rejected.clone(), accepted(ROOM, &["$create", "$join"]));
        let (message_nid, later_nid) = pool
            .write(move |tx| {
                let room = tx.insert_room(ROOM, "11")?;
                let mut nids = Vec::new();
                for id in ["$create", "$join", "$message", "$later"] {
                    nids.push(tx.insert_event(&event(room, id))?);
                }
                tx.execute(
                    "INSERT INTO roomserver_transactions (user_id, device_id, scope, txn_id, event_id)
                 VALUES ('@alice:test.local', 'DEVICE', ?1, 'old', '$message')",
                    [format!("send:{ROOM}:m.room.message")],
                )?;
                tx.execute(
                    "INSERT INTO roomserver_inputs (request_id, verdict, created_ts)
                 VALUES ('old-accepted', ?1, 1), ('old-rejected', ?2, 2)",
                    [&old.1, &old.0],
                )?;
                Ok::<_, StorageError>((nids[2], nids[3]))
            })
            .await
            .unwrap();

        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let (old_txn, old_accepted, old_rejected) = pool
            .write(|tx| {
                Ok::<_, StorageError>((
                    tx.txn_event(&txn("old"))?,
                    tx.input_verdict(1, "old-accepted")?,
                    tx.input_verdict(2, "old-rejected")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(old_txn, Some(message_nid));
        assert_eq!(old_accepted, Some(accepted(ROOM, &["$create", "$join"])));
        assert_eq!(old_rejected, Some(rejected.clone()));

        // Rows written after: the same text comes back; accepted verdicts whose
        // room and events are stored take the NID form, anything else stays JSON.
        let verdicts = [
            ("accepted", accepted(ROOM, &["$later", "$create"]), true),
            ("accepted-nothing", accepted(ROOM, &[]), true),
            ("accepted-unknown-event", accepted(ROOM, &["$later", "$unknown"]), false),
            ("accepted-unknown-room", accepted("!elsewhere:test.local", &["$later"]), false),
            ("rejected", rejected, false),
            ("invalid", invalid, false),
            ("not-canonical", format!(" {}", accepted(ROOM, &["$later"])), false),
        ];
        let written = verdicts.clone();
        let (read, new_txn, missing_txn) = pool
            .write(move |tx| {
                let mut read = Vec::new();
                for (offset, (request_id, verdict, _)) in (1..).zip(&written) {
                    tx.insert_input_verdict(request_id, verdict, offset, 3)?;
                    read.push((tx.input_verdict(offset, request_id)?, stored_as_nids(tx, request_id)));
                }
                tx.insert_txn(&txn("new"), later_nid)?;
                let missing = tx.insert_txn(&txn("missing"), later_nid + 1_000).is_err();
                Ok::<_, StorageError>((read, tx.txn_event(&txn("new"))?, missing))
            })
            .await
            .unwrap();
        for ((request_id, expected, expected_as_nids), (verdict, as_nids)) in verdicts.iter().zip(&read) {
            assert_eq!(verdict.as_ref(), Some(expected), "{request_id}");
            assert_eq!(as_nids, expected_as_nids, "{request_id}");
        }
        assert_eq!(new_txn, Some(later_nid));
        assert!(missing_txn, "a transaction needs its event stored");
        assert_eq!(pool.write(|tx| tx.txn_event(&txn("missing"))).await.unwrap(), None);

        // Both tables are their primary key's B-tree now: no automatic index.
        let autoindexes: i64 = pool
            .write(|tx| {
                tx.query_row(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'sqlite_autoindex_roomserver_transactions%'
                     OR name LIKE 'sqlite_autoindex_roomserver_inputs%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(StorageError::from)
            })
            .await
            .unwrap();
        assert_eq!(autoindexes, 0);

        // 0004: new transactions are kept under their hashed key, old ones
        // stay where they were; a key differs in any of its four parts.
        let (hashed, legacy, other) = pool
            .write(|tx| {
                let count = |table: &str| -> Result<i64, StorageError> {
                    Ok(tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
                };
                let other_device = TxnKey { device_id: "OTHER".into(), ..txn("new") };
                let other_scope = TxnKey { scope: "redact:x".into(), ..txn("new") };
                let others = (tx.txn_event(&other_device)?, tx.txn_event(&other_scope)?);
                Ok::<_, StorageError>((count("roomserver_txn_keys")?, count("roomserver_transactions")?, others))
            })
            .await
            .unwrap();
        assert_eq!((hashed, legacy), (1, 1));
        assert_eq!(other, (None, None));
        assert_ne!(txn_keys(&txn("a")), txn_keys(&txn("b")));
    }

    #[tokio::test]
    async fn upgrading_to_0006_keeps_events_and_finds_them_by_room_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        pool.migrate("roomserver", &MIGRATIONS[..5]).await.unwrap();
        let (room, other, a_nid) = pool
            .write(|tx| {
                let room = tx.insert_room(ROOM, "11")?;
                let other = tx.insert_room("!other:test.local", "11")?;
                let a_nid = tx.insert_event(&event(room, "$a"))?;
                tx.insert_event(&event(other, "$b"))?;
                Ok::<_, StorageError>((room, other, a_nid))
            })
            .await
            .unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let (found, elsewhere, duplicate, second_room, plan) = pool
            .write(move |tx| {
                let found = tx.event_by_id(room, "$a")?.map(|row| (row.nid, row.room_nid));
                let elsewhere = tx.event_by_id(other, "$a")?.is_some();
                let duplicate = tx.insert_event(&event(room, "$a")).is_err();
                let second_room = tx.event_by_id(other, "$b")?.is_some();
                let plan: String = tx.query_row(
                    "EXPLAIN QUERY PLAN SELECT event_nid FROM roomserver_events WHERE room_nid = 1 AND event_id = 'x'",
                    [],
                    |r| r.get(3),
                )?;
                Ok::<_, StorageError>((found, elsewhere, duplicate, second_room, plan))
            })
            .await
            .unwrap();
        // NIDs are kept; an ID is found in its room only and stays unique there.
        assert_eq!(found, Some((a_nid, room)));
        assert!(!elsewhere && duplicate && second_room);
        // The lookup is one probe of the room-led index.
        assert!(plan.contains("INDEX sqlite_autoindex_roomserver_events_1 (room_nid=? AND event_id=?)"), "{plan}");
    }

    #[tokio::test]
    async fn after_0008_events_have_one_index_which_also_finds_a_rooms_events() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let (indexes, plan) = pool
            .read(|tx| {
                let indexes = tx
                    .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'roomserver_events'")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let plan: String = tx.query_row(
                    "EXPLAIN QUERY PLAN SELECT event_nid FROM roomserver_events WHERE room_nid = 1",
                    [],
                    |r| r.get(3),
                )?;
                Ok::<_, StorageError>((indexes, plan))
            })
            .await
            .unwrap();
        assert_eq!(indexes, ["sqlite_autoindex_roomserver_events_1"]);
        assert!(plan.contains("INDEX sqlite_autoindex_roomserver_events_1 (room_nid=?)"), "{plan}");
    }

    #[tokio::test]
    async fn transaction_keys_are_led_by_the_device_and_keys_stored_before_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        pool.migrate("roomserver", MIGRATIONS).await.unwrap();
        let found = pool
            .write(|tx| {
                let room_nid = tx.insert_room(ROOM, "11")?;
                let new_nid = tx.insert_event(&event(room_nid, "$new"))?;
                let old_nid = tx.insert_event(&event(room_nid, "$old"))?;
                tx.insert_txn(&txn("new"), new_nid)?;
                // A row as the key was before it was led by the device.
                tx.execute(
                    "INSERT INTO roomserver_txn_keys (txn_key, event_nid) VALUES (?1, ?2)",
                    params![&txn_keys(&txn("old"))[1][..], old_nid],
                )?;
                Ok::<_, StorageError>((
                    (tx.txn_event(&txn("new"))?, tx.txn_event(&txn("old"))?, tx.txn_event(&txn("none"))?),
                    (Some(new_nid), Some(old_nid), None),
                ))
            })
            .await
            .unwrap();
        assert_eq!(found.0, found.1);

        // One device's keys share their first bytes; another device's differ.
        let (a, b) = (txn_keys(&txn("a"))[0], txn_keys(&txn("b"))[0]);
        assert_eq!(a[..TXN_KEY_DEVICE_BYTES], b[..TXN_KEY_DEVICE_BYTES]);
        assert_ne!(a[TXN_KEY_DEVICE_BYTES..], b[TXN_KEY_DEVICE_BYTES..]);
        let other = txn_keys(&TxnKey { device_id: "OTHER".into(), ..txn("a") })[0];
        assert_ne!(a[..TXN_KEY_DEVICE_BYTES], other[..TXN_KEY_DEVICE_BYTES]);
    }
}
