//! The room server's limits.

/// Largest PDU, in bytes of canonical JSON (the spec's limit).
pub const PDU_BYTES_MAX: usize = 65_536;

/// Most `prev_events` an event built here references (the spec allows 20).
pub const PREV_EVENTS_COUNT_MAX: usize = 20;

/// How long a writer waits for the verdict on its input, in milliseconds.
pub const VERDICT_WAIT_MS_MAX: u64 = 30_000;

/// Inputs queued for one room's worker before the dispatcher waits:
/// a slow room slows its writers instead of growing memory.
pub const ROOM_QUEUE_LEN_MAX: usize = 64;

/// Records taken from the input log at once.
pub const INPUT_BATCH_RECORDS_MAX: usize = 64;

/// Outbox records moved to the output log per transaction.
pub const OUTBOX_BATCH_RECORDS_MAX: usize = 256;

/// Attempts at processing one input while the database fails (pauses of
/// 50 ms, 200 ms, 800 ms between them) before it is given up.
pub const INPUT_ATTEMPTS_MAX: u32 = 4;

/// Most inputs of one room a worker processes in one transaction.
pub const ROOM_BATCH_INPUTS_MAX: usize = 64;

/// Milliseconds a room's worker may sit with nothing to do before it is
/// retired (its task ends; the room's next input starts a new one), so idle
/// rooms hold no task. Checked every half of it, only while a worker lives.
/// A live worker holds ~4 KiB (its task and its queue): with 60 s, the 500
/// rooms load.py's initial-sync scenario had just written to held 2.5 MiB
/// through the syncs and logins after it, under the run's peak. Starting a
/// worker costs a task spawn, nothing a room that is written to every few
/// milliseconds pays.
pub const ROOM_WORKER_IDLE_MS: u64 = 50;

/// Most milliseconds a v12 room's create event is moved forward to find a
/// room ID that is not taken yet (its ID is the event's hash).
pub const ROOM_ID_RETRIES_MAX: u64 = 1_000;

/// Seconds a verdict is kept at least, even once its input is acknowledged
/// (which alone makes it safe to delete: see `Roomserver::prune_verdicts`):
/// the longest a writer waits for one ([`VERDICT_WAIT_MS_MAX`]).
pub const VERDICT_KEEP_SECS: u64 = VERDICT_WAIT_MS_MAX / 1_000;

/// Seconds between two passes deleting verdicts no redelivery can need.
pub const VERDICT_PRUNE_INTERVAL_SECS: u64 = 10;

/// Most verdicts one write of a pruning pass deletes, so it never holds the
/// writer long; a pass takes as many writes as it needs. Keyed by offset, a
/// verdict costs ~0.6 us to delete; see `neurite_log::limits::PRUNE_BATCH_RECORDS_MAX`
/// for why writes are this small.
pub const VERDICT_PRUNE_BATCH_MAX: usize = 250;

/// Most acknowledged input offsets the room server remembers above one it
/// has not seen acknowledged; past it, it stops pruning verdicts until it
/// restarts (the input log's backlog bound normally keeps far below it).
pub const ACKED_INPUTS_ABOVE_GAP_MAX: usize = 100_000;
