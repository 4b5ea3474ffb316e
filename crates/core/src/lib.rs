//! Shared core of Neurite: configuration, the Matrix error type, the HTTP glue
//! between axum and ruma's request/response types, and documented limits.
//!
//! Every component crate depends on this one; it depends on no component.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod memory;

pub use config::Config;
pub use error::{ErrorKind, MatrixError, MatrixResult};
