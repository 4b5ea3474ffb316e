//! SQLite: one writer connection, a small pool of reader connections, WAL.
//!
//! Durability: a [`SqlitePool::write`] commits with `synchronous=FULL`, so a
//! committed row survives a power cut. Throughput comes from putting many rows
//! in one transaction: the writer thread commits every write queued while the
//! previous commit ran in one transaction (group commit), each under its own
//! savepoint, so one fsync covers them all and a failing write undoes only
//! itself.
//!
//! A [`SqlitePool::write_deferred`] commits without waiting for the disk
//! (`synchronous=NORMAL` for a batch of only such writes). It is as atomic as
//! any write and survives a crash of the process; a power cut can undo it,
//! together with every later deferred write, until the next durable commit
//! or checkpoint, which makes it durable too (WAL mode keeps commits in
//! order in one file, and a sync of the file covers every frame before it).
//! It is for rows whose loss nobody was promised against: an input whose
//! writer waits for a durable verdict before answering anyone, rows rebuilt
//! from a durable log after a loss, log positions that only permit pruning.
//!
//! Checkpoints (folding the write-ahead log into the database file) run
//! mostly beside the writer, so that a commit seldom waits for one: see
//! [`CHECKPOINT_WAL_PAGES`] and [`WAL_RESTART_PAGES`].

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{Semaphore, oneshot};

use crate::{Migration, StorageError, now_ms};

/// Number of reader connections; reads beyond it wait for a free one.
pub const READER_CONNECTIONS_MAX: usize = 4;

/// How long a connection waits for a lock held by another process (e.g. the
/// `neurite create-account` command while the server runs), in milliseconds.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Most writes one group commit takes; more wait for the next transaction.
pub const GROUP_COMMIT_WRITES_MAX: usize = 512;

/// Page cache of the writer connection, in KiB (SQLite's default is 2,000).
/// Five connections at the default held ~10 MiB once the database outgrew
/// them, the largest part of the server's memory; the file's pages stay in
/// the operating system's cache, so a smaller one costs a copy, not a disk
/// read. The writer keeps the larger one: every write walks the same index
/// pages down to the rows it appends.
pub const WRITER_PAGE_CACHE_KIB: i64 = 512;

/// Page cache of each reader connection, in KiB: the upper levels of the hot
/// indexes fit, and the large reads (a sync of hundreds of rooms) touch far
/// more pages than any cache here would keep. 512 KiB each held 1.5 MiB more
/// at the peak of load.py's initial-sync scenario with no faster syncs.
pub const READER_PAGE_CACHE_KIB: i64 = 128;

/// Pages added to the write-ahead log after which the checkpointer thread
/// copies them into the database file (SQLite's own automatic checkpoint
/// uses the same size), beside the writer, without blocking it. SQLite's
/// checkpoint inside a commit made one send in ~40 wait for all of it (a
/// send writes ~24 pages): most of the sync wake-up p99 (load.py's wake
/// scenario: 8-10 ms with it, 4.7-5.1 ms with no checkpoint at all).
/// A copy takes ~0.65 ms of CPU (p50; 0.9 ms of wall time) on a loaded
/// database and overlapped 14 of the 25 slowest of 2,000 sequential sends.
/// Copies every 2,000 pages (the restart kept at 8,000): p99 1.25-1.52 ms
/// against 1.43-1.57 with 1,000, sends over 2 ms 4-11 against 6-11 (3
/// pairs, arms alternated): within the noise, not kept.
pub const CHECKPOINT_WAL_PAGES: i32 = 1_000;

