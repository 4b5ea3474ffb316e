//! Assembling `/sync` and `/messages` from the sync API's tables.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use neurite_log::Log;
use neurite_storage::StorageError;
use neurite_storage::sqlite::SqlitePool;
use ruma::{DeviceId, RoomId, UserId};
use rusqlite::Transaction;
use serde_json::{Map, Value as JsonValue, json};

use crate::api::{MessagesRequest, RoomEventFilter, SyncApi, SyncError, SyncRequest};
use crate::notifier::Notifier;
use crate::response::{
    DeviceLists, Events, InvitedRoom, MessagesResponse, RawEvent, Rooms, SyncResponse, SyncRoom, Timeline,
};
use crate::storage::{self, CurrentMembership, EventRow, MIGRATIONS, Position, RoomNid};
use crate::token::SyncToken;
use crate::{TIMELINE_LIMIT_DEFAULT, consumer};

/// Longest `/sync` long-poll, in milliseconds, whatever the client asks.
pub const SYNC_TIMEOUT_MS_MAX: u64 = 5 * 60 * 1000;

/// Most events one timeline or `/messages` page returns.
pub const TIMELINE_EVENTS_MAX: usize = 1000;

/// Name of the sync API's subscription to `output.room_event`.
const OUTPUT_SUBSCRIPTION: &str = "syncapi";

/// State event types an invite shows of its room (stripped state).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.canonical_alias",
];

/// How long a request waits for the sync API to apply what the output log
/// already holds, in milliseconds, before answering with what it has.
pub const CATCH_UP_WAIT_MS_MAX: u64 = 5_000;

/// The sync API. Cheap to clone.
#[derive(Clone)]
pub struct SyncService {
    pool: SqlitePool,
    notifier: Arc<Notifier>,
    log: Arc<dyn Log>,
    applied: tokio::sync::watch::Receiver<u64>,
}

fn fault(e: StorageError) -> SyncError {
    SyncError::Fault(e.to_string())
}

fn parse_token(token: &str) -> Result<SyncToken, SyncError> {
    token.parse().map_err(|e: String| SyncError::BadToken(e))
}

