//! The room server's tables, behind [`RoomTables`]: the operations the
//! processing and query code need, run inside one transaction.
//!
//! The trait is synchronous on purpose: ruma-state-res calls its fetch
//! closures synchronously, so processing runs in one blocking task inside
//! one transaction, whatever the backend (SQLite now; PostgreSQL through a
//! blocking client later).

pub(crate) mod sqlite;

use std::collections::BTreeMap;

use neurite_storage::StorageError;

use crate::api::TxnKey;
use crate::state::{BlockRef, StateKeyTuple};

/// Result of a table operation.
pub(crate) type Res<T> = Result<T, StorageError>;

/// A room row.
#[derive(Debug, Clone)]
pub(crate) struct RoomRow {
    pub nid: i64,
    pub version: String,
    pub snapshot: i64,
    pub latest: Vec<i64>,
}

/// An event row.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub nid: i64,
    pub room_nid: i64,
    pub event_id: String,
    pub type_nid: i64,
    pub state_key_nid: i64,
    pub depth: i64,
    pub snapshot: i64,
    pub rejected: bool,
    pub json: String,
    pub redacted_by: Option<String>,
}

/// The room server's table operations.
pub(crate) trait RoomTables {
    fn event_type_nid(&self, event_type: &str) -> Res<Option<i64>>;
    fn assign_event_type_nid(&self, event_type: &str) -> Res<i64>;
    fn state_key_nid(&self, state_key: &str) -> Res<Option<i64>>;
    fn assign_state_key_nid(&self, state_key: &str) -> Res<i64>;
    fn event_type(&self, nid: i64) -> Res<String>;
    fn state_key(&self, nid: i64) -> Res<String>;

    fn room(&self, room_id: &str) -> Res<Option<RoomRow>>;
    fn insert_room(&self, room_id: &str, version: &str) -> Res<i64>;
    fn update_room(&self, room_nid: i64, snapshot: i64, latest: &[i64]) -> Res<()>;

    /// An event of the room `room_nid` by ID (event IDs are unique within their room).
    fn event_by_id(&self, room_nid: i64, event_id: &str) -> Res<Option<EventRow>>;
    fn event_by_nid(&self, nid: i64) -> Res<Option<EventRow>>;
    fn insert_event(&self, row: &EventRow) -> Res<i64>;
    fn set_redacted_by(&self, event_nid: i64, redaction_id: &str) -> Res<()>;

    fn block(&self, nid: i64) -> Res<BTreeMap<StateKeyTuple, i64>>;
    fn insert_block(&self, entries: &BTreeMap<StateKeyTuple, i64>) -> Res<i64>;
    fn snapshot(&self, nid: i64) -> Res<Vec<BlockRef>>;
    fn insert_snapshot(&self, room_nid: i64, blocks: &[BlockRef]) -> Res<i64>;

    fn set_membership(&self, room_nid: i64, user_id: &str, membership: &str, event_nid: i64) -> Res<()>;
    fn membership(&self, room_nid: i64, user_id: &str) -> Res<Option<String>>;
    fn rooms_with_membership(&self, user_id: &str, membership: &str) -> Res<Vec<String>>;

    /// The NID of the event a client transaction made, if it was answered.
    fn txn_event(&self, txn: &TxnKey) -> Res<Option<i64>>;
    fn insert_txn(&self, txn: &TxnKey, event_nid: i64) -> Res<()>;
    /// The stored verdict on `request_id`, the input at `offset` of
    /// `input.room_event` (delivered again after a crash), if any.
    fn input_verdict(&self, offset: u64, request_id: &str) -> Res<Option<String>>;
    /// Stores the verdict on the input at `offset` of `input.room_event`,
    /// replacing a verdict another input left at that offset.
    fn insert_input_verdict(&self, request_id: &str, verdict: &str, offset: u64, now: u64) -> Res<()>;
    /// Deletes up to `max` verdicts stored at or before `created_through` (ms)
    /// whose input's offset is at most `acked_through`; a verdict stored
    /// without its offset (before migration 0005) counts as at
    /// `legacy_offset`. Returns how many it deleted.
    fn delete_input_verdicts(
        &self,
        created_through: u64,
        acked_through: u64,
        legacy_offset: u64,
        max: usize,
    ) -> Res<usize>;
    fn insert_outbox(&self, room_id: &str, payload: &[u8]) -> Res<i64>;
}
