-- The room server's tables (seed 002): numeric IDs for strings, events,
-- state blocks and snapshots, plus the bookkeeping that makes inputs
-- idempotent and outputs durable.

-- Numeric IDs. Never 0 (0 means "none"); well-known values are pre-assigned.
CREATE TABLE roomserver_event_types (
    event_type_nid INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL UNIQUE
);
INSERT INTO roomserver_event_types (event_type_nid, event_type) VALUES
    (1, 'm.room.create'), (2, 'm.room.power_levels'), (3, 'm.room.join_rules'),
    (4, 'm.room.third_party_invite'), (5, 'm.room.member'), (6, 'm.room.redaction'),
    (7, 'm.room.history_visibility'), (8, 'm.room.name'), (9, 'm.room.topic'),
    (10, 'm.room.avatar'), (11, 'm.room.canonical_alias'), (12, 'm.room.encryption'),
    (13, 'm.room.guest_access'), (14, 'm.room.message'), (15, 'm.room.server_acl'),
    (16, 'm.room.tombstone'), (17, 'm.room.pinned_events');

CREATE TABLE roomserver_state_keys (
    state_key_nid INTEGER PRIMARY KEY,
    state_key TEXT NOT NULL UNIQUE
);
INSERT INTO roomserver_state_keys (state_key_nid, state_key) VALUES (1, '');

CREATE TABLE roomserver_rooms (
    room_nid INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    -- The current state.
    state_snapshot_nid INTEGER NOT NULL DEFAULT 0,
    -- JSON array of the event NIDs of the forward extremities.
    latest_event_nids TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE roomserver_events (
    event_nid INTEGER PRIMARY KEY,
    room_nid INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type_nid INTEGER NOT NULL,
    -- 0 for a non-state event.
    state_key_nid INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    -- The state before the event.
    state_snapshot_nid INTEGER NOT NULL,
    is_rejected INTEGER NOT NULL DEFAULT 0,
    -- The PDU, canonical JSON.
    json TEXT NOT NULL,
    -- The redaction that redacted it, if any.
    redacted_by TEXT
);
CREATE INDEX roomserver_events_room ON roomserver_events (room_nid, event_nid);

-- A block: entries (type, state key) -> event, event 0 meaning "removed".
CREATE TABLE roomserver_state_blocks (
    state_block_nid INTEGER NOT NULL,
    event_type_nid INTEGER NOT NULL,
    state_key_nid INTEGER NOT NULL,
    event_nid INTEGER NOT NULL,
    PRIMARY KEY (state_block_nid, event_type_nid, state_key_nid)
) WITHOUT ROWID;

-- A snapshot: a list of blocks, later ones overriding earlier ones.
CREATE TABLE roomserver_state_snapshots (
    state_snapshot_nid INTEGER PRIMARY KEY,
    room_nid INTEGER NOT NULL,
    -- JSON array of {"nid": block, "level": tier}.
    state_blocks TEXT NOT NULL
);

-- Current membership, kept with the current state, for "which rooms is this user in".
CREATE TABLE roomserver_memberships (
    room_nid INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_nid INTEGER NOT NULL,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX roomserver_memberships_user ON roomserver_memberships (user_id, membership);

-- Client transactions already answered: (user, device, scope, txn) -> event.
CREATE TABLE roomserver_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

-- Inputs already processed, with their verdicts, so a redelivery is answered, not redone.
CREATE TABLE roomserver_inputs (
    request_id TEXT PRIMARY KEY NOT NULL,
    verdict TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);

-- Output records written with the events they describe, moved to the
-- output log after commit (and again after a crash: the log de-duplicates).
CREATE TABLE roomserver_outbox (
    -- AUTOINCREMENT: never reused after the outbox empties, since the log
    -- de-duplicates by this number.
    outbox_nid INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
