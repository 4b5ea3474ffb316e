//! Wakes the long-polling `/sync` requests of the users an event concerns,
//! and only theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

/// One wake-up handle per user with a waiting (or recent) `/sync`.
#[derive(Default)]
pub(crate) struct Notifier {
    users: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
}

impl Notifier {
    /// The handle a `/sync` of `user_id` waits on.
    pub(crate) fn handle(&self, user_id: &UserId) -> Arc<Notify> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).entry(user_id.to_owned()).or_default().clone()
    }

    /// Wakes every waiting `/sync` of these users.
    pub(crate) fn wake<'a>(&self, users: impl IntoIterator<Item = &'a str>) {
        let map = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user in users {
            if let Some(notify) = ruma::UserId::parse(user).ok().and_then(|u| map.get(&u)) {
                notify.notify_waiters();
            }
        }
    }
}
