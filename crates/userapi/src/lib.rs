//! Neurite's user API: accounts, devices, access and refresh tokens,
//! profiles, filters, registration tokens and user-interactive
//! authentication sessions.
//!
//! Other components use it through [`UserApi`]; its tables are its own.

#![warn(missing_docs)]

mod api;
mod credentials;
mod service;
mod storage;
mod uia;

pub use api::{Device, Session, SessionTokens, UiaOutcome, UiaRequest, UserApi};
pub use service::UserApiService;
