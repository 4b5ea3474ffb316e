//! Neurite's logs: ordered, durable, at-least-once topics between components.
//!
//! Writers publish to [`INPUT_ROOM_EVENT`]; the room server consumes it and
//! publishes [`OUTPUT_ROOM_EVENT`]; readers consume that. Components see only
//! the [`Log`] and [`Subscription`] traits. [`SqliteLog`] is the default
//! implementation: in-process, durable in the embedded SQLite database, with
//! consumers woken in-process. A NATS JetStream implementation comes later
//! behind the same traits.
//!
//! Delivery is at-least-once: after a restart a consumer may see records it
//! already processed, so every consumer must be idempotent.

#![warn(missing_docs)]

mod api;
pub mod limits;
mod sqlite;

pub use api::{
    Acker, Acknowledge, INPUT_ROOM_EVENT, Log, LogError, OUTPUT_ROOM_EVENT, PublishRecord, Record, Subscription,
};
pub use sqlite::{Appended, SqliteAppender, SqliteLog};
