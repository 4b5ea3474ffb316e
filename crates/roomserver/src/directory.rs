//! [`RoomserverDirectory`]: local room aliases, the public room directory
//! (which rooms are published, and their summaries from current state), and
//! the rooms users have forgotten. These are the room server's own tables,
//! written outside the input log: none of them is room state.

use async_trait::async_trait;
use neurite_storage::{StorageError, now_ms};
use ruma::canonical_json::redact;
use ruma::{OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value as JsonValue;

use crate::api::RoomserverError;
use crate::process::{load_pdu, load_state};
use crate::service::Roomserver;
use crate::state::StateMap;
use crate::storage::RoomTables;

/// Most rooms one page of the public room list holds, whatever the client asks.
pub const PUBLIC_ROOMS_PAGE_COUNT_MAX: usize = 500;

/// Most published rooms one search of the public room list reads: a search
/// computes the summary of each published room in turn.
pub const PUBLIC_ROOMS_SEARCH_COUNT_MAX: usize = 10_000;

/// One room of the public room list, computed from the room's current state.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicRoomSummary {
    /// The room.
    pub room_id: OwnedRoomId,
    /// `m.room.name`, if set and not empty.
    pub name: Option<String>,
    /// `m.room.topic`, if set and not empty.
    pub topic: Option<String>,
    /// `m.room.avatar`'s `url`, if set and not empty.
    pub avatar_url: Option<OwnedMxcUri>,
    /// `m.room.canonical_alias`'s `alias`, if set and valid.
    pub canonical_alias: Option<OwnedRoomAliasId>,
    /// How many users are joined.
    pub num_joined_members: u64,
    /// Whether `m.room.history_visibility` is `world_readable`.
    pub world_readable: bool,
    /// Whether `m.room.guest_access` is `can_join`.
    pub guest_can_join: bool,
    /// `m.room.join_rules`'s `join_rule` (`invite` without one).
    pub join_rule: String,
    /// The `type` of `m.room.create`, if any (e.g. `m.space`).
    pub room_type: Option<String>,
}

/// Which page of the public room list to compute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublicRoomsQuery {
    /// Most rooms to return (capped at [`PUBLIC_ROOMS_PAGE_COUNT_MAX`]).
    pub limit: usize,
    /// How many matching rooms to skip, in list order.
    pub offset: usize,
    /// Keep only rooms whose name, topic, canonical alias or ID contains
    /// this, ignoring case.
    pub search_term: Option<String>,
    /// Keep only rooms of these types (`None` in the list: rooms without a
    /// type); `None` keeps every type.
    pub room_types: Option<Vec<Option<String>>>,
}

/// A page of the public room list.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicRoomsPage {
    /// The rooms, most joined members first, then by room ID.
    pub rooms: Vec<PublicRoomSummary>,
    /// How many published rooms match the query in all.
    pub total: usize,
    /// The offset of the next page, if there are rooms after this one.
    pub next_offset: Option<usize>,
}

/// What [`RoomserverDirectory::forget_room`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// The room is forgotten (until the user's membership changes again).
    Forgotten,
    /// The user is still joined, invited or knocking: they must leave first.
    StillInRoom,
    /// The room is unknown.
    UnknownRoom,
}