/// The client-format JSON of an event for one device: the stored text as
/// is, except for the device that sent it, which gets its transaction ID in
/// `unsigned` (created if absent): only those few events are parsed.
fn for_device(row: EventRow, device_id: &str) -> Result<RawEvent, StorageError> {
    let txn_id = match row.txn_id {
        Some(txn_id) if row.txn_device_id.as_deref() == Some(device_id) => txn_id,
        _ => return Ok(row.json),
    };
    let mut json = storage::parse(&row.json)?;
    let corrupt = |what: &str| StorageError::Corrupt(format!("event at {}: {what} is not an object", row.position));
    let JsonValue::Object(event) = &mut json else { return Err(corrupt("the event")) };
    let unsigned = event.entry("unsigned").or_insert(JsonValue::Null);
    if unsigned.is_null() {
        *unsigned = JsonValue::Object(Map::new());
    }
    let JsonValue::Object(unsigned) = unsigned else { return Err(corrupt("unsigned")) };
    unsigned.insert("transaction_id".into(), JsonValue::String(txn_id));
    serde_json::value::to_raw_value(&json).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// A string in one stored event, at a JSON pointer (`None`: no such event,
/// or no string there). Parses that one event.
fn string_in(t: &Transaction<'_>, event: Position, pointer: &str) -> Result<Option<String>, StorageError> {
    let Some(json) = storage::event_json(t, event)? else { return Ok(None) };
    Ok(storage::parse(&json)?.pointer(pointer).and_then(JsonValue::as_str).map(str::to_owned))
}

/// The stripped form of a stored event, for `invite_state` (parsed: an
/// invite shows a few events).
fn stripped(t: &Transaction<'_>, event: Position) -> Result<Option<JsonValue>, StorageError> {
    let Some(json) = storage::event_json(t, event)? else { return Ok(None) };
    let e = storage::parse(&json)?;
    Ok(Some(json!({"type": e["type"], "state_key": e["state_key"], "sender": e["sender"], "content": e["content"]})))
}

fn room_allowed(filter: &RoomEventFilter, room_id: &str) -> bool {
    filter.rooms.as_ref().is_none_or(|r| r.iter().any(|x| x == room_id))
        && !filter.not_rooms.iter().any(|x| x == room_id)
}

/// The events of `events` (ascending, one room) that `user_id` may see
/// under the room's history visibility at each of them: `world_readable`
/// and `shared` show everything to a member, `invited` what came after
/// their invite, `joined` what came while they were joined. Users always
/// see their own membership events. Two range queries, then one sweep.
fn visible_to(
    t: &Transaction<'_>,
    user_id: &str,
    room: RoomNid,
    events: Vec<EventRow>,
) -> Result<Vec<EventRow>, StorageError> {
    let (Some(first), Some(last)) = (events.first().map(|e| e.position), events.last().map(|e| e.position)) else {
        return Ok(events);
    };
    let vis_key = ("m.room.history_visibility".to_owned(), String::new());
    let content_of = |event: Option<Position>| -> Result<String, StorageError> {
        let Some(event) = event else { return Ok("shared".into()) };
        Ok(string_in(t, event, "/content/history_visibility")?.unwrap_or_else(|| "shared".into()))
    };
    let keys = BTreeSet::from([vis_key.clone()]);
    let mut visibility = content_of(storage::state_before(t, room, first, Some(&keys))?.get(&vis_key).copied())?;
    let vis_changes = storage::key_changes(t, room, &vis_key, first, last)?;
    let mut membership = storage::membership_at(t, user_id, room, first - 1)?.map(|(m, _)| m);
    let member_key = ("m.room.member".to_owned(), user_id.to_owned());
    let member_changes = storage::key_changes(t, room, &member_key, first, last)?;
    let (mut v, mut m) = (0, 0);
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        // Apply the changes made by events before this one.
        while v < vis_changes.len() && vis_changes[v].0 < event.position {
            visibility = content_of(vis_changes[v].1)?;
            v += 1;
        }
        while m < member_changes.len() && member_changes[m].0 < event.position {
            membership = match member_changes[m].1 {
                Some(added) => string_in(t, added, "/content/membership")?,
                None => None,
            };
            m += 1;
        }
        // From the row's columns: the events themselves stay unparsed.
        let own_membership = event.event_type == "m.room.member" && event.state_key.as_deref() == Some(user_id);
        let allowed = own_membership
            || match visibility.as_str() {
                "joined" => membership.as_deref() == Some("join"),
                "invited" => matches!(membership.as_deref(), Some("join" | "invite")),
                // "shared", "world_readable" and unknown values.
                _ => true,
            };
        if allowed {
            out.push(event);
        }
    }
    Ok(out)
}

/// One room's timeline and state for a sync.
struct RoomSync {
    timeline: Vec<RawEvent>,
    limited: bool,
    prev_batch: SyncToken,
    state: Vec<RawEvent>,
    /// Whether `state` is `state_after`.
    state_after: bool,
}

impl RoomSync {
    fn into_response(self) -> SyncRoom {
        // The events move in: a response holds each event's stored text once,
        // until it is serialized.
        let state = Some(Events { events: self.state });
        let (state, state_after) = if self.state_after { (None, state) } else { (state, None) };
        SyncRoom {
            account_data: Events::default(),
            ephemeral: Events::default(),
            state,
            state_after,
            timeline: Timeline {
                events: self.timeline,
                limited: self.limited,
                prev_batch: self.prev_batch.to_string(),
            },
        }
    }
}

/// The timeline of a room in (`after`, `upto`] and the state at its start:
/// the full state (`full`), or only what changed since `after`.
/// Who is reading: the user, the device (for its transaction IDs), and
/// whether they want `state_after`.
#[derive(Clone, Copy)]
struct Reader<'a> {
    user_id: &'a str,
    device_id: &'a str,
    state_after: bool,
}