/// Pages in the write-ahead log at which it starts over: the checkpointer's
/// copy begun there also syncs the database file, then the writer copies
/// what was committed since (a few dozen pages, but two fsyncs, which every
/// write queued meanwhile waits for: 0.9-1.4 ms after load.py's whole run),
/// so its next commit starts the log from the beginning. Taking that step
/// after every copy put one send in ~48 behind it, 2% of sends and so their
/// p99; at four copies per restart one in ~190, at eight one in ~430. Once
/// events were indexed by room (so the restart's sync of the database file
/// fell from 10-36 ms to ~2 ms), the restarts were most of the sends over
/// 2 ms left: 8,000 pages instead of 4,000 took sequential sends' p99 from
/// 1.91-2.66 ms to 1.62-2.39 and those over 2 ms from 18-73 to 11-28 of
/// 2,000 (6 pairs, a loaded database), for a log file of ~33 MB instead
/// of ~16.
pub const WAL_RESTART_PAGES: i32 = 8 * CHECKPOINT_WAL_PAGES;

/// Pages in the write-ahead log at which the writer checkpoints by itself,
/// whatever the checkpointer is doing: a log without bound would make every
/// read slower.
pub const WAL_PAGES_MAX: i32 = 2 * WAL_RESTART_PAGES;

/// Bytes the write-ahead log file is cut back to when the log starts over
/// (it keeps its largest size otherwise): room for a log at the
/// [`WAL_PAGES_MAX`] bound (a frame is a page and a 24-byte header), so a
/// log that starts over at [`WAL_RESTART_PAGES`] keeps its file as it is
/// instead of cutting it and growing it again each time.
pub const WAL_FILE_BYTES_KEPT_MAX: i64 = WAL_PAGES_MAX as i64 * (4096 + 24);

/// Prepared statements each connection keeps for `prepare_cached`. Every
/// component writes through the one writer connection, and one send runs
/// several dozen distinct statements there; rusqlite's default of 16 made
/// the cache thrash, so statements were parsed again on every send.
pub const STATEMENT_CACHE_CAPACITY: usize = 256;

/// A handle to one SQLite database: cheap to clone, safe to share.
#[derive(Clone)]
pub struct SqlitePool {
    inner: Arc<Inner>,
}

struct Inner {
    // Invariant: the writer thread owns the only connection that writes.
    // SQLite allows one writer at a time anyway; one connection makes that
    // explicit, avoids SQLITE_BUSY, and lets it batch commits.
    writes: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    /// Invariant: a permit is held for exactly as long as a reader
    /// connection is out of `readers`, so it travels with the connection
    /// into the blocking task and is given back only after the connection.
    reader_permits: Arc<Semaphore>,
    path: std::path::PathBuf,
}

/// How a write reaches the disk; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed with an fsync: survives a power cut once `write` returns.
    Full,
    /// Committed without waiting for the disk: durable with the next
    /// [`Durability::Full`] commit or checkpoint.
    Deferred,
}

/// One queued write: its closure, then its answer once the commit is known.
trait WriteJob: Send {
    /// How this write must reach the disk.
    fn durability(&self) -> Durability;
    /// Runs the closure inside the open transaction under its own savepoint
    /// (rolled back if the closure fails or panics) and keeps its result.
    fn run(&mut self, tx: &Transaction<'_>);
    /// Answers the caller: the kept result if the transaction committed (or
    /// the closure's own error), otherwise `failure`.
    fn finish(self: Box<Self>, failure: Option<&str>);
}

struct Job<T, E, F> {
    durability: Durability,
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> WriteJob for Job<T, E, F>
where
    T: Send + 'static,
    E: From<StorageError> + Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, tx: &Transaction<'_>) {
        let Some(f) = self.f.take() else { return };
        self.result = Some(savepoint(tx, |tx| {
            std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(StorageError::Panic(message).into())
            })
        }));
    }

    fn finish(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(message)) => Err(StorageError::Commit(message.to_owned()).into()),
            (None, None) => Err(StorageError::Commit("the write did not run".into()).into()),
        };
        // The caller may have stopped waiting (a cancelled future): its write
        // still happened, as documented on `write`.
        let _ = self.reply.send(result);
    }
}

