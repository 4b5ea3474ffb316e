-- Accounts, devices, tokens, profiles, filters, registration tokens and
-- user-interactive authentication sessions: everything the userapi owns.

CREATE TABLE userapi_accounts (
    localpart TEXT PRIMARY KEY NOT NULL,
    -- argon2id PHC string; NULL once deactivated.
    password_hash TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    created_ts INTEGER NOT NULL
);

CREATE TABLE userapi_devices (
    localpart TEXT NOT NULL REFERENCES userapi_accounts (localpart),
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts INTEGER NOT NULL,
    last_seen_ts INTEGER NOT NULL,
    last_seen_ip TEXT,
    PRIMARY KEY (localpart, device_id)
);

-- Tokens are stored only as SHA-256 hashes.
CREATE TABLE userapi_access_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- NULL: never expires (clients that did not ask for a refresh token).
    expires_ts INTEGER,
    -- The refresh token this token's refresh replaced: revoked at first use.
    retires_refresh_hash BLOB,
    FOREIGN KEY (localpart, device_id) REFERENCES userapi_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX userapi_access_tokens_device ON userapi_access_tokens (localpart, device_id);

CREATE TABLE userapi_refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- The refresh token this one replaced: revoked when this one is used.
    retires_refresh_hash BLOB,
    FOREIGN KEY (localpart, device_id) REFERENCES userapi_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX userapi_refresh_tokens_device ON userapi_refresh_tokens (localpart, device_id);

CREATE TABLE userapi_profiles (
    localpart TEXT NOT NULL REFERENCES userapi_accounts (localpart),
    field TEXT NOT NULL,
    -- JSON value of the field.
    value TEXT NOT NULL,
    PRIMARY KEY (localpart, field)
);

CREATE TABLE userapi_filters (
    localpart TEXT NOT NULL REFERENCES userapi_accounts (localpart),
    filter_id INTEGER NOT NULL,
    filter TEXT NOT NULL,
    PRIMARY KEY (localpart, filter_id)
);

CREATE TABLE userapi_registration_tokens (
    token TEXT PRIMARY KEY NOT NULL,
    -- NULL: unlimited.
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    -- NULL: never expires.
    expiry_ts INTEGER,
    created_ts INTEGER NOT NULL
);

CREATE TABLE userapi_uia_sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    -- The endpoint and user the session was opened for; it is valid for no other.
    purpose TEXT NOT NULL,
    -- JSON array of completed stage types.
    completed TEXT NOT NULL,
    registration_token TEXT,
    created_ts INTEGER NOT NULL
);
