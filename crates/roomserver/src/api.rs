//! What other components may ask of the room server, and the records it
//! reads from `input.room_event` and writes to `output.room_event`.

use async_trait::async_trait;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

/// An event a local user wants sent: the room server fills in `prev_events`,
/// `auth_events`, `depth`, hashes, signature and event ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtoEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The state key, for a state event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    /// Who sends it (a local user).
    pub sender: OwnedUserId,
    /// The content.
    pub content: JsonValue,
    /// For a redaction, the event it redacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacts: Option<OwnedEventId>,
}

/// The client transaction a send belongs to: a repeat with the same key
/// answers with the first event instead of creating another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnKey {
    /// The sender.
    pub user_id: OwnedUserId,
    /// The sending device.
    pub device_id: OwnedDeviceId,
    /// The client's transaction ID.
    pub txn_id: OwnedTransactionId,
    /// What the transaction ID is for (endpoint and room, e.g.
    /// `send:!room:m.room.message`): a client reusing an ID on another room
    /// or endpoint starts another transaction, as with Synapse.
    pub scope: String,
}

/// Where a [`BuildEvents`] input goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// An existing room.
    Room {
        /// The room.
        room_id: OwnedRoomId,
    },
    /// A new room: the first event must be its `m.room.create`. For room
    /// versions before 12 the room ID is chosen by the writer; from 12 on it
    /// is the create event's ID.
    NewRoom {
        /// The room version.
        room_version: RoomVersionId,
        /// The room ID, for versions before 12.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room_id: Option<OwnedRoomId>,
    },
}

/// Local events to build and add to a room, in order, all or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildEvents {
    /// The room they go to.
    pub target: Target,
    /// The events, in order.
    pub events: Vec<ProtoEvent>,
    /// The client transaction, for a single-event send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnKey>,
}

/// A complete PDU built and signed elsewhere (a remote server's event, or a
/// test's), whose `prev_events` and `auth_events` the room server already has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PduInput {
    /// The room's version.
    pub room_version: RoomVersionId,
    /// The PDU as received (canonical JSON).
    pub pdu: JsonValue,
}

/// What an input asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// Build local events on the room's latest events.
    Build(BuildEvents),
    /// Add a complete PDU where its `prev_events` say.
    Pdu(PduInput),
}

/// A record of `input.room_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRoomEvent {
    /// Unique per request: a redelivered input with a known ID is answered
    /// from the stored verdict, never processed twice.
    pub request_id: String,
    /// What to do.
    #[serde(flatten)]
    pub input: Input,
}

/// The room server's answer to an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every event was accepted; their IDs, in order.
    Accepted {
        /// The room.
        room_id: OwnedRoomId,
        /// The new events.
        event_ids: Vec<OwnedEventId>,
    },
    /// An event failed the authorization rules; nothing was added.
    Rejected {
        /// Why, for the client.
        reason: String,
    },
    /// The input cannot be processed at all.
    Invalid {
        /// Why.
        reason: String,
        /// What kind of problem it is.
        code: InvalidCode,
    },
}

/// Kinds of [`Verdict::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidCode {
    /// The room does not exist (or the event to redact is not in it).
    NotFound,
    /// The PDU would be larger than 65,536 bytes.
    TooLarge,
    /// The content or fields cannot make a valid event.
    BadEvent,
    /// The room version is not supported.
    UnsupportedRoomVersion,
}

/// A record of `output.room_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputRoomEvent {
    /// An event was added to a room.
    NewRoomEvent {
        /// The event in client format (`event_id`, `room_id`, `type`, `sender`,
        /// `content`, `origin_server_ts`, `state_key`, `unsigned`...).
        event: JsonValue,
        /// The room version.
        room_version: RoomVersionId,
        /// State events that entered the room's current state with this event.
        adds_state_event_ids: Vec<OwnedEventId>,
        /// State events that left it.
        removes_state_event_ids: Vec<OwnedEventId>,
        /// The client transaction, so the sender's device can recognise its echo.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        txn: Option<TxnKey>,
    },
}

/// Why the room server could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RoomserverError {
    /// The verdict did not come in time.
    #[error("timed out waiting for the room server")]
    Timeout,
    /// A storage or log fault.
    #[error("room server fault: {0}")]
    Fault(String),
}

/// A summary of one state event, as queries return it.
pub type EventJson = JsonValue;

/// The room server's writer API: submit an input and wait for its verdict.
#[async_trait]
pub trait RoomserverInput: Send + Sync {
    /// Publishes `input` on `input.room_event` and waits for the verdict.
    ///
    /// # Errors
    /// The log or the database failed, or no verdict came within the timeout.
    async fn submit(&self, input: Input) -> Result<Verdict, RoomserverError>;
}

/// The room server's queries, for the client API.
///
/// # Errors
/// Storage faults only; a missing room or event is `Ok(None)`.
#[async_trait]
pub trait RoomserverQuery: Send + Sync {
    /// The room's version, `None` if the room is unknown.
    async fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>, RoomserverError>;
    /// The current state, as client-format events.
    async fn current_state(&self, room_id: &RoomId) -> Result<Vec<EventJson>, RoomserverError>;
    /// One current state event, by type and state key.
    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<EventJson>, RoomserverError>;
    /// The state before an event of the room (client format), `None` if the
    /// event is not known in that room.
    async fn state_at_event(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<Option<Vec<EventJson>>, RoomserverError>;
    /// A user's current membership in a room.
    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<MembershipState>, RoomserverError>;
    /// The rooms a user is currently joined to.
    async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>, RoomserverError>;
    /// An event of the room in client format (redacted if it was redacted),
    /// if it is known in that room and not rejected.
    async fn event(&self, room_id: &RoomId, event_id: &ruma::EventId) -> Result<Option<EventJson>, RoomserverError>;
    /// Whether `user_id` may see the room's event `event_id` under the room's
    /// history visibility (`false` if the room has no such event).
    async fn may_see_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<bool, RoomserverError>;
    /// The room's forward extremities.
    async fn latest_events(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>, RoomserverError>;
}