fn room_sync(
    t: &Transaction<'_>,
    reader: Reader<'_>,
    room: RoomNid,
    after: i64,
    upto: i64,
    full: bool,
    filter: &RoomEventFilter,
) -> Result<RoomSync, StorageError> {
    let Reader { user_id, device_id, state_after } = reader;
    let limit = filter.limit.unwrap_or(TIMELINE_LIMIT_DEFAULT).min(TIMELINE_EVENTS_MAX);
    let (events, more) = storage::room_events(t, room, after, upto, limit, false, filter)?;
    let start = events.first().map_or(upto + 1, |e| e.position);
    let events = visible_to(t, user_id, room, events)?;
    // `state`: the state at the timeline's start; `state_after` (MSC4222): at
    // its end, counting the timeline's own state events. Full, or only the
    // keys that changed since `after`.
    let at = if state_after { upto + 1 } else { start };
    let state_ids = if full {
        storage::state_before(t, room, at, None)?
    } else {
        let changed = storage::state_keys_changed(t, room, after, at)?;
        if changed.is_empty() { Default::default() } else { storage::state_before(t, room, at, Some(&changed))? }
    };
    let state = storage::events_json(t, state_ids.into_values())?;
    Ok(RoomSync {
        timeline: events.into_iter().map(|e| for_device(e, device_id)).collect::<Result<_, _>>()?,
        // A newly joined room, or a full sync, always says earlier events exist.
        limited: more || (full && after == 0 && start > 1),
        prev_batch: SyncToken::at((start - 1).max(0) as u64),
        state,
        state_after,
    })
}

/// Builds a sync response; the flag says whether it carries anything new.
fn build_sync(
    t: &Transaction<'_>,
    user_id: &str,
    device_id: &str,
    since: Option<SyncToken>,
    request: &SyncRequest,
) -> Result<(SyncResponse, bool), StorageError> {
    let reader = Reader { user_id, device_id, state_after: request.use_state_after };
    let now = storage::max_position(t)?;
    let since_pos = since.map(|s| (s.events as i64).min(now));
    let filter = &request.timeline;
    let mut rooms = Rooms::default();
    let Rooms { join, invite, leave, .. } = &mut rooms;
    let changed = match since_pos {
        Some(s) => storage::membership_changes(t, user_id, s, now)?,
        None => BTreeSet::new(),
    };
    for CurrentMembership { room, room_id, membership, position } in storage::current_memberships(t, user_id)? {
        if !room_allowed(filter, &room_id) {
            continue;
        }
        match (membership.as_str(), since_pos) {
            ("join", None) => {
                join.insert(room_id.clone(), room_sync(t, reader, room, 0, now, true, filter)?.into_response());
            }
            ("join", Some(s)) => {
                // A room is newly joined only if the user was not joined at `since`:
                // a duplicate join or a profile change is not a new join.
                let joined_before = storage::membership_at(t, user_id, room, s)?.is_some_and(|(m, _)| m == "join");
                let newly = changed.contains(&room) && !joined_before;
                let full = newly || request.full_state;
                let sync = room_sync(t, reader, room, if newly { 0 } else { s }, now, full, filter)?;
                if newly || request.full_state || !sync.timeline.is_empty() || !sync.state.is_empty() {
                    let mut sync = sync;
                    if newly {
                        sync.limited = true;
                    }
                    join.insert(room_id.clone(), sync.into_response());
                }
            }
            ("invite", _) if since_pos.is_none_or(|s| position > s) => {
                let mut state: Vec<JsonValue> = Vec::new();
                let current = storage::state_before(t, room, i64::MAX, None)?;
                for ((ty, key), &event) in &current {
                    let inviter_or_me = ty == "m.room.member" && key == user_id;
                    if INVITE_STATE_TYPES.contains(&ty.as_str()) || inviter_or_me {
                        state.extend(stripped(t, event)?);
                    }
                }
                // The inviter's member event.
                if let Some(&me) = current.get(&("m.room.member".to_owned(), user_id.to_owned()))
                    && let Some(inviter) = string_in(t, me, "/sender")?
                    && let Some(&theirs) = current.get(&("m.room.member".to_owned(), inviter))
                {
                    state.extend(stripped(t, theirs)?);
                }
                invite.insert(room_id.clone(), InvitedRoom { invite_state: Events { events: state } });
            }
            ("leave" | "ban", Some(s)) if position > s => {
                // The events up to the leave, with the state at their start.
                let joined_before = storage::membership_at(t, user_id, room, s)?.is_some_and(|(m, _)| m == "join");
                let sync = room_sync(t, reader, room, s, position, !joined_before, filter)?;
                leave.insert(room_id.clone(), sync.into_response());
            }
            _ => {}
        }
    }
    let updates = !join.is_empty() || !invite.is_empty() || !leave.is_empty();
    let body = SyncResponse {
        account_data: Events::default(),
        device_lists: DeviceLists::default(),
        device_one_time_keys_count: Default::default(),
        next_batch: SyncToken::at(now as u64).to_string(),
        presence: Events::default(),
        rooms,
        to_device: Events::default(),
    };
    Ok((body, updates))
}

