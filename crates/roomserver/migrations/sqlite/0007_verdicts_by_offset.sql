-- Verdicts keyed by their input's offset in input.room_event instead of by
-- request ID (issue 6). A request ID is random, so in a table keyed by it
-- every new verdict landed on a random page, and pruning the oldest ones
-- (every 10 s) deleted rows spread over the whole table: a write that
-- dirtied about one page per verdict and held the writer for milliseconds
-- after a busy minute. Offsets grow, so new verdicts land on the table's
-- last page and pruning deletes a run of whole pages at its start.
--
-- A redelivered record has the same offset, so the offset finds its verdict.
-- The request ID stays beside it: a verdict whose request ID differs is not
-- that record's (its log was replaced under the room server) and gives way.
CREATE TABLE roomserver_verdicts (
    input_offset INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    -- The verdict as JSON, or NULL when it is stored as the two NID columns
    -- (as in roomserver_inputs, 0003).
    verdict TEXT,
    room_nid INTEGER,
    event_nids TEXT,
    created_ts INTEGER NOT NULL,
    CHECK ((verdict IS NULL) = (room_nid IS NOT NULL AND event_nids IS NOT NULL))
);
-- Offsets are never reused, so at most one row has each; should two, the
-- newer wins.
INSERT OR REPLACE INTO roomserver_verdicts (input_offset, request_id, verdict, room_nid, event_nids, created_ts)
    SELECT input_offset, request_id, verdict, room_nid, event_nids, created_ts
    FROM roomserver_inputs WHERE input_offset IS NOT NULL ORDER BY created_ts;
-- roomserver_inputs keeps only verdicts stored before 0005, without an
-- offset: found by request ID, pruned as before, and empty once pruned.
DELETE FROM roomserver_inputs WHERE input_offset IS NOT NULL;
