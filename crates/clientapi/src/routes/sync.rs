//! `/sync` and `/rooms/{roomId}/messages`, answered by the sync API.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use neurite_core::{MatrixError, MatrixResult, memory};
use neurite_syncapi::{MessagesRequest, MessagesResponse, RoomEventFilter, SyncError, SyncRequest};
use ruma::api::Direction;
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter as RumaRoomEventFilter};
use ruma::api::client::message::get_message_events;
use ruma::api::client::sync::sync_events;

use crate::{ClientApi, Ruma};

pub(crate) fn sync_error(e: SyncError) -> MatrixError {
    match e {
        SyncError::BadToken(reason) => MatrixError::invalid_param(format!("invalid token: {reason}")),
        SyncError::Forbidden(reason) => MatrixError::forbidden(reason),
        SyncError::Fault(reason) => MatrixError::internal(reason),
    }
}

/// The sync API's filter from ruma's: the timeline part, narrowed by the
/// room filter's `rooms`/`not_rooms`. Fields not served yet are ignored.
fn timeline_filter(
    filter: &RumaRoomEventFilter,
    rooms: Option<&Vec<ruma::OwnedRoomId>>,
    not_rooms: &[ruma::OwnedRoomId],
) -> RoomEventFilter {
    let strings = |ids: &[ruma::OwnedRoomId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut all_not_rooms = strings(&filter.not_rooms);
    all_not_rooms.extend(strings(not_rooms));
    let rooms = match (rooms, &filter.rooms) {
        (Some(a), Some(b)) => Some(strings(a).into_iter().filter(|r| b.iter().any(|x| x.as_str() == r)).collect()),
        (Some(a), None) | (None, Some(a)) => Some(strings(a)),
        (None, None) => None,
    };
    RoomEventFilter {
        limit: filter.limit.map(|l| u64::from(l) as usize),
        types: filter.types.clone(),
        not_types: filter.not_types.clone(),
        senders: filter.senders.as_ref().map(|s| s.iter().map(ToString::to_string).collect()),
        not_senders: filter.not_senders.iter().map(ToString::to_string).collect(),
        rooms,
        not_rooms: all_not_rooms,
    }
}

/// # `GET /_matrix/client/v3/sync`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync)
pub(crate) async fn sync(State(api): State<ClientApi>, req: Ruma<sync_events::v3::Request>) -> MatrixResult<Response> {
    let session = req.session();
    let body = &req.body;
    let definition = match &body.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterDefinition(definition)) => definition.clone(),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let stored = api
                .users()
                .filter(&session.user_id, id)
                .await?
                .ok_or_else(|| MatrixError::not_found("No such filter"))?;
            serde_json::from_value(stored).map_err(MatrixError::internal)?
        }
        Some(_) => FilterDefinition::default(),
    };
    let request = SyncRequest {
        since: body.since.clone(),
        timeout_ms: body.timeout.map_or(0, |t| t.as_millis() as u64),
        full_state: body.full_state,
        use_state_after: body.use_state_after,
        timeline: timeline_filter(
            &definition.room.timeline,
            definition.room.rooms.as_ref(),
            &definition.room.not_rooms,
        ),
    };
    let answer = api.sync().sync(&session.user_id, &session.device_id, request).await.map_err(sync_error)?;
    let body = answer.to_json_bytes();
    drop(answer);
    if body.len() >= memory::HEAP_RELEASE_AFTER_BYTES_MIN {
        // Its events, freed just now, would otherwise stay resident.
        memory::release_free_heap();
    }
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages)
pub(crate) async fn messages(
    State(api): State<ClientApi>,
    req: Ruma<get_message_events::v3::Request>,
) -> MatrixResult<Json<MessagesResponse>> {
    let body = &req.body;
    if api.rooms().room_version(&body.room_id).await.map_err(super::rooms::fault)?.is_none() {
        return Err(MatrixError::not_found("Unknown room"));
    }
    let mut filter = timeline_filter(&body.filter, None, &[]);
    filter.limit = Some(u64::from(body.limit) as usize);
    let request = MessagesRequest {
        from: body.from.clone(),
        to: body.to.clone(),
        backwards: body.dir == Direction::Backward,
        filter,
    };
    let answer = api.sync().messages(&req.session().user_id, &body.room_id, request).await.map_err(sync_error)?;
    Ok(Json(answer))
}
