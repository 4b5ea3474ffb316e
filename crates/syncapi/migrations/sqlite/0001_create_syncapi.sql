-- The sync API's own projection of the room server's output log (seed 001).

-- Every event it may serve, numbered by stream position.
CREATE TABLE syncapi_events (
    -- AUTOINCREMENT: a position is never reused, even if events are deleted.
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    state_key TEXT,
    -- The event in client format.
    json TEXT NOT NULL,
    -- The sending device and its transaction ID, for unsigned.transaction_id.
    txn_device_id TEXT,
    txn_id TEXT
);
CREATE INDEX syncapi_events_room_position ON syncapi_events (room_id, position);

-- Current state per room, advanced only by the output log's adds/removes.
CREATE TABLE syncapi_current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    -- For member events: the membership, so "rooms of a user" is one lookup.
    membership TEXT,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX syncapi_current_state_members ON syncapi_current_state (event_type, state_key, membership);

-- Each change of current state, at the position of the event that made it:
-- the state at any position is current state with later deltas undone.
CREATE TABLE syncapi_state_deltas (
    position INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    -- The event that entered the state (NULL: the key left the state).
    added_event_id TEXT,
    -- The event it replaced (NULL: the key was new).
    removed_event_id TEXT
);
CREATE INDEX syncapi_state_deltas_room_position ON syncapi_state_deltas (room_id, position);

-- Membership history per user: every membership change, with its position.
CREATE TABLE syncapi_memberships (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX syncapi_memberships_user_position ON syncapi_memberships (user_id, position);
CREATE INDEX syncapi_memberships_user_room ON syncapi_memberships (user_id, room_id, position);

-- The output-log offset applied last, committed with the rows it produced:
-- a redelivered record at or below it changes nothing.
CREATE TABLE syncapi_consumer (
    topic TEXT PRIMARY KEY NOT NULL,
    applied_offset INTEGER NOT NULL
);
