//! The sync API's tables on SQLite: every query the consumer and the sync
//! assembly need, as functions over one transaction.

use std::collections::{BTreeMap, BTreeSet};

use neurite_storage::packed::PackedJson;
use neurite_storage::{Migration, StorageError};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value as JsonValue;
use serde_json::value::RawValue;

use crate::api::RoomEventFilter;
use crate::response::RawEvent;

/// The sync API's migrations.
pub(crate) static MIGRATIONS: &[Migration] = &[
    ("0001_create_syncapi", include_str!("../migrations/sqlite/0001_create_syncapi.sql")),
    ("0002_room_nids_event_positions", include_str!("../migrations/sqlite/0002_room_nids_event_positions.sql")),
    ("0003_room_led_event_ids", include_str!("../migrations/sqlite/0003_room_led_event_ids.sql")),
];

/// Result of a table operation.
pub(crate) type Res<T> = Result<T, StorageError>;

/// A state key: (event type, state key).
pub(crate) type StateKey = (String, String);

/// A room's number in the sync API's tables (`syncapi_rooms`).
pub(crate) type RoomNid = i64;

/// An event's stream position: its number in `syncapi_events`.
pub(crate) type Position = i64;

/// An event row as served: its client-format JSON, unparsed, with the
/// columns the sync assembly reads instead of the JSON.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub position: Position,
    /// The event's `type`, from its column.
    pub event_type: String,
    /// The event's `state_key` (`None`: not a state event), from its column.
    pub state_key: Option<String>,
    pub json: RawEvent,
    pub txn_device_id: Option<String>,
    pub txn_id: Option<String>,
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// Parses a stored event, for the few whose fields must be read or changed.
pub(crate) fn parse(json: &RawValue) -> Res<JsonValue> {
    serde_json::from_str(json.get()).map_err(corrupt)
}

/// The top-level fields of an event that its row's columns hold: a stored
/// event's JSON leaves them out when they are strings (the columns hold
/// exactly those strings), and gets them back when read.
const COLUMN_FIELDS: [&str; 5] = ["event_id", "room_id", "sender", "state_key", "type"];

/// An event's JSON as stored: the client-format event without its
/// [`COLUMN_FIELDS`], its keys in the order a `serde_json::Value` object
/// has them (sorted).
fn stored_json(event: &JsonValue) -> Res<String> {
    let JsonValue::Object(fields) = event else { return Err(corrupt("an event is not a JSON object")) };
    let kept: BTreeMap<&str, &JsonValue> = fields
        .iter()
        .filter(|(key, value)| !(value.is_string() && COLUMN_FIELDS.contains(&key.as_str())))
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    serde_json::to_string(&kept).map_err(corrupt)
}

/// A stored event's columns and JSON, as read (`select_events!`).
struct StoredEvent {
    position: Position,
    event_id: String,
    room_id: String,
    event_type: String,
    sender: String,
    state_key: Option<String>,
    json: PackedJson,
    txn_device_id: Option<String>,
    txn_id: Option<String>,
}

/// The query of `StoredEvent::read`'s columns, in its order, with the
/// given `WHERE` (`e`: the event, `r`: its room), as one literal.
macro_rules! select_events {
    ($where:literal) => {
        concat!(
            "SELECT e.position, e.event_id, r.room_id, e.event_type, e.sender, e.state_key, e.json,
                e.txn_device_id, e.txn_id
             FROM syncapi_events e JOIN syncapi_rooms r ON r.room_nid = e.room_nid WHERE ",
            $where
        )
    };
}