/// Runs `f` under a savepoint of `tx`: its changes stay (until the
/// transaction commits) if it returns `Ok` and are undone if it fails, so one
/// step of a batch is all-or-nothing without failing the others.
///
/// # Errors
/// Whatever `f` returns, or a failure to set or release the savepoint.
pub fn savepoint<T, E: From<StorageError>>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([])).map_err(StorageError::from);
    run("SAVEPOINT neurite_step")?;
    match f(tx) {
        Ok(value) => {
            run("RELEASE neurite_step")?;
            Ok(value)
        }
        Err(e) => {
            // Fails only when SQLite already ended the whole transaction; the
            // writer thread sees that and fails the batch.
            let _ = run("ROLLBACK TO neurite_step").and_then(|_| run("RELEASE neurite_step"));
            Err(e)
        }
    }
}

thread_local! {
    /// Pages in the write-ahead log after the last commit on this thread's
    /// connection, as SQLite's WAL hook reported them (the hook takes no
    /// state; each pool's writer is its own thread).
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The writer connection's WAL hook. Installing it also turns off SQLite's
/// automatic checkpoint on that connection (see [`CHECKPOINT_WAL_PAGES`]).
fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Where the checkpointer stands, shared by the writer and the checkpointer
/// thread: idle, not asked since its last copy ended.
const CHECKPOINT_IDLE: u8 = 0;
/// The writer asked the checkpointer for a copy.
const CHECKPOINT_ASKED: u8 = 1;
/// The checkpointer's copy ended: at [`WAL_RESTART_PAGES`], the writer's
/// step comes after its next commit.
const CHECKPOINT_COPIED: u8 = 2;

/// Folds what it can of the write-ahead log into the database file, without
/// waiting for the writer or readers (`PASSIVE`; busy if another connection
/// is checkpointing).
fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// The writer thread: takes every queued write, runs them in one transaction
/// and commits once, until every pool handle is gone. Between commits it
/// drives the checkpoints (see [`CHECKPOINT_WAL_PAGES`] and
/// [`WAL_RESTART_PAGES`]): it wakes the checkpointer through `checkpoints`
/// and takes the step that lets the log start over itself.
fn run_writer(
    mut conn: Connection,
    writes: mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoints: mpsc::SyncSender<bool>,
    checkpoint: Arc<AtomicU8>,
) {
    conn.wal_hook(Some(note_wal_pages));
    // Invariant: `configure` left the connection at `synchronous=FULL`.
    let mut synchronous = Durability::Full;
    // Pages in the log when the checkpointer was last asked for a copy.
    let mut asked_at = 0;
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_WRITES_MAX {
            match writes.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One durable write makes the whole batch durable.
        let wanted = if batch.iter().any(|job| job.durability() == Durability::Full) {
            Durability::Full
        } else {
            Durability::Deferred
        };
        if wanted != synchronous {
            // Cached: most sends switch twice, and parsing the pragma each
            // time cost the writer ~8 us per send.
            let sql =
                if wanted == Durability::Full { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
            if let Err(e) = conn.prepare_cached(sql).and_then(|mut s| s.execute([])) {
                let message = format!("cannot run {sql}: {e}");
                batch.into_iter().for_each(|job| job.finish(Some(&message)));
                continue;
            }
            synchronous = wanted;
        }
        commit_batch(&mut conn, batch);
        let pages = WAL_PAGES.with(std::cell::Cell::get);
        if pages < asked_at {
            // The log started over.
            asked_at = 0;
        }
        let step = checkpoint.load(Ordering::Acquire);
        // Invariant: the writer's step follows a copy the checkpointer began
        // at `WAL_RESTART_PAGES` or later, so it has only a few pages left.
        if (step == CHECKPOINT_COPIED && asked_at >= WAL_RESTART_PAGES) || pages >= WAL_PAGES_MAX {
            // At the bound while the checkpointer still copies, this one
            // answers busy (in its row, not as an error) and copies nothing;
            // the checkpointer's step ends soon and this one comes again.
            let started = std::time::Instant::now();
            if let Err(e) = checkpoint_passive(&conn) {
                tracing::warn!(error = %e, pages, "checkpointing the write-ahead log failed");
            }
            let micros = started.elapsed().as_micros() as u64;
            tracing::debug!(pages, micros, "the writer checkpointed the write-ahead log itself");
            if step == CHECKPOINT_COPIED {
                checkpoint.store(CHECKPOINT_IDLE, Ordering::Release);
            }
        } else if step != CHECKPOINT_ASKED
            && (pages - asked_at >= CHECKPOINT_WAL_PAGES
                || (pages >= WAL_RESTART_PAGES && asked_at < WAL_RESTART_PAGES))
        {
            checkpoint.store(CHECKPOINT_ASKED, Ordering::Release);
            asked_at = pages;
            if checkpoints.try_send(asked_at >= WAL_RESTART_PAGES).is_err() {
                // The checkpointer is gone (it panicked): the writer alone.
                checkpoint.store(CHECKPOINT_COPIED, Ordering::Release);
            }
        }
    }
}

/// The checkpointer thread: copies the log into the database file each time
/// the writer asks (see [`CHECKPOINT_WAL_PAGES`]), on its own connection;
/// for the copy before the log starts over (the writer sends `true`), it
/// then syncs the file (`database`). Ends with the writer.
///
/// SQLite syncs the database file only at the end of a copy that reached
/// the end of the log, which beside a busy writer is the writer's step:
/// that one fsync then wrote every page of the checkpointer's copies since
/// the log started over, 5-8 ms in the writer's path after load.py's send
/// scenario. Synced here, the writer's fsync has only its own few pages.
/// Only once before each restart: a sync after every copy put that disk
/// work beside the sends' own fsyncs four times as often (sequential sends
/// after the send scenario: p99 2.5-3.5 ms instead of 1.9-2.3; tried again
/// after load.py's whole run: p99 3.2-3.6 ms instead of 2.3-2.6, and as
/// `sync_file_range` writeback started after each copy 2.7-4.8).
///
/// It runs at normal priority. A copy (1.6-2.2 ms of CPU on a loaded
/// database) holds the core a woken request thread is placed on until its
/// time slice ends, so the send beside each copy (one in ~54) starts
/// 1.4-1.8 ms late. In Linux's `SCHED_IDLE` class that went (p97 of
/// sequential sends 1.70-1.90 -> 1.24-1.33 ms, p99 -0.2 to -0.4 ms), but a
/// checkpointer given no core while every core is busy leaves the log to
/// grow past its bounds: this file's restart test failed under CI's
/// parallel tests. A 0.1 ms time slice at normal priority changed nothing.
/// Neither did copying again, after the sync before a restart, what was
/// committed meanwhile, so that the writer's step had less to copy (its two
/// fsyncs are most of it): p99 2.43-2.63 ms with, 2.39-2.67 without.
///
/// Also measured and not kept (2,000 sequential sends on copies of a
/// database load.py's whole run left, after 1,500 warm-up sends, arms
/// alternated): copies that skip SQLite's sync of the log, made safe by a
/// read transaction opened right after a durable commit (a copy never
/// passes a reader's snapshot, and that commit's fsync covered every frame
/// before it), with the file synced before a copy that reached the end
/// of the log could let it start over: p99 2.96-4.03 ms against 3.29-3.65,
/// and with copies every 200 pages 2.59-3.01 (p50 0.1 ms worse); this
/// thread at nice 19: 2.44-2.65 against 2.47-2.78; the log starting over
/// at 8,000 pages instead of 4,000 (twice the file), before events were
/// indexed by room: 2.36-2.56 against 2.67-3.11, but as many sends over
/// 2 ms (35-43 against 41-47 of 2,000), as each restart's sync was twice
/// as long (kept since, see [`WAL_RESTART_PAGES`]). After: the writer's
/// step right after a commit at `synchronous=FULL`, at `synchronous=OFF`
/// with the database file synced by hand (one fsync instead of two): the
/// step still took 0.6-1.1 ms (the database file's sync is most of it),
/// sends over 2 ms 17-20 against 24-25 in 2 pairs, even in a third; not
/// worth a process abort on a failed sync. SQLite built with
/// `HAVE_FDATASYNC` (fdatasync instead of fsync, skipping the inode's
/// write): no gain seen in 3 pairs.
fn run_checkpointer(
    conn: Connection,
    database: Option<std::fs::File>,
    asked: mpsc::Receiver<bool>,
    checkpoint: Arc<AtomicU8>,
) {
    while let Ok(sync) = asked.recv() {
        if let Err(e) = checkpoint_passive(&conn) {
            tracing::warn!(error = %e, "checkpointing the write-ahead log failed; the writer takes it all");
        }
        if sync && let Some(Err(e)) = database.as_ref().map(std::fs::File::sync_data) {
            tracing::warn!(error = %e, "syncing the database file failed; the writer's checkpoint syncs it");
        }
        checkpoint.store(CHECKPOINT_COPIED, Ordering::Release);
    }
}

/// Runs `batch` in one `BEGIN IMMEDIATE` transaction and answers each write.
fn commit_batch(conn: &mut Connection, mut batch: Vec<Box<dyn WriteJob>>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            batch.into_iter().for_each(|job| job.finish(Some(&message)));
            return;
        }
    };
    let mut ran = 0;
    while ran < batch.len() {
        batch[ran].run(&tx);
        ran += 1;
        if tx.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. disk full): the
            // writes so far are undone; the rest get a transaction of their own.
            let rest = batch.split_off(ran);
            drop(tx);
            batch.into_iter().for_each(|job| job.finish(Some("the transaction was rolled back by SQLite")));
            if !rest.is_empty() {
                commit_batch(conn, rest);
            }
            return;
        }
    }
    match tx.commit() {
        Ok(()) => batch.into_iter().for_each(|job| job.finish(None)),
        Err(e) => {
            let message = e.to_string();
            batch.into_iter().for_each(|job| job.finish(Some(&message)));
        }
    }
}

