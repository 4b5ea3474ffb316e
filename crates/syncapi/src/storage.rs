//! The sync API's tables on SQLite: every query the consumer and the sync
//! assembly need, as functions over one transaction.

use std::collections::{BTreeMap, BTreeSet};

use neurite_storage::{Migration, StorageError};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value as JsonValue;
use serde_json::value::RawValue;

use crate::api::RoomEventFilter;
use crate::response::RawEvent;

/// The sync API's migrations.
pub(crate) static MIGRATIONS: &[Migration] =
    &[("0001_create_syncapi", include_str!("../migrations/sqlite/0001_create_syncapi.sql"))];

/// Result of a table operation.
pub(crate) type Res<T> = Result<T, StorageError>;

/// A state key: (event type, state key).
pub(crate) type StateKey = (String, String);

/// An event row as served: its stored JSON text, unparsed, with the columns
/// the sync assembly reads instead of the JSON.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub position: i64,
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

/// A stored event's JSON text as served: checked to be JSON, not parsed into
/// a tree, and not copied (the column's `String` becomes the `RawValue`).
fn raw(json: String) -> Res<RawEvent> {
    RawValue::from_string(json).map_err(corrupt)
}

/// Parses a stored event, for the few whose fields must be read or changed.
pub(crate) fn parse(json: &RawValue) -> Res<JsonValue> {
    serde_json::from_str(json.get()).map_err(corrupt)
}

/// The offset of the output log applied last.
pub(crate) fn applied_offset(t: &Transaction<'_>, topic: &str) -> Res<u64> {
    Ok(t.query_row("SELECT applied_offset FROM syncapi_consumer WHERE topic = ?1", [topic], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0) as u64)
}

/// Records the offset applied last (in the transaction that applied it).
pub(crate) fn set_applied_offset(t: &Transaction<'_>, topic: &str, offset: u64) -> Res<()> {
    t.execute(
        "INSERT INTO syncapi_consumer (topic, applied_offset) VALUES (?1, ?2)
         ON CONFLICT (topic) DO UPDATE SET applied_offset = excluded.applied_offset",
        params![topic, offset as i64],
    )?;
    Ok(())
}

/// Stores a new event and returns its stream position (`None` if already stored).
pub(crate) fn insert_event(t: &Transaction<'_>, event: &JsonValue, txn: Option<(&str, &str)>) -> Res<Option<i64>> {
    let text = |k: &str| event.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let event_id = text("event_id").ok_or_else(|| corrupt("event without event_id"))?;
    if t.query_row("SELECT 1 FROM syncapi_events WHERE event_id = ?1", [&event_id], |_| Ok(())).optional()?.is_some() {
        return Ok(None);
    }
    t.prepare_cached(
        "INSERT INTO syncapi_events (room_id, event_id, event_type, sender, state_key, json, txn_device_id, txn_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        text("room_id"),
        event_id,
        text("type"),
        text("sender"),
        text("state_key"),
        event.to_string(),
        txn.map(|t| t.0),
        txn.map(|t| t.1),
    ])?;
    Ok(Some(t.last_insert_rowid()))
}

/// A stored event: its room, type, state key and JSON.
pub(crate) type StoredEvent = (String, String, Option<String>, RawEvent);

