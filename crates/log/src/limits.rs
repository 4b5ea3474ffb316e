//! The log's limits, each named `<noun>_<unit>_max` with the reason for its value.

/// Largest payload of one record, in bytes. Mirrors NATS's default
/// `max_payload` (1 MiB), so a record the in-process log accepts is one the
/// JetStream implementation accepts too; a PDU is at most 64 KiB anyway.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// Longest record key, in bytes: keys are room IDs, which the spec caps at 255 bytes.
pub const KEY_BYTES_MAX: usize = 255;

/// Longest de-duplication ID, in bytes: they are event IDs or transaction
/// IDs, which the spec caps at 255 bytes.
pub const DEDUP_ID_BYTES_MAX: usize = 255;

/// Longest topic or subscription name, in bytes. Names are chosen in code
/// (`input.room_event`, `roomserver`); the bound keeps them usable as NATS
/// stream, subject and durable consumer names.
pub const NAME_BYTES_MAX: usize = 64;

/// Default bound on a topic's backlog, in records: published but not yet
/// acknowledged by its slowest subscription. A publisher waits at the bound,
/// so a slow consumer slows its producers instead of letting the topic grow
/// without limit; 10 000 room events is seconds of work for the room server.
pub const BACKLOG_RECORDS_MAX: u64 = 10_000;

/// Most records one `Subscription::next` returns, whatever the caller asks:
/// enough to amortise a read transaction, few enough to keep one batch small.
pub const SUBSCRIPTION_BATCH_RECORDS_MAX: usize = 256;

/// Most payload bytes one `Subscription::next` returns (it always returns at
/// least one record, which may alone be up to [`RECORD_BYTES_MAX`]).
pub const SUBSCRIPTION_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most records, per topic, the SQLite log keeps in memory after their
/// commit, so subscribers in this process take them from there instead of
/// reading them back (they fall back to the database for older ones).
pub const RECENT_RECORDS_MAX: usize = 256;

/// Most payload bytes, per topic, those recent records may hold.
pub const RECENT_BYTES_MAX: usize = 1024 * 1024;

/// Most records `SqliteLog::prune` deletes in one write; it loops over as
/// many writes as it needs, letting other writes in between. Small, because
/// every write queued behind a prune waits for it: 10,000 records (each with
/// its payload) once held the writer long enough to show as a 190 ms sync
/// wake-up, and 1,000 still showed as 20-30 ms ones right after load.py's
/// send scenario.
///
/// The maintenance pass (every 10 s) runs these writes back to back, with
/// the verdict and free-page writes, as a burst: ~135 ms of writer time in
/// ~1 ms writes right after load.py's whole run, ~60 ms per 10 s of
/// sequential sends. A send that meets a burst waits behind one of its
/// writes at each of its three writes (73 of 15,000 sequential sends, median
/// 1.7 ms, p90 4 ms). Measured and not kept, since a burst spread out hits
/// more sends: a pause of four times each write's time between writes (sends
/// over 2 ms beside the clean-up 51 against 29 in one run each), and that
/// pause with writes of 50 records (40; a write of 50 took 0.33 ms against
/// 0.54 for 200, so the clean-up held the writer longer in all). Nor was
/// skipping the pass at a tick at which the writer was busy (more than 5% of
/// the time since the last, at most five ticks in a row): during 15,000
/// sequential sends p99 1.88-2.23 ms against 2.20-2.37, but the clean-up
/// load.py's throughput runs had deferred then ran during its wake-up
/// scenario (wake-up p50/p90/p99 4.5/8.5/18.3 ms against 3.4/3.9/5.4 in
/// the run before, a target missed).
///
/// Since acknowledgements prune as they are stored
/// ([`ACK_PRUNE_RECORDS_MAX`]), the pass mostly finds nothing left; the
/// figures here are from before that.
///
/// Since each topic has its own records table (migration 0002) and
/// verdicts are keyed by offset, a write's fixed cost is small: 50 records
/// here, with 250 verdicts and 16 free pages per write (instead of 200,
/// 1,000 and 64), so a write that meets a send holds it less long. The
/// maintenance pass then took ~1.5-2x the writer time in all (26,461
/// records in 229 ms against 23,722 in 121 ms after load.py's first
/// throughput run), and the sync wake-up right after load.py's send
/// scenario, where the pass clears that scenario's backlog, improved
/// (`--scenario send,wake`, 2 runs each: p99 3.83 / 3.74 ms against 4.67 /
/// 5.0 with one long-poll, 3.76 / 3.67 against 3.97 / 4.08 with 50 idle
/// ones; without the send scenario first it was 3.25-3.74).
pub const PRUNE_BATCH_RECORDS_MAX: u64 = 50;

/// Most records a subscription's write of its acknowledged position deletes
/// from its topic, of those every subscription has stored as acknowledged
/// (the log is pruned as it is consumed; `SqliteLog::prune` takes what is
/// left). Acknowledgements are gathered for tens of milliseconds, so this
/// keeps up with a few thousand records a second without making any one
/// write long.
///
/// Measured (load.py's whole run, then 3 x 2,000 sequential sends with the
/// Rust client, 2 runs each way): the maintenance pass after the run had
/// deleted 4,627-28,766 records a time, in writes holding the writer for
/// 162-495 ms in all, and gave back 1,570-4,987 free pages; with this it
/// finds no record, and 24-286 free pages, as appends reuse the pages
/// pruning frees. Sends in a window that met such a pass had p99 2.75 ms
/// (1.72 and 1.83 in the two windows after it); here 1.57 / 1.39 / 1.50;
/// in windows no pass met, no change (1.36-1.51 against 1.36-1.62).
/// Throughput with 32 senders (`--scenario send`, 2 pairs, arms
/// alternated) did not drop: 2,348 / 1,998 ev/s in separate rooms against
/// 2,311 / 1,746, and 1,969 / 1,805 in one room against 1,775 / 1,794.
pub const ACK_PRUNE_RECORDS_MAX: u64 = 128;
