//! Events: send, redact, get one; room state get and put.

use axum::Json;
use axum::extract::State;
use neurite_core::http::RumaResponse;
use neurite_core::{MatrixError, MatrixResult};
use neurite_roomserver::{ProtoEvent, TxnKey};
use ruma::api::client::message::send_message_event;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use serde_json::{Value as JsonValue, json};

use super::rooms::{fault, require_joined, send_one, state_event};
use crate::{ClientApi, Ruma};

/// The transaction of a request: its device, its ID, and what it is for.
fn txn_key(session: &neurite_userapi::Session, txn_id: &ruma::TransactionId, scope: String) -> TxnKey {
    TxnKey { user_id: session.user_id.clone(), device_id: session.device_id.clone(), txn_id: txn_id.to_owned(), scope }
}

fn content_of(raw: &serde_json::value::RawValue) -> MatrixResult<JsonValue> {
    match serde_json::from_str(raw.get()) {
        Ok(value @ JsonValue::Object(_)) => Ok(value),
        _ => Err(MatrixError::bad_json("event content must be a JSON object")),
    }
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid)
///
/// Idempotent per device and transaction ID, across restarts: the room
/// server answers a repeat with the first event's ID.
pub(crate) async fn send(
    State(api): State<ClientApi>,
    req: Ruma<send_message_event::v3::Request>,
) -> MatrixResult<RumaResponse<send_message_event::v3::Response>> {
    let session = req.session();
    let body = &req.body;
    let event = ProtoEvent {
        event_type: body.event_type.to_string(),
        state_key: None,
        sender: session.user_id.clone(),
        content: content_of(body.body.json())?,
        redacts: None,
    };
    let txn = txn_key(session, &body.txn_id, format!("send:{}:{}", body.room_id, body.event_type));
    let event_id = send_one(&api, &body.room_id, event, Some(txn)).await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(event_id)))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid)
pub(crate) async fn redact(
    State(api): State<ClientApi>,
    req: Ruma<redact_event::v3::Request>,
) -> MatrixResult<RumaResponse<redact_event::v3::Response>> {
    let session = req.session();
    let body = &req.body;
    let mut content = json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = json!(reason);
    }
    let event = ProtoEvent {
        event_type: "m.room.redaction".into(),
        state_key: None,
        sender: session.user_id.clone(),
        content,
        redacts: Some(body.event_id.clone()),
    };
    let txn = txn_key(session, &body.txn_id, format!("redact:{}:{}", body.room_id, body.event_id));
    let event_id = send_one(&api, &body.room_id, event, Some(txn)).await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomideventeventid)
///
/// 404 for an event the user may not see, so its existence is not revealed.
pub(crate) async fn get_event(
    State(api): State<ClientApi>,
    req: Ruma<get_room_event::v3::Request>,
) -> MatrixResult<Json<JsonValue>> {
    let body = &req.body;
    let not_found = || MatrixError::not_found("Event not found");
    let event = api.rooms().event(&body.room_id, &body.event_id).await.map_err(fault)?.ok_or_else(not_found)?;
    if !api.rooms().may_see_event(&req.session().user_id, &body.room_id, &body.event_id).await.map_err(fault)? {
        return Err(not_found());
    }
    Ok(Json(event))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey)
pub(crate) async fn put_state(
    State(api): State<ClientApi>,
    req: Ruma<send_state_event::v3::Request>,
) -> MatrixResult<RumaResponse<send_state_event::v3::Response>> {
    let body = &req.body;
    let content = content_of(body.body.json())?;
    let event = state_event(&req.session().user_id, &body.event_type.to_string(), &body.state_key, content);
    let event_id = send_one(&api, &body.room_id, event, None).await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey)
pub(crate) async fn get_state(
    State(api): State<ClientApi>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> MatrixResult<Json<JsonValue>> {
    let body = &req.body;
    require_joined(&api, &body.room_id, &req.session().user_id).await?;
    let event = api
        .rooms()
        .current_state_event(&body.room_id, &body.event_type.to_string(), &body.state_key)
        .await
        .map_err(fault)?
        .ok_or_else(|| MatrixError::not_found("No such state event"))?;
    let event_or_content = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event["content"].clone(),
    };
    Ok(Json(event_or_content))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
/// [spec](https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidstate)
pub(crate) async fn get_all_state(
    State(api): State<ClientApi>,
    req: Ruma<get_state_events::v3::Request>,
) -> MatrixResult<Json<JsonValue>> {
    require_joined(&api, &req.body.room_id, &req.session().user_id).await?;
    let state = api.rooms().current_state(&req.body.room_id).await.map_err(fault)?;
    Ok(Json(JsonValue::Array(state)))
}
