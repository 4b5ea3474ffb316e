//! [`RoomTables`] on an SQLite transaction.

use std::collections::BTreeMap;

use neurite_storage::{Migration, StorageError};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{EventRow, Res, RoomRow, RoomTables};
use crate::api::TxnKey;
use crate::state::{BlockRef, StateKeyTuple};

/// The room server's migrations.
pub(crate) static MIGRATIONS: &[Migration] = &[
    ("0001_create_roomserver", include_str!("../../migrations/sqlite/0001_create_roomserver.sql")),
    ("0002_create_directory", include_str!("../../migrations/sqlite/0002_create_directory.sql")),
];

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
        json: r.get(8)?,
        redacted_by: r.get(9)?,
    })
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
        self.execute(
            "UPDATE roomserver_rooms SET state_snapshot_nid = ?2, latest_event_nids = ?3 WHERE room_nid = ?1",
            params![room_nid, snapshot, latest],
        )?;
        Ok(())
    }

    fn event_by_id(&self, event_id: &str) -> Res<Option<EventRow>> {
        Ok(self
            .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM roomserver_events WHERE event_id = ?1"))?
            .query_row([event_id], event_row)
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
            e.json
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
        let nid: i64 =
            self.query_row("SELECT COALESCE(MAX(state_block_nid), 0) + 1 FROM roomserver_state_blocks", [], |r| {
                r.get(0)
            })?;
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
        self.execute(
            "INSERT INTO roomserver_state_snapshots (room_nid, state_blocks) VALUES (?1, ?2)",
            params![room_nid, text],
        )?;
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

    fn txn_event(&self, txn: &TxnKey) -> Res<Option<String>> {
        Ok(self
            .prepare_cached(
                "SELECT event_id FROM roomserver_transactions
                 WHERE user_id = ?1 AND device_id = ?2 AND scope = ?3 AND txn_id = ?4",
            )?
            .query_row([txn.user_id.as_str(), txn.device_id.as_str(), txn.scope.as_str(), txn.txn_id.as_str()], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn insert_txn(&self, txn: &TxnKey, event_id: &str) -> Res<()> {
        self.execute(
            "INSERT INTO roomserver_transactions (user_id, device_id, scope, txn_id, event_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            [txn.user_id.as_str(), txn.device_id.as_str(), txn.scope.as_str(), txn.txn_id.as_str(), event_id],
        )?;
        Ok(())
    }

    fn input_verdict(&self, request_id: &str) -> Res<Option<String>> {
        Ok(self
            .prepare_cached("SELECT verdict FROM roomserver_inputs WHERE request_id = ?1")?
            .query_row([request_id], |r| r.get(0))
            .optional()?)
    }

    fn insert_input_verdict(&self, request_id: &str, verdict: &str, now: u64) -> Res<()> {
        self.execute(
            "INSERT INTO roomserver_inputs (request_id, verdict, created_ts) VALUES (?1, ?2, ?3)",
            params![request_id, verdict, now as i64],
        )?;
        Ok(())
    }

    fn insert_outbox(&self, room_id: &str, payload: &[u8]) -> Res<i64> {
        self.execute("INSERT INTO roomserver_outbox (room_id, payload) VALUES (?1, ?2)", params![room_id, payload])?;
        Ok(self.last_insert_rowid())
    }
}
