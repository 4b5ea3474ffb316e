//! The userapi's tables on SQLite.

use async_trait::async_trait;
use neurite_storage::sqlite::SqlitePool;
use neurite_storage::{Migration, StorageError};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value as JsonValue;

use super::{AccountRow, DeviceRow, InsertAccount, NewTokens, TokenRow, UiaSessionRow, UserStore};

static MIGRATIONS: &[Migration] =
    &[("0001_create_userapi", include_str!("../../migrations/sqlite/0001_create_userapi.sql"))];

/// The userapi's storage on an SQLite pool.
pub(crate) struct SqliteUserStore {
    pool: SqlitePool,
}

impl SqliteUserStore {
    /// Runs the userapi's migrations on `pool` and wraps it.
    pub(crate) async fn new(pool: SqlitePool) -> Result<Self, StorageError> {
        pool.migrate("userapi", MIGRATIONS).await?;
        Ok(Self { pool })
    }
}

fn corrupt(e: serde_json::Error) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

fn insert_tokens(
    tx: &Transaction<'_>,
    localpart: &str,
    device_id: &str,
    t: &NewTokens,
    retires: Option<&[u8]>,
) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO userapi_access_tokens (token_hash, localpart, device_id, expires_ts, retires_refresh_hash)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.access_hash, localpart, device_id, t.access_expires_ts.map(|v| v as i64), retires],
    )?;
    if let Some(refresh) = &t.refresh_hash {
        tx.execute(
            "INSERT INTO userapi_refresh_tokens (token_hash, localpart, device_id, retires_refresh_hash)
             VALUES (?1, ?2, ?3, ?4)",
            params![refresh, localpart, device_id, retires],
        )?;
    }
    Ok(())
}

fn delete_device_rows(tx: &Transaction<'_>, localpart: &str, device_id: &str) -> Result<(), StorageError> {
    // Tokens go with their device (ON DELETE CASCADE).
    tx.execute("DELETE FROM userapi_devices WHERE localpart = ?1 AND device_id = ?2", (localpart, device_id))?;
    Ok(())
}

