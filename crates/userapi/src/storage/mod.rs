//! The userapi's storage: one trait, one implementation per backend.
//! Only the userapi reads or writes these tables.

pub(crate) mod cache;
pub(crate) mod sqlite;

use async_trait::async_trait;
use neurite_storage::StorageError;
use serde_json::Value as JsonValue;

/// An account row.
#[derive(Debug, Clone)]
pub(crate) struct AccountRow {
    pub password_hash: Option<String>,
    pub deactivated: bool,
}

/// What an access token resolves to.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub localpart: String,
    pub device_id: String,
    pub expires_ts: Option<u64>,
    pub is_admin: bool,
    pub retires_refresh_hash: Option<Vec<u8>>,
    pub last_seen_ts: u64,
    pub last_seen_ip: Option<String>,
}

/// A device row.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: u64,
    pub last_seen_ip: Option<String>,
}

/// The hashes of a freshly issued token pair.
#[derive(Debug, Clone)]
pub(crate) struct NewTokens {
    pub access_hash: Vec<u8>,
    pub access_expires_ts: Option<u64>,
    pub refresh_hash: Option<Vec<u8>>,
}

/// Outcome of inserting an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertAccount {
    Created,
    Taken,
    /// The registration token ran out or expired between the UIA stage and now.
    TokenExhausted,
}

/// A stored user-interactive authentication session.
#[derive(Debug, Clone)]
pub(crate) struct UiaSessionRow {
    pub purpose: String,
    pub completed: Vec<String>,
    pub registration_token: Option<String>,
    pub created_ts: u64,
}

/// Everything the userapi stores. Timestamps are milliseconds since the epoch.
///
/// # Errors
/// Every method fails only with [`StorageError`]; domain outcomes (a taken
/// name, a missing row) are in the `Ok` value.
#[async_trait]
pub(crate) trait UserStore: Send + Sync {
    async fn insert_account(
        &self,
        localpart: &str,
        password_hash: &str,
        is_admin: bool,
        registration_token: Option<&str>,
        now: u64,
    ) -> Result<InsertAccount, StorageError>;
    async fn account(&self, localpart: &str) -> Result<Option<AccountRow>, StorageError>;
    async fn localpart_exists(&self, localpart: &str) -> Result<bool, StorageError>;
    /// Sets the password; with `keep_device`, deletes every other device of the user.
    async fn set_password(&self, localpart: &str, hash: &str, keep_device: Option<&str>) -> Result<(), StorageError>;
    /// Marks the account deactivated and deletes its password, devices, tokens and profile.
    async fn deactivate(&self, localpart: &str) -> Result<(), StorageError>;

    /// Creates the device if new (with `display_name`), or keeps it and revokes
    /// its tokens if it exists; then stores the new tokens for it.
    async fn open_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
        tokens: &NewTokens,
        now: u64,
        ip: Option<&str>,
    ) -> Result<(), StorageError>;
    /// Records that a device was used at `now` from `ip`.
    async fn touch_device(
        &self,
        localpart: &str,
        device_id: &str,
        now: u64,
        ip: Option<&str>,
    ) -> Result<(), StorageError>;
    async fn access_token(&self, hash: &[u8]) -> Result<Option<TokenRow>, StorageError>;
    /// Revokes the refresh token `retired` that `access_hash` made obsolete by being used.
    async fn retire_refresh_token(&self, access_hash: &[u8], retired: &[u8]) -> Result<(), StorageError>;
    /// Swaps a refresh token for new tokens on the same device; `None` if unknown.
    /// The old refresh token stays valid until the new pair is used.
    async fn rotate_refresh_token(
        &self,
        refresh_hash: &[u8],
        new: &NewTokens,
    ) -> Result<Option<(String, String)>, StorageError>;
    async fn devices(&self, localpart: &str) -> Result<Vec<DeviceRow>, StorageError>;
    /// Renames a device; `false` if there is no such device.
    async fn rename_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StorageError>;
    /// Deletes devices with their tokens; unknown IDs are skipped.
    async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<(), StorageError>;
    async fn delete_all_devices(&self, localpart: &str) -> Result<(), StorageError>;

    async fn profile(&self, localpart: &str) -> Result<Vec<(String, JsonValue)>, StorageError>;
    async fn set_profile_field(
        &self,
        localpart: &str,
        field: &str,
        value: Option<&JsonValue>,
    ) -> Result<(), StorageError>;

    /// Stores a filter and returns its ID (unique per user).
    async fn insert_filter(&self, localpart: &str, filter: &JsonValue) -> Result<u64, StorageError>;
    async fn filter(&self, localpart: &str, filter_id: u64) -> Result<Option<JsonValue>, StorageError>;

    async fn insert_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<u32>,
        expiry_ts: Option<u64>,
        now: u64,
    ) -> Result<(), StorageError>;
    async fn registration_token_usable(&self, token: &str, now: u64) -> Result<bool, StorageError>;

    async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRow>, StorageError>;
    async fn put_uia_session(&self, session_id: &str, row: &UiaSessionRow) -> Result<(), StorageError>;
    async fn delete_uia_session(&self, session_id: &str) -> Result<(), StorageError>;
    /// Deletes sessions created before `before_ts`.
    async fn expire_uia_sessions(&self, before_ts: u64) -> Result<(), StorageError>;
}
