-- Event IDs are unique within their room: the index that finds an event by
-- its ID is led by the room's NID. An event ID is a hash, so in an index of
-- IDs alone every new event lands on a random page of the whole server's
-- index (about one page written per event, spread over the whole file);
-- led by the room, a room's events share the pages of that room's range, so
-- events sent in one room dirty a few pages again and again. Every lookup
-- names the room (the events a new event names are in its room; a client
-- asks for an event of a room). Reference-hash event IDs cover the room ID,
-- so one ID cannot be in two rooms.
--
-- SQLite cannot drop the index of a column's UNIQUE constraint, so the table
-- is rebuilt; event NIDs are kept (they are what every other table names).
CREATE TABLE roomserver_events_new (
    event_nid INTEGER PRIMARY KEY,
    room_nid INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type_nid INTEGER NOT NULL,
    -- 0 for a non-state event.
    state_key_nid INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    -- The state before the event.
    state_snapshot_nid INTEGER NOT NULL,
    is_rejected INTEGER NOT NULL DEFAULT 0,
    -- The PDU, canonical JSON (neurite_storage::packed).
    json TEXT NOT NULL,
    -- The redaction that redacted it, if any.
    redacted_by TEXT,
    UNIQUE (room_nid, event_id)
);
INSERT INTO roomserver_events_new
    (event_nid, room_nid, event_id, event_type_nid, state_key_nid, depth, state_snapshot_nid, is_rejected, json, redacted_by)
    SELECT event_nid, room_nid, event_id, event_type_nid, state_key_nid, depth, state_snapshot_nid, is_rejected, json, redacted_by
    FROM roomserver_events ORDER BY event_nid;
DROP TABLE roomserver_events;
ALTER TABLE roomserver_events_new RENAME TO roomserver_events;
CREATE INDEX roomserver_events_room ON roomserver_events (room_nid, event_nid);
