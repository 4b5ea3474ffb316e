-- The in-process log: topics, their records and the durable subscriptions
-- reading them. Everything here is owned by neurite-log.

-- One row per topic that was ever published to.
CREATE TABLE log_topics (
    topic TEXT PRIMARY KEY NOT NULL,
    -- The last offset handed out. Offsets are never reused, even after every
    -- record of the topic was pruned, so this cannot be max(offset).
    last_offset INTEGER NOT NULL
);

CREATE TABLE log_records (
    topic TEXT NOT NULL,
    -- 1, 2, 3, ... per topic, assigned in the transaction that appends.
    offset INTEGER NOT NULL,
    -- Orders records: a room ID for the room event topics.
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    -- The publisher's de-duplication ID (e.g. an event ID), if it gave one.
    dedup_id TEXT,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (topic, offset)
);

CREATE UNIQUE INDEX log_records_dedup ON log_records (topic, dedup_id) WHERE dedup_id IS NOT NULL;

CREATE TABLE log_subscriptions (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Every record of the topic up to this offset was acknowledged (0: none).
    acked_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, name)
);
