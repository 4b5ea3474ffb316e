-- Each topic's records in a table of its own (issue 6). log_records held
-- every topic's records in one rowid table with its (topic, offset) primary
-- key in a second B-tree beside it: every append wrote a page of each (about
-- 2.4 of the ~18 pages a sequential send wrote to the write-ahead log went
-- to that index, and appends in the middle of it made SQLite rebalance
-- three pages at a time), and every pruning write deleted from both. Now
-- each topic has a number and a table `log_records_<number>` keyed by
-- offset (sqlite/append.rs): an append goes to the right edge of that one
-- B-tree, and pruning deletes from its left edge.
--
-- SQL cannot name a table per topic: `SqliteLog::open` moves each topic's
-- records out of log_records into its table and drops log_records, in one
-- write, after this migration.

CREATE TABLE log_topics_new (
    topic TEXT PRIMARY KEY NOT NULL,
    -- 1, 2, 3, ... in the order topics were first published to; names the
    -- topic's records table.
    topic_nid INTEGER NOT NULL UNIQUE,
    -- The last offset handed out as of the last pruning (appends do not
    -- write it; they continue from the topic's highest record if higher).
    last_offset INTEGER NOT NULL
);
INSERT INTO log_topics_new (topic, topic_nid, last_offset)
    SELECT topic, ROW_NUMBER() OVER (ORDER BY topic), MAX(last) FROM (
        SELECT topic, last_offset AS last FROM log_topics
        UNION ALL SELECT topic, MAX(offset) FROM log_records GROUP BY topic
    ) GROUP BY topic;
DROP TABLE log_topics;
ALTER TABLE log_topics_new RENAME TO log_topics;