/// An event by ID.
pub(crate) fn event_by_id(t: &Transaction<'_>, event_id: &str) -> Res<Option<StoredEvent>> {
    let row: Option<(String, String, Option<String>, String)> = t
        .prepare_cached("SELECT room_id, event_type, state_key, json FROM syncapi_events WHERE event_id = ?1")?
        .query_row([event_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(room, ty, key, json)| Ok((room, ty, key, raw(json)?))).transpose()
}

/// An event's JSON by ID.
pub(crate) fn event_json(t: &Transaction<'_>, event_id: &str) -> Res<Option<RawEvent>> {
    let json: Option<String> = t
        .prepare_cached("SELECT json FROM syncapi_events WHERE event_id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?;
    json.map(raw).transpose()
}

/// Applies one change of a room's current state at `position`.
pub(crate) fn apply_state_change(
    t: &Transaction<'_>,
    room_id: &str,
    key: &StateKey,
    added: Option<(&str, Option<&str>)>,
    removed: Option<&str>,
    position: i64,
) -> Res<()> {
    match added {
        Some((event_id, membership)) => {
            t.prepare_cached(
                "INSERT INTO syncapi_current_state (room_id, event_type, state_key, event_id, position, membership)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET
                   event_id = excluded.event_id, position = excluded.position, membership = excluded.membership",
            )?
            .execute(params![room_id, key.0, key.1, event_id, position, membership])?;
        }
        None => {
            t.execute(
                "DELETE FROM syncapi_current_state WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3",
                params![room_id, key.0, key.1],
            )?;
        }
    }
    t.prepare_cached(
        "INSERT INTO syncapi_state_deltas (position, room_id, event_type, state_key, added_event_id, removed_event_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![position, room_id, key.0, key.1, added.map(|a| a.0), removed])?;
    Ok(())
}

/// Records a membership change of `user_id` at `position`.
pub(crate) fn insert_membership(
    t: &Transaction<'_>,
    user_id: &str,
    room_id: &str,
    position: i64,
    membership: &str,
    event_id: &str,
) -> Res<()> {
    t.prepare_cached(
        "INSERT INTO syncapi_memberships (user_id, room_id, position, membership, event_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, room_id, position, membership, event_id])?;
    Ok(())
}

/// Users joined to a room now.
pub(crate) fn joined_users(t: &Transaction<'_>, room_id: &str) -> Res<Vec<String>> {
    let mut stmt = t.prepare_cached(
        "SELECT state_key FROM syncapi_current_state WHERE room_id = ?1 AND event_type = 'm.room.member' AND membership = 'join'",
    )?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The latest stream position.
pub(crate) fn max_position(t: &Transaction<'_>) -> Res<i64> {
    Ok(t.query_row("SELECT COALESCE(MAX(position), 0) FROM syncapi_events", [], |r| r.get(0))?)
}

/// The user's current membership in every room they have one in: (room, membership, position).
pub(crate) fn current_memberships(t: &Transaction<'_>, user_id: &str) -> Res<Vec<(String, String, i64)>> {
    let mut stmt = t.prepare_cached(
        "SELECT room_id, membership, position FROM syncapi_current_state
         WHERE event_type = 'm.room.member' AND state_key = ?1 AND membership IS NOT NULL",
    )?;
    let rows = stmt.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Rooms where the user's membership changed in (`after`, `upto`].
pub(crate) fn membership_changes(t: &Transaction<'_>, user_id: &str, after: i64, upto: i64) -> Res<BTreeSet<String>> {
    let mut stmt = t.prepare_cached(
        "SELECT DISTINCT room_id FROM syncapi_memberships WHERE user_id = ?1 AND position > ?2 AND position <= ?3",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The user's membership in a room as of `position` (inclusive).
pub(crate) fn membership_at(
    t: &Transaction<'_>,
    user_id: &str,
    room_id: &str,
    position: i64,
) -> Res<Option<(String, i64)>> {
    Ok(t.prepare_cached(
        "SELECT membership, position FROM syncapi_memberships
         WHERE user_id = ?1 AND room_id = ?2 AND position <= ?3 ORDER BY position DESC LIMIT 1",
    )?
    .query_row(params![user_id, room_id, position], |r| Ok((r.get(0)?, r.get(1)?)))
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
        list("event_type", types, false, args);
    }
    if !filter.not_types.is_empty() {
        list("event_type", &filter.not_types, true, args);
    }
    if let Some(senders) = &filter.senders {
        list("sender", senders, false, args);
    }
    if !filter.not_senders.is_empty() {
        list("sender", &filter.not_senders, true, args);
    }
    sql
}

/// Events of a room with positions in (`after`, `upto`], the last `limit`
/// of them (or the first `limit` going forwards), in stream order, and
/// whether more matched. Uses the (room, position) index: costs `limit`
/// rows, not the events since `after`.
pub(crate) fn room_events(
    t: &Transaction<'_>,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
    forwards: bool,
    filter: &RoomEventFilter,
) -> Res<(Vec<EventRow>, bool)> {
    let mut args = Vec::new();
    let filter = filter_sql(filter, &mut args);
    let order = if forwards { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT position, event_type, state_key, json, txn_device_id, txn_id FROM syncapi_events
         WHERE room_id = ?1 AND position > ?2 AND position <= ?3{filter} ORDER BY position {order} LIMIT {}",
        limit + 1
    );
    let mut stmt = t.prepare_cached(&sql)?;
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&room_id, &after, &upto];
    values.extend(args.iter().map(|a| a as &dyn rusqlite::ToSql));
    let rows = stmt.query_map(values.as_slice(), |r| {
        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?, r.get(4)?, r.get(5)?))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (position, event_type, state_key, json, txn_device_id, txn_id) = row?;
        events.push(EventRow { position, event_type, state_key, json: raw(json)?, txn_device_id, txn_id });
    }
    let more = events.len() > limit;
    events.truncate(limit);
    if !forwards {
        events.reverse();
    }
    Ok((events, more))
}

/// The state of a room before `position` (after every event below it):
/// current state with the deltas at or after `position` undone, newest
/// first. With `keys`, only those keys. Costs the changes since
/// `position`, not the room's history.
pub(crate) fn state_before(
    t: &Transaction<'_>,
    room_id: &str,
    position: i64,
    keys: Option<&BTreeSet<StateKey>>,
) -> Res<BTreeMap<StateKey, String>> {
    let mut state = BTreeMap::new();
    let mut stmt =
        t.prepare_cached("SELECT event_type, state_key, event_id FROM syncapi_current_state WHERE room_id = ?1")?;
    for row in
        stmt.query_map([room_id], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, String>(2)?)))?
    {
        let (key, event_id) = row?;
        if keys.is_none_or(|k| k.contains(&key)) {
            state.insert(key, event_id);
        }
    }
    let mut stmt = t.prepare_cached(
        "SELECT event_type, state_key, removed_event_id FROM syncapi_state_deltas
         WHERE room_id = ?1 AND position >= ?2 ORDER BY position DESC, rowid DESC",
    )?;
    for row in stmt.query_map(params![room_id, position], |r| {
        Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, Option<String>>(2)?))
    })? {
        let (key, removed) = row?;
        if keys.is_some_and(|k| !k.contains(&key)) {
            continue;
        }
        match removed {
            Some(event_id) => state.insert(key, event_id),
            None => state.remove(&key),
        };
    }
    Ok(state)
}

/// The state keys a room's state changed at in (`after`, `before`).
pub(crate) fn state_keys_changed(
    t: &Transaction<'_>,
    room_id: &str,
    after: i64,
    before: i64,
) -> Res<BTreeSet<StateKey>> {
    let mut stmt = t.prepare_cached(
        "SELECT DISTINCT event_type, state_key FROM syncapi_state_deltas WHERE room_id = ?1 AND position > ?2 AND position < ?3",
    )?;
    let rows = stmt.query_map(params![room_id, after, before], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events by ID, as JSON, in the order given (unknown ones skipped).
pub(crate) fn events_json(t: &Transaction<'_>, ids: impl IntoIterator<Item = String>) -> Res<Vec<RawEvent>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(json) = event_json(t, &id)? {
            out.push(json);
        }
    }
    Ok(out)
}

/// The changes of one state key of a room at positions in [`from`, `to`]:
/// (position, the event that entered the state; `None` if the key left it).
pub(crate) fn key_changes(
    t: &Transaction<'_>,
    room_id: &str,
    key: &StateKey,
    from: i64,
    to: i64,
) -> Res<Vec<(i64, Option<String>)>> {
    let mut stmt = t.prepare_cached(
        "SELECT position, added_event_id FROM syncapi_state_deltas
         WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3 AND position >= ?4 AND position <= ?5
         ORDER BY position, rowid",
    )?;
    let rows = stmt.query_map(params![room_id, key.0, key.1, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
