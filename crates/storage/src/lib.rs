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

/// Milliseconds since the Unix epoch, the timestamp unit of every table.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
