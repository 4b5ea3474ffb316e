-- The room directory: local room aliases, the rooms published in
-- the public room list, and the rooms users have forgotten.

-- Local aliases only: the alias's server name is ours (the client API checks it).
CREATE TABLE roomserver_room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- Who created it: they may delete it without power in the room.
    creator TEXT NOT NULL
);
CREATE INDEX roomserver_room_aliases_room ON roomserver_room_aliases (room_id);

-- Rooms listed by /publicRooms (visibility "public").
CREATE TABLE roomserver_published_rooms (
    room_id TEXT PRIMARY KEY,
    published_ts INTEGER NOT NULL
);

-- Rooms a user forgot. A forget applies to the membership it was made at:
-- once the user's membership event changes (a rejoin, an invite), it no
-- longer does, without this table being touched.
CREATE TABLE roomserver_forgotten (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- The user's membership event NID when they forgot the room (0: none).
    membership_event_nid INTEGER NOT NULL,
    forgotten_ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
