//! Limits shared by all components, with their defaults. Each limit is named
//! `<noun>_<unit>_max` and says why it has the value it has.

/// Default largest request body accepted, in bytes (config `max_request_bytes`).
/// Client API bodies are JSON; 1 MiB is far above any legitimate one.
pub const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Longest password accepted, in bytes: argon2 cost is linear in input and a
/// password longer than this is a denial-of-service attempt, not a secret.
pub const PASSWORD_BYTES_MAX: usize = 512;

/// Longest device display name, in bytes (Synapse uses the same bound).
pub const DEVICE_DISPLAY_NAME_BYTES_MAX: usize = 100;

/// Longest client-chosen device ID, in bytes.
pub const DEVICE_ID_BYTES_MAX: usize = 255;

/// Largest stored filter, in bytes of its JSON.
pub const FILTER_BYTES_MAX: usize = 64 * 1024;

/// Largest whole profile (all fields, as JSON), in bytes, as the spec's
/// extended profiles require.
pub const PROFILE_BYTES_MAX: usize = 64 * 1024;

/// Longest profile field name, in bytes (spec: 255).
pub const PROFILE_FIELD_NAME_BYTES_MAX: usize = 255;

/// How long a user-interactive authentication session lives, in milliseconds.
pub const UIA_SESSION_MS_MAX: u64 = 30 * 60 * 1000;

/// How many devices one `/delete_devices` call may name.
pub const DELETE_DEVICES_COUNT_MAX: usize = 1000;
