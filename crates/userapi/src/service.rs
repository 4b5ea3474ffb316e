//! The userapi itself: the rules around accounts, sessions and UIA, over a
//! [`UserStore`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use neurite_core::config::Config;
use neurite_core::{ErrorKind, MatrixError, MatrixResult, limits};
use neurite_storage::sqlite::SqlitePool;
use neurite_storage::{StorageError, now_ms};
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::Value as JsonValue;

use crate::api::{Device, Session, SessionTokens, UiaOutcome, UiaRequest, UserApi};
use crate::credentials::{self, token_hash};
use crate::storage::cache::TokenCache;
use crate::storage::sqlite::SqliteUserStore;
use crate::storage::{InsertAccount, NewTokens, UiaSessionRow, UserStore};
use crate::uia;

/// Longest user ID, in bytes (spec: 255, sigil and server name included).
const USER_ID_BYTES_MAX: usize = 255;

/// How stale a device's "last seen" time may get before a request updates it, in ms.
const LAST_SEEN_RESOLUTION_MS: u64 = 60_000;

/// Length of UIA session IDs.
const UIA_SESSION_ID_CHARS: usize = 24;

/// Length of generated registration tokens (spec: at most 64, `[A-Za-z0-9._~-]`).
const REGISTRATION_TOKEN_CHARS: usize = 16;

/// The settings of the userapi, taken from the server configuration.
#[derive(Debug, Clone)]
struct Settings {
    server_name: OwnedServerName,
    access_token_lifetime_ms: u64,
    password_min_length: usize,
    reserved_usernames: Vec<String>,
}

/// The userapi service. Cheap to clone.
#[derive(Clone)]
pub struct UserApiService {
    store: Arc<dyn UserStore>,
    settings: Arc<Settings>,
    passwords: Arc<credentials::PasswordPool>,
}

fn storage(e: StorageError) -> MatrixError {
    MatrixError::internal(e)
}

impl UserApiService {
    /// Runs password work (argon2id) on the password threads.
    async fn password_work<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> MatrixResult<T> {
        self.passwords.run(f).await.ok_or_else(|| MatrixError::internal("the password threads are gone"))
    }
}

impl UserApiService {
    /// Opens the userapi on an SQLite pool, running its migrations.
    ///
    /// # Errors
    /// A migration fails.
    pub async fn open_sqlite(pool: SqlitePool, config: &Config) -> Result<Self, StorageError> {
        let store = TokenCache::new(SqliteUserStore::new(pool).await?);
        Ok(Self {
            passwords: Arc::new(credentials::PasswordPool::new()),
            store: Arc::new(store),
            settings: Arc::new(Settings {
                server_name: config.server_name(),
                access_token_lifetime_ms: config.access_token_lifetime_ms,
                password_min_length: config.password_min_length,
                reserved_usernames: config.reserved_usernames.clone(),
            }),
        })
    }

    /// Creates a registration token for `m.login.registration_token`, usable
    /// `uses_allowed` times (unlimited if `None`) until `expiry_ts` (ms).
    ///
    /// # Errors
    /// A storage fault.
    pub async fn create_registration_token(
        &self,
        uses_allowed: Option<u32>,
        expiry_ts: Option<u64>,
    ) -> MatrixResult<String> {
        let token = credentials::new_opaque_id(REGISTRATION_TOKEN_CHARS);
        self.store.insert_registration_token(&token, uses_allowed, expiry_ts, now_ms()).await.map_err(storage)?;
        Ok(token)
    }

    fn local_localpart<'a>(&self, user_id: &'a UserId) -> MatrixResult<&'a str> {
        if user_id.server_name() != self.settings.server_name {
            return Err(MatrixError::forbidden("user is not local to this server"));
        }
        Ok(user_id.localpart())
    }

    async fn stage_password(
        &self,
        request: &UiaRequest<'_>,
        identifier: &UserIdentifier,
        password: &str,
    ) -> Result<(), &'static str> {
        let Some(expected) = request.user_id else { return Err("this endpoint does not take a password") };
        let UserIdentifier::Matrix(id) = identifier else { return Err("only m.id.user identifiers are supported") };
        if self.resolve_user(&id.user).as_deref() != Some(expected) {
            return Err("the identifier does not name the authenticated user");
        }
        self.check_password(expected, password).await.map_err(|_| "Invalid password")
    }
}

