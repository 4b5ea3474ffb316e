//! Neurite's room server: the only writer of room state.
//!
//! Writers submit inputs on `input.room_event`; one ordered worker per room
//! builds local events on the room's latest events (or takes complete PDUs),
//! runs the authorization rules and state resolution v2 (ruma-state-res),
//! stores events with the state before them as reusable blocks of numeric
//! IDs, and writes each accepted event with its current-state delta to
//! `output.room_event`. Other components ask it questions through
//! [`RoomserverQuery`]; its tables are its own.

#![warn(missing_docs)]

mod acked;
mod api;
mod directory;
mod event;
pub mod limits;
mod process;
mod query;
mod service;
mod state;
mod storage;

pub use api::{
    BuildEvents, EventJson, Input, InputRoomEvent, InvalidCode, OutputRoomEvent, PduInput, ProtoEvent, RoomserverError,
    RoomserverInput, RoomserverQuery, Target, TxnKey, Verdict,
};
pub use directory::{
    ForgetOutcome, PUBLIC_ROOMS_PAGE_COUNT_MAX, PUBLIC_ROOMS_SEARCH_COUNT_MAX, PublicRoomSummary, PublicRoomsPage,
    PublicRoomsQuery, RoomserverDirectory,
};
pub use process::Signer;
pub use service::Roomserver;
pub use state::STATE_BLOCK_MERGE_FANOUT;

use ruma::RoomVersionId;

/// The room versions Neurite creates and joins: those whose auth rules and
/// state resolution ruma-state-res fully implements (canonical JSON, v6+).
pub const SUPPORTED_ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The version of new rooms unless the client asks for another (the spec's
/// recommendation since v1.16).
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;
