-- The sync API's tables, rebuilt smaller: together they took about 45% of a
-- benchmark database, most of it room IDs and event IDs repeated in every
-- row and index.
--
-- Rooms get numbers (syncapi_rooms), and every table keeps a room's number
-- instead of its ID. The state tables keep the stream position of an event
-- instead of its ID: every event they name is in syncapi_events (the
-- consumer records a state change only for events it has stored), and
-- neither rooms nor events are ever deleted, so a number always finds its
-- room or event. Current state becomes a WITHOUT ROWID table: its primary
-- key was stored twice, in the table and in its automatic index.
--
-- Event JSON is not rewritten here: rows stored before stay TEXT and are
-- read as they are (see storage.rs); new rows are packed and leave out what
-- their columns hold.

CREATE TABLE syncapi_rooms (
    room_nid INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE
);
-- Every room any row names, numbered in the order it first appeared.
INSERT INTO syncapi_rooms (room_id)
    SELECT room_id FROM (
        SELECT room_id, position FROM syncapi_events
        UNION ALL SELECT room_id, position FROM syncapi_current_state
        UNION ALL SELECT room_id, position FROM syncapi_state_deltas
        UNION ALL SELECT room_id, position FROM syncapi_memberships
    )
    GROUP BY room_id ORDER BY MIN(position);

CREATE TABLE syncapi_events_new (
    -- AUTOINCREMENT: a position is never reused, even if events are deleted.
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    room_nid INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    state_key TEXT,
    -- The event in client format, packed (neurite_storage::packed), without
    -- the fields the columns above hold; rows from before 0002: TEXT, whole.
    json BLOB NOT NULL,
    -- The sending device and its transaction ID, for unsigned.transaction_id.
    txn_device_id TEXT,
    txn_id TEXT
);
INSERT INTO syncapi_events_new
    (position, room_nid, event_id, event_type, sender, state_key, json, txn_device_id, txn_id)
    SELECT e.position, r.room_nid, e.event_id, e.event_type, e.sender, e.state_key, e.json, e.txn_device_id, e.txn_id
    FROM syncapi_events e JOIN syncapi_rooms r ON r.room_id = e.room_id
    ORDER BY e.position;
-- The highest position ever handed out goes with the table (RENAME carries
-- the sqlite_sequence row; DROP deletes the old one), so positions of events
-- deleted at the end are not handed out again.
DELETE FROM sqlite_sequence WHERE name = 'syncapi_events_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'syncapi_events_new', seq FROM sqlite_sequence WHERE name = 'syncapi_events';
DROP TABLE syncapi_events;
ALTER TABLE syncapi_events_new RENAME TO syncapi_events;
CREATE INDEX syncapi_events_room_position ON syncapi_events (room_nid, position);

CREATE TABLE syncapi_current_state_new (
    room_nid INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    -- The position of the state event (in syncapi_events).
    event_position INTEGER NOT NULL,
    -- The position of the event that made it current.
    position INTEGER NOT NULL,
    -- For member events: the membership, so "rooms of a user" is one lookup.
    membership TEXT,
    PRIMARY KEY (room_nid, event_type, state_key)
) WITHOUT ROWID;
INSERT INTO syncapi_current_state_new (room_nid, event_type, state_key, event_position, position, membership)
    SELECT r.room_nid, c.event_type, c.state_key, e.position, c.position, c.membership
    FROM syncapi_current_state c
    JOIN syncapi_rooms r ON r.room_id = c.room_id
    JOIN syncapi_events e ON e.event_id = c.event_id;
DROP TABLE syncapi_current_state;
ALTER TABLE syncapi_current_state_new RENAME TO syncapi_current_state;
CREATE INDEX syncapi_current_state_members ON syncapi_current_state (event_type, state_key, membership);

CREATE TABLE syncapi_state_deltas_new (
    position INTEGER NOT NULL,
    room_nid INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    -- The position of the event that entered the state (NULL: the key left it).
    added_position INTEGER,
    -- The position of the event it replaced (NULL: the key was new).
    removed_position INTEGER
);
-- The rowids come along: deltas at one position are undone in rowid order.
INSERT INTO syncapi_state_deltas_new (rowid, position, room_nid, event_type, state_key, added_position, removed_position)
    SELECT d.rowid, d.position, r.room_nid, d.event_type, d.state_key, a.position, o.position
    FROM syncapi_state_deltas d
    JOIN syncapi_rooms r ON r.room_id = d.room_id
    LEFT JOIN syncapi_events a ON a.event_id = d.added_event_id
    LEFT JOIN syncapi_events o ON o.event_id = d.removed_event_id
    ORDER BY d.rowid;
DROP TABLE syncapi_state_deltas;
ALTER TABLE syncapi_state_deltas_new RENAME TO syncapi_state_deltas;
CREATE INDEX syncapi_state_deltas_room_position ON syncapi_state_deltas (room_nid, position);

CREATE TABLE syncapi_memberships_new (
    user_id TEXT NOT NULL,
    room_nid INTEGER NOT NULL,
    position INTEGER NOT NULL,
    membership TEXT NOT NULL,
    -- The position of the member event.
    event_position INTEGER NOT NULL
);
INSERT INTO syncapi_memberships_new (rowid, user_id, room_nid, position, membership, event_position)
    SELECT m.rowid, m.user_id, r.room_nid, m.position, m.membership, e.position
    FROM syncapi_memberships m
    JOIN syncapi_rooms r ON r.room_id = m.room_id
    JOIN syncapi_events e ON e.event_id = m.event_id
    ORDER BY m.rowid;
DROP TABLE syncapi_memberships;
ALTER TABLE syncapi_memberships_new RENAME TO syncapi_memberships;
CREATE INDEX syncapi_memberships_user_position ON syncapi_memberships (user_id, position);
CREATE INDEX syncapi_memberships_user_room ON syncapi_memberships (user_id, room_nid, position);