#[async_trait]
impl UserApi for UserApiService {
    async fn authenticate(&self, access_token: &str, client_ip: Option<IpAddr>) -> MatrixResult<Session> {
        let hash = token_hash(access_token);
        let Some(row) = self.store.access_token(&hash).await.map_err(storage)? else {
            return Err(MatrixError::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown access token"));
        };
        if row.expires_ts.is_some_and(|ts| ts <= now_ms()) {
            return Err(MatrixError::new(ErrorKind::UnknownToken { soft_logout: true }, "Access token has expired"));
        }
        if let Some(retired) = &row.retires_refresh_hash {
            // First use of a refreshed token: the refresh token it replaced is done.
            self.store.retire_refresh_token(&hash, retired).await.map_err(storage)?;
        }
        // "Last seen" is kept to the minute: a write per request would cost
        // more than the record is worth.
        let now = now_ms();
        let ip = client_ip.map(|ip| ip.to_string());
        if now.saturating_sub(row.last_seen_ts) >= LAST_SEEN_RESOLUTION_MS || (ip.is_some() && ip != row.last_seen_ip) {
            self.store.touch_device(&row.localpart, &row.device_id, now, ip.as_deref()).await.map_err(storage)?;
        }
        Ok(Session { user_id: self.user_id(&row.localpart)?, device_id: row.device_id.into(), is_admin: row.is_admin })
    }

    fn user_id(&self, localpart: &str) -> MatrixResult<OwnedUserId> {
        UserId::parse_with_server_name(localpart, &self.settings.server_name)
            .map_err(|e| MatrixError::new(ErrorKind::InvalidUsername, format!("not a valid user ID: {e}")))
    }

    async fn check_username(&self, localpart: &str) -> MatrixResult<()> {
        let invalid = |m: &str| Err(MatrixError::new(ErrorKind::InvalidUsername, m));
        if localpart.is_empty() {
            return invalid("user name must not be empty");
        }
        if !localpart.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')) {
            return invalid("user name may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'");
        }
        // Spec: a user ID is at most 255 bytes including '@' and ':server'.
        if localpart.len() + self.settings.server_name.as_str().len() + 2 > USER_ID_BYTES_MAX {
            return invalid("user ID would be longer than 255 bytes");
        }
        if localpart.starts_with('_') || self.settings.reserved_usernames.iter().any(|r| r == localpart) {
            return Err(MatrixError::new(ErrorKind::Exclusive, "this user name is reserved"));
        }
        if self.store.localpart_exists(localpart).await.map_err(storage)? {
            return Err(MatrixError::new(ErrorKind::UserInUse, "this user name is taken"));
        }
        Ok(())
    }

    async fn generate_localpart(&self) -> MatrixResult<String> {
        loop {
            let candidate = credentials::new_opaque_id(12).to_ascii_lowercase();
            if !self.store.localpart_exists(&candidate).await.map_err(storage)? {
                return Ok(candidate);
            }
        }
    }

    fn check_password_policy(&self, password: &str) -> MatrixResult<()> {
        if password.len() > limits::PASSWORD_BYTES_MAX {
            return Err(MatrixError::new(ErrorKind::TooLarge, "password is too long"));
        }
        if password.chars().count() < self.settings.password_min_length {
            return Err(MatrixError::new(
                ErrorKind::WeakPassword,
                format!("password must be at least {} characters", self.settings.password_min_length),
            ));
        }
        Ok(())
    }

    async fn create_account(
        &self,
        localpart: &str,
        password: &str,
        is_admin: bool,
        registration_token: Option<&str>,
    ) -> MatrixResult<OwnedUserId> {
        self.check_username(localpart).await?;
        self.check_password_policy(password)?;
        let user_id = self.user_id(localpart)?;
        let password = password.to_owned();
        let hash =
            self.password_work(move || credentials::hash_password(&password)).await?.map_err(MatrixError::internal)?;
        match self
            .store
            .insert_account(localpart, &hash, is_admin, registration_token, now_ms())
            .await
            .map_err(storage)?
        {
            InsertAccount::Created => {
                tracing::info!(%user_id, "account created");
                Ok(user_id)
            }
            InsertAccount::Taken => Err(MatrixError::new(ErrorKind::UserInUse, "this user name is taken")),
            InsertAccount::TokenExhausted => Err(MatrixError::forbidden("the registration token is no longer valid")),
        }
    }

