//! Measuring tools behind `bench/run` (see docs/BENCHMARKS.md).
//!
//! [`floor`] is the floor server: an axum handler that does one SQLite write
//! transaction per request, on the same [`SqlitePool`](neurite_storage::sqlite::SqlitePool)
//! Neurite uses (WAL, `synchronous=FULL`, one writer connection, `BEGIN IMMEDIATE`
//! on the blocking pool). It is the cheapest a durable `PUT` can be on this
//! machine. [`latency`] is the one client that times both the floor and
//! Neurite's `PUT /send`, so the two figures differ only by the server.

#![warn(missing_docs)]

pub mod floor;
pub mod latency;
