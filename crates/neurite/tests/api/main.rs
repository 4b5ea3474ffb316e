//! Integration tests of the HTTP APIs: each boots a [`TestServer`] and talks
//! to it as a client would, asserting what the spec says. One test binary
//! (modules below) keeps link time down.

mod account;
mod devices;
mod directory;
mod discovery;
mod errors;
mod filters;
mod profile;
mod register;
mod robustness;
mod rooms;
mod secrets;
mod session;
mod sync;
