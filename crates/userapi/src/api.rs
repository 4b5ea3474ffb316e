//! What other components may ask of the userapi.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use neurite_core::MatrixResult;
use ruma::api::client::uiaa::{AuthData, AuthType};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::Value as JsonValue;

/// The device an access token belongs to: who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account.
    pub user_id: OwnedUserId,
    /// The device the token was issued to.
    pub device_id: OwnedDeviceId,
    /// Whether the account is a server administrator.
    pub is_admin: bool,
}

/// Tokens issued by a login, a registration or a refresh.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    /// The account.
    pub user_id: OwnedUserId,
    /// The device the tokens belong to.
    pub device_id: OwnedDeviceId,
    /// The new access token (shown to the client once, stored only hashed).
    pub access_token: String,
    /// A refresh token, when the client asked for one.
    pub refresh_token: Option<String>,
    /// Lifetime of the access token in milliseconds, when it expires.
    pub expires_in_ms: Option<u64>,
}

/// A device as `GET /devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device ID.
    pub device_id: OwnedDeviceId,
    /// The name the user gave it.
    pub display_name: Option<String>,
    /// When it was last used, in ms since the epoch (to within a minute).
    pub last_seen_ts: u64,
    /// The address it was last seen from.
    pub last_seen_ip: Option<String>,
}

/// One round of user-interactive authentication for an endpoint.
#[derive(Debug)]
pub struct UiaRequest<'a> {
    /// The endpoint (and user) the session is for, e.g. `delete_devices:@a:b`;
    /// a session opened for one purpose is refused for another.
    pub purpose: String,
    /// The flows offered, each a list of stages to complete in order.
    pub flows: Vec<Vec<AuthType>>,
    /// The `auth` object of the request, if any.
    pub auth: Option<&'a AuthData>,
    /// The user whose password `m.login.password` must prove, if the endpoint has one.
    pub user_id: Option<&'a UserId>,
}

/// A finished user-interactive authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiaOutcome {
    /// The registration token a `m.login.registration_token` stage accepted;
    /// its use is counted when the account is created.
    pub registration_token: Option<String>,
}

/// The userapi as the client API uses it.
///
/// # Errors
/// Every method answers with the Matrix error the spec gives the failure
/// (`M_FORBIDDEN` for a wrong password, `M_UNKNOWN_TOKEN` for an unknown
/// token, ...); storage faults are `M_UNKNOWN` with status 500.
#[async_trait]
pub trait UserApi: Send + Sync {
    /// Resolves an access token to its session (`M_UNKNOWN_TOKEN`, with
    /// `soft_logout` for an expired one), and notes that its device was seen
    /// from `client_ip`.
    async fn authenticate(&self, access_token: &str, client_ip: Option<IpAddr>) -> MatrixResult<Session>;

    /// The user ID a localpart gives on this server (`M_INVALID_USERNAME` if none).
    fn user_id(&self, localpart: &str) -> MatrixResult<OwnedUserId>;

    /// Checks that `localpart` may be registered: valid (`M_INVALID_USERNAME`),
    /// not reserved (`M_EXCLUSIVE`) and free (`M_USER_IN_USE`).
    async fn check_username(&self, localpart: &str) -> MatrixResult<()>;

    /// A free localpart, for registrations that do not choose one.
    async fn generate_localpart(&self) -> MatrixResult<String>;

    /// Checks a password against the server's policy (`M_WEAK_PASSWORD`, `M_TOO_LARGE`).
    fn check_password_policy(&self, password: &str) -> MatrixResult<()>;

    /// Creates an account. With `registration_token`, one use of it is
    /// counted in the same transaction (`M_FORBIDDEN` if it ran out).
    async fn create_account(
        &self,
        localpart: &str,
        password: &str,
        is_admin: bool,
        registration_token: Option<&str>,
    ) -> MatrixResult<OwnedUserId>;

    /// Resolves what a client typed as a user (localpart or user ID, any case)
    /// to a local user ID; `None` if it cannot name a local account.
    fn resolve_user(&self, user: &str) -> Option<OwnedUserId>;

    /// Checks a user's password (`M_FORBIDDEN` if wrong or unknown,
    /// `M_USER_DEACTIVATED` if deactivated).
    async fn check_password(&self, user_id: &UserId, password: &str) -> MatrixResult<()>;

    /// Creates the device (or reuses it, revoking its old tokens) and issues tokens.
    async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refreshable: bool,
        client_ip: Option<IpAddr>,
    ) -> MatrixResult<SessionTokens>;

    /// Swaps a refresh token for new tokens (`M_UNKNOWN_TOKEN` if unknown).
    async fn refresh(&self, refresh_token: &str) -> MatrixResult<SessionTokens>;

    /// Deletes the session's device and its tokens.
    async fn logout(&self, session: &Session) -> MatrixResult<()>;

    /// Deletes every device of the user, and their tokens.
    async fn logout_all(&self, user_id: &UserId) -> MatrixResult<()>;

    /// Changes the password; with `keep_device`, every other device is logged out.
    async fn set_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        keep_device: Option<&DeviceId>,
    ) -> MatrixResult<()>;

    /// Deactivates the account: no login again, devices and profile deleted,
    /// the user ID never registered again.
    async fn deactivate(&self, user_id: &UserId) -> MatrixResult<()>;

    /// The user's devices.
    async fn devices(&self, user_id: &UserId) -> MatrixResult<Vec<Device>>;

    /// Renames a device (`M_NOT_FOUND` if the user has no such device).
    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<String>,
    ) -> MatrixResult<()>;

    /// Deletes devices and their tokens; unknown IDs are ignored.
    async fn delete_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> MatrixResult<()>;

    /// All profile fields of a local user; `None` if there is no such user.
    async fn profile(&self, user_id: &UserId) -> MatrixResult<Option<BTreeMap<String, JsonValue>>>;

    /// Sets (`Some`) or removes (`None`) one profile field of a local user.
    async fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<JsonValue>) -> MatrixResult<()>;

    /// Stores a (validated) filter and returns its ID.
    async fn create_filter(&self, user_id: &UserId, filter: &JsonValue) -> MatrixResult<String>;

    /// A stored filter of the user; `None` if there is none with that ID.
    async fn filter(&self, user_id: &UserId, filter_id: &str) -> MatrixResult<Option<JsonValue>>;

    /// Runs one round of user-interactive authentication: `Ok` when a flow is
    /// complete, otherwise the 401 body (`M_FORBIDDEN` kind `UiaRequired`).
    async fn user_interactive_auth(&self, request: UiaRequest<'_>) -> MatrixResult<UiaOutcome>;

    /// Whether a registration token can still be used.
    async fn registration_token_valid(&self, token: &str) -> MatrixResult<bool>;
}
