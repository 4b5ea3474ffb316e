//! Shared pieces of the room endpoints: submitting events to the room server
//! and turning its verdict into an answer.

use neurite_core::{ErrorKind, MatrixError, MatrixResult};
use neurite_roomserver::{BuildEvents, Input, InvalidCode, ProtoEvent, RoomserverError, Target, TxnKey, Verdict};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::Value as JsonValue;

use crate::ClientApi;

/// Maps a room server fault to a Matrix error.
pub(crate) fn fault(e: RoomserverError) -> MatrixError {
    MatrixError::internal(e)
}

/// The accepted events of a verdict, or the Matrix error the spec gives the failure.
pub(crate) fn accepted(verdict: Verdict) -> MatrixResult<(OwnedRoomId, Vec<OwnedEventId>)> {
    match verdict {
        Verdict::Accepted { room_id, event_ids } => Ok((room_id, event_ids)),
        Verdict::Rejected { reason } => Err(MatrixError::forbidden(reason)),
        Verdict::Invalid { reason, code } => Err(match code {
            InvalidCode::NotFound => MatrixError::not_found(reason),
            InvalidCode::TooLarge => MatrixError::new(ErrorKind::TooLarge, reason),
            InvalidCode::BadEvent => MatrixError::bad_json(reason),
            InvalidCode::UnsupportedRoomVersion => MatrixError::new(ErrorKind::UnsupportedRoomVersion, reason),
        }),
    }
}

/// Sends local events to an existing room and waits for the verdict.
pub(crate) async fn send(
    api: &ClientApi,
    room_id: &RoomId,
    events: Vec<ProtoEvent>,
    txn: Option<TxnKey>,
) -> MatrixResult<Vec<OwnedEventId>> {
    let build = BuildEvents { target: Target::Room { room_id: room_id.to_owned() }, events, txn };
    let verdict = api.room_input().submit(Input::Build(build)).await.map_err(fault)?;
    Ok(accepted(verdict)?.1)
}

/// Sends one local event and returns its ID.
pub(crate) async fn send_one(
    api: &ClientApi,
    room_id: &RoomId,
    event: ProtoEvent,
    txn: Option<TxnKey>,
) -> MatrixResult<OwnedEventId> {
    let ids = send(api, room_id, vec![event], txn).await?;
    ids.into_iter().next().ok_or_else(|| MatrixError::internal("the room server accepted no event"))
}

/// 404 if the room is unknown, 403 unless `user_id` is joined to it.
pub(crate) async fn require_joined(api: &ClientApi, room_id: &RoomId, user_id: &UserId) -> MatrixResult<()> {
    if api.rooms().room_version(room_id).await.map_err(fault)?.is_none() {
        return Err(MatrixError::not_found("Unknown room"));
    }
    match api.rooms().membership(room_id, user_id).await.map_err(fault)? {
        Some(MembershipState::Join) => Ok(()),
        _ => Err(MatrixError::forbidden("You are not joined to this room")),
    }
}

/// A state event from the client's content.
pub(crate) fn state_event(sender: &UserId, event_type: &str, state_key: &str, content: JsonValue) -> ProtoEvent {
    ProtoEvent {
        event_type: event_type.to_owned(),
        state_key: Some(state_key.to_owned()),
        sender: sender.to_owned(),
        content,
        redacts: None,
    }
}
