//! Neurite's sync API (seed 001): consumes `output.room_event` into its own
//! tables (every event with a stream position, current state per room,
//! state deltas, membership history) and answers `/sync` and `/messages`
//! from them. It never reads the room server's tables, and it advances state
//! only by the output log's `adds_state_event_ids` / `removes_state_event_ids`.

#![warn(missing_docs)]

mod api;
mod consumer;
mod notifier;
mod response;
mod service;
mod storage;
mod token;

pub use api::{MessagesRequest, RoomEventFilter, SyncApi, SyncError, SyncRequest};
pub use response::{MessagesResponse, SyncResponse};
pub use service::SyncService;
pub use token::{STREAMS, SyncToken};

/// Default timeline length per room, as Synapse.
pub const TIMELINE_LIMIT_DEFAULT: usize = 10;
