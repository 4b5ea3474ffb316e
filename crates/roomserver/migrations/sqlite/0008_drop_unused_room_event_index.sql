-- roomserver_events_room (room_nid, event_nid) served no query (issue 6):
-- events are found by NID (the table's key) or by room and ID (the unique
-- index 0006 made, which also finds a room's events by its leading column).
-- Each stored event wrote a page of it to the write-ahead log (1.08 of the
-- ~15.5 pages a sequential send wrote) and it held ~2% of a benchmark
-- database.
DROP INDEX IF EXISTS roomserver_events_room;
