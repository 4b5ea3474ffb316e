//! SQLite: one writer connection, a small pool of reader connections, WAL.
//!
//! Durability: every write transaction commits with `synchronous=FULL`, so a
//! committed row survives a power cut. Throughput comes from putting many rows
//! in one transaction, never from weaker sync settings.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{Migration, StorageError, now_ms};

/// Number of reader connections; reads beyond it wait for a free one.
pub const READER_CONNECTIONS_MAX: usize = 4;

/// How long a connection waits for a lock held by another process (e.g. the
/// `neurite create-account` command while the server runs), in milliseconds.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// A handle to one SQLite database: cheap to clone, safe to share.
#[derive(Clone)]
pub struct SqlitePool {
    inner: Arc<Inner>,
}

struct Inner {
    // Invariant: the only connection that writes. SQLite allows one writer at
    // a time anyway; one connection makes that explicit and avoids SQLITE_BUSY.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqlitePool {
    /// Opens (creating if needed) the database file at `path` in WAL mode.
    ///
    /// # Errors
    /// The file cannot be created or opened, or is not an SQLite database.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        configure(&writer)?;
        let mut readers = Vec::with_capacity(READER_CONNECTIONS_MAX);
        for _ in 0..READER_CONNECTIONS_MAX {
            let reader =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            configure(&reader)?;
            readers.push(reader);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                reader_permits: Semaphore::new(READER_CONNECTIONS_MAX),
            }),
        })
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`) on the blocking
    /// pool; commits if it returns `Ok`, rolls back otherwise.
    ///
    /// # Errors
    /// Whatever `f` returns, or a failure to begin or commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic inside a transaction, which rolled
            // back when its Transaction dropped: the connection is still sound.
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StorageError::from)?;
            let value = f(&tx)?;
            tx.commit().map_err(StorageError::from)?;
            Ok(value)
        })
        .await
        .map_err(StorageError::from)?
    }

    /// Runs `f` in one read transaction on a reader connection, on the blocking pool.
    ///
    /// # Errors
    /// Whatever `f` returns, or a failure to begin the transaction.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let permit = self.inner.reader_permits.acquire().await.expect("the semaphore is never closed");
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            // Invariant: holding a permit means a connection is in the vector.
            let mut conn = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .expect("a permit guarantees a free reader connection");
            let result = (|| {
                let tx = conn.transaction().map_err(StorageError::from)?;
                let value = f(&tx)?;
                tx.finish().map_err(StorageError::from)?;
                Ok(value)
            })();
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(StorageError::from)?;
        drop(permit);
        result
    }

    /// Applies the migrations of `component` that have not run yet, in order,
    /// each in its own transaction, recording them in `neurite_migrations`.
    ///
    /// # Errors
    /// A migration's SQL fails; earlier ones stay applied.
    pub async fn migrate(&self, component: &'static str, migrations: &'static [Migration]) -> Result<(), StorageError> {
        self.write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS neurite_migrations (
                    component TEXT NOT NULL,
                    name TEXT NOT NULL,
                    applied_ts INTEGER NOT NULL,
                    PRIMARY KEY (component, name)
                )",
            )?;
            Ok::<_, StorageError>(())
        })
        .await?;
        for (name, sql) in migrations {
            self.write(move |tx| {
                let done: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM neurite_migrations WHERE component = ?1 AND name = ?2)",
                    (component, name),
                    |row| row.get(0),
                )?;
                if !done {
                    tracing::info!(component, migration = name, "applying migration");
                    tx.execute_batch(sql)?;
                    tx.execute(
                        "INSERT INTO neurite_migrations (component, name, applied_ts) VALUES (?1, ?2, ?3)",
                        (component, name, now_ms() as i64),
                    )?;
                }
                Ok::<_, StorageError>(())
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_visible_to_readers_and_migrations_run_once() {
        let dir = std::env::temp_dir().join(format!("neurite-storage-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = SqlitePool::open(&dir.join("t.db")).unwrap();
        static M: &[Migration] = &[("0001_create_t", "CREATE TABLE t (x INTEGER NOT NULL)")];
        pool.migrate("test", M).await.unwrap();
        pool.migrate("test", M).await.unwrap();
        pool.write(|tx| tx.execute("INSERT INTO t (x) VALUES (7)", []).map_err(StorageError::from)).await.unwrap();
        let x: i64 = pool
            .read(|tx| tx.query_row("SELECT x FROM t", [], |r| r.get(0)).map_err(StorageError::from))
            .await
            .unwrap();
        assert_eq!(x, 7);
        std::fs::remove_dir_all(&dir).ok();
    }
}