impl SyncService {
    /// Opens the sync API on `pool` (running its migrations) and starts
    /// consuming `output.room_event`.
    ///
    /// # Errors
    /// A migration or the log subscription fails.
    pub async fn start(pool: SqlitePool, log: Arc<dyn Log>) -> Result<Self, SyncError> {
        pool.migrate("syncapi", MIGRATIONS).await.map_err(fault)?;
        let notifier = Arc::new(Notifier::default());
        let subscription = log
            .subscribe(neurite_log::OUTPUT_ROOM_EVENT, OUTPUT_SUBSCRIPTION)
            .await
            .map_err(|e| SyncError::Fault(e.to_string()))?;
        let applied_offset =
            pool.read(|t| storage::applied_offset(t, neurite_log::OUTPUT_ROOM_EVENT)).await.map_err(fault)?;
        let (applied_tx, applied) = tokio::sync::watch::channel(applied_offset);
        tokio::spawn(consumer::run(pool.clone(), subscription, notifier.clone(), applied_tx));
        Ok(Self { pool, notifier, log, applied })
    }

    /// Waits until everything already on the output log is applied, so a
    /// client sees its own writes: the room server publishes an event's
    /// output before answering its writer.
    async fn catch_up(&self) -> Result<(), SyncError> {
        let target = self
            .log
            .latest_offset(neurite_log::OUTPUT_ROOM_EVENT)
            .await
            .map_err(|e| SyncError::Fault(e.to_string()))?;
        let mut applied = self.applied.clone();
        let caught_up = applied.wait_for(|offset| *offset >= target);
        if tokio::time::timeout(Duration::from_millis(CATCH_UP_WAIT_MS_MAX), caught_up).await.is_err() {
            tracing::warn!(target, "the sync API is behind the output log; answering with what it has");
        }
        Ok(())
    }
}