#[async_trait]
impl UserStore for SqliteUserStore {
    async fn insert_account(
        &self,
        localpart: &str,
        password_hash: &str,
        is_admin: bool,
        registration_token: Option<&str>,
        now: u64,
    ) -> Result<InsertAccount, StorageError> {
        let (localpart, hash, token) =
            (localpart.to_owned(), password_hash.to_owned(), registration_token.map(str::to_owned));
        self.pool
            .write(move |tx| {
                let exists: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM userapi_accounts WHERE localpart = ?1)",
                    [&localpart],
                    |r| r.get(0),
                )?;
                if exists {
                    return Ok(InsertAccount::Taken);
                }
                if let Some(token) = token {
                    // Invariant: the use is counted in the transaction that creates
                    // the account, so a token never admits more accounts than allowed.
                    let counted = tx.execute(
                        "UPDATE userapi_registration_tokens SET completed = completed + 1
                         WHERE token = ?1 AND (uses_allowed IS NULL OR completed < uses_allowed)
                           AND (expiry_ts IS NULL OR expiry_ts > ?2)",
                        params![token, now as i64],
                    )?;
                    if counted == 0 {
                        return Ok(InsertAccount::TokenExhausted);
                    }
                }
                tx.execute(
                    "INSERT INTO userapi_accounts (localpart, password_hash, is_admin, created_ts) VALUES (?1, ?2, ?3, ?4)",
                    params![localpart, hash, is_admin, now as i64],
                )?;
                Ok(InsertAccount::Created)
            })
            .await
    }

    async fn account(&self, localpart: &str) -> Result<Option<AccountRow>, StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .read(move |tx| {
                Ok(tx
                    .query_row(
                        "SELECT password_hash, deactivated FROM userapi_accounts WHERE localpart = ?1",
                        [&localpart],
                        |r| Ok(AccountRow { password_hash: r.get(0)?, deactivated: r.get(1)? }),
                    )
                    .optional()?)
            })
            .await
    }

    async fn localpart_exists(&self, localpart: &str) -> Result<bool, StorageError> {
        Ok(self.account(localpart).await?.is_some())
    }

    async fn set_password(&self, localpart: &str, hash: &str, keep_device: Option<&str>) -> Result<(), StorageError> {
        let (localpart, hash, keep) = (localpart.to_owned(), hash.to_owned(), keep_device.map(str::to_owned));
        self.pool
            .write(move |tx| {
                tx.execute("UPDATE userapi_accounts SET password_hash = ?2 WHERE localpart = ?1", (&localpart, &hash))?;
                if let Some(keep) = keep {
                    tx.execute(
                        "DELETE FROM userapi_devices WHERE localpart = ?1 AND device_id != ?2",
                        (&localpart, &keep),
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn deactivate(&self, localpart: &str) -> Result<(), StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE userapi_accounts SET deactivated = 1, password_hash = NULL WHERE localpart = ?1",
                    [&localpart],
                )?;
                tx.execute("DELETE FROM userapi_devices WHERE localpart = ?1", [&localpart])?;
                tx.execute("DELETE FROM userapi_profiles WHERE localpart = ?1", [&localpart])?;
                tx.execute("DELETE FROM userapi_filters WHERE localpart = ?1", [&localpart])?;
                Ok(())
            })
            .await
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
        let (localpart, device_id, name, tokens, ip) = (
            localpart.to_owned(),
            device_id.to_owned(),
            display_name.map(str::to_owned),
            tokens.clone(),
            ip.map(str::to_owned),
        );
        self.pool
            .write(move |tx| {
                let updated = tx.execute(
                    "UPDATE userapi_devices SET last_seen_ts = ?3, last_seen_ip = ?4 WHERE localpart = ?1 AND device_id = ?2",
                    params![localpart, device_id, now as i64, ip],
                )?;
                if updated == 0 {
                    tx.execute(
                        "INSERT INTO userapi_devices (localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
                         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                        params![localpart, device_id, name, now as i64, ip],
                    )?;
                } else {
                    // Spec: reusing a device ID invalidates the tokens it had.
                    tx.execute(
                        "DELETE FROM userapi_access_tokens WHERE localpart = ?1 AND device_id = ?2",
                        (&localpart, &device_id),
                    )?;
                    tx.execute(
                        "DELETE FROM userapi_refresh_tokens WHERE localpart = ?1 AND device_id = ?2",
                        (&localpart, &device_id),
                    )?;
                }
                insert_tokens(tx, &localpart, &device_id, &tokens, None)
            })
            .await
    }

    async fn access_token(&self, hash: &[u8]) -> Result<Option<TokenRow>, StorageError> {
        let hash = hash.to_vec();
        self.pool
            .read(move |tx| {
                // Cached: every authenticated request runs this join.
                Ok(tx
                    .prepare_cached(
                        "SELECT t.localpart, t.device_id, t.expires_ts, a.is_admin, t.retires_refresh_hash,
                                d.last_seen_ts, d.last_seen_ip
                         FROM userapi_access_tokens t
                         JOIN userapi_accounts a ON a.localpart = t.localpart
                         JOIN userapi_devices d ON d.localpart = t.localpart AND d.device_id = t.device_id
                         WHERE t.token_hash = ?1 AND a.deactivated = 0",
                    )?
                    .query_row([&hash], |r| {
                        Ok(TokenRow {
                            localpart: r.get(0)?,
                            device_id: r.get(1)?,
                            expires_ts: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                            is_admin: r.get(3)?,
                            retires_refresh_hash: r.get(4)?,
                            last_seen_ts: r.get::<_, i64>(5)? as u64,
                            last_seen_ip: r.get(6)?,
                        })
                    })
                    .optional()?)
            })
            .await
    }

    async fn touch_device(
        &self,
        localpart: &str,
        device_id: &str,
        now: u64,
        ip: Option<&str>,
    ) -> Result<(), StorageError> {
        let (localpart, device_id, ip) = (localpart.to_owned(), device_id.to_owned(), ip.map(str::to_owned));
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE userapi_devices SET last_seen_ts = ?3, last_seen_ip = COALESCE(?4, last_seen_ip)
                     WHERE localpart = ?1 AND device_id = ?2",
                    params![localpart, device_id, now as i64, ip],
                )?;
                Ok(())
            })
            .await
    }

    async fn retire_refresh_token(&self, access_hash: &[u8], retired: &[u8]) -> Result<(), StorageError> {
        let (access_hash, retired) = (access_hash.to_vec(), retired.to_vec());
        self.pool
            .write(move |tx| {
                tx.execute("DELETE FROM userapi_refresh_tokens WHERE token_hash = ?1", [&retired])?;
                tx.execute(
                    "UPDATE userapi_access_tokens SET retires_refresh_hash = NULL WHERE token_hash = ?1",
                    [&access_hash],
                )?;
                tx.execute(
                    "UPDATE userapi_refresh_tokens SET retires_refresh_hash = NULL WHERE retires_refresh_hash = ?1",
                    [&retired],
                )?;
                Ok(())
            })
            .await
    }

    async fn rotate_refresh_token(
        &self,
        refresh_hash: &[u8],
        new: &NewTokens,
    ) -> Result<Option<(String, String)>, StorageError> {
        let (refresh_hash, new) = (refresh_hash.to_vec(), new.clone());
        self.pool
            .write(move |tx| {
                let row: Option<(String, String, Option<Vec<u8>>)> = tx
                    .query_row(
                        "SELECT localpart, device_id, retires_refresh_hash FROM userapi_refresh_tokens WHERE token_hash = ?1",
                        [&refresh_hash],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let Some((localpart, device_id, retires)) = row else { return Ok(None) };
                // Using this refresh token proves its predecessor is no longer needed.
                if let Some(retired) = retires {
                    tx.execute("DELETE FROM userapi_refresh_tokens WHERE token_hash = ?1", [&retired])?;
                    tx.execute(
                        "UPDATE userapi_refresh_tokens SET retires_refresh_hash = NULL WHERE token_hash = ?1",
                        [&refresh_hash],
                    )?;
                }
                // Access tokens issued before this refresh are superseded.
                tx.execute(
                    "DELETE FROM userapi_access_tokens WHERE localpart = ?1 AND device_id = ?2",
                    (&localpart, &device_id),
                )?;
                insert_tokens(tx, &localpart, &device_id, &new, Some(&refresh_hash))?;
                Ok(Some((localpart, device_id)))
            })
            .await
    }

    async fn devices(&self, localpart: &str) -> Result<Vec<DeviceRow>, StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .read(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM userapi_devices
                     WHERE localpart = ?1 ORDER BY device_id",
                )?;
                let rows = stmt
                    .query_map([&localpart], |r| {
                        Ok(DeviceRow {
                            device_id: r.get(0)?,
                            display_name: r.get(1)?,
                            last_seen_ts: r.get::<_, i64>(2)? as u64,
                            last_seen_ip: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn rename_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StorageError> {
        let (localpart, device_id, name) =
            (localpart.to_owned(), device_id.to_owned(), display_name.map(str::to_owned));
        self.pool
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE userapi_devices SET display_name = ?3 WHERE localpart = ?1 AND device_id = ?2",
                    params![localpart, device_id, name],
                )? == 1)
            })
            .await
    }

    async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<(), StorageError> {
        let (localpart, ids) = (localpart.to_owned(), device_ids.to_vec());
        self.pool
            .write(move |tx| {
                for id in &ids {
                    delete_device_rows(tx, &localpart, id)?;
                }
                Ok(())
            })
            .await
    }

    async fn delete_all_devices(&self, localpart: &str) -> Result<(), StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute("DELETE FROM userapi_devices WHERE localpart = ?1", [&localpart])?;
                Ok(())
            })
            .await
    }

    async fn profile(&self, localpart: &str) -> Result<Vec<(String, JsonValue)>, StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .read(move |tx| {
                let mut stmt =
                    tx.prepare("SELECT field, value FROM userapi_profiles WHERE localpart = ?1 ORDER BY field")?;
                let rows = stmt
                    .query_map([&localpart], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(field, value)| Ok((field, serde_json::from_str(&value).map_err(corrupt)?)))
                    .collect()
            })
            .await
    }

    async fn set_profile_field(
        &self,
        localpart: &str,
        field: &str,
        value: Option<&JsonValue>,
    ) -> Result<(), StorageError> {
        let (localpart, field, value) = (localpart.to_owned(), field.to_owned(), value.map(JsonValue::to_string));
        self.pool
            .write(move |tx| {
                match value {
                    Some(value) => tx.execute(
                        "INSERT INTO userapi_profiles (localpart, field, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (localpart, field) DO UPDATE SET value = excluded.value",
                        (&localpart, &field, &value),
                    )?,
                    None => tx.execute(
                        "DELETE FROM userapi_profiles WHERE localpart = ?1 AND field = ?2",
                        (&localpart, &field),
                    )?,
                };
                Ok(())
            })
            .await
    }

    async fn insert_filter(&self, localpart: &str, filter: &JsonValue) -> Result<u64, StorageError> {
        let (localpart, filter) = (localpart.to_owned(), filter.to_string());
        self.pool
            .write(move |tx| {
                let id: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM userapi_filters WHERE localpart = ?1",
                    [&localpart],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO userapi_filters (localpart, filter_id, filter) VALUES (?1, ?2, ?3)",
                    params![localpart, id, filter],
                )?;
                Ok(id as u64)
            })
            .await
    }

    async fn filter(&self, localpart: &str, filter_id: u64) -> Result<Option<JsonValue>, StorageError> {
        let localpart = localpart.to_owned();
        self.pool
            .read(move |tx| {
                let text: Option<String> = tx
                    .query_row(
                        "SELECT filter FROM userapi_filters WHERE localpart = ?1 AND filter_id = ?2",
                        params![localpart, filter_id as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                text.map(|t| serde_json::from_str(&t).map_err(corrupt)).transpose()
            })
            .await
    }

    async fn insert_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<u32>,
        expiry_ts: Option<u64>,
        now: u64,
    ) -> Result<(), StorageError> {
        let token = token.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO userapi_registration_tokens (token, uses_allowed, expiry_ts, created_ts) VALUES (?1, ?2, ?3, ?4)",
                    params![token, uses_allowed, expiry_ts.map(|v| v as i64), now as i64],
                )?;
                Ok(())
            })
            .await
    }

    async fn registration_token_usable(&self, token: &str, now: u64) -> Result<bool, StorageError> {
        let token = token.to_owned();
        self.pool
            .read(move |tx| {
                Ok(tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM userapi_registration_tokens WHERE token = ?1
                       AND (uses_allowed IS NULL OR completed < uses_allowed)
                       AND (expiry_ts IS NULL OR expiry_ts > ?2))",
                    params![token, now as i64],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRow>, StorageError> {
        let session_id = session_id.to_owned();
        self.pool
            .read(move |tx| {
                let row: Option<(String, String, Option<String>, i64)> = tx
                    .query_row(
                        "SELECT purpose, completed, registration_token, created_ts FROM userapi_uia_sessions WHERE session_id = ?1",
                        [&session_id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                row.map(|(purpose, completed, registration_token, created_ts)| {
                    Ok(UiaSessionRow {
                        purpose,
                        completed: serde_json::from_str(&completed).map_err(corrupt)?,
                        registration_token,
                        created_ts: created_ts as u64,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn put_uia_session(&self, session_id: &str, row: &UiaSessionRow) -> Result<(), StorageError> {
        let (session_id, row) = (session_id.to_owned(), row.clone());
        let completed = serde_json::to_string(&row.completed).map_err(corrupt)?;
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO userapi_uia_sessions (session_id, purpose, completed, registration_token, created_ts)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (session_id) DO UPDATE SET completed = excluded.completed,
                       registration_token = excluded.registration_token",
                    params![session_id, row.purpose, completed, row.registration_token, row.created_ts as i64],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_uia_session(&self, session_id: &str) -> Result<(), StorageError> {
        let session_id = session_id.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute("DELETE FROM userapi_uia_sessions WHERE session_id = ?1", [&session_id])?;
                Ok(())
            })
            .await
    }

    async fn expire_uia_sessions(&self, before_ts: u64) -> Result<(), StorageError> {
        self.pool
            .write(move |tx| {
                tx.execute("DELETE FROM userapi_uia_sessions WHERE created_ts < ?1", [before_ts as i64])?;
                Ok(())
            })
            .await
    }
}