/// The room directory: aliases, the public room list and forgotten rooms,
/// for the client API.
///
/// # Errors
/// Storage faults only; a taken alias or an unknown room is an `Ok` value.
#[async_trait]
pub trait RoomserverDirectory: Send + Sync {
    /// Maps `alias` to `room_id`; `false` (and no change) if the alias is taken.
    async fn set_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId)
    -> Result<bool, RoomserverError>;
    /// The room an alias maps to.
    async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, RoomserverError>;
    /// Who created an alias.
    async fn alias_creator(&self, alias: &RoomAliasId) -> Result<Option<OwnedUserId>, RoomserverError>;
    /// Removes an alias; `false` if it did not exist.
    async fn remove_alias(&self, alias: &RoomAliasId) -> Result<bool, RoomserverError>;
    /// The local aliases of a room, sorted.
    async fn aliases_of(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>, RoomserverError>;
    /// Publishes a room in the public room list, or withdraws it.
    async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<(), RoomserverError>;
    /// Whether a room is published in the public room list.
    async fn is_published(&self, room_id: &RoomId) -> Result<bool, RoomserverError>;
    /// A page of the public room list: published rooms, most joined members first.
    async fn public_rooms(&self, query: PublicRoomsQuery) -> Result<PublicRoomsPage, RoomserverError>;
    /// Records that `user_id` forgot `room_id`, unless they are still in it.
    async fn forget_room(&self, room_id: &RoomId, user_id: &UserId) -> Result<ForgetOutcome, RoomserverError>;
    /// Whether `user_id` forgot `room_id` and has not rejoined (or been invited) since.
    async fn is_forgotten(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool, RoomserverError>;
}

fn fault(e: impl std::fmt::Display) -> RoomserverError {
    RoomserverError::Fault(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// A published room, as the list orders it before its summary is computed.
struct ListedRoom {
    room_id: String,
    version: String,
    snapshot: i64,
    joined: i64,
}

/// Every published room that exists, most joined members first, then by room ID.
fn listed_rooms(t: &Transaction<'_>) -> Result<Vec<ListedRoom>, StorageError> {
    let mut stmt = t.prepare_cached(
        "SELECT r.room_id, r.room_version, r.state_snapshot_nid,
                (SELECT COUNT(*) FROM roomserver_memberships m
                  WHERE m.room_nid = r.room_nid AND m.membership = 'join') AS joined
           FROM roomserver_published_rooms p JOIN roomserver_rooms r ON r.room_id = p.room_id
          ORDER BY joined DESC, r.room_id
          LIMIT ?1",
    )?;
    let rows = stmt.query_map([PUBLIC_ROOMS_SEARCH_COUNT_MAX as i64], |r| {
        Ok(ListedRoom { room_id: r.get(0)?, version: r.get(1)?, snapshot: r.get(2)?, joined: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The content of the state event `(event_type, "")` in `state`, redacted
/// if it was redacted; `Null` if there is none.
fn state_content<T: RoomTables>(
    t: &T,
    state: &StateMap,
    version: &RoomVersionId,
    event_type: &str,
) -> Result<JsonValue, StorageError> {
    let (Some(type_nid), Some(key_nid)) = (t.event_type_nid(event_type)?, t.state_key_nid("")?) else {
        return Ok(JsonValue::Null);
    };
    let Some(nid) = state.get(&(type_nid, key_nid)) else { return Ok(JsonValue::Null) };
    let row = t.event_by_nid(*nid)?.ok_or_else(|| corrupt("missing state event"))?;
    let pdu = load_pdu(t, row.nid)?.ok_or_else(|| corrupt("missing state event"))?;
    if row.redacted_by.is_none() {
        return serde_json::from_str(pdu.content.get()).map_err(corrupt);
    }
    let rules = version.rules().ok_or_else(|| corrupt("unknown room version"))?;
    let redacted = redact(pdu.object, &rules.redaction, None).map_err(corrupt)?;
    Ok(redacted.get("content").map(|c| JsonValue::from(c.clone())).unwrap_or(JsonValue::Null))
}

/// A non-empty string field of a content.
fn text(content: &JsonValue, field: &str) -> Option<String> {
    content.get(field).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The summary of a listed room, from its current state.
fn summary<T: RoomTables>(t: &T, room: &ListedRoom) -> Result<PublicRoomSummary, StorageError> {
    let version = RoomVersionId::try_from(room.version.as_str()).map_err(corrupt)?;
    let state = load_state(t, room.snapshot)?;
    let content = |event_type: &str| state_content(t, &state, &version, event_type);
    let history_visibility = content("m.room.history_visibility")?;
    let guest_access = content("m.room.guest_access")?;
    Ok(PublicRoomSummary {
        room_id: RoomId::parse(&room.room_id).map_err(corrupt)?,
        name: text(&content("m.room.name")?, "name"),
        topic: text(&content("m.room.topic")?, "topic"),
        avatar_url: text(&content("m.room.avatar")?, "url").map(OwnedMxcUri::from),
        canonical_alias: text(&content("m.room.canonical_alias")?, "alias").and_then(|a| RoomAliasId::parse(a).ok()),
        num_joined_members: u64::try_from(room.joined).unwrap_or(0),
        world_readable: history_visibility["history_visibility"] == "world_readable",
        guest_can_join: guest_access["guest_access"] == "can_join",
        join_rule: text(&content("m.room.join_rules")?, "join_rule").unwrap_or_else(|| "invite".to_owned()),
        room_type: text(&content("m.room.create")?, "type"),
    })
}

/// Whether a summary matches the query's search term and room types.
fn matches(room: &PublicRoomSummary, query: &PublicRoomsQuery) -> bool {
    if let Some(types) = &query.room_types
        && !types.contains(&room.room_type)
    {
        return false;
    }
    let Some(term) = query.search_term.as_deref().map(str::to_lowercase).filter(|t| !t.is_empty()) else {
        return true;
    };
    let alias = room.canonical_alias.as_ref().map(|a| a.as_str());
    [room.name.as_deref(), room.topic.as_deref(), alias, Some(room.room_id.as_str())]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&term))
}

/// The page of the public room list `query` asks for.
fn public_rooms_page(t: &Transaction<'_>, query: &PublicRoomsQuery) -> Result<PublicRoomsPage, StorageError> {
    let limit = query.limit.min(PUBLIC_ROOMS_PAGE_COUNT_MAX);
    let listed = listed_rooms(t)?;
    let filtered = query.room_types.is_some() || query.search_term.as_deref().is_some_and(|t| !t.is_empty());
    let (rooms, total) = if filtered {
        // Every summary is needed to know which rooms match.
        let mut matching = Vec::new();
        for room in &listed {
            let summary = summary(t, room)?;
            if matches(&summary, query) {
                matching.push(summary);
            }
        }
        let total = matching.len();
        (matching.into_iter().skip(query.offset).take(limit).collect(), total)
    } else {
        // The order needs no summary: compute only this page's.
        let page = listed.iter().skip(query.offset).take(limit);
        (page.map(|room| summary(t, room)).collect::<Result<Vec<_>, _>>()?, listed.len())
    };
    let end = query.offset.saturating_add(rooms.len());
    let next_offset = (end < total && !rooms.is_empty()).then_some(end);
    Ok(PublicRoomsPage { rooms, total, next_offset })
}

impl Roomserver {
    async fn directory_read<T, F>(&self, f: F) -> Result<T, RoomserverError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StorageError> + Send + 'static,
    {
        self.inner.pool.read(f).await.map_err(fault)
    }

    async fn directory_write<T, F>(&self, f: F) -> Result<T, RoomserverError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StorageError> + Send + 'static,
    {
        self.inner.pool.write(f).await.map_err(fault)
    }
}

#[async_trait]
impl RoomserverDirectory for Roomserver {
    async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> Result<bool, RoomserverError> {
        let (alias, room_id, creator) = (alias.to_string(), room_id.to_string(), creator.to_string());
        self.directory_write(move |t| {
            let inserted = t
                .prepare_cached(
                    "INSERT INTO roomserver_room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3)
                     ON CONFLICT (alias) DO NOTHING",
                )?
                .execute([&alias, &room_id, &creator])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, RoomserverError> {
        let alias = alias.to_string();
        self.directory_read(move |t| {
            let room_id: Option<String> = t
                .prepare_cached("SELECT room_id FROM roomserver_room_aliases WHERE alias = ?1")?
                .query_row([&alias], |r| r.get(0))
                .optional()?;
            room_id.map(|r| RoomId::parse(r).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn alias_creator(&self, alias: &RoomAliasId) -> Result<Option<OwnedUserId>, RoomserverError> {
        let alias = alias.to_string();
        self.directory_read(move |t| {
            let creator: Option<String> = t
                .prepare_cached("SELECT creator FROM roomserver_room_aliases WHERE alias = ?1")?
                .query_row([&alias], |r| r.get(0))
                .optional()?;
            creator.map(|c| UserId::parse(c).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn remove_alias(&self, alias: &RoomAliasId) -> Result<bool, RoomserverError> {
        let alias = alias.to_string();
        self.directory_write(move |t| {
            let deleted =
                t.prepare_cached("DELETE FROM roomserver_room_aliases WHERE alias = ?1")?.execute([&alias])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn aliases_of(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>, RoomserverError> {
        let room_id = room_id.to_string();
        self.directory_read(move |t| {
            let mut stmt =
                t.prepare_cached("SELECT alias FROM roomserver_room_aliases WHERE room_id = ?1 ORDER BY alias")?;
            let aliases = stmt.query_map([&room_id], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            aliases.into_iter().map(|a| RoomAliasId::parse(a).map_err(corrupt)).collect()
        })
        .await
    }

    async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<(), RoomserverError> {
        let room_id = room_id.to_string();
        self.directory_write(move |t| {
            if published {
                t.prepare_cached(
                    "INSERT INTO roomserver_published_rooms (room_id, published_ts) VALUES (?1, ?2)
                     ON CONFLICT (room_id) DO NOTHING",
                )?
                .execute(params![room_id, now_ms() as i64])?;
            } else {
                t.prepare_cached("DELETE FROM roomserver_published_rooms WHERE room_id = ?1")?.execute([&room_id])?;
            }
            Ok(())
        })
        .await
    }

    async fn is_published(&self, room_id: &RoomId) -> Result<bool, RoomserverError> {
        let room_id = room_id.to_string();
        self.directory_read(move |t| {
            Ok(t.prepare_cached("SELECT 1 FROM roomserver_published_rooms WHERE room_id = ?1")?
                .query_row([&room_id], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn public_rooms(&self, query: PublicRoomsQuery) -> Result<PublicRoomsPage, RoomserverError> {
        self.directory_read(move |t| public_rooms_page(t, &query)).await
    }

    async fn forget_room(&self, room_id: &RoomId, user_id: &UserId) -> Result<ForgetOutcome, RoomserverError> {
        let (room_id, user_id) = (room_id.to_string(), user_id.to_string());
        // A write transaction: the membership checked is the one recorded.
        self.directory_write(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(ForgetOutcome::UnknownRoom) };
            let membership: Option<(String, i64)> = t
                .prepare_cached(
                    "SELECT membership, event_nid FROM roomserver_memberships WHERE room_nid = ?1 AND user_id = ?2",
                )?
                .query_row(params![room.nid, user_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((membership, _)) = &membership
                && matches!(membership.as_str(), "join" | "invite" | "knock")
            {
                return Ok(ForgetOutcome::StillInRoom);
            }
            let event_nid = membership.map_or(0, |(_, nid)| nid);
            t.prepare_cached(
                "INSERT INTO roomserver_forgotten (room_id, user_id, membership_event_nid, forgotten_ts)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (room_id, user_id) DO UPDATE SET
                   membership_event_nid = excluded.membership_event_nid, forgotten_ts = excluded.forgotten_ts",
            )?
            .execute(params![room_id, user_id, event_nid, now_ms() as i64])?;
            Ok(ForgetOutcome::Forgotten)
        })
        .await
    }

    async fn is_forgotten(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool, RoomserverError> {
        let (room_id, user_id) = (room_id.to_string(), user_id.to_string());
        self.directory_read(move |t| {
            let Some(room) = t.room(&room_id)? else { return Ok(false) };
            let forgotten_at: Option<i64> = t
                .prepare_cached(
                    "SELECT membership_event_nid FROM roomserver_forgotten WHERE room_id = ?1 AND user_id = ?2",
                )?
                .query_row([&room_id, &user_id], |r| r.get(0))
                .optional()?;
            let Some(forgotten_at) = forgotten_at else { return Ok(false) };
            let now: Option<i64> = t
                .prepare_cached("SELECT event_nid FROM roomserver_memberships WHERE room_nid = ?1 AND user_id = ?2")?
                .query_row(params![room.nid, user_id], |r| r.get(0))
                .optional()?;
            // Invariant: a forget holds only while the membership it was made at is current.
            Ok(now.unwrap_or(0) == forgotten_at)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: Option<&str>, topic: Option<&str>, room_type: Option<&str>) -> PublicRoomSummary {
        PublicRoomSummary {
            room_id: RoomId::parse("!abc:example.org").expect("valid"),
            name: name.map(str::to_owned),
            topic: topic.map(str::to_owned),
            avatar_url: None,
            canonical_alias: Some(RoomAliasId::parse("#Cheese:example.org").expect("valid")),
            num_joined_members: 1,
            world_readable: false,
            guest_can_join: false,
            join_rule: "public".into(),
            room_type: room_type.map(str::to_owned),
        }
    }

    #[test]
    fn search_ignores_case_and_looks_at_every_field() {
        let query = |term: &str| PublicRoomsQuery { search_term: Some(term.into()), ..Default::default() };
        let r = room(Some("Tasty"), Some("all about brie"), None);
        assert!(matches(&r, &query("tASTY")));
        assert!(matches(&r, &query("BRIE")));
        assert!(matches(&r, &query("cheese")), "canonical alias");
        assert!(matches(&r, &query("!abc")), "room ID");
        assert!(!matches(&r, &query("gouda")));
        assert!(matches(&r, &query("")), "an empty term matches everything");
    }

    #[test]
    fn room_types_filter_treats_none_as_untyped() {
        let query = |types: Vec<Option<&str>>| PublicRoomsQuery {
            room_types: Some(types.into_iter().map(|t| t.map(str::to_owned)).collect()),
            ..Default::default()
        };
        let plain = room(None, None, None);
        let space = room(None, None, Some("m.space"));
        assert!(matches(&plain, &query(vec![None])));
        assert!(!matches(&space, &query(vec![None])));
        assert!(matches(&space, &query(vec![None, Some("m.space")])));
        assert!(!matches(&plain, &query(vec![Some("m.space")])));
    }
}
