//! The room directory: room aliases (`/directory/room/{roomAlias}`,
//! `/rooms/{roomId}/aliases`), directory visibility
//! (`/directory/list/room/{roomId}`) and the public room list (`/publicRooms`).

use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_roomserver::{PUBLIC_ROOMS_PAGE_COUNT_MAX, PublicRoomSummary, PublicRoomsQuery};
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::{Visibility, aliases};
use ruma::directory::{Filter, PublicRoomsChunk, PublicRoomsChunkInit};
use ruma::events::room::member::MembershipState;
use ruma::{RoomAliasId, RoomId, ServerName, UInt, UserId};
use serde_json::Value as JsonValue;

use super::rooms::{fault, require_joined, send_one, state_event};
use crate::{ClientApi, Ruma};

/// 400 `M_INVALID_PARAM` unless the alias is on this server: remote aliases
/// belong to their server's directory.
fn require_local(api: &ClientApi, alias: &RoomAliasId) -> MatrixResult<()> {
    if alias.server_name().as_str() != api.config().server_name {
        return Err(MatrixError::invalid_param(format!("Room alias {alias} is not on this server")));
    }
    Ok(())
}

/// A power level: an integer, or (before room version 10) a string holding one.
fn level(value: &JsonValue) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str()?.trim().parse().ok())
}

/// Whether `user_id` has the power to send the state event `event_type` in
/// `room_id`, by the room's current `m.room.power_levels` (and, from room
/// version 12, the creators' unlimited power).
pub(crate) async fn may_send_state(
    api: &ClientApi,
    room_id: &RoomId,
    user_id: &UserId,
    event_type: &str,
) -> MatrixResult<bool> {
    let rooms = api.rooms();
    let Some(version) = rooms.room_version(room_id).await.map_err(fault)? else { return Ok(false) };
    let rules = version.rules().ok_or_else(|| MatrixError::internal(format!("no rules for room version {version}")))?;
    let create = rooms.current_state_event(room_id, "m.room.create", "").await.map_err(fault)?.unwrap_or_default();
    let creator =
        if rules.authorization.use_room_create_sender { &create["sender"] } else { &create["content"]["creator"] };
    let is_creator = creator.as_str() == Some(user_id.as_str());
    if rules.authorization.explicitly_privilege_room_creators {
        let additional = create["content"]["additional_creators"].as_array();
        if is_creator || additional.is_some_and(|a| a.iter().any(|c| c.as_str() == Some(user_id.as_str()))) {
            return Ok(true);
        }
    }
    let Some(levels) = rooms.current_state_event(room_id, "m.room.power_levels", "").await.map_err(fault)? else {
        // Without power levels the creator has 100, everyone else 0, and state needs 0.
        return Ok(true);
    };
    let levels = &levels["content"];
    let user_level = levels["users"].get(user_id.as_str()).or(levels.get("users_default")).and_then(level).unwrap_or(0);
    let needed = levels["events"].get(event_type).or(levels.get("state_default")).and_then(level).unwrap_or(50);
    Ok(user_level >= needed)
}

/// Whether `user_id` may change what the directory says about `room_id`
/// (delete others' aliases, publish or withdraw it): joined, with the power
/// to send `m.room.canonical_alias`, as Synapse requires.
async fn may_change_directory(api: &ClientApi, room_id: &RoomId, user_id: &UserId) -> MatrixResult<bool> {
    if api.rooms().membership(room_id, user_id).await.map_err(fault)? != Some(MembershipState::Join) {
        return Ok(false);
    }
    may_send_state(api, room_id, user_id, "m.room.canonical_alias").await
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directoryroomroomalias)
///
/// Only members of the room may point an alias at it; a taken alias is 409 `M_UNKNOWN`.
pub(crate) async fn set_alias(
    State(api): State<ClientApi>,
    req: Ruma<create_alias::v3::Request>,
) -> MatrixResult<RumaResponse<create_alias::v3::Response>> {
    let body = &req.body;
    let user_id = &req.session().user_id;
    require_local(&api, &body.room_alias)?;
    require_joined(&api, &body.room_id, user_id).await?;
    if !api.directory().set_alias(&body.room_alias, &body.room_id, user_id).await.map_err(fault)? {
        return Err(MatrixError::new(ErrorKind::Conflict, format!("Room alias {} already exists", body.room_alias)));
    }
    tracing::info!(alias = %body.room_alias, room_id = %body.room_id, "room alias created");
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directoryroomroomalias)
///
/// Local aliases only until federation: a remote alias is not found.
pub(crate) async fn get_alias(
    State(api): State<ClientApi>,
    req: Ruma<get_alias::v3::Request>,
) -> MatrixResult<RumaResponse<get_alias::v3::Response>> {
    let alias = &req.body.room_alias;
    let not_found = || MatrixError::not_found(format!("Room alias {alias} not found"));
    if require_local(&api, alias).is_err() {
        return Err(not_found());
    }
    let room_id = api.directory().resolve_alias(alias).await.map_err(fault)?.ok_or_else(not_found)?;
    Ok(RumaResponse(get_alias::v3::Response::new(room_id, vec![api.config().server_name()])))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3directoryroomroomalias)