    fn resolve_user(&self, user: &str) -> Option<OwnedUserId> {
        let localpart = if let Some(id) = user.strip_prefix('@') {
            let (localpart, server) = id.split_once(':')?;
            if server != self.settings.server_name.as_str() {
                return None;
            }
            localpart
        } else {
            user
        };
        // Registration only allows lower case, so matching is case-insensitive.
        self.user_id(&localpart.to_lowercase()).ok()
    }

    async fn check_password(&self, user_id: &UserId, password: &str) -> MatrixResult<()> {
        let wrong = || MatrixError::forbidden("Invalid username or password");
        if password.len() > limits::PASSWORD_BYTES_MAX {
            return Err(wrong());
        }
        let account = self.store.account(self.local_localpart(user_id)?).await.map_err(storage)?;
        if account.as_ref().is_some_and(|a| a.deactivated) {
            return Err(MatrixError::new(ErrorKind::UserDeactivated, "This account has been deactivated"));
        }
        let hash = account.and_then(|a| a.password_hash);
        let password = password.to_owned();
        let ok = self
            .password_work(move || match hash {
                Some(hash) => credentials::verify_password(&password, &hash),
                None => {
                    // Same cost as a real check, so timing does not tell which users exist.
                    credentials::verify_password(&password, credentials::dummy_hash());
                    false
                }
            })
            .await?;
        if ok { Ok(()) } else { Err(wrong()) }
    }

