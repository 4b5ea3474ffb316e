//! Database plumbing shared by Neurite components.
//!
//! Each component owns its tables, its migrations and a storage trait of its
//! own (`<component>/src/storage/mod.rs`); this crate gives those
//! implementations what they share: an SQLite connection pool that runs every
//! transaction on the blocking pool, and a migration runner. PostgreSQL comes
//! as a second backend beside [`sqlite`], behind the same component traits.

#![warn(missing_docs)]

pub mod coalesce;
pub mod packed;
pub mod sqlite;

/// A storage failure that is not a domain outcome (those are `Ok` values of
/// the component traits): the database is unreachable, corrupt, or full.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The blocking task running the transaction panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A write closure panicked; its changes were rolled back.
    #[error("database write panicked: {0}")]
    Panic(String),
    /// The write transaction could not begin or commit; nothing of it is stored.
    #[error("database commit failed: {0}")]
    Commit(String),
}

/// One migration: a name for the record and the SQL it runs.
pub type Migration = (&'static str, &'static str);

/// Share of its time the writer may have spent on writes since the last
/// clean-up chance for a periodic clean-up to still run now; above it, the
/// clean-up waits for the next chance (see [`Housekeeping`]).
pub const HOUSEKEEPING_BUSY_SHARE_MAX: f64 = 0.05;

/// Chances in a row a periodic clean-up may skip because the writer is busy;
/// the next one runs whatever the load, so the work it defers stays bounded.
pub const HOUSEKEEPING_SKIPS_MAX: u32 = 5;

/// Decides, at each tick of a periodic clean-up (pruning logs and verdicts,
/// giving free pages back), whether it runs now or waits for a quieter tick.
///
/// A clean-up is a run of ~1 ms writes, back to back. Every write queued
/// meanwhile waits for one, and a send makes three: right after load.py's
/// whole run, the first clean-up (~190 ms of writes) put sends beside it at
/// 2-5 ms, enough to set the p99 of the 2,000 sequential sends measured
/// then. So a clean-up skips a tick at which the writer was busy more than
/// [`HOUSEKEEPING_BUSY_SHARE_MAX`] of the time since the last one (its own
/// writes not counted), at most [`HOUSEKEEPING_SKIPS_MAX`] ticks in a row.
#[derive(Debug)]
pub struct Housekeeping {
    /// The writer's busy time and the clock at the last tick.
    last: Option<(std::time::Duration, std::time::Instant)>,
    skipped: u32,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self::new()
    }
}

impl Housekeeping {
    /// A gate whose first tick runs.
    pub fn new() -> Self {
        Self { last: None, skipped: 0 }
    }

    /// Whether the clean-up runs at this tick, given the writer's busy time
    /// so far (`SqlitePool::writer_busy`) and the clock.
    pub fn should_run(&mut self, busy: std::time::Duration, now: std::time::Instant) -> bool {
        let share = match self.last {
            Some((last_busy, at)) if now > at => {
                busy.saturating_sub(last_busy).as_secs_f64() / now.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((busy, now));
        if share > HOUSEKEEPING_BUSY_SHARE_MAX && self.skipped < HOUSEKEEPING_SKIPS_MAX {
            self.skipped += 1;
            return false;
        }
        self.skipped = 0;
        true
    }

    /// Notes the writer's busy time after the clean-up ran, so that its own
    /// writes do not count as load at the next tick.
    pub fn ran(&mut self, busy: std::time::Duration) {
        if let Some((_, at)) = self.last {
            self.last = Some((busy, at));
        }
    }
}

/// Milliseconds since the Unix epoch, the timestamp unit of every table.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{HOUSEKEEPING_SKIPS_MAX, Housekeeping};

    const TICK: Duration = Duration::from_secs(10);

    #[test]
    fn housekeeping_runs_when_quiet_and_skips_a_bounded_number_of_busy_ticks() {
        let start = Instant::now();
        let mut gate = Housekeeping::new();
        assert!(gate.should_run(Duration::ZERO, start), "the first tick runs");
        // Quiet: 10 ms of writes in 10 s.
        assert!(gate.should_run(Duration::from_millis(10), start + TICK));
        // Busy: 3 s of writes in each 10 s skips, at most HOUSEKEEPING_SKIPS_MAX times in a row.
        let mut busy = Duration::from_millis(10);
        let mut at = start + TICK;
        for skip in 0..HOUSEKEEPING_SKIPS_MAX {
            busy += Duration::from_secs(3);
            at += TICK;
            assert!(!gate.should_run(busy, at), "busy tick {skip} skips");
        }
        busy += Duration::from_secs(3);
        at += TICK;
        assert!(gate.should_run(busy, at), "after {HOUSEKEEPING_SKIPS_MAX} skips it runs whatever the load");
        // The count starts over after a run.
        busy += Duration::from_secs(3);
        at += TICK;
        assert!(!gate.should_run(busy, at));
    }

    #[test]
    fn housekeeping_does_not_count_its_own_writes_as_load() {
        let start = Instant::now();
        let mut gate = Housekeeping::new();
        assert!(gate.should_run(Duration::ZERO, start));
        // The clean-up itself held the writer for 2 s; nothing else wrote.
        gate.ran(Duration::from_secs(2));
        assert!(gate.should_run(Duration::from_secs(2), start + TICK));
        // Without `ran`, those 2 s would have read as a busy writer.
        let mut forgetful = Housekeeping::new();
        assert!(forgetful.should_run(Duration::ZERO, start));
        assert!(!forgetful.should_run(Duration::from_secs(2), start + TICK));
    }
}
