//! [`RoomserverQuery`]: answers from the room server's tables, converted to
//! string IDs and client-format events before they leave the crate.

use std::collections::BTreeMap;

use async_trait::async_trait;
use neurite_storage::StorageError;
use ruma::canonical_json::{CanonicalJsonObject, redact};
use ruma::events::room::member::MembershipState;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Value as JsonValue, json};

use crate::api::{EventJson, RoomserverError, RoomserverQuery};
use crate::event::Pdu;
use crate::process::{load_pdu, load_pdu_by_id, load_state, named_state};
use crate::service::Roomserver;
use crate::state;
use crate::storage::{EventRow, RoomTables};

fn fault(e: impl std::fmt::Display) -> RoomserverError {
    RoomserverError::Fault(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// The client-format event of a stored row, redacted per the room version
/// if it was redacted (with `redacted_because` in `unsigned`).
fn client_event<T: RoomTables>(t: &T, row: &EventRow, version: &RoomVersionId) -> Result<JsonValue, StorageError> {
    let pdu = load_pdu(t, row.nid)?.ok_or_else(|| corrupt("missing event"))?;
    let Some(redaction_id) = &row.redacted_by else { return Ok(pdu.to_client_format()) };
    let rules = version.rules().ok_or_else(|| corrupt("unknown room version"))?;
    let object: CanonicalJsonObject = redact(pdu.object.clone(), &rules.redaction, None).map_err(corrupt)?;
    let redacted = Pdu::parse(pdu.event_id.clone(), object).map_err(corrupt)?;
    let mut event = redacted.to_client_format();
    if let Some((_, because)) = load_pdu_by_id(t, row.room_nid, redaction_id)? {
        event["unsigned"] = json!({"redacted_because": because.to_client_format()});
    }
    Ok(event)
}

fn room_version<T: RoomTables>(t: &T, room_id: &str) -> Result<Option<(i64, RoomVersionId, i64)>, StorageError> {
    let Some(room) = t.room(room_id)? else { return Ok(None) };
    let version = RoomVersionId::try_from(room.version.as_str()).map_err(corrupt)?;
    Ok(Some((room.nid, version, room.snapshot)))
}

fn membership_of(content: &JsonValue) -> Option<MembershipState> {
    content.get("membership").and_then(|m| m.as_str()).map(MembershipState::from)
}

impl Roomserver {
    async fn read<T, F>(&self, f: F) -> Result<T, RoomserverError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StorageError> + Send + 'static,
    {
        self.inner.pool.read(f).await.map_err(fault)
    }

    /// The state changes from the state before `from` to the state before
    /// `to`, two events of the room `room_id`.
    ///
    /// Each changed (type, state key) maps to its event at `to` (`None`: the
    /// key left the state). `None` if the room or an event is unknown in it.
    /// Both states are loaded whole, then each changed key is named and its
    /// event ID looked up.
    ///
    /// # Errors
    /// Storage faults only.
    pub async fn state_delta(
        &self,
        room_id: &RoomId,
        from: &EventId,
        to: &EventId,
    ) -> Result<Option<BTreeMap<(String, String), Option<OwnedEventId>>>, RoomserverError> {
        let (room_id, from, to) = (room_id.to_string(), from.to_string(), to.to_string());
        self.read(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(None) };
            let (Some(from), Some(to)) = (t.event_by_id(room.nid, &from)?, t.event_by_id(room.nid, &to)?) else {
                return Ok(None);
            };
            let changes = state::delta(&load_state(t, from.snapshot)?, &load_state(t, to.snapshot)?);
            let mut out = BTreeMap::new();
            for ((type_nid, key_nid), nid) in changes {
                let event_id = match nid {
                    0 => None,
                    nid => {
                        let row = t.event_by_nid(nid)?.ok_or_else(|| corrupt("missing state event"))?;
                        Some(EventId::parse(row.event_id).map_err(corrupt)?)
                    }
                };
                out.insert((t.event_type(type_nid)?, t.state_key(key_nid)?), event_id);
            }
            Ok(Some(out))
        })
        .await
    }
}

#[async_trait]
impl RoomserverQuery for Roomserver {
    async fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>, RoomserverError> {
        let room_id = room_id.to_string();
        self.read(move |t| Ok(room_version(t, &room_id)?.map(|(_, v, _)| v))).await
    }