fn configure(conn: &Connection, page_cache_kib: i64) -> Result<(), rusqlite::Error> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // Negative: a size in KiB rather than a page count.
    conn.pragma_update(None, "cache_size", -page_cache_kib)?;
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
        // Only a new, empty database can take this: deleted rows' pages can
        // then be given back to the file system (`release_free_pages`).
        let pages: i64 = writer.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if pages == 0 {
            writer.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        writer.pragma_update(None, "journal_mode", "WAL")?;
        configure(&writer, WRITER_PAGE_CACHE_KIB)?;
        writer.pragma_update(None, "journal_size_limit", WAL_FILE_BYTES_KEPT_MAX)?;
        let mut readers = Vec::with_capacity(READER_CONNECTIONS_MAX);
        for _ in 0..READER_CONNECTIONS_MAX {
            let reader =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            configure(&reader, READER_PAGE_CACHE_KIB)?;
            readers.push(reader);
        }
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer, READER_PAGE_CACHE_KIB)?;
        // For its fsync only (any descriptor of the file syncs it); a
        // database it cannot open is synced by SQLite as before.
        let database = std::fs::File::open(path).ok();
        let (checkpoints, asked) = mpsc::sync_channel(1);
        let checkpoint = Arc::new(AtomicU8::new(CHECKPOINT_IDLE));
        let step = checkpoint.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, database, asked, step))
            .map_err(|e| StorageError::Commit(format!("cannot start the checkpointer thread: {e}")))?;
        let (writes, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, queue, checkpoints, checkpoint))
            .map_err(|e| StorageError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                readers: Mutex::new(readers),
                reader_permits: Arc::new(Semaphore::new(READER_CONNECTIONS_MAX)),
                path: path.to_owned(),
            }),
        })
    }

    /// Runs `f` in a write transaction on the writer thread; its changes
    /// commit if it returns `Ok` and are undone otherwise. Writes queued
    /// together share one transaction (each under its own savepoint) and one
    /// fsync; `Ok` means this write's changes are committed.
    ///
    /// Cancelling the returned future does not cancel the write.
    ///
    /// # Errors
    /// Whatever `f` returns, or a failure to begin or commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_with(Durability::Full, f).await
    }

    /// [`Self::write`] without waiting for the disk: `Ok` means committed
    /// (visible, atomic, surviving a crash of the process), durable against
    /// a power cut with the next durable commit. Only for rows whose loss in
    /// a power cut nobody was promised against (see the module documentation).
    ///
    /// # Errors
    /// As [`Self::write`].
    pub async fn write_deferred<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_with(Durability::Deferred, f).await
    }

    /// [`Self::write`] or [`Self::write_deferred`], as `durability` says.
    ///
    /// # Errors
    /// As [`Self::write`].
    pub async fn write_with<T, E, F>(&self, durability: Durability, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job { durability, f: Some(f), result: None, reply });
        let sent = self.inner.writes.send(job);
        if sent.is_err() {
            return Err(StorageError::Commit("the writer thread is gone".into()).into());
        }
        answer.await.unwrap_or_else(|_| Err(StorageError::Commit("the writer thread is gone".into()).into()))
    }

    /// Whether `self` and `other` are handles to the same pool (one writer),
    /// so one write transaction can hold rows of both users.
    pub fn same_pool(&self, other: &SqlitePool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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
        let permit = self.inner.reader_permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let inner = self.inner.clone();
        // The permit moves into the task: were this future dropped while the
        // task runs (a cancelled request), the task would still hold the
        // connection, and a permit freed here would let another read find
        // none in `readers`.
        tokio::task::spawn_blocking(move || {
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
            drop(permit);
            result
        })
        .await
        .map_err(StorageError::from)?
    }

    /// Gives up to `pages` free pages (left by deleted rows) back to the file
    /// system, so the file shrinks towards the data it holds; returns how
    /// many it gave back. Gives back none on a database created before
    /// Neurite turned on incremental vacuum.
    ///
    /// # Errors
    /// The write fails.
    pub async fn release_free_pages(&self, pages: u32) -> Result<u32, StorageError> {
        // Deferred: a power cut that undoes it only leaves the pages free.
        self.write_deferred(move |tx| {
            let free = |tx: &Transaction<'_>| tx.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
            let before = free(tx)?;
            // Each step of this pragma frees one page: run it to the end.
            let mut statement = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut rows = statement.query([])?;
            while rows.next()?.is_some() {}
            Ok(u32::try_from(before - free(tx)?).unwrap_or(0))
        })
        .await
    }

    /// Folds the write-ahead log into the database file and truncates it,
    /// e.g. on a graceful stop, so the data folder holds one compact file.
    /// Writes committed meanwhile stay in the log until the next checkpoint.
    ///
    /// # Errors
    /// The database cannot be opened, or a reader or writer holds it busy
    /// past the busy timeout.
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path)?;
            configure(&conn, READER_PAGE_CACHE_KIB)?;
            // Busy (1 in the first column, not an error) while the
            // checkpointer copies: SQLite does not wait for that.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS);
            while conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))? != 0 {
                if std::time::Instant::now() > deadline {
                    return Err(StorageError::Commit("the checkpoint stayed busy past the busy timeout".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        })
        .await?
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

    #[tokio::test]
    async fn deleted_rows_give_their_pages_back_to_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = SqlitePool::open(&path).unwrap();
        static M: &[Migration] = &[("0001_create_t", "CREATE TABLE t (x BLOB NOT NULL)")];
        pool.migrate("test", M).await.unwrap();
        let count = |tx: &Transaction<'_>, pragma: &str| -> Result<i64, StorageError> {
            Ok(tx.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?)
        };
        pool.write(|tx| {
            for _ in 0..500 {
                tx.execute("INSERT INTO t (x) VALUES (zeroblob(4000))", [])?;
            }
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
        let full = pool.write(move |tx| count(tx, "page_count")).await.unwrap();
        pool.write(|tx| Ok::<_, StorageError>(tx.execute("DELETE FROM t", [])?)).await.unwrap();
        assert!(pool.write(move |tx| count(tx, "freelist_count")).await.unwrap() > 400);
        assert_eq!(pool.release_free_pages(100).await.unwrap(), 100);
        assert!(pool.release_free_pages(10_000).await.unwrap() > 300);
        assert_eq!(pool.release_free_pages(10_000).await.unwrap(), 0);
        assert_eq!(pool.write(move |tx| count(tx, "freelist_count")).await.unwrap(), 0);
        let after = pool.write(move |tx| count(tx, "page_count")).await.unwrap();
        assert!(after < full / 10, "{after} pages left of {full}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_writes_skip_the_fsync_unless_batched_with_a_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        // What the connection commits this write's batch with: 2 = FULL, 1 = NORMAL.
        let level = |tx: &Transaction<'_>| -> Result<i64, StorageError> {
            Ok(tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
        };
        assert_eq!(pool.write_deferred(move |tx| level(tx)).await.unwrap(), 1);
        assert_eq!(pool.write(move |tx| level(tx)).await.unwrap(), 2);
        assert_eq!(pool.write_deferred(move |tx| level(tx)).await.unwrap(), 1);
        // Hold the writer, queue a deferred and a durable write behind it:
        // they share the next batch, which must be durable.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let pool = pool.clone();
            async move { pool.write(move |_| Ok::<_, StorageError>(held.recv().ok())).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let deferred = tokio::spawn({
            let pool = pool.clone();
            async move { pool.write_deferred(move |tx| level(tx)).await }
        });
        let durable = tokio::spawn({
            let pool = pool.clone();
            async move { pool.write(move |tx| level(tx)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(deferred.await.unwrap().unwrap(), 2, "a deferred write batched with a durable one is durable");
        assert_eq!(durable.await.unwrap().unwrap(), 2);
        assert!(pool.same_pool(&pool.clone()));
        assert!(!pool.same_pool(&SqlitePool::open(&dir.path().join("u.db")).unwrap()));
    }

    /// A pool on a fresh database in `dir` with one table of blobs, and the file's path.
    async fn blob_pool(dir: &tempfile::TempDir) -> (SqlitePool, std::path::PathBuf) {
        let path = dir.path().join("t.db");
        let pool = SqlitePool::open(&path).unwrap();
        static M: &[Migration] = &[("0001_create_t", "CREATE TABLE t (x BLOB NOT NULL)")];
        pool.migrate("test", M).await.unwrap();
        (pool, path)
    }

    /// One write of `rows` rows of 16 pages each.
    async fn write_blobs(pool: &SqlitePool, rows: i32) {
        pool.write(move |tx| {
            for _ in 0..rows {
                tx.execute("INSERT INTO t (x) VALUES (zeroblob(65536))", [])?;
            }
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_checkpointer_folds_the_log_into_the_file_and_the_log_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, path) = blob_pool(&dir).await;
        let file_pages = || std::fs::metadata(&path).unwrap().len() / 4096;
        let wal_file_pages = || std::fs::metadata(path.with_extension("db-wal")).unwrap().len() / 4096;
        // Writes of 8 rows of 16 pages, one after another.
        let write_pages = |writes: u64| {
            let pool = pool.clone();
            async move {
                for _ in 0..writes {
                    write_blobs(&pool, 8).await;
                }
                writes * 128
            }
        };
        // Below `WAL_RESTART_PAGES` the writer never folds the log itself
        // (its automatic checkpoint is off): the checkpointer does, with no
        // further write, but for a log too short to wake it.
        let written = write_pages(2 * CHECKPOINT_WAL_PAGES as u64 / 128).await;
        let folded = written - CHECKPOINT_WAL_PAGES as u64;
        let folded_by = |pages: u64| async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while file_pages() < pages && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(file_pages() >= pages, "{} pages in the file, {pages} expected", file_pages());
        };
        folded_by(folded).await;
        // Past `WAL_RESTART_PAGES`, once the checkpointer copied, the writer
        // copies the rest after a commit and the log starts over at the
        // commit after that.
        let written = written + write_pages(WAL_RESTART_PAGES as u64 / 128).await;
        folded_by(written - CHECKPOINT_WAL_PAGES as u64 - 128).await;
        for _ in 0..2 {
            pool.write(|tx| Ok::<_, StorageError>(tx.execute("INSERT INTO t (x) VALUES (x'00')", [])?)).await.unwrap();
        }
        let frames: i64 =
            Connection::open(&path).unwrap().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap();
        assert!(frames < i64::from(WAL_RESTART_PAGES), "{frames} frames in the log after {written} pages written");
        // Writes without a pause: the log still starts over, at the latest
        // at `WAL_PAGES_MAX`, and its file is cut back when it does.
        let written = write_pages(3 * WAL_PAGES_MAX as u64 / 128).await;
        assert!(
            wal_file_pages() <= WAL_PAGES_MAX as u64 + 2 * 136,
            "{} pages in the log file after {written} written",
            wal_file_pages()
        );
    }

    #[tokio::test]
    async fn a_checkpoint_on_stop_empties_the_log_even_while_the_checkpointer_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, path) = blob_pool(&dir).await;
        // Enough pages in one write that the checkpointer is still copying
        // them when the stop's checkpoint starts.
        write_blobs(&pool, 3 * CHECKPOINT_WAL_PAGES / 16).await;
        pool.checkpoint().await.unwrap();
        assert_eq!(std::fs::metadata(path.with_extension("db-wal")).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_read_dropped_midway_keeps_its_connection_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        let sleep = |ms| {
            move |tx: &Transaction<'_>| {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok::<i64, StorageError>(tx.query_row("SELECT 1", [], |r| r.get(0))?)
            }
        };
        // A request cancelled while its read runs: the read goes on without it.
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(20), pool.read(sleep(300))).await;
        assert!(cancelled.is_err(), "the read should still have been running");
        // Every connection asked for at once: the cancelled read's comes last.
        let reads: Vec<_> = (0..READER_CONNECTIONS_MAX)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.read(sleep(100)).await })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_write_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePool::open(&dir.path().join("t.db")).unwrap();
        static M: &[Migration] = &[("0001_create_t", "CREATE TABLE t (x INTEGER NOT NULL)")];
        pool.migrate("test", M).await.unwrap();
        // Many concurrent writes, so most share a transaction with others.
        let mut tasks = Vec::new();
        for i in 0..200_i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.write(move |tx| {
                    tx.execute("INSERT INTO t (x) VALUES (?1)", [i])?;
                    match i % 10 {
                        3 => Err(StorageError::Corrupt("refused".into())),
                        7 => panic!("write {i} panics"),
                        _ => Ok(()),
                    }
                })
                .await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap();
            match i % 10 {
                3 => assert!(matches!(result, Err(StorageError::Corrupt(_))), "{result:?}"),
                7 => assert!(matches!(result, Err(StorageError::Panic(_))), "{result:?}"),
                _ => assert!(result.is_ok(), "{result:?}"),
            }
        }
        let stored: Vec<i64> = pool
            .read(|tx| {
                let mut stmt = tx.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
                Ok::<_, StorageError>(rows)
            })
            .await
            .unwrap();
        let expected: Vec<i64> = (0..200).filter(|i| i % 10 != 3 && i % 10 != 7).collect();
        assert_eq!(stored, expected);
    }
}