impl StoredEvent {
    /// Reads a row of `select_events!`.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            position: r.get(0)?,
            event_id: r.get(1)?,
            room_id: r.get(2)?,
            event_type: r.get(3)?,
            sender: r.get(4)?,
            state_key: r.get(5)?,
            json: r.get(6)?,
            txn_device_id: r.get(7)?,
            txn_id: r.get(8)?,
        })
    }

    /// The event as served: the stored JSON with the fields its columns
    /// hold put back, keys in sorted order, so the text is the one the
    /// consumer was given. A row stored whole (before 0002) is served as is.
    fn into_row(self) -> Res<EventRow> {
        let PackedJson(stored) = self.json;
        let columns = [
            ("event_id", Some(&self.event_id)),
            ("room_id", Some(&self.room_id)),
            ("sender", Some(&self.sender)),
            ("state_key", self.state_key.as_ref()),
            ("type", Some(&self.event_type)),
        ];
        // Top-level values stay text: only the event's outer object is read.
        // Keys owned: a key written with escapes cannot be borrowed.
        let mut fields: BTreeMap<String, &RawValue> = serde_json::from_str(&stored).map_err(corrupt)?;
        let missing: Vec<(&str, Box<RawValue>)> = columns
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .filter(|(key, _)| !fields.contains_key(*key))
            .map(|(key, value)| Ok((key, serde_json::value::to_raw_value(value).map_err(corrupt)?)))
            .collect::<Res<_>>()?;
        let json = if missing.is_empty() {
            drop(fields);
            RawValue::from_string(stored).map_err(corrupt)?
        } else {
            fields.extend(missing.iter().map(|(key, value)| ((*key).to_owned(), &**value)));
            serde_json::value::to_raw_value(&fields).map_err(corrupt)?
        };
        Ok(EventRow {
            position: self.position,
            event_type: self.event_type,
            state_key: self.state_key,
            json,
            txn_device_id: self.txn_device_id,
            txn_id: self.txn_id,
        })
    }
}

/// The offset of the output log applied last.
pub(crate) fn applied_offset(t: &Transaction<'_>, topic: &str) -> Res<u64> {
    Ok(t.prepare_cached("SELECT applied_offset FROM syncapi_consumer WHERE topic = ?1")?
        .query_row([topic], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0) as u64)
}

/// Records the offset applied last (in the transaction that applied it).
pub(crate) fn set_applied_offset(t: &Transaction<'_>, topic: &str, offset: u64) -> Res<()> {
    t.prepare_cached(
        "INSERT INTO syncapi_consumer (topic, applied_offset) VALUES (?1, ?2)
         ON CONFLICT (topic) DO UPDATE SET applied_offset = excluded.applied_offset",
    )?
    .execute(params![topic, offset as i64])?;
    Ok(())
}

/// The number of a room (`None`: no event of it is stored).
pub(crate) fn room_nid(t: &Transaction<'_>, room_id: &str) -> Res<Option<RoomNid>> {
    Ok(t.prepare_cached("SELECT room_nid FROM syncapi_rooms WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))
        .optional()?)
}

/// The number of a room, numbering it if it is new.
pub(crate) fn room_nid_or_insert(t: &Transaction<'_>, room_id: &str) -> Res<RoomNid> {
    if let Some(nid) = room_nid(t, room_id)? {
        return Ok(nid);
    }
    t.prepare_cached("INSERT INTO syncapi_rooms (room_id) VALUES (?1)")?.execute([room_id])?;
    Ok(t.last_insert_rowid())
}

/// Stores a new event of `room` (the room its `room_id` names) and returns
/// its stream position (`None` if already stored).
pub(crate) fn insert_event(
    t: &Transaction<'_>,
    room: RoomNid,
    event: &JsonValue,
    txn: Option<(&str, &str)>,
) -> Res<Option<Position>> {
    let text = |k: &str| event.get(k).and_then(|v| v.as_str());
    let event_id = text("event_id").ok_or_else(|| corrupt("event without event_id"))?;
    let known = t
        .prepare_cached("SELECT 1 FROM syncapi_events WHERE room_nid = ?1 AND event_id = ?2")?
        .exists(params![room, event_id])?;
    if known {
        return Ok(None);
    }
    t.prepare_cached(
        "INSERT INTO syncapi_events (room_nid, event_id, event_type, sender, state_key, json, txn_device_id, txn_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        room,
        event_id,
        text("type"),
        text("sender"),
        text("state_key"),
        PackedJson(stored_json(event)?),
        txn.map(|t| t.0),
        txn.map(|t| t.1),
    ])?;
    Ok(Some(t.last_insert_rowid()))
}

