-- Event IDs are unique within their room: the index that finds an event by
-- its ID is led by the room's NID, as the room server's is (its migration
-- 0006 says why: an index of hashed IDs alone writes a random page of the
-- whole server's index for every event). Every lookup names the room: the
-- state events an output adds or removes, and the event an output replaces,
-- are in the output's room.
--
-- SQLite cannot drop the index of a column's UNIQUE constraint, so the table
-- is rebuilt; positions are kept, and so is the highest position handed out
-- (as in 0002).
CREATE TABLE syncapi_events_new (
    -- AUTOINCREMENT: a position is never reused, even if events are deleted.
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    room_nid INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    state_key TEXT,
    -- The event in client format, packed (neurite_storage::packed), without
    -- the fields the columns above hold; rows from before 0002: TEXT, whole.
    json BLOB NOT NULL,
    -- The sending device and its transaction ID, for unsigned.transaction_id.
    txn_device_id TEXT,
    txn_id TEXT,
    UNIQUE (room_nid, event_id)
);
INSERT INTO syncapi_events_new
    (position, room_nid, event_id, event_type, sender, state_key, json, txn_device_id, txn_id)
    SELECT position, room_nid, event_id, event_type, sender, state_key, json, txn_device_id, txn_id
    FROM syncapi_events ORDER BY position;
DELETE FROM sqlite_sequence WHERE name = 'syncapi_events_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'syncapi_events_new', seq FROM sqlite_sequence WHERE name = 'syncapi_events';
DROP TABLE syncapi_events;
ALTER TABLE syncapi_events_new RENAME TO syncapi_events;
CREATE INDEX syncapi_events_room_position ON syncapi_events (room_nid, position);
