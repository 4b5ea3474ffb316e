//! Neurite's client-server API: the `/_matrix/client/*` endpoints.
//!
//! Handlers are thin: a [`Ruma`] extractor parses and authenticates the
//! request, the handler calls one component through its trait, and returns a
//! ruma response. Rules live in the components (`userapi`, later
//! `roomserver`), never here.

#![warn(missing_docs)]

mod extract;
mod ratelimit;
mod routes;

use std::sync::Arc;

use neurite_core::Config;
use neurite_roomserver::{RoomserverDirectory, RoomserverInput, RoomserverQuery};
use neurite_syncapi::SyncApi;
use neurite_userapi::UserApi;

pub use extract::Ruma;
pub use ratelimit::{BUCKET_PRUNE_INTERVAL_SECS, RateLimiter};
pub use routes::router;

/// The components the client API calls, each through its trait.
pub struct Components {
    /// Accounts, devices, profiles, filters.
    pub users: Arc<dyn UserApi>,
    /// The room server's writer side.
    pub room_input: Arc<dyn RoomserverInput>,
    /// The room server's queries.
    pub rooms: Arc<dyn RoomserverQuery>,
    /// Room aliases and the room directory.
    pub directory: Arc<dyn RoomserverDirectory>,
    /// `/sync` and `/messages`.
    pub sync: Arc<dyn SyncApi>,
}

/// The state every client API handler gets: handles to the components.
#[derive(Clone)]
pub struct ClientApi {
    inner: Arc<Inner>,
}

struct Inner {
    users: Arc<dyn UserApi>,
    room_input: Arc<dyn RoomserverInput>,
    rooms: Arc<dyn RoomserverQuery>,
    directory: Arc<dyn RoomserverDirectory>,
    sync: Arc<dyn SyncApi>,
    config: Arc<Config>,
    limiter: Option<RateLimiter>,
}

impl ClientApi {
    /// Builds the client API over the given components; rate limits follow `config`.
    pub fn new(components: Components, config: Arc<Config>) -> Self {
        let limiter = RateLimiter::from_config(&config);
        let Components { users, room_input, rooms, directory, sync } = components;
        Self { inner: Arc::new(Inner { users, room_input, rooms, directory, sync, config, limiter }) }
    }

    /// The sync API.
    pub(crate) fn sync(&self) -> &dyn SyncApi {
        &*self.inner.sync
    }

    /// The room server's writer side.
    pub(crate) fn room_input(&self) -> &dyn RoomserverInput {
        &*self.inner.room_input
    }

    /// The room server's queries.
    pub(crate) fn rooms(&self) -> &dyn RoomserverQuery {
        &*self.inner.rooms
    }

    /// The room directory: aliases, the public room list, forgotten rooms.
    pub(crate) fn directory(&self) -> &dyn RoomserverDirectory {
        &*self.inner.directory
    }

    /// The userapi.
    pub(crate) fn users(&self) -> &dyn UserApi {
        &*self.inner.users
    }

    /// The server configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The rate limiter, if rate limits are on.
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }
}