///
/// The alias's creator may delete it, and so may a member with the power to
/// send `m.room.canonical_alias`. If the room's canonical alias event names
/// it, the event is updated as the deleting user, when they may.
pub(crate) async fn delete_alias(
    State(api): State<ClientApi>,
    req: Ruma<delete_alias::v3::Request>,
) -> MatrixResult<RumaResponse<delete_alias::v3::Response>> {
    let alias = &req.body.room_alias;
    let user_id = &req.session().user_id;
    let not_found = || MatrixError::not_found(format!("Room alias {alias} not found"));
    let directory = api.directory();
    let room_id = directory.resolve_alias(alias).await.map_err(fault)?.ok_or_else(not_found)?;
    let is_creator = directory.alias_creator(alias).await.map_err(fault)?.as_deref() == Some(user_id);
    if !is_creator && !may_change_directory(&api, &room_id, user_id).await? {
        return Err(MatrixError::forbidden("You may not delete this room alias"));
    }
    if !directory.remove_alias(alias).await.map_err(fault)? {
        return Err(not_found());
    }
    tracing::info!(%alias, %room_id, "room alias deleted");
    drop_from_canonical_alias(&api, &room_id, user_id, alias).await;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

/// Removes `alias` from the room's `m.room.canonical_alias` (`alias` and
/// `alt_aliases`), if it is there. Best effort: the alias is already gone,
/// and the spec asks for success even if the user may not change the event.
async fn drop_from_canonical_alias(api: &ClientApi, room_id: &RoomId, user_id: &UserId, alias: &RoomAliasId) {
    let current = match api.rooms().current_state_event(room_id, "m.room.canonical_alias", "").await {
        Ok(Some(event)) => event["content"].clone(),
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, %room_id, "reading the canonical alias failed");
            return;
        }
    };
    let mut content = current.clone();
    if content["alias"].as_str() == Some(alias.as_str())
        && let Some(object) = content.as_object_mut()
    {
        object.remove("alias");
    }
    if let Some(alt) = content.get_mut("alt_aliases").and_then(JsonValue::as_array_mut) {
        alt.retain(|a| a.as_str() != Some(alias.as_str()));
    }
    if content == current {
        return;
    }
    let event = state_event(user_id, "m.room.canonical_alias", "", content);
    if let Err(e) = send_one(api, room_id, event, None).await {
        tracing::debug!(error = %e, %room_id, "the canonical alias still names a deleted alias");
    }
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidaliases)
///
/// For members, or anyone if the room is `world_readable`; others (and
/// unknown rooms) get 403, as the spec lists.
pub(crate) async fn room_aliases(
    State(api): State<ClientApi>,
    req: Ruma<aliases::v3::Request>,
) -> MatrixResult<RumaResponse<aliases::v3::Response>> {
    let room_id = &req.body.room_id;
    let rooms = api.rooms();
    let joined = rooms.membership(room_id, &req.session().user_id).await.map_err(fault)? == Some(MembershipState::Join);
    if !joined {
        let visibility = rooms.current_state_event(room_id, "m.room.history_visibility", "").await.map_err(fault)?;
        let world_readable = visibility.is_some_and(|e| e["content"]["history_visibility"] == "world_readable");
        if !world_readable {
            return Err(MatrixError::forbidden("You are not a member of the room"));
        }
    }
    let aliases = api.directory().aliases_of(room_id).await.map_err(fault)?;
    Ok(RumaResponse(aliases::v3::Response::new(aliases)))
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3directorylistroomroomid)
pub(crate) async fn get_visibility(
    State(api): State<ClientApi>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> MatrixResult<RumaResponse<get_room_visibility::v3::Response>> {
    let room_id = &req.body.room_id;
    if api.rooms().room_version(room_id).await.map_err(fault)?.is_none() {
        return Err(MatrixError::not_found("Room not found"));
    }
    let visibility = if api.directory().is_published(room_id).await.map_err(fault)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(visibility)))
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3directorylistroomroomid)
///
/// For members with the power to send `m.room.canonical_alias`.
pub(crate) async fn set_visibility(
    State(api): State<ClientApi>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> MatrixResult<RumaResponse<set_room_visibility::v3::Response>> {
    let body = &req.body;
    let user_id = &req.session().user_id;
    let published = match body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(MatrixError::invalid_param("visibility must be public or private")),
    };
    require_joined(&api, &body.room_id, user_id).await?;
    if !may_change_directory(&api, &body.room_id, user_id).await? {
        return Err(MatrixError::forbidden("You may not change this room's visibility in the directory"));
    }
    api.directory().set_published(&body.room_id, published).await.map_err(fault)?;
    tracing::info!(room_id = %body.room_id, published, "room directory visibility changed");
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

/// Where a page of the public room list starts, from a `since` token:
/// `n<offset>` (a `next_batch`: the page starting there) or `p<offset>` (a
/// `prev_batch`: the page ending there). Returns (offset, limit).
fn page_of(since: Option<&str>, limit: usize) -> MatrixResult<(usize, usize)> {
    let bad = || MatrixError::invalid_param("since is not a token from this server's room directory");
    let Some(since) = since else { return Ok((0, limit)) };
    let parse = |digits: &str| digits.parse::<usize>().map_err(|_| bad());
    if let Some(offset) = since.strip_prefix('n') {
        return Ok((parse(offset)?, limit));
    }
    let end = parse(since.strip_prefix('p').ok_or_else(bad)?)?;
    let start = end.saturating_sub(limit);
    Ok((start, end - start))
}

/// A page of the public room list, as both `/publicRooms` endpoints answer it:
/// (chunk, next_batch, prev_batch, total_room_count_estimate).
type Page = (Vec<PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>);

fn chunk_of(room: PublicRoomSummary) -> PublicRoomsChunk {
    let mut chunk = PublicRoomsChunk::from(PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(room.num_joined_members).unwrap_or(UInt::MAX),
        room_id: room.room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    });
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.avatar_url = room.avatar_url;
    chunk.canonical_alias = room.canonical_alias;
    chunk.join_rule = room.join_rule.as_str().into();
    chunk.room_type = room.room_type.map(Into::into);
    chunk
}

