//! Membership: join, leave, forget, invite, kick, ban, unban; `/joined_rooms`,
//! `/rooms/{roomId}/members`, `/rooms/{roomId}/joined_members`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_roomserver::ForgetOutcome;
use neurite_userapi::Session;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_members,
    joined_rooms, kick_user, leave_room, unban_user,
};
use ruma::events::room::member::MembershipState;
use ruma::{RoomAliasId, RoomId, UserId};
use serde_json::{Value as JsonValue, json};

use super::rooms::{fault, require_joined, send_one, state_event};
use crate::{ClientApi, Ruma};

/// Sends `target`'s member event with `membership` (and `reason`), as `sender`.
async fn set_membership(
    api: &ClientApi,
    sender: &Session,
    room_id: &RoomId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> MatrixResult<()> {
    if api.rooms().room_version(room_id).await.map_err(fault)?.is_none() {
        return Err(MatrixError::not_found("Unknown room"));
    }
    let mut content = json!({"membership": membership});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    // A user's own join or invite carries their profile.
    if membership == "join" || membership == "invite" {
        if let Some(profile) = api.users().profile(target).await? {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = profile.get(field) {
                    content[field] = value.clone();
                }
            }
        } else if membership == "invite" {
            return Err(MatrixError::not_found(format!("unknown user {target} (only local users can be invited yet)")));
        }
    }
    let event = state_event(&sender.user_id, "m.room.member", target.as_str(), content);
    send_one(api, room_id, event, None).await?;
    Ok(())
}

/// The room a local alias names; 404 for an unknown one (remote aliases
/// resolve once federation does).
async fn resolve_alias(api: &ClientApi, alias: &RoomAliasId) -> MatrixResult<ruma::OwnedRoomId> {
    let not_found = || MatrixError::not_found(format!("Room alias {alias} not found"));
    if alias.server_name().as_str() != api.config().server_name {
        return Err(not_found());
    }
    api.directory().resolve_alias(alias).await.map_err(fault)?.ok_or_else(not_found)
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3joinroomidoralias)
pub(crate) async fn join_by_id_or_alias(
    State(api): State<ClientApi>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> MatrixResult<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let room_id = match <&RoomId>::try_from(&*req.body.room_id_or_alias) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) => resolve_alias(&api, alias).await?,
    };
    let session = req.session();
    set_membership(&api, session, &room_id, &session.user_id, "join", req.body.reason.as_deref()).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(room_id)))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidjoin)
pub(crate) async fn join_by_id(
    State(api): State<ClientApi>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> MatrixResult<RumaResponse<join_room_by_id::v3::Response>> {
    let session = req.session();
    set_membership(&api, session, &req.body.room_id, &session.user_id, "join", req.body.reason.as_deref()).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(req.body.room_id.clone())))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidleave)
pub(crate) async fn leave(
    State(api): State<ClientApi>,
    req: Ruma<leave_room::v3::Request>,
) -> MatrixResult<RumaResponse<leave_room::v3::Response>> {
    let session = req.session();
    set_membership(&api, session, &req.body.room_id, &session.user_id, "leave", req.body.reason.as_deref()).await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidforget)
///
/// 400 `M_UNKNOWN` while the user is joined, invited or knocking, as the spec's example.
pub(crate) async fn forget(
    State(api): State<ClientApi>,
    req: Ruma<forget_room::v3::Request>,
) -> MatrixResult<RumaResponse<forget_room::v3::Response>> {
    let room_id = &req.body.room_id;
    match api.directory().forget_room(room_id, &req.session().user_id).await.map_err(fault)? {
        ForgetOutcome::Forgotten => Ok(RumaResponse(forget_room::v3::Response::new())),
        ForgetOutcome::StillInRoom => {
            Err(MatrixError::new(ErrorKind::BadRequest, "You must leave the room before forgetting it"))
        }
        ForgetOutcome::UnknownRoom => Err(MatrixError::not_found("Unknown room")),
    }
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidinvite)
pub(crate) async fn invite(
    State(api): State<ClientApi>,
    req: Ruma<invite_user::v3::Request>,
) -> MatrixResult<RumaResponse<invite_user::v3::Response>> {
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.body.recipient else {
        return Err(MatrixError::forbidden("third-party invites are not supported"));
    };
    let session = req.session();
    set_membership(&api, session, &req.body.room_id, &recipient.user_id, "invite", recipient.reason.as_deref()).await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidkick)
