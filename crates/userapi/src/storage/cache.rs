//! Access-token lookups kept in memory, in front of any [`UserStore`].
//!
//! Every authenticated request resolves its token. From the store that is a
//! read on the blocking pool: two thread hand-offs, which after a pause
//! (a long-poll's message arriving, a user's next click) each wake a sleeping
//! thread. A hit here answers on the request's own thread.
//!
//! Invariant: an entry never outlives a change to its token, device or
//! account made through this store. Every method that changes one forgets
//! the entries it may touch after the write, and bumps a generation; a
//! lookup that read the store stores its row only if no change came since
//! it began, so a row read before a change cannot land after it. The cache
//! is per process: a second process that changes these tables (none does
//! yet; see ARCHITECTURE.md) must tell every cache, or run without one.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use neurite_storage::StorageError;
use serde_json::Value as JsonValue;

use super::{AccountRow, DeviceRow, InsertAccount, NewTokens, TokenRow, UiaSessionRow, UserStore};

/// Access tokens kept at most. An entry is ~250 bytes (the token's hash,
/// user and device IDs), so the cache stays under 1 MiB; past the bound an
/// arbitrary entry makes room, so beyond it the busiest tokens still mostly
/// hit.
pub(crate) const CACHED_TOKENS_COUNT_MAX: usize = 4096;

/// A [`UserStore`] that answers [`UserStore::access_token`] from memory when it can.
pub(crate) struct TokenCache<S> {
    inner: S,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every change that may make an entry stale.
    generation: u64,
    /// Token hash -> the row the store gave for it.
    rows: HashMap<Vec<u8>, TokenRow>,
}

impl<S: UserStore> TokenCache<S> {
    /// Wraps `inner`, with an empty cache.
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every entry `stale` matches, after a change the store made
    /// (or may have made: callers forget on failure too).
    fn forget(&self, stale: impl Fn(&TokenRow) -> bool) {
        let mut state = self.state();
        state.generation += 1;
        state.rows.retain(|_, row| !stale(row));
    }

    /// The cached row for `hash`, or the generation to hand
    /// [`Self::remember`] with what the store gives.
    fn cached(&self, hash: &[u8]) -> Result<TokenRow, u64> {
        let state = self.state();
        state.rows.get(hash).cloned().ok_or(state.generation)
    }

    /// Keeps `row`, read from the store for `hash` after [`Self::cached`]
    /// answered `generation`, unless a change came since.
    fn remember(&self, hash: &[u8], row: &TokenRow, generation: u64) {
        // A token that still retires a refresh token changes on its first
        // use: it is read from the store until then.
        if row.retires_refresh_hash.is_some() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.rows.len() >= CACHED_TOKENS_COUNT_MAX
            && let Some(evicted) = state.rows.keys().next().cloned()
        {
            state.rows.remove(&evicted);
        }
        state.rows.insert(hash.to_vec(), row.clone());
    }

    fn forget_user(&self, localpart: &str) {
        self.forget(|row| row.localpart == localpart);
    }

    fn forget_device(&self, localpart: &str, device_id: &str) {
        self.forget(|row| row.localpart == localpart && row.device_id == device_id);
    }
}

#[async_trait]
impl<S: UserStore> UserStore for TokenCache<S> {
    async fn insert_account(
        &self,
        localpart: &str,
        password_hash: &str,
        is_admin: bool,
        registration_token: Option<&str>,
        now: u64,
    ) -> Result<InsertAccount, StorageError> {
        // A new account has no tokens yet.
        self.inner.insert_account(localpart, password_hash, is_admin, registration_token, now).await
    }

    async fn account(&self, localpart: &str) -> Result<Option<AccountRow>, StorageError> {
        self.inner.account(localpart).await
    }

    async fn localpart_exists(&self, localpart: &str) -> Result<bool, StorageError> {
        self.inner.localpart_exists(localpart).await
    }

    async fn set_password(&self, localpart: &str, hash: &str, keep_device: Option<&str>) -> Result<(), StorageError> {
        let result = self.inner.set_password(localpart, hash, keep_device).await;
        self.forget_user(localpart);
        result
    }

    async fn deactivate(&self, localpart: &str) -> Result<(), StorageError> {
        let result = self.inner.deactivate(localpart).await;
        self.forget_user(localpart);
        result
    }