    async fn current_state(&self, room_id: &RoomId) -> Result<Vec<EventJson>, RoomserverError> {
        let room_id = room_id.to_string();
        self.read(move |t| {
            let Some((_, version, snapshot)) = room_version(t, &room_id)? else { return Ok(Vec::new()) };
            let state = load_state(t, snapshot)?;
            let mut events = Vec::with_capacity(state.len());
            for nid in state.values() {
                let row = t.event_by_nid(*nid)?.ok_or_else(|| corrupt("missing state event"))?;
                events.push(client_event(t, &row, &version)?);
            }
            Ok(events)
        })
        .await
    }

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<EventJson>, RoomserverError> {
        let (room_id, event_type, state_key) = (room_id.to_string(), event_type.to_owned(), state_key.to_owned());
        self.read(move |t| {
            let Some((_, version, snapshot)) = room_version(t, &room_id)? else { return Ok(None) };
            let (Some(type_nid), Some(key_nid)) = (t.event_type_nid(&event_type)?, t.state_key_nid(&state_key)?) else {
                return Ok(None);
            };
            let state = load_state(t, snapshot)?;
            let Some(nid) = state.get(&(type_nid, key_nid)) else { return Ok(None) };
            let row = t.event_by_nid(*nid)?.ok_or_else(|| corrupt("missing state event"))?;
            Ok(Some(client_event(t, &row, &version)?))
        })
        .await
    }

    async fn state_at_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Option<Vec<EventJson>>, RoomserverError> {
        let (room_id, event_id) = (room_id.to_string(), event_id.to_string());
        self.read(move |t| {
            let Some((room_nid, version, _)) = room_version(t, &room_id)? else { return Ok(None) };
            let Some(row) = t.event_by_id(room_nid, &event_id)? else { return Ok(None) };
            let state = load_state(t, row.snapshot)?;
            let mut events = Vec::new();
            for nid in named_state(t, &state)?.values() {
                let row = t.event_by_nid(*nid)?.ok_or_else(|| corrupt("missing state event"))?;
                events.push(client_event(t, &row, &version)?);
            }
            Ok(Some(events))
        })
        .await
    }

    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<MembershipState>, RoomserverError> {
        let (room_id, user_id) = (room_id.to_string(), user_id.to_string());
        self.read(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(None) };
            Ok(t.membership(room.nid, &user_id)?.map(|m| MembershipState::from(m.as_str())))
        })
        .await
    }

    async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>, RoomserverError> {
        let user_id = user_id.to_string();
        self.read(move |t| {
            t.rooms_with_membership(&user_id, "join")?.into_iter().map(|r| RoomId::parse(r).map_err(corrupt)).collect()
        })
        .await
    }

    async fn event(&self, room_id: &RoomId, event_id: &EventId) -> Result<Option<EventJson>, RoomserverError> {
        let (room_id, event_id) = (room_id.to_string(), event_id.to_string());
        self.read(move |t| {
            let Some((room_nid, version, _)) = room_version(t, &room_id)? else { return Ok(None) };
            let Some(row) = t.event_by_id(room_nid, &event_id)? else { return Ok(None) };
            if row.rejected {
                return Ok(None);
            }
            Ok(Some(client_event(t, &row, &version)?))
        })
        .await
    }

    async fn may_see_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<bool, RoomserverError> {
        let (user_id, room_id, event_id) = (user_id.to_string(), room_id.to_string(), event_id.to_string());
        self.read(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(false) };
            let Some(row) = t.event_by_id(room.nid, &event_id)? else { return Ok(false) };
            if row.rejected {
                return Ok(false);
            }
            let state = named_state(t, &load_state(t, row.snapshot)?)?;
            let content_of = |key: (&str, &str)| -> Result<JsonValue, StorageError> {
                match state.get(&(key.0.to_owned(), key.1.to_owned())) {
                    Some(nid) => Ok(load_pdu(t, *nid)?
                        .map(|p| serde_json::from_str(p.content.get()).unwrap_or_default())
                        .unwrap_or_default()),
                    None => Ok(JsonValue::Null),
                }
            };
            let visibility = content_of(("m.room.history_visibility", ""))?
                .get("history_visibility")
                .and_then(|v| v.as_str())
                .unwrap_or("shared")
                .to_owned();
            let at_event = membership_of(&content_of(("m.room.member", &user_id))?);
            // The sender's own membership event is visible to them.
            let own = load_pdu(t, row.nid)?.is_some_and(|p| p.sender.as_str() == user_id);
            let now = t.membership(row.room_nid, &user_id)?.map(|m| MembershipState::from(m.as_str()));
            Ok(own
                || match visibility.as_str() {
                    "world_readable" => true,
                    "joined" => at_event == Some(MembershipState::Join),
                    "invited" => matches!(at_event, Some(MembershipState::Join | MembershipState::Invite)),
                    // "shared" and unknown values: members see the whole history.
                    _ => at_event == Some(MembershipState::Join) || now == Some(MembershipState::Join),
                })
        })
        .await
    }

    async fn latest_events(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>, RoomserverError> {
        let room_id = room_id.to_string();
        self.read(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(Vec::new()) };
            let mut ids = Vec::new();
            for nid in room.latest {
                let row = t.event_by_nid(nid)?.ok_or_else(|| corrupt("missing latest event"))?;
                ids.push(EventId::parse(row.event_id).map_err(corrupt)?);
            }
            Ok(ids)
        })
        .await
    }
}