    async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refreshable: bool,
        client_ip: Option<IpAddr>,
    ) -> MatrixResult<SessionTokens> {
        let localpart = self.local_localpart(user_id)?;
        let device_id = device_id.map(|d| d.to_string()).unwrap_or_else(credentials::new_device_id);
        if device_id.is_empty() || device_id.len() > limits::DEVICE_ID_BYTES_MAX {
            return Err(MatrixError::invalid_param("device_id must be 1 to 255 bytes"));
        }
        let display_name = display_name.map(|n| truncate(n, limits::DEVICE_DISPLAY_NAME_BYTES_MAX));
        let issued = self.issue_tokens(refreshable);
        let ip = client_ip.map(|ip| ip.to_string());
        self.store
            .open_device(localpart, &device_id, display_name.as_deref(), &issued.hashes, now_ms(), ip.as_deref())
            .await
            .map_err(storage)?;
        Ok(issued.for_device(user_id.to_owned(), device_id.into()))
    }

    async fn refresh(&self, refresh_token: &str) -> MatrixResult<SessionTokens> {
        let issued = self.issue_tokens(true);
        let Some((localpart, device_id)) =
            self.store.rotate_refresh_token(&token_hash(refresh_token), &issued.hashes).await.map_err(storage)?
        else {
            return Err(MatrixError::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown refresh token"));
        };
        Ok(issued.for_device(self.user_id(&localpart)?, device_id.into()))
    }

    async fn logout(&self, session: &Session) -> MatrixResult<()> {
        let localpart = self.local_localpart(&session.user_id)?;
        self.store.delete_devices(localpart, &[session.device_id.to_string()]).await.map_err(storage)
    }

    async fn logout_all(&self, user_id: &UserId) -> MatrixResult<()> {
        self.store.delete_all_devices(self.local_localpart(user_id)?).await.map_err(storage)
    }

    async fn set_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        keep_device: Option<&DeviceId>,
    ) -> MatrixResult<()> {
        self.check_password_policy(new_password)?;
        let localpart = self.local_localpart(user_id)?;
        let password = new_password.to_owned();
        let hash =
            self.password_work(move || credentials::hash_password(&password)).await?.map_err(MatrixError::internal)?;
        self.store.set_password(localpart, &hash, keep_device.map(DeviceId::as_str)).await.map_err(storage)
    }

    async fn deactivate(&self, user_id: &UserId) -> MatrixResult<()> {
        self.store.deactivate(self.local_localpart(user_id)?).await.map_err(storage)?;
        tracing::info!(%user_id, "account deactivated");
        Ok(())
    }

    async fn devices(&self, user_id: &UserId) -> MatrixResult<Vec<Device>> {
        let rows = self.store.devices(self.local_localpart(user_id)?).await.map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|r| Device {
                device_id: r.device_id.into(),
                display_name: r.display_name,
                last_seen_ts: r.last_seen_ts,
                last_seen_ip: r.last_seen_ip,
            })
            .collect())
    }

    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> MatrixResult<()> {
        let name = display_name.map(|n| truncate(n, limits::DEVICE_DISPLAY_NAME_BYTES_MAX));
        let found = self
            .store
            .rename_device(self.local_localpart(user_id)?, device_id.as_str(), name.as_deref())
            .await
            .map_err(storage)?;
        if found { Ok(()) } else { Err(MatrixError::not_found("Unknown device")) }
    }

    async fn delete_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> MatrixResult<()> {
        if device_ids.len() > limits::DELETE_DEVICES_COUNT_MAX {
            return Err(MatrixError::new(ErrorKind::TooLarge, "too many devices in one request"));
        }
        let ids: Vec<String> = device_ids.iter().map(ToString::to_string).collect();
        self.store.delete_devices(self.local_localpart(user_id)?, &ids).await.map_err(storage)
    }

    async fn profile(&self, user_id: &UserId) -> MatrixResult<Option<BTreeMap<String, JsonValue>>> {
        if user_id.server_name() != self.settings.server_name {
            return Ok(None);
        }
        let localpart = user_id.localpart();
        match self.store.account(localpart).await.map_err(storage)? {
            Some(account) if !account.deactivated => {
                Ok(Some(self.store.profile(localpart).await.map_err(storage)?.into_iter().collect()))
            }
            // A deactivated user has an empty profile; an unknown one has none.
            Some(_) => Ok(Some(BTreeMap::new())),
            None => Ok(None),
        }
    }

    async fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<JsonValue>) -> MatrixResult<()> {
        let localpart = self.local_localpart(user_id)?;
        if field.is_empty() || field.len() > limits::PROFILE_FIELD_NAME_BYTES_MAX {
            return Err(MatrixError::new(ErrorKind::TooLarge, "profile field name must be 1 to 255 bytes"));
        }
        if let Some(value) = &value {
            let mut profile: BTreeMap<String, JsonValue> =
                self.store.profile(localpart).await.map_err(storage)?.into_iter().collect();
            profile.insert(field.to_owned(), value.clone());
            let size = serde_json::to_vec(&profile).map_err(MatrixError::internal)?.len();
            if size > limits::PROFILE_BYTES_MAX {
                return Err(MatrixError::new(ErrorKind::TooLarge, "profile would be larger than 64 KiB"));
            }
        }
        self.store.set_profile_field(localpart, field, value.as_ref()).await.map_err(storage)
    }

    async fn create_filter(&self, user_id: &UserId, filter: &JsonValue) -> MatrixResult<String> {
        let size = filter.to_string().len();
        if size > limits::FILTER_BYTES_MAX {
            return Err(MatrixError::new(ErrorKind::TooLarge, "filter is larger than 64 KiB"));
        }
        let id = self.store.insert_filter(self.local_localpart(user_id)?, filter).await.map_err(storage)?;
        Ok(id.to_string())
    }

    async fn filter(&self, user_id: &UserId, filter_id: &str) -> MatrixResult<Option<JsonValue>> {
        let Ok(id) = filter_id.parse::<u64>() else { return Ok(None) };
        self.store.filter(self.local_localpart(user_id)?, id).await.map_err(storage)
    }

    async fn user_interactive_auth(&self, request: UiaRequest<'_>) -> MatrixResult<UiaOutcome> {
        let now = now_ms();
        let continue_with = |session: &str, row: &UiaSessionRow, failure: Option<&str>| {
            let body = uia::body(&request.flows, session, &row.completed, failure.map(|f| ("M_FORBIDDEN", f)));
            MatrixError::new(ErrorKind::UiaRequired(Box::new(body)), failure.unwrap_or("authentication required"))
        };
        let fresh = || UiaSessionRow {
            purpose: request.purpose.clone(),
            completed: Vec::new(),
            registration_token: None,
            created_ts: now,
        };

        let Some(auth) = request.auth else {
            // Stage 0: no auth yet. Open a session and say what is needed.
            self.store.expire_uia_sessions(now.saturating_sub(limits::UIA_SESSION_MS_MAX)).await.map_err(storage)?;
            let session = credentials::new_opaque_id(UIA_SESSION_ID_CHARS);
            let row = fresh();
            self.store.put_uia_session(&session, &row).await.map_err(storage)?;
            return Err(continue_with(&session, &row, None));
        };

        let (session, mut row) = match auth.session() {
            Some(id) => match self.store.uia_session(id).await.map_err(storage)? {
                Some(row) if row.purpose == request.purpose && row.created_ts + limits::UIA_SESSION_MS_MAX > now => {
                    (id.to_owned(), row)
                }
                _ => {
                    return Err(MatrixError::new(
                        ErrorKind::BadRequest,
                        "unknown or expired user-interactive authentication session",
                    ));
                }
            },
            // Auth without a session (e.g. straight to m.login.dummy): start one now.
            None => (credentials::new_opaque_id(UIA_SESSION_ID_CHARS), fresh()),
        };

        if let Some(stage) = auth.auth_type() {
            if !uia::stage_allowed(&request.flows, &row.completed, stage.as_str()) {
                self.store.put_uia_session(&session, &row).await.map_err(storage)?;
                return Err(continue_with(&session, &row, Some("this stage is not the next one of any offered flow")));
            }
            let failure = match auth {
                AuthData::Dummy(_) => None,
                AuthData::Password(p) => self.stage_password(&request, &p.identifier, &p.password).await.err(),
                AuthData::RegistrationToken(t) => {
                    if self.store.registration_token_usable(&t.token, now).await.map_err(storage)? {
                        row.registration_token = Some(t.token.clone());
                        None
                    } else {
                        Some("Invalid registration token")
                    }
                }
                _ => Some("this stage is not supported"),
            };
            if let Some(failure) = failure {
                self.store.put_uia_session(&session, &row).await.map_err(storage)?;
                return Err(continue_with(&session, &row, Some(failure)));
            }
            row.completed.push(stage.as_str().to_owned());
        }

        if uia::flow_complete(&request.flows, &row.completed) {
            self.store.delete_uia_session(&session).await.map_err(storage)?;
            return Ok(UiaOutcome { registration_token: row.registration_token });
        }
        self.store.put_uia_session(&session, &row).await.map_err(storage)?;
        Err(continue_with(&session, &row, None))
    }

    async fn registration_token_valid(&self, token: &str) -> MatrixResult<bool> {
        self.store.registration_token_usable(token, now_ms()).await.map_err(storage)
    }
}

/// Tokens just issued: the secrets for the client and the hashes to store.
struct IssuedTokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in_ms: Option<u64>,
    hashes: NewTokens,
}

impl IssuedTokens {
    fn for_device(self, user_id: OwnedUserId, device_id: OwnedDeviceId) -> SessionTokens {
        SessionTokens {
            user_id,
            device_id,
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_in_ms: self.expires_in_ms,
        }
    }
}

impl UserApiService {
    /// New tokens; with a refresh token, the access token expires.
    fn issue_tokens(&self, refreshable: bool) -> IssuedTokens {
        let access_token = credentials::new_token("nat");
        let refresh_token = refreshable.then(|| credentials::new_token("nrt"));
        let expires_in_ms = refreshable.then_some(self.settings.access_token_lifetime_ms);
        let hashes = NewTokens {
            access_hash: token_hash(&access_token),
            access_expires_ts: expires_in_ms.map(|l| now_ms() + l),
            refresh_hash: refresh_token.as_deref().map(token_hash),
        };
        IssuedTokens { access_token, refresh_token, expires_in_ms, hashes }
    }
}

fn truncate(mut s: String, max_bytes: usize) -> String {
    if s.len() > max_bytes {
        let mut end = max_bytes;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
