-- Client transactions and processed inputs, rebuilt smaller (issue 6:
-- together with their unique indexes they took about a quarter of a
-- benchmark database).
--
-- Both become WITHOUT ROWID tables: their text primary keys were stored
-- twice, in the table and in its automatic unique index; now the table is
-- the primary key's B-tree. Both also stop repeating event and room IDs that
-- roomserver_events and roomserver_rooms hold: a transaction keeps its
-- event's NID, an accepted verdict its room's and events' NIDs (NIDs are
-- never reused and these rows are never deleted).

CREATE TABLE roomserver_transactions_new (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    -- The event it made.
    event_nid INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
) WITHOUT ROWID;
-- A transaction is written in the SQLite transaction that stores its event,
-- so every row finds its event.
INSERT INTO roomserver_transactions_new (user_id, device_id, scope, txn_id, event_nid)
    SELECT t.user_id, t.device_id, t.scope, t.txn_id, e.event_nid
    FROM roomserver_transactions t JOIN roomserver_events e ON e.event_id = t.event_id;
DROP TABLE roomserver_transactions;
ALTER TABLE roomserver_transactions_new RENAME TO roomserver_transactions;

CREATE TABLE roomserver_inputs_new (
    request_id TEXT PRIMARY KEY NOT NULL,
    -- The verdict as JSON, or NULL when it is stored as the two NID columns.
    verdict TEXT,
    -- An accepted verdict whose room and events are stored: the room, and a
    -- JSON array of the events' NIDs in the verdict's order.
    room_nid INTEGER,
    event_nids TEXT,
    created_ts INTEGER NOT NULL,
    CHECK ((verdict IS NULL) = (room_nid IS NOT NULL AND event_nids IS NOT NULL))
) WITHOUT ROWID;
-- Verdicts stored before stay JSON.
INSERT INTO roomserver_inputs_new (request_id, verdict, created_ts)
    SELECT request_id, verdict, created_ts FROM roomserver_inputs;
DROP TABLE roomserver_inputs;
ALTER TABLE roomserver_inputs_new RENAME TO roomserver_inputs;