/// An event of `room` by ID (event IDs are unique within their room).
pub(crate) fn event_by_id(t: &Transaction<'_>, room: RoomNid, event_id: &str) -> Res<Option<EventRow>> {
    let row = t
        .prepare_cached(select_events!("e.room_nid = ?1 AND e.event_id = ?2"))?
        .query_row(params![room, event_id], StoredEvent::read)
        .optional()?;
    row.map(StoredEvent::into_row).transpose()
}

/// An event's JSON by stream position.
pub(crate) fn event_json(t: &Transaction<'_>, position: Position) -> Res<Option<RawEvent>> {
    let row =
        t.prepare_cached(select_events!("e.position = ?1"))?.query_row([position], StoredEvent::read).optional()?;
    Ok(row.map(StoredEvent::into_row).transpose()?.map(|row| row.json))
}

/// Applies one change of a room's current state at `position`: `added`, the
/// state event that entered it (its position, and its membership if it is a
/// member event); `removed`, the one it replaced or that left.
pub(crate) fn apply_state_change(
    t: &Transaction<'_>,
    room: RoomNid,
    key: &StateKey,
    added: Option<(Position, Option<&str>)>,
    removed: Option<Position>,
    position: Position,
) -> Res<()> {
    match added {
        Some((event_position, membership)) => {
            t.prepare_cached(
                "INSERT INTO syncapi_current_state (room_nid, event_type, state_key, event_position, position, membership)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (room_nid, event_type, state_key) DO UPDATE SET
                   event_position = excluded.event_position, position = excluded.position,
                   membership = excluded.membership",
            )?
            .execute(params![room, key.0, key.1, event_position, position, membership])?;
        }
        None => {
            t.prepare_cached(
                "DELETE FROM syncapi_current_state WHERE room_nid = ?1 AND event_type = ?2 AND state_key = ?3",
            )?
            .execute(params![room, key.0, key.1])?;
        }
    }
    t.prepare_cached(
        "INSERT INTO syncapi_state_deltas (position, room_nid, event_type, state_key, added_position, removed_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![position, room, key.0, key.1, added.map(|a| a.0), removed])?;
    Ok(())
}

/// Records a membership change of `user_id` at `position`, made by the
/// member event at `event_position`.
pub(crate) fn insert_membership(
    t: &Transaction<'_>,
    user_id: &str,
    room: RoomNid,
    position: Position,
    membership: &str,
    event_position: Position,
) -> Res<()> {
    t.prepare_cached(
        "INSERT INTO syncapi_memberships (user_id, room_nid, position, membership, event_position)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, room, position, membership, event_position])?;
    Ok(())
}

/// Users joined to a room now.
pub(crate) fn joined_users(t: &Transaction<'_>, room: RoomNid) -> Res<Vec<String>> {
    let mut stmt = t.prepare_cached(
        "SELECT state_key FROM syncapi_current_state
         WHERE room_nid = ?1 AND event_type = 'm.room.member' AND membership = 'join'",
    )?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The latest stream position.
pub(crate) fn max_position(t: &Transaction<'_>) -> Res<Position> {
    Ok(t.prepare_cached("SELECT COALESCE(MAX(position), 0) FROM syncapi_events")?.query_row([], |r| r.get(0))?)
}

/// The user's current membership in a room.
#[derive(Debug)]
pub(crate) struct CurrentMembership {
    /// The room's number.
    pub room: RoomNid,
    /// The room's ID.
    pub room_id: String,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The position of the event that made it current.
    pub position: Position,
}

/// The user's current membership in every room they have one in.
pub(crate) fn current_memberships(t: &Transaction<'_>, user_id: &str) -> Res<Vec<CurrentMembership>> {
    let mut stmt = t.prepare_cached(
        "SELECT c.room_nid, r.room_id, c.membership, c.position
         FROM syncapi_current_state c JOIN syncapi_rooms r ON r.room_nid = c.room_nid
         WHERE c.event_type = 'm.room.member' AND c.state_key = ?1 AND c.membership IS NOT NULL",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(CurrentMembership { room: r.get(0)?, room_id: r.get(1)?, membership: r.get(2)?, position: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Rooms where the user's membership changed in (`after`, `upto`].
pub(crate) fn membership_changes(
    t: &Transaction<'_>,
    user_id: &str,
    after: Position,
    upto: Position,
) -> Res<BTreeSet<RoomNid>> {
    let mut stmt = t.prepare_cached(
        "SELECT DISTINCT room_nid FROM syncapi_memberships WHERE user_id = ?1 AND position > ?2 AND position <= ?3",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The user's membership in a room as of `position` (inclusive).
pub(crate) fn membership_at(
    t: &Transaction<'_>,
    user_id: &str,
    room: RoomNid,
    position: Position,
) -> Res<Option<(String, Position)>> {
    Ok(t.prepare_cached(
        "SELECT membership, position FROM syncapi_memberships
         WHERE user_id = ?1 AND room_nid = ?2 AND position <= ?3 ORDER BY position DESC LIMIT 1",
    )?
    .query_row(params![user_id, room, position], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?)
}

fn filter_sql(filter: &RoomEventFilter, args: &mut Vec<String>) -> String {
    let mut sql = String::new();
    let mut list = |column: &str, values: &[String], negate: bool, args: &mut Vec<String>| {
        let marks: Vec<String> = values
            .iter()
            .map(|v| {
                args.push(v.clone());
                format!("?{}", args.len() + 3)
            })
            .collect();
        sql.push_str(&format!(" AND {column} {}IN ({})", if negate { "NOT " } else { "" }, marks.join(", ")));
    };
    if let Some(types) = &filter.types {
        list("e.event_type", types, false, args);
    }
    if !filter.not_types.is_empty() {
        list("e.event_type", &filter.not_types, true, args);
    }
    if let Some(senders) = &filter.senders {
        list("e.sender", senders, false, args);
    }
    if !filter.not_senders.is_empty() {
        list("e.sender", &filter.not_senders, true, args);
    }
    sql
}

/// Events of a room with positions in (`after`, `upto`], the last `limit`
/// of them (or the first `limit` going forwards), in stream order, and
/// whether more matched. Uses the (room, position) index: costs `limit`
/// rows, not the events since `after`.
pub(crate) fn room_events(
    t: &Transaction<'_>,
    room: RoomNid,
    after: Position,
    upto: Position,
    limit: usize,
    forwards: bool,
    filter: &RoomEventFilter,
) -> Res<(Vec<EventRow>, bool)> {
    let mut args = Vec::new();
    let filter = filter_sql(filter, &mut args);
    let order = if forwards { "ASC" } else { "DESC" };
    let sql = format!(
        "{}{filter} ORDER BY e.position {order} LIMIT {}",
        select_events!("e.room_nid = ?1 AND e.position > ?2 AND e.position <= ?3"),
        limit + 1
    );
    let mut stmt = t.prepare_cached(&sql)?;
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&room, &after, &upto];
    values.extend(args.iter().map(|a| a as &dyn rusqlite::ToSql));
    let mut events =
        stmt.query_map(values.as_slice(), StoredEvent::read)?.map(|row| row?.into_row()).collect::<Res<Vec<_>>>()?;
    let more = events.len() > limit;
    events.truncate(limit);
    if !forwards {
        events.reverse();
    }
    Ok((events, more))
}

/// The state of a room before `position` (after every event below it), as
/// the positions of its state events: current state with the deltas at or
/// after `position` undone, newest first. With `keys`, only those keys.
/// Costs the changes since `position`, not the room's history.
pub(crate) fn state_before(
    t: &Transaction<'_>,
    room: RoomNid,
    position: Position,
    keys: Option<&BTreeSet<StateKey>>,
) -> Res<BTreeMap<StateKey, Position>> {
    let mut state = BTreeMap::new();
    let mut stmt = t.prepare_cached(
        "SELECT event_type, state_key, event_position FROM syncapi_current_state WHERE room_nid = ?1",
    )?;
    for row in stmt.query_map([room], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get(2)?)))? {
        let (key, event_position) = row?;
        if keys.is_none_or(|k| k.contains(&key)) {
            state.insert(key, event_position);
        }
    }
    let mut stmt = t.prepare_cached(
        "SELECT event_type, state_key, removed_position FROM syncapi_state_deltas
         WHERE room_nid = ?1 AND position >= ?2 ORDER BY position DESC, rowid DESC",
    )?;
    for row in stmt.query_map(params![room, position], |r| {
        Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, Option<Position>>(2)?))
    })? {
        let (key, removed) = row?;
        if keys.is_some_and(|k| !k.contains(&key)) {
            continue;
        }
        match removed {
            Some(event_position) => state.insert(key, event_position),
            None => state.remove(&key),
        };
    }
    Ok(state)
}

/// The state keys a room's state changed at in (`after`, `before`).
pub(crate) fn state_keys_changed(
    t: &Transaction<'_>,
    room: RoomNid,
    after: Position,
    before: Position,
) -> Res<BTreeSet<StateKey>> {
    let mut stmt = t.prepare_cached(
        "SELECT DISTINCT event_type, state_key FROM syncapi_state_deltas
         WHERE room_nid = ?1 AND position > ?2 AND position < ?3",
    )?;
    let rows = stmt.query_map(params![room, after, before], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events by stream position, as JSON, in the order given (unknown ones skipped).
pub(crate) fn events_json(t: &Transaction<'_>, positions: impl IntoIterator<Item = Position>) -> Res<Vec<RawEvent>> {
    let mut out = Vec::new();
    for position in positions {
        if let Some(json) = event_json(t, position)? {
            out.push(json);
        }
    }
    Ok(out)
}

/// The changes of one state key of a room at positions in [`from`, `to`]:
/// (position, the position of the event that entered the state; `None` if
/// the key left it).
pub(crate) fn key_changes(
    t: &Transaction<'_>,
    room: RoomNid,
    key: &StateKey,
    from: Position,
    to: Position,
) -> Res<Vec<(Position, Option<Position>)>> {
    let mut stmt = t.prepare_cached(
        "SELECT position, added_position FROM syncapi_state_deltas
         WHERE room_nid = ?1 AND event_type = ?2 AND state_key = ?3 AND position >= ?4 AND position <= ?5
         ORDER BY position, rowid",
    )?;
    let rows = stmt.query_map(params![room, key.0, key.1, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use neurite_log::{Log, SqliteLog};
    use neurite_roomserver::{OutputRoomEvent, TxnKey};
    use neurite_storage::sqlite::SqlitePool;
    use ruma::{RoomId, RoomVersionId, UserId, device_id};
    use serde_json::json;

    use super::*;
    use crate::api::{MessagesRequest, SyncApi, SyncRequest};
    use crate::service::SyncService;
    use crate::token::SyncToken;

    const A: &str = "!a:test.local";
    const B: &str = "!b:test.local";
    const ALICE: &str = "@alice:test.local";
    const BOB: &str = "@bob:test.local";

    #[test]
    fn a_stored_event_with_escaped_top_level_keys_reads_back_whole() {
        let event = json!({"content": {}, "event_id": "$e", "k\u{e9}y\"": 1, "origin_server_ts": 5,
                           "room_id": A, "sender": ALICE, "type": "m.room.message"});
        let stored = StoredEvent {
            position: 7,
            event_id: "$e".into(),
            room_id: A.into(),
            event_type: "m.room.message".into(),
            sender: ALICE.into(),
            state_key: None,
            json: PackedJson(stored_json(&event).unwrap()),
            txn_device_id: None,
            txn_id: None,
        };
        let row = stored.into_row().unwrap();
        assert_eq!(row.json.get(), event.to_string());
    }

    /// One output record: the event, the state it adds and removes, its transaction.
    struct Output {
        event: JsonValue,
        adds: Vec<String>,
        removes: Vec<String>,
        txn: Option<(&'static str, &'static str)>,
    }

    fn output(n: u64, room: &str, sender: &str, ty: &str, state_key: Option<&str>, content: JsonValue) -> Output {
        let mut event = json!({"content": content, "event_id": format!("$e{n}"), "origin_server_ts": 1_700_000_000_000u64 + n,
                               "room_id": room, "sender": sender, "type": ty});
        let adds = match state_key {
            Some(key) => {
                event["state_key"] = json!(key);
                vec![format!("$e{n}")]
            }
            None => Vec::new(),
        };
        Output { event, adds, removes: Vec::new(), txn: None }
    }

    /// Two rooms: alice's (history visibility `joined`; bob invited, then
    /// joined; its name replaced, then gone) and bob's, alice invited to it.
    fn outputs() -> Vec<Output> {
        let msg = |body: &str| json!({"msgtype": "m.text", "body": body});
        let mut out = vec![
            output(1, A, ALICE, "m.room.create", Some(""), json!({"room_version": "11"})),
            output(2, A, ALICE, "m.room.member", Some(ALICE), json!({"membership": "join", "displayname": "Alice"})),
            output(3, A, ALICE, "m.room.history_visibility", Some(""), json!({"history_visibility": "joined"})),
            output(4, A, ALICE, "m.room.name", Some(""), json!({"name": "Ä \"room\"\n\u{1}"})),
            output(5, A, ALICE, "m.room.message", None, msg("before bob")),
            output(6, A, ALICE, "m.room.member", Some(BOB), json!({"membership": "invite"})),
            output(7, A, ALICE, "m.room.message", None, msg("while bob is invited")),
            output(8, A, BOB, "m.room.member", Some(BOB), json!({"membership": "join"})),
            output(9, A, ALICE, "m.room.name", Some(""), json!({"name": "A2"})),
            output(10, A, BOB, "m.room.message", None, msg("bob's \u{1F600}")),
            output(11, B, BOB, "m.room.create", Some(""), json!({"room_version": "11"})),
            output(12, B, BOB, "m.room.member", Some(BOB), json!({"membership": "join"})),
            output(13, B, BOB, "m.room.member", Some(ALICE), json!({"membership": "invite"})),
            output(14, A, ALICE, "m.room.redaction", None, json!({})),
            output(15, A, ALICE, "m.room.message", None, msg("after the name left")),
        ];
        out[4].txn = Some(("DEV", "t5"));
        out[4].event["unsigned"] = json!({"age": 7});
        out[9].txn = Some(("BOBDEV", "t10"));
        out[7].removes = vec!["$e6".into()];
        out[8].removes = vec!["$e4".into()];
        out[13].event["redacts"] = json!("$e7");
        // A state reset: the name leaves the state, nothing replaces it.
        out[14].removes = vec!["$e9".into()];
        out
    }

    /// Applies `o` at `position` as the consumer did before 0002, in 0001's tables.
    fn apply_before_0002(t: &Transaction<'_>, position: i64, o: &Output) -> Res<()> {
        let text = |k: &str| o.event.get(k).and_then(JsonValue::as_str);
        let room = text("room_id").unwrap();
        t.execute(
            "INSERT INTO syncapi_events (position, room_id, event_id, event_type, sender, state_key, json, txn_device_id, txn_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![position, room, text("event_id"), text("type"), text("sender"), text("state_key"),
                    o.event.to_string(), o.txn.map(|t| t.0), o.txn.map(|t| t.1)],
        )?;
        let key_of = |id: &str| -> Res<(String, String, String)> {
            Ok(t.query_row("SELECT event_type, state_key, json FROM syncapi_events WHERE event_id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?)
        };
        let mut removed = BTreeMap::new();
        for id in &o.removes {
            let (ty, key, _) = key_of(id)?;
            removed.insert((ty, key), id.clone());
        }
        for id in &o.adds {
            let (ty, key, json) = key_of(id)?;
            let membership = (ty == "m.room.member").then(|| {
                serde_json::from_str::<JsonValue>(&json).unwrap()["content"]["membership"].as_str().unwrap().to_owned()
            });
            t.execute(
                "INSERT OR REPLACE INTO syncapi_current_state (room_id, event_type, state_key, event_id, position, membership)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![room, ty, key, id, position, membership],
            )?;
            t.execute(
                "INSERT INTO syncapi_state_deltas (position, room_id, event_type, state_key, added_event_id, removed_event_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![position, room, ty, key, id, removed.remove(&(ty.clone(), key.clone()))],
            )?;
            if let Some(membership) = membership {
                t.execute(
                    "INSERT INTO syncapi_memberships (user_id, room_id, position, membership, event_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key, room, position, membership, id],
                )?;
            }
        }
        for ((ty, key), id) in removed {
            t.execute(
                "DELETE FROM syncapi_current_state WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3",
                params![room, ty, key],
            )?;
            t.execute(
                "INSERT INTO syncapi_state_deltas (position, room_id, event_type, state_key, added_event_id, removed_event_id)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                params![position, room, ty, key, id],
            )?;
        }
        Ok(())
    }

    /// Everything the sync API answers about the two rooms, serialized.
    async fn answers(sync: &SyncService) -> Vec<String> {
        let mut out = Vec::new();
        for (user, device) in [(ALICE, device_id!("DEV")), (BOB, device_id!("BOBDEV"))] {
            let user = UserId::parse(user).unwrap();
            for since in [None, Some(3), Some(8), Some(12)] {
                for use_state_after in [false, true] {
                    let request = SyncRequest {
                        since: since.map(|s| SyncToken::at(s).to_string()),
                        use_state_after,
                        ..Default::default()
                    };
                    out.push(serde_json::to_string(&sync.sync(&user, device, request).await.unwrap()).unwrap());
                }
            }
            for room in [A, B] {
                let room = RoomId::parse(room).unwrap();
                let only_alice = RoomEventFilter {
                    limit: Some(3),
                    senders: Some(vec![ALICE.into()]),
                    not_types: vec!["m.room.member".into()],
                    ..Default::default()
                };
                let pages = [(true, None), (false, None), (true, Some(9)), (false, Some(6))];
                let filters = [RoomEventFilter { limit: Some(4), ..Default::default() }, only_alice];
                for ((backwards, from), filter) in pages.into_iter().flat_map(|p| filters.clone().map(|f| (p, f))) {
                    let from = from.map(|f| SyncToken::at(f).to_string());
                    let request = MessagesRequest { from, backwards, filter, ..Default::default() };
                    out.push(match sync.messages(&user, &room, request).await {
                        Ok(page) => serde_json::to_string(&page).unwrap(),
                        Err(e) => e.to_string(),
                    });
                }
                for at in [2, 9, 15] {
                    out.push(match sync.state_at(&user, &room, &SyncToken::at(at).to_string()).await {
                        Ok(state) => serde_json::to_string(&state).unwrap(),
                        Err(e) => e.to_string(),
                    });
                }
            }
        }
        out
    }

    /// The storage class of every stored event's JSON, in stream order.
    async fn json_kinds(pool: &SqlitePool) -> Vec<String> {
        pool.read(|t| {
            let mut stmt = t.prepare("SELECT typeof(json) FROM syncapi_events ORDER BY position")?;
            let kinds = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
            Ok::<_, StorageError>(kinds)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_database_from_before_0002_serves_the_same_events_once_migrated() {
        // Written before 0002, in 0001's shape (JSON as text, room and event
        // IDs in every table); the last position handed out is above the
        // last event's, as after deleting one.
        let old_dir = tempfile::tempdir().unwrap();
        let old = SqlitePool::open(&old_dir.path().join("neurite.db")).unwrap();
        old.migrate("syncapi", &MIGRATIONS[..1]).await.unwrap();
        old.write(move |t| {
            for (i, o) in outputs().iter().enumerate() {
                apply_before_0002(t, i as i64 + 1, o)?;
            }
            t.execute(
                "INSERT INTO syncapi_events (position, room_id, event_id, event_type, sender, json)
                 VALUES (16, ?1, '$deleted', 'm.room.message', ?2, '{}')",
                [A, ALICE],
            )?;
            t.execute("DELETE FROM syncapi_events WHERE position = 16", [])?;
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
        let old_log = SqliteLog::open(old.clone()).await.unwrap();
        // Starting runs 0002.
        let migrated = SyncService::start(old.clone(), Arc::new(old_log)).await.unwrap();

        // The same outputs through the consumer, on a new database.
        let new_dir = tempfile::tempdir().unwrap();
        let new = SqlitePool::open(&new_dir.path().join("neurite.db")).unwrap();
        let log = SqliteLog::open(new.clone()).await.unwrap();
        let fresh = SyncService::start(new.clone(), Arc::new(log.clone())).await.unwrap();
        let outputs = outputs();
        for o in &outputs {
            let txn = o.txn.map(|(device, txn)| TxnKey {
                user_id: UserId::parse(o.event["sender"].as_str().unwrap()).unwrap(),
                device_id: device.into(),
                txn_id: txn.into(),
                scope: "send".into(),
            });
            let record = OutputRoomEvent::NewRoomEvent {
                event: o.event.clone(),
                room_version: RoomVersionId::V11,
                adds_state_event_ids: o.adds.iter().map(|id| id.as_str().try_into().unwrap()).collect(),
                removes_state_event_ids: o.removes.iter().map(|id| id.as_str().try_into().unwrap()).collect(),
                txn,
            };
            let room = o.event["room_id"].as_str().unwrap();
            log.publish(neurite_log::OUTPUT_ROOM_EVENT, room, serde_json::to_vec(&record).unwrap(), None)
                .await
                .unwrap();
        }

        let (fresh_answers, migrated_answers) = (answers(&fresh).await, answers(&migrated).await);
        for (i, (a, b)) in fresh_answers.iter().zip(&migrated_answers).enumerate() {
            assert_eq!(a, b, "answer {i}");
        }
        assert_eq!(fresh_answers.len(), migrated_answers.len());
        // Not vacuous: every event is served somewhere, as the text it was given.
        let all = fresh_answers.concat();
        for o in &outputs[1..] {
            if o.txn.is_none() {
                assert!(all.contains(&o.event.to_string()), "{} never served as given", o.event);
            }
        }
        assert!(all.contains(r#""unsigned":{"age":7,"transaction_id":"t5"}"#), "{all}");
        assert!(all.contains("You were not in this room at that point"), "{all}");

        // Old rows stay text, whole; new ones are packed without their columns' fields.
        assert!(json_kinds(&old).await.iter().all(|k| k == "text"));
        assert!(json_kinds(&new).await.iter().all(|k| k == "blob"));
        let stored = new
            .read(|t| {
                Ok::<_, StorageError>(t.query_row("SELECT json FROM syncapi_events WHERE position = 2", [], |r| {
                    r.get::<_, PackedJson>(0)
                })?)
            })
            .await
            .unwrap();
        assert_eq!(
            stored.0,
            r#"{"content":{"displayname":"Alice","membership":"join"},"origin_server_ts":1700000000002}"#
        );

        // Positions are never handed out again: the next event takes 17.
        let next = old
            .write(|t| {
                let room = room_nid(t, A)?.unwrap();
                let event = json!({"event_id": "$next", "room_id": A, "sender": ALICE, "type": "m.room.message", "content": {}});
                insert_event(t, room, &event, None)
            })
            .await
            .unwrap();
        assert_eq!(next, Some(17));
    }
}