/// The page of this server's public room list that `since` and `limit` name.
async fn public_rooms_page(
    api: &ClientApi,
    server: Option<&ServerName>,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: &Filter,
) -> MatrixResult<Page> {
    if server.is_some_and(|s| s.as_str() != api.config().server_name) {
        return Err(MatrixError::invalid_param("the room directories of other servers are not available yet"));
    }
    let limit = limit.map_or(PUBLIC_ROOMS_PAGE_COUNT_MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let limit = limit.min(PUBLIC_ROOMS_PAGE_COUNT_MAX);
    let (offset, page_limit) = page_of(since, limit)?;
    let room_types = (!filter.room_types.is_empty())
        .then(|| filter.room_types.iter().map(|t| t.as_str().map(str::to_owned)).collect());
    let query =
        PublicRoomsQuery { limit: page_limit, offset, search_term: filter.generic_search_term.clone(), room_types };
    let page = api.directory().public_rooms(query).await.map_err(fault)?;
    let next_batch = page.next_offset.map(|o| format!("n{o}"));
    let prev_batch = (offset > 0).then(|| format!("p{offset}"));
    let total = UInt::try_from(page.total).ok();
    Ok((page.rooms.into_iter().map(chunk_of).collect(), next_batch, prev_batch, total))
}

/// # `GET /_matrix/client/v3/publicRooms`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3publicrooms)
///
/// Published rooms, most joined members first. `since` takes the `n…`/`p…`
/// tokens of `next_batch`/`prev_batch`.
pub(crate) async fn public_rooms(
    State(api): State<ClientApi>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> MatrixResult<RumaResponse<get_public_rooms::v3::Response>> {
    let body = &req.body;
    let (chunk, next_batch, prev_batch, total) =
        public_rooms_page(&api, body.server.as_deref(), body.limit, body.since.as_deref(), &Filter::default()).await?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    (response.next_batch, response.prev_batch, response.total_room_count_estimate) = (next_batch, prev_batch, total);
    Ok(RumaResponse(response))
}

/// # `POST /_matrix/client/v3/publicRooms`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3publicrooms)
///
/// As `GET`, with `filter.generic_search_term` (name, topic, canonical alias
/// or room ID, ignoring case) and `filter.room_types`. Third-party networks
/// are not supported: `include_all_networks` and `third_party_instance_id` are ignored.
pub(crate) async fn public_rooms_filtered(
    State(api): State<ClientApi>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> MatrixResult<RumaResponse<get_public_rooms_filtered::v3::Response>> {
    let body = &req.body;
    let (chunk, next_batch, prev_batch, total) =
        public_rooms_page(&api, body.server.as_deref(), body.limit, body.since.as_deref(), &body.filter).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    (response.next_batch, response.prev_batch, response.total_room_count_estimate) = (next_batch, prev_batch, total);
    Ok(RumaResponse(response))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn since_tokens_name_pages_in_both_directions() {
        assert_eq!(page_of(None, 10).ok(), Some((0, 10)));
        assert_eq!(page_of(Some("n20"), 10).ok(), Some((20, 10)));
        assert_eq!(page_of(Some("p20"), 10).ok(), Some((10, 10)));
        assert_eq!(page_of(Some("p3"), 10).ok(), Some((0, 3)), "the first page ends where the token says");
        for bad in ["", "x1", "n", "n-1", "p1.5", "20"] {
            assert!(page_of(Some(bad), 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn power_levels_may_be_strings_before_v10() {
        assert_eq!(level(&json!(50)), Some(50));
        assert_eq!(level(&json!(" 75 ")), Some(75));
        assert_eq!(level(&json!("high")), None);
    }
}