#[async_trait]
impl SyncApi for SyncService {
    async fn sync(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        request: SyncRequest,
    ) -> Result<SyncResponse, SyncError> {
        let since = request.since.as_deref().map(parse_token).transpose()?;
        self.catch_up().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.timeout_ms.min(SYNC_TIMEOUT_MS_MAX));
        let notify = self.notifier.handle(user_id);
        let request = Arc::new(request);
        loop {
            // Invariant: registered before reading, so an event committed
            // between the read and the wait still wakes this request.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (user, device, req) = (user_id.to_string(), device_id.to_string(), request.clone());
            let (body, updates) =
                self.pool.read(move |t| build_sync(t, &user, &device, since, &req)).await.map_err(fault)?;
            if updates || since.is_none() || tokio::time::Instant::now() >= deadline {
                return Ok(body);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(body);
            }
        }
    }

    async fn state_at(&self, user_id: &UserId, room_id: &RoomId, at: &str) -> Result<Vec<JsonValue>, SyncError> {
        let at = parse_token(at)?;
        self.catch_up().await?;
        let (user, room) = (user_id.to_string(), room_id.to_string());
        self.pool
            .read(move |t| {
                let position = (at.events as i64).min(storage::max_position(t)?);
                let forbidden = || Ok(Err(SyncError::Forbidden("You were not in this room at that point".into())));
                let Some(room) = storage::room_nid(t, &room)? else { return forbidden() };
                match storage::membership_at(t, &user, room, position)? {
                    Some((membership, _)) if matches!(membership.as_str(), "join" | "leave" | "ban") => {}
                    _ => return forbidden(),
                }
                let state = storage::state_before(t, room, position + 1, None)?;
                // Not a hot path: `/members?at=` answers with parsed events.
                let events = storage::events_json(t, state.into_values())?;
                Ok(Ok(events.iter().map(|e| storage::parse(e)).collect::<Result<_, _>>()?))
            })
            .await
            .map_err(fault)?
    }

    async fn messages(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        request: MessagesRequest,
    ) -> Result<MessagesResponse, SyncError> {
        let from = request.from.as_deref().map(parse_token).transpose()?;
        let to = request.to.as_deref().map(parse_token).transpose()?;
        self.catch_up().await?;
        let (user, room) = (user_id.to_string(), room_id.to_string());
        self.pool
            .read(move |t| {
                let now = storage::max_position(t)?;
                // A user reads the room up to where they left it, and only if
                // they were ever in it (or invited: nothing but the invite).
                let forbidden = || Ok(Err(SyncError::Forbidden("You are not in this room".into())));
                let Some(room) = storage::room_nid(t, &room)? else { return forbidden() };
                let Some((membership, position)) = storage::membership_at(t, &user, room, now)? else {
                    return forbidden();
                };
                let visible_upto = if membership == "join" { now } else { position };
                let limit = request.filter.limit.unwrap_or(TIMELINE_LIMIT_DEFAULT).min(TIMELINE_EVENTS_MAX);
                let (after, upto) = if request.backwards {
                    let from = from.map_or(visible_upto, |f| (f.events as i64).min(visible_upto));
                    (to.map_or(0, |t| t.events as i64), from)
                } else {
                    let from = from.map_or(0, |f| f.events as i64);
                    (from, to.map_or(visible_upto, |t| (t.events as i64).min(visible_upto)))
                };
                let (events, more) =
                    storage::room_events(t, room, after, upto, limit, !request.backwards, &request.filter)?;
                // Paging tokens come from the range read, so hidden events
                // never stall paging. `events` is in stream order.
                let (first, last) = (events.first().map(|e| e.position), events.last().map(|e| e.position));
                let shown = visible_to(t, &user, room, events)?;
                let start = from.unwrap_or_else(|| SyncToken::at(if request.backwards { upto } else { after } as u64));
                let mut chunk: Vec<RawEvent> = shown.into_iter().map(|e| e.json).collect();
                let end = if request.backwards {
                    chunk.reverse();
                    first.map(|p| SyncToken::at((p - 1) as u64))
                } else {
                    last.map(|p| SyncToken::at(p as u64))
                };
                let end = end.filter(|_| more).map(|end| end.to_string());
                Ok(Ok(MessagesResponse { chunk, end, start: start.to_string(), state: Vec::new() }))
            })
            .await
            .map_err(fault)?
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn row(json: &str, txn: Option<(&str, &str)>) -> EventRow {
        EventRow {
            position: 7,
            event_type: "m.room.message".into(),
            state_key: None,
            json: RawValue::from_string(json.to_owned()).unwrap(),
            txn_device_id: txn.map(|t| t.0.to_owned()),
            txn_id: txn.map(|t| t.1.to_owned()),
        }
    }

    #[test]
    fn only_the_sending_device_gets_its_transaction_id_and_other_events_stay_as_stored() {
        let stored = r#"{"content":{"body":"hi"},"event_id":"$a","type":"m.room.message","unsigned":{"age":3}}"#;
        let mine = for_device(row(stored, Some(("DEV", "t1"))), "DEV").unwrap();
        assert_eq!(
            serde_json::from_str::<JsonValue>(mine.get()).unwrap(),
            json!({"content": {"body": "hi"}, "event_id": "$a", "type": "m.room.message",
                   "unsigned": {"age": 3, "transaction_id": "t1"}}),
        );
        assert_eq!(for_device(row(stored, Some(("OTHER", "t1"))), "DEV").unwrap().get(), stored);
        assert_eq!(for_device(row(stored, None), "DEV").unwrap().get(), stored);
        // No `unsigned` (or a null one): created, as `json["unsigned"][..] =` did.
        for stored in [r#"{"event_id":"$b"}"#, r#"{"event_id":"$b","unsigned":null}"#] {
            let mine = for_device(row(stored, Some(("DEV", "t2"))), "DEV").unwrap();
            assert_eq!(mine.get(), r#"{"event_id":"$b","unsigned":{"transaction_id":"t2"}}"#);
        }
        // Corrupt rows are errors, not panics.
        for stored in ["[1]", r#"{"unsigned":1}"#] {
            assert!(matches!(for_device(row(stored, Some(("DEV", "t3"))), "DEV"), Err(StorageError::Corrupt(_))));
        }
    }
}
