-- Client transactions keyed by a 16-byte hash (issue 6: a row of
-- roomserver_transactions repeated the user ID, the device ID and a scope
-- holding the room ID, about 146 bytes per sent event; a hashed key with the
-- event's NID is about 30).
--
-- txn_key: the first 16 bytes of SHA-256 over the user ID, device ID, scope
-- and transaction ID, each length-prefixed (storage/sqlite.rs, `txn_key`).
-- New transactions go here; rows of roomserver_transactions written before
-- stay there and are still found.

CREATE TABLE roomserver_txn_keys (
    txn_key BLOB PRIMARY KEY NOT NULL,
    -- The event it made.
    event_nid INTEGER NOT NULL
) WITHOUT ROWID;