pub(crate) async fn kick(
    State(api): State<ClientApi>,
    req: Ruma<kick_user::v3::Request>,
) -> MatrixResult<RumaResponse<kick_user::v3::Response>> {
    let body = &req.body;
    set_membership(&api, req.session(), &body.room_id, &body.user_id, "leave", body.reason.as_deref()).await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidban)
pub(crate) async fn ban(
    State(api): State<ClientApi>,
    req: Ruma<ban_user::v3::Request>,
) -> MatrixResult<RumaResponse<ban_user::v3::Response>> {
    let body = &req.body;
    set_membership(&api, req.session(), &body.room_id, &body.user_id, "ban", body.reason.as_deref()).await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidunban)
pub(crate) async fn unban(
    State(api): State<ClientApi>,
    req: Ruma<unban_user::v3::Request>,
) -> MatrixResult<RumaResponse<unban_user::v3::Response>> {
    let body = &req.body;
    if api.rooms().membership(&body.room_id, &body.user_id).await.map_err(fault)? != Some(MembershipState::Ban) {
        return Err(MatrixError::new(ErrorKind::BadState, "the user is not banned"));
    }
    set_membership(&api, req.session(), &body.room_id, &body.user_id, "leave", body.reason.as_deref()).await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

/// # `GET /_matrix/client/v3/joined_rooms`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3joined_rooms)
pub(crate) async fn joined(
    State(api): State<ClientApi>,
    req: Ruma<joined_rooms::v3::Request>,
) -> MatrixResult<RumaResponse<joined_rooms::v3::Response>> {
    let rooms = api.rooms().joined_rooms(&req.session().user_id).await.map_err(fault)?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

fn members_of(state: Vec<JsonValue>) -> impl Iterator<Item = JsonValue> {
    state.into_iter().filter(|e| e["type"] == "m.room.member")
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmembers)
///
/// `at` takes a sync token (the state there), or an event ID (the state before it).
pub(crate) async fn members(
    State(api): State<ClientApi>,
    req: Ruma<get_member_events::v3::Request>,
) -> MatrixResult<Json<JsonValue>> {
    let body = &req.body;
    require_joined(&api, &body.room_id, &req.session().user_id).await?;
    // `at` is a sync token (e.g. a `prev_batch`); an event ID is accepted too.
    let state = match &body.at {
        Some(at) => match ruma::EventId::parse(at) {
            Ok(event_id) => api
                .rooms()
                .state_at_event(&body.room_id, &event_id)
                .await
                .map_err(fault)?
                .ok_or_else(|| MatrixError::not_found("Unknown event"))?,
            Err(_) => {
                api.sync().state_at(&req.session().user_id, &body.room_id, at).await.map_err(super::sync::sync_error)?
            }
        },
        None => api.rooms().current_state(&body.room_id).await.map_err(fault)?,
    };
    let wanted = |event: &JsonValue| {
        let membership = event["content"]["membership"].as_str().unwrap_or("");
        body.membership.as_ref().is_none_or(|m| m.as_str() == membership)
            && body.not_membership.as_ref().is_none_or(|m| m.as_str() != membership)
    };
    let chunk: Vec<JsonValue> = members_of(state).filter(wanted).collect();
    Ok(Json(json!({"chunk": chunk})))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidjoined_members)
pub(crate) async fn joined_members_of(
    State(api): State<ClientApi>,
    req: Ruma<joined_members::v3::Request>,
) -> MatrixResult<Json<JsonValue>> {
    require_joined(&api, &req.body.room_id, &req.session().user_id).await?;
    let state = api.rooms().current_state(&req.body.room_id).await.map_err(fault)?;
    let mut joined = BTreeMap::new();
    for event in members_of(state).filter(|e| e["content"]["membership"] == "join") {
        let mut member = json!({});
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = event["content"].get(field).filter(|v| !v.is_null()) {
                member[field] = value.clone();
            }
        }
        joined.insert(event["state_key"].as_str().unwrap_or_default().to_owned(), member);
    }
    Ok(Json(json!({"joined": joined})))
}