    async fn open_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
        tokens: &NewTokens,
        now: u64,
        ip: Option<&str>,
    ) -> Result<(), StorageError> {
        let result = self.inner.open_device(localpart, device_id, display_name, tokens, now, ip).await;
        self.forget_device(localpart, device_id);
        result
    }

    async fn touch_device(
        &self,
        localpart: &str,
        device_id: &str,
        now: u64,
        ip: Option<&str>,
    ) -> Result<(), StorageError> {
        let result = self.inner.touch_device(localpart, device_id, now, ip).await;
        // The entries hold the device's last-seen time and address.
        self.forget_device(localpart, device_id);
        result
    }

    async fn access_token(&self, hash: &[u8]) -> Result<Option<TokenRow>, StorageError> {
        let generation = match self.cached(hash) {
            Ok(row) => return Ok(Some(row)),
            Err(generation) => generation,
        };
        let row = self.inner.access_token(hash).await?;
        if let Some(found) = &row {
            self.remember(hash, found, generation);
        }
        Ok(row)
    }

    async fn retire_refresh_token(&self, access_hash: &[u8], retired: &[u8]) -> Result<(), StorageError> {
        let result = self.inner.retire_refresh_token(access_hash, retired).await;
        let mut state = self.state();
        state.generation += 1;
        state.rows.remove(access_hash);
        result
    }

    async fn rotate_refresh_token(
        &self,
        refresh_hash: &[u8],
        new: &NewTokens,
    ) -> Result<Option<(String, String)>, StorageError> {
        let result = self.inner.rotate_refresh_token(refresh_hash, new).await;
        match &result {
            // The device's earlier access tokens are gone.
            Ok(Some((localpart, device_id))) => self.forget_device(localpart, device_id),
            Ok(None) => {}
            // Whose tokens it may have changed is unknown.
            Err(_) => self.forget(|_| true),
        }
        result
    }

    async fn devices(&self, localpart: &str) -> Result<Vec<DeviceRow>, StorageError> {
        self.inner.devices(localpart).await
    }

    async fn rename_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StorageError> {
        // The entries do not hold the display name.
        self.inner.rename_device(localpart, device_id, display_name).await
    }

    async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<(), StorageError> {
        let result = self.inner.delete_devices(localpart, device_ids).await;
        self.forget(|row| row.localpart == localpart && device_ids.contains(&row.device_id));
        result
    }

    async fn delete_all_devices(&self, localpart: &str) -> Result<(), StorageError> {
        let result = self.inner.delete_all_devices(localpart).await;
        self.forget_user(localpart);
        result
    }

    async fn profile(&self, localpart: &str) -> Result<Vec<(String, JsonValue)>, StorageError> {
        self.inner.profile(localpart).await
    }

    async fn set_profile_field(
        &self,
        localpart: &str,
        field: &str,
        value: Option<&JsonValue>,
    ) -> Result<(), StorageError> {
        self.inner.set_profile_field(localpart, field, value).await
    }

    async fn insert_filter(&self, localpart: &str, filter: &JsonValue) -> Result<u64, StorageError> {
        self.inner.insert_filter(localpart, filter).await
    }

    async fn filter(&self, localpart: &str, filter_id: u64) -> Result<Option<JsonValue>, StorageError> {
        self.inner.filter(localpart, filter_id).await
    }

    async fn insert_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<u32>,
        expiry_ts: Option<u64>,
        now: u64,
    ) -> Result<(), StorageError> {
        self.inner.insert_registration_token(token, uses_allowed, expiry_ts, now).await
    }

    async fn registration_token_usable(&self, token: &str, now: u64) -> Result<bool, StorageError> {
        self.inner.registration_token_usable(token, now).await
    }

    async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRow>, StorageError> {
        self.inner.uia_session(session_id).await
    }

    async fn put_uia_session(&self, session_id: &str, row: &UiaSessionRow) -> Result<(), StorageError> {
        self.inner.put_uia_session(session_id, row).await
    }

    async fn delete_uia_session(&self, session_id: &str) -> Result<(), StorageError> {
        self.inner.delete_uia_session(session_id).await
    }

    async fn expire_uia_sessions(&self, before_ts: u64) -> Result<(), StorageError> {
        self.inner.expire_uia_sessions(before_ts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteUserStore;
    use neurite_storage::sqlite::SqlitePool;

    fn row(localpart: &str, device_id: &str) -> TokenRow {
        TokenRow {
            localpart: localpart.into(),
            device_id: device_id.into(),
            expires_ts: None,
            is_admin: false,
            retires_refresh_hash: None,
            last_seen_ts: 0,
            last_seen_ip: None,
        }
    }

    async fn cache() -> (TokenCache<SqliteUserStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        (TokenCache::new(SqliteUserStore::new(pool).await.unwrap()), dir)
    }

    #[tokio::test]
    async fn a_row_read_before_a_change_is_not_kept_after_it() {
        let (cache, _dir) = cache().await;
        let Err(generation) = cache.cached(b"alice-phone") else { panic!("an empty cache answered") };
        // The store was read (the row is on its way back) when a change came.
        cache.forget_device("alice", "phone");
        cache.remember(b"alice-phone", &row("alice", "phone"), generation);
        assert!(cache.cached(b"alice-phone").is_err(), "a row read before the change was kept");

        let Err(generation) = cache.cached(b"alice-phone") else { panic!("nothing was kept") };
        cache.remember(b"alice-phone", &row("alice", "phone"), generation);
        assert!(cache.cached(b"alice-phone").is_ok());
    }

    #[tokio::test]
    async fn changes_forget_only_the_tokens_they_touch_and_the_cache_is_bounded() {
        let (cache, _dir) = cache().await;
        for (hash, localpart, device) in
            [(b"a1", "alice", "phone"), (b"a2", "alice", "laptop"), (b"b1", "bob", "phone")]
        {
            let Err(generation) = cache.cached(hash) else { panic!() };
            cache.remember(hash, &row(localpart, device), generation);
        }
        cache.forget_device("alice", "phone");
        assert!(cache.cached(b"a1").is_err());
        assert!(cache.cached(b"a2").is_ok() && cache.cached(b"b1").is_ok());
        cache.forget_user("alice");
        assert!(cache.cached(b"a2").is_err() && cache.cached(b"b1").is_ok());

        for i in 0..CACHED_TOKENS_COUNT_MAX + 10 {
            let hash = i.to_be_bytes();
            let Err(generation) = cache.cached(&hash) else { panic!() };
            cache.remember(&hash, &row("carol", &i.to_string()), generation);
        }
        assert_eq!(cache.state().rows.len(), CACHED_TOKENS_COUNT_MAX);
    }
}
