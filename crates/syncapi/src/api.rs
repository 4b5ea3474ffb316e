//! What the client API asks of the sync API.

use async_trait::async_trait;
use ruma::{DeviceId, RoomId, UserId};
use serde_json::Value as JsonValue;

use crate::response::{MessagesResponse, SyncResponse};

/// Which events a room timeline (or `/messages`) returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomEventFilter {
    /// Most events per room (`None`: the default).
    pub limit: Option<usize>,
    /// Only these event types (exact names).
    pub types: Option<Vec<String>>,
    /// Never these event types.
    pub not_types: Vec<String>,
    /// Only events from these senders.
    pub senders: Option<Vec<String>>,
    /// Never events from these senders.
    pub not_senders: Vec<String>,
    /// Only these rooms.
    pub rooms: Option<Vec<String>>,
    /// Never these rooms.
    pub not_rooms: Vec<String>,
}

/// A `/sync` request, after the client API resolved its filter.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The `since` token, if incremental.
    pub since: Option<String>,
    /// How long to wait for something new, in milliseconds.
    pub timeout_ms: u64,
    /// Send the full state of every room.
    pub full_state: bool,
    /// Answer with `state_after` (the state at the end of the timeline,
    /// MSC4222, spec v1.16) instead of `state` (at its start).
    pub use_state_after: bool,
    /// The room timeline filter (with the room filter's `rooms`/`not_rooms`).
    pub timeline: RoomEventFilter,
}

/// A `/rooms/{roomId}/messages` request.
#[derive(Debug, Clone, Default)]
pub struct MessagesRequest {
    /// Where to start (a sync token or a `prev_batch`); `None`: the live end
    /// going backwards, the start going forwards.
    pub from: Option<String>,
    /// Where to stop.
    pub to: Option<String>,
    /// `true` for backwards.
    pub backwards: bool,
    /// The filter (its `limit` defaults to 10).
    pub filter: RoomEventFilter,
}

/// Why the sync API cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A token that is not one of ours.
    #[error("invalid token: {0}")]
    BadToken(String),
    /// The user may not read this room.
    #[error("{0}")]
    Forbidden(String),
    /// A storage fault.
    #[error("sync fault: {0}")]
    Fault(String),
}

/// The sync API as the client API uses it.
///
/// # Errors
/// [`SyncError::BadToken`] for a token that does not parse, otherwise faults.
#[async_trait]
pub trait SyncApi: Send + Sync {
    /// Answers `/sync` for one device: complete without `since`, incremental
    /// with it, waiting up to `timeout_ms` for something new.
    async fn sync(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        request: SyncRequest,
    ) -> Result<SyncResponse, SyncError>;

    /// The room's state at a sync token (after every event up to its
    /// position), as client-format events, for `/members?at=`. The user must
    /// have been in the room at that point.
    async fn state_at(&self, user_id: &UserId, room_id: &RoomId, at: &str) -> Result<Vec<JsonValue>, SyncError>;

    /// Answers `/rooms/{roomId}/messages`.
    async fn messages(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        request: MessagesRequest,
    ) -> Result<MessagesResponse, SyncError>;
}
