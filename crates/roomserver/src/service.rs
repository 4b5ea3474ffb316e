//! The running room server: the input consumer with one ordered worker per
//! room (retired when idle), the verdict waiters, and the way outputs reach
//! `output.room_event`: appended in the processing transaction when the log
//! lives in the room server's own database (the embedded mode), else through
//! an outbox written in that transaction and published after it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use neurite_log::{Appended, Log, PublishRecord, Record, SqliteAppender};
use neurite_storage::coalesce::Coalescer;
use neurite_storage::sqlite::{SqlitePool, savepoint};
use neurite_storage::{StorageError, now_ms};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::acked::AckedInputs;
use crate::api::{Input, InputRoomEvent, RoomserverError, RoomserverInput, Target, Verdict};
use crate::limits::{
    INPUT_ATTEMPTS_MAX, INPUT_BATCH_RECORDS_MAX, OUTBOX_BATCH_RECORDS_MAX, ROOM_BATCH_INPUTS_MAX, ROOM_QUEUE_LEN_MAX,
    ROOM_WORKER_IDLE_MS, VERDICT_KEEP_SECS, VERDICT_PRUNE_BATCH_MAX, VERDICT_PRUNE_INTERVAL_SECS, VERDICT_WAIT_MS_MAX,
};
use crate::process::{self, Processed, Signer};
use crate::storage::RoomTables;
use crate::storage::sqlite::MIGRATIONS;

/// An output record in the outbox: its NID, its room (the log key), its payload.
type OutboxEntry = (i64, String, Vec<u8>);

/// What [`Roomserver::process`] did: each input done (request ID, verdict,
/// outbox entries), the outputs appended in the transaction, then the
/// failure that stopped it, if any.
type Processing = (Vec<(String, Verdict, Vec<OutboxEntry>)>, Vec<Appended>, Option<StorageError>);

/// What one input left to do after its transaction: outbox entries to
/// publish, or the outputs it appended to the output log itself.
type Outputs = (Vec<OutboxEntry>, Option<Appended>);

/// An input with the offset of its record in `input.room_event`.
type OffsetInput = (u64, InputRoomEvent);

/// Runs one input (its record at `offset`) inside the open transaction; see
/// [`Roomserver::process`]. With an `appender` its outputs go straight into
/// the output log (in this transaction), otherwise into the outbox.
fn process_one(
    tx: &rusqlite::Transaction<'_>,
    signer: &Signer,
    appender: Option<&SqliteAppender>,
    offset: u64,
    input: &InputRoomEvent,
) -> Result<(Verdict, Outputs), StorageError> {
    if let Some(stored) = tx.input_verdict(offset, &input.request_id)? {
        let verdict = serde_json::from_str(&stored).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        return Ok((verdict, (Vec::new(), None)));
    }
    let Processed { verdict, outputs } = match &input.input {
        Input::Build(build) => process::process_build(tx, signer, build, now_ms())?,
        Input::Pdu(pdu) => process::process_pdu(tx, pdu)?,
    };
    let mut records = Vec::with_capacity(outputs.len());
    for (room_id, output) in outputs {
        let payload = serde_json::to_vec(&output).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        records.push((room_id, payload));
    }
    let done = match appender {
        Some(appender) => {
            let records: Vec<PublishRecord> =
                records.into_iter().map(|(key, payload)| PublishRecord { key, payload, dedup_id: None }).collect();
            let appended = appender
                .append(tx, neurite_log::OUTPUT_ROOM_EVENT, records)
                .map_err(|e| StorageError::Corrupt(format!("appending outputs: {e}")))?;
            (Vec::new(), Some(appended))
        }
        None => {
            let mut entries = Vec::with_capacity(records.len());
            for (room_id, payload) in records {
                let nid = tx.insert_outbox(&room_id, &payload)?;
                entries.push((nid, room_id, payload));
            }
            (entries, None)
        }
    };
    let stored = serde_json::to_string(&verdict).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    tx.insert_input_verdict(&input.request_id, &stored, offset, now_ms())?;
    Ok((verdict, done))
}

/// Name of the room server's subscription to `input.room_event`.
const INPUT_SUBSCRIPTION: &str = "roomserver";

/// The room server. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Roomserver {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: SqlitePool,
    log: Arc<dyn Log>,
    /// Appends outputs in the processing transaction when the log lives in
    /// this database; `None`: the outbox.
    appender: Option<SqliteAppender>,
    signer: Signer,
    waiters: Mutex<HashMap<String, oneshot::Sender<Verdict>>>,
    /// Room worker tasks spawned and not ended yet (see [`WorkerSlot`]).
    workers_alive: AtomicUsize,
    /// How far acknowledgements of inputs are known stored, for pruning verdicts.
    acked: Mutex<AckedInputs>,
}

impl Inner {
    fn acked(&self) -> MutexGuard<'_, AckedInputs> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts one room worker task in [`Inner::workers_alive`] from its spawn
/// until its future is dropped: when it ends, panics, or is never polled.
struct WorkerSlot(Arc<Inner>);

impl WorkerSlot {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.workers_alive.fetch_add(1, Ordering::SeqCst);
        Self(inner.clone())
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        self.0.workers_alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One input key's live worker: the sending side of its queue (the only
/// one), its task, and when it was last handed a record.
struct Worker {
    queue: mpsc::Sender<Record>,
    task: JoinHandle<()>,
    last_used: Instant,
}

/// The dispatcher's room workers, owned by [`Roomserver::consume`] alone.
///
/// Invariant: one key's records are processed in log order by one worker at
/// a time. A key has at most one live worker, which gets every record of the
/// key the dispatcher reads while it lives, in read order. Retiring a worker
/// drops its queue's sender: it finishes what it holds (a batch in flight,
/// anything still queued), then `recv_many` returns 0 and its task ends. Its
/// handle waits in `retiring` until the key's next record; the worker spawned
/// for that record takes the handle and awaits it before taking anything from
/// its own queue. So workers of one key form a chain, each starting after the
/// one before it ended, whatever the timing. (The new worker waits, not the
/// dispatcher, so other rooms are not held up by the old worker's batch.)
/// The idle test below decides only when to retire, never whether order holds.
struct Workers {
    live: HashMap<String, Worker>,
    /// Retired workers' tasks by key, until the key's next worker takes them
    /// or a sweep finds them ended.
    retiring: HashMap<String, JoinHandle<()>>,
    /// How long a worker with an empty queue goes unused before it is retired.
    idle: Duration,
}

impl Workers {
    fn new(idle: Duration) -> Self {
        Self { live: HashMap::new(), retiring: HashMap::new(), idle }
    }

    /// Hands `record` to its key's worker, spawning one (after its retired
    /// predecessor, if any) when the key has none. Fails when the worker
    /// stopped taking records (it panicked).
    async fn dispatch(&mut self, server: &Roomserver, tidy: &Tidy, record: Record) -> Result<(), ()> {
        let key = record.key.clone();
        let worker = match self.live.entry(key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let predecessor = self.retiring.remove(entry.key());
                let (tx, rx) = mpsc::channel(ROOM_QUEUE_LEN_MAX);
                let slot = WorkerSlot::new(&server.inner);
                let task = tokio::spawn(server.clone().work(rx, tidy.clone(), predecessor, slot));
                entry.insert(Worker { queue: tx, task, last_used: Instant::now() })
            }
        };
        worker.queue.send(record).await.map_err(drop)?;
        worker.last_used = Instant::now();
        // A v12 room creation's key is used by one input only: its worker can
        // go as soon as it holds that input (were the key to come again, the
        // chain above would still keep order).
        if key.starts_with(NEW_ROOM_KEY_PREFIX) {
            self.retire(&key);
        }
        Ok(())
    }

    /// Whether any worker lives or is retiring (a sweep would find work).
    fn any(&self) -> bool {
        !self.live.is_empty() || !self.retiring.is_empty()
    }

    /// Forgets retired workers that ended, and retires live ones whose queue
    /// is empty and that were not handed a record for `idle`.
    fn sweep(&mut self) {
        self.retiring.retain(|_, task| !task.is_finished());
        let idle: Vec<String> = self
            .live
            .iter()
            .filter(|(_, w)| w.queue.capacity() == w.queue.max_capacity() && w.last_used.elapsed() >= self.idle)
            .map(|(key, _)| key.clone())
            .collect();
        for key in idle {
            self.retire(&key);
        }
    }

    /// Drops `key`'s live worker's queue sender and keeps its task in `retiring`.
    fn retire(&mut self, key: &str) {
        if let Some(worker) = self.live.remove(key) {
            // A key in `retiring` has no live worker (spawning one takes the
            // handle), so nothing is overwritten here.
            let previous = self.retiring.insert(key.to_owned(), worker.task);
            debug_assert!(previous.is_none(), "a key had a live and a retiring worker");
        }
    }
}

fn fault(e: impl std::fmt::Display) -> RoomserverError {
    RoomserverError::Fault(e.to_string())
}

/// Published outbox rows to delete and input offsets to acknowledge, per batch.
type Tidy = Coalescer<(Vec<i64>, Vec<u64>)>;

/// Prefix of the log key of a v12 room creation (the room ID is not known yet).
const NEW_ROOM_KEY_PREFIX: &str = "new:";

/// The log key of an input: its room, so one room's inputs stay in order.
fn input_key(input: &InputRoomEvent) -> String {
    match &input.input {
        Input::Build(build) => match &build.target {
            Target::Room { room_id } => room_id.to_string(),
            Target::NewRoom { room_id: Some(room_id), .. } => room_id.to_string(),
            // A v12 room's ID is known only once its create event is built;
            // nothing else can be sent to it before, so it needs no order.
            Target::NewRoom { room_id: None, .. } => format!("{NEW_ROOM_KEY_PREFIX}{}", input.request_id),
        },
        Input::Pdu(pdu) => pdu.pdu.get("room_id").and_then(|r| r.as_str()).unwrap_or("pdu").to_owned(),
    }
}

impl Roomserver {
    /// Opens the room server on `pool` (running its migrations) and starts
    /// consuming `input.room_event` and publishing `output.room_event`.
    ///
    /// # Errors
    /// A migration or the log subscription fails.
    pub async fn start(pool: SqlitePool, log: Arc<dyn Log>, signer: Signer) -> Result<Self, RoomserverError> {
        Self::start_with(pool, log, signer, Duration::from_millis(ROOM_WORKER_IDLE_MS)).await
    }

    /// [`Self::start`], retiring a room's worker after `worker_idle` without
    /// inputs instead of [`ROOM_WORKER_IDLE_MS`] (tests choose their own).
    ///
    /// # Errors
    /// A migration or the log subscription fails.
    pub async fn start_with(
        pool: SqlitePool,
        log: Arc<dyn Log>,
        signer: Signer,
        worker_idle: Duration,
    ) -> Result<Self, RoomserverError> {
        pool.migrate("roomserver", MIGRATIONS).await.map_err(fault)?;
        let appender = log.appender(&pool);
        // Invariant: subscribed before any writer can publish, so the input
        // topic's backlog bound applies from the first record.
        let subscription = log.subscribe(neurite_log::INPUT_ROOM_EVENT, INPUT_SUBSCRIPTION).await.map_err(fault)?;
        // Read before this run processes anything: every verdict stored so
        // far is on a record at or below it.
        let legacy_offset = log.latest_offset(neurite_log::INPUT_ROOM_EVENT).await.map_err(fault)?;
        let inner = Inner {
            pool,
            log,
            appender,
            signer,
            waiters: Mutex::new(HashMap::new()),
            workers_alive: AtomicUsize::new(0),
            acked: Mutex::new(AckedInputs::new(legacy_offset)),
        };
        let server = Self { inner: Arc::new(inner) };
        // Invariant: outputs a crash left in the outbox are published before
        // any new input is processed, so each room's outputs stay in order.
        server.flush_outbox().await;
        tokio::spawn(server.clone().consume(subscription, worker_idle));
        if server.inner.appender.is_some() {
            tokio::spawn(prune_verdicts_periodically(Arc::downgrade(&server.inner)));
        }
        Ok(server)
    }

    /// Every input offset up to this one is acknowledged to the input log
    /// and stored, as far as this run knows; `None` before its first input,
    /// or once it stopped tracking. For tests and metrics.
    pub fn inputs_acknowledged_through(&self) -> Option<u64> {
        self.inner.acked().bound().map(|(through, _)| through)
    }

    /// Deletes the stored verdicts no redelivery can need any more that are
    /// at least `min_age` old, in writes of at most
    /// [`VERDICT_PRUNE_BATCH_MAX`]; returns how many it deleted. The room
    /// server runs it every [`VERDICT_PRUNE_INTERVAL_SECS`] with
    /// [`VERDICT_KEEP_SECS`].
    ///
    /// A verdict exists to answer its input's record if the input log
    /// delivers it again (at-least-once: after a crash between the verdict's
    /// commit and the stored acknowledgement). The log delivers again only
    /// records above the subscription's stored position, so a verdict on a
    /// record at or below it is never read again ([`AckedInputs`] knows a
    /// lower bound of that position). Its writer needs no row either: it was
    /// answered from memory before the input was acknowledged.
    ///
    /// Only when the input log lives in the room server's own database
    /// (`Log::appender`): the log stores positions without waiting for the
    /// disk, and these deletions commit after them on the same writer and
    /// write-ahead log, so a deletion that survives a power cut implies the
    /// position it relied on survived too. A log elsewhere promises no such
    /// order, so there verdicts are kept (nothing is deleted).
    ///
    /// # Errors
    /// A write fails (what was deleted before stays deleted).
    pub async fn prune_verdicts(&self, min_age: Duration) -> Result<u64, RoomserverError> {
        if self.inner.appender.is_none() {
            return Ok(0);
        }
        let Some((acked_through, legacy_offset)) = self.inner.acked().bound() else { return Ok(0) };
        let created_through = now_ms().saturating_sub(u64::try_from(min_age.as_millis()).unwrap_or(u64::MAX));
        let started = std::time::Instant::now();
        let mut deleted = 0;
        loop {
            let count = self
                .inner
                .pool
                .write_deferred(move |tx| {
                    tx.delete_input_verdicts(created_through, acked_through, legacy_offset, VERDICT_PRUNE_BATCH_MAX)
                })
                .await
                .map_err(fault)?;
            deleted += count as u64;
            if count < VERDICT_PRUNE_BATCH_MAX {
                break;
            }
        }
        if deleted > 0 {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(deleted, acked_through, elapsed_ms, "pruned verdicts");
        }
        Ok(deleted)
    }

    /// Room worker tasks alive now: one per room with recent inputs, plus
    /// retired ones finishing their last batch. For tests and metrics.
    pub fn worker_count(&self) -> usize {
        self.inner.workers_alive.load(Ordering::SeqCst)
    }

    /// Reads the input log and hands each record to its room's worker;
    /// between reads, retires workers idle for `worker_idle` (see [`Workers`]).
    async fn consume(self, mut subscription: Box<dyn neurite_log::Subscription>, worker_idle: Duration) {
        let acker = subscription.acker();
        let tidy = self.tidy(acker);
        // Invariant: one worker per key processes that key's records in log
        // order; different rooms proceed in parallel.
        let mut workers = Workers::new(worker_idle);
        let mut sweeps = tokio::time::interval((worker_idle / 2).max(Duration::from_millis(1)));
        sweeps.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Both branches are cancel-safe, so the one not taken loses
            // nothing: `Subscription::next` gives out no record when
            // cancelled, `Interval::tick` consumes no tick. Records are
            // dispatched below, outside the select, never cancelled midway.
            let next = tokio::select! {
                next = subscription.next(INPUT_BATCH_RECORDS_MAX) => next,
                // No worker, nothing to sweep: an idle server does not wake.
                _ = sweeps.tick(), if workers.any() => {
                    workers.sweep();
                    continue;
                }
            };
            let records = match next {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(error = %e, "input log failed; the room server stops consuming");
                    self.inner.acked().stop();
                    return;
                }
            };
            // Invariant: noted before the batch is dispatched, so before any
            // of its records can be acknowledged.
            if let Some(first) = records.first() {
                self.inner.acked().delivered(first.offset);
            }
            for record in records {
                if workers.dispatch(&self, &tidy, record).await.is_err() {
                    tracing::error!("a room worker stopped; the room server stops consuming");
                    self.inner.acked().stop();
                    return;
                }
            }
        }
    }

    /// Processes one room's inputs in order, every input queued so far in
    /// one transaction, once the key's previous worker (`predecessor`) ended;
    /// ends when its queue is closed and empty.
    async fn work(
        self,
        mut rx: mpsc::Receiver<Record>,
        tidy: Tidy,
        predecessor: Option<JoinHandle<()>>,
        _slot: WorkerSlot,
    ) {
        if let Some(predecessor) = predecessor {
            // Invariant: nothing of this key is processed while an earlier
            // worker of it may still be. A predecessor that panicked lost its
            // batch in flight (unacknowledged: redelivered at the next start),
            // like an input given up; the room goes on.
            if let Err(e) = predecessor.await {
                tracing::error!(error = %e, "a retired room worker failed");
            }
        }
        let mut records = Vec::new();
        while rx.recv_many(&mut records, ROOM_BATCH_INPUTS_MAX).await > 0 {
            self.work_batch(std::mem::take(&mut records), &tidy).await;
        }
    }

    /// Processes a batch of one room's inputs: commit, publish the outputs,
    /// answer the writers, then (off this room's path) clean up and ack.
    async fn work_batch(&self, records: Vec<Record>, tidy: &Tidy) {
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let mut inputs = Vec::with_capacity(records.len());
        for record in records {
            match serde_json::from_slice::<InputRoomEvent>(&record.payload) {
                Ok(input) => inputs.push((record.offset, input)),
                Err(e) => tracing::error!(error = %e, offset = record.offset, "undecodable input record skipped"),
            }
        }
        let (verdicts, entries, appended) = self.process_with_retries(inputs).await;
        // Invariant: an event's output is published before its writer hears
        // the verdict, so a reader that caught up with the output log has
        // seen it (read-your-writes).
        if let Some(appender) = &self.inner.appender {
            for outputs in appended {
                appender.committed(outputs);
            }
        }
        self.publish_until_done(&entries).await;
        {
            let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for (request_id, verdict) in verdicts {
                if let Some(waiter) = waiters.remove(&request_id) {
                    let _ = waiter.send(verdict);
                }
            }
        }
        // Inputs given up on are acknowledged too, so one bad record cannot
        // pin the log; their writers time out with an error. A crash before
        // these commits republishes the outputs (the log de-duplicates them)
        // and redelivers the inputs (their stored verdicts answer again).
        tidy.push((entries.iter().map(|(nid, _, _)| *nid).collect(), offsets));
    }

    /// The background clean-up after batches: published outbox rows are
    /// deleted and inputs acknowledged for many batches in one write each
    /// (gathered for `COALESCE_DELAY`), instead of two commits per batch.
    fn tidy(&self, acker: neurite_log::Acker) -> Tidy {
        let server = self.clone();
        Coalescer::start(move |rounds: Vec<(Vec<i64>, Vec<u64>)>| {
            let (server, acker) = (server.clone(), acker.clone());
            async move {
                let (nids, offsets): (Vec<Vec<i64>>, Vec<Vec<u64>>) = rounds.into_iter().unzip();
                let nids = nids.into_iter().flatten().collect();
                if let Err(e) = server.delete_outbox(nids).await {
                    tracing::warn!(error = %e, "deleting published outputs failed; they are published again at start");
                }
                // Offsets whose acknowledgement failed last time go again
                // (acknowledging twice is harmless), so pruning verdicts
                // learns they are stored.
                let mut all = server.inner.acked().take_retry();
                all.extend(offsets.into_iter().flatten());
                match acker.ack_all(&all).await {
                    Ok(()) => server.inner.acked().acknowledged(&all),
                    Err(e) => {
                        tracing::error!(error = %e, "acknowledging inputs failed");
                        match e {
                            neurite_log::LogError::Storage(_) => server.inner.acked().failed(all),
                            // Closed (replaced) or refused: this run no
                            // longer knows where the position is.
                            _ => server.inner.acked().stop(),
                        }
                    }
                }
            }
        })
    }

    /// [`Self::process`] until every input is decided: an input whose
    /// processing fails is retried with growing pauses while the database
    /// fails, then given up (the fault is logged, it gets no verdict).
    async fn process_with_retries(
        &self,
        mut inputs: Vec<OffsetInput>,
    ) -> (Vec<(String, Verdict)>, Vec<OutboxEntry>, Vec<Appended>) {
        let (mut verdicts, mut entries, mut appended) = (Vec::new(), Vec::new(), Vec::new());
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        while !inputs.is_empty() {
            let (done, mut outputs, failure) = match self.process(inputs.clone()).await {
                Ok(processed) => processed,
                Err(e) => (Vec::new(), Vec::new(), Some(e)),
            };
            appended.append(&mut outputs);
            if !done.is_empty() {
                (pause, attempt) = (Duration::from_millis(50), 1);
            }
            inputs.drain(..done.len());
            for (request_id, verdict, mut outputs) in done {
                verdicts.push((request_id, verdict));
                entries.append(&mut outputs);
            }
            let Some(e) = failure else { continue };
            if attempt < INPUT_ATTEMPTS_MAX {
                tracing::warn!(error = %e, attempt, "processing an input failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
                attempt += 1;
            } else {
                let (offset, input) = inputs.remove(0);
                tracing::error!(error = %e, request_id = %input.request_id, offset, "processing an input failed; giving up");
                (pause, attempt) = (Duration::from_millis(50), 1);
            }
        }
        (verdicts, entries, appended)
    }

    /// Runs inputs in order in one transaction, each all-or-nothing: its
    /// events, its verdict (for redeliveries) and its output records commit
    /// together. Stops at the first input that fails (its changes undone) and
    /// returns the ones done before it with that failure.
    async fn process(&self, inputs: Vec<OffsetInput>) -> Result<Processing, StorageError> {
        if let Some(appender) = &self.inner.appender {
            // The output topic's backlog bound, checked before the write
            // (appends inside it cannot wait).
            appender.ready(neurite_log::OUTPUT_ROOM_EVENT).await.map_err(|e| StorageError::Corrupt(e.to_string()))?;
        }
        let inner = self.inner.clone();
        self.inner
            .pool
            .write(move |tx| {
                let mut done = Vec::with_capacity(inputs.len());
                let mut appended = Vec::new();
                for (offset, input) in inputs {
                    match savepoint(tx, |tx| process_one(tx, &inner.signer, inner.appender.as_ref(), offset, &input)) {
                        Ok((verdict, (entries, outputs))) => {
                            appended.extend(outputs);
                            done.push((input.request_id, verdict, entries));
                        }
                        Err(e) => return Ok((done, appended, Some(e))),
                    }
                }
                Ok::<_, StorageError>((done, appended, None))
            })
            .await
    }

    /// Publishes outbox entries to `output.room_event` in order. The log
    /// de-duplicates by outbox NID, so publishing an entry again (after a
    /// crash between publishing and deleting) adds it once.
    async fn publish_entries(&self, entries: &[OutboxEntry]) -> Result<(), String> {
        let records = entries
            .iter()
            .map(|(nid, room_id, payload)| PublishRecord {
                key: room_id.clone(),
                payload: payload.clone(),
                dedup_id: Some(format!("roomserver-outbox-{nid}")),
            })
            .collect();
        self.inner.log.publish_batch(neurite_log::OUTPUT_ROOM_EVENT, records).await.map(drop).map_err(|e| e.to_string())
    }

    /// Deletes published outbox entries.
    async fn delete_outbox(&self, nids: Vec<i64>) -> Result<(), StorageError> {
        if nids.is_empty() {
            return Ok(());
        }
        self.inner
            .pool
            .write(move |tx| {
                let mut delete = tx.prepare_cached("DELETE FROM roomserver_outbox WHERE outbox_nid = ?1")?;
                for nid in &nids {
                    delete.execute([nid])?;
                }
                Ok::<_, StorageError>(())
            })
            .await
    }

    /// Publishes entries, retrying with growing pauses until the log takes
    /// them: a room's later outputs must not overtake these.
    async fn publish_until_done(&self, entries: &[OutboxEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(50);
        while let Err(e) = self.publish_entries(entries).await {
            tracing::error!(error = %e, "publishing outputs failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Publishes every output record a crash left in the outbox, in order.
    async fn flush_outbox(&self) {
        loop {
            let batch = self
                .inner
                .pool
                .read(|tx| {
                    let mut stmt = tx.prepare(
                        "SELECT outbox_nid, room_id, payload FROM roomserver_outbox ORDER BY outbox_nid LIMIT ?1",
                    )?;
                    let rows = stmt
                        .query_map([OUTBOX_BATCH_RECORDS_MAX as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<Vec<OutboxEntry>, _>>()?;
                    Ok::<_, StorageError>(rows)
                })
                .await;
            match batch {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => {
                    self.publish_until_done(&batch).await;
                    let nids = batch.iter().map(|(nid, _, _)| *nid).collect();
                    if let Err(e) = self.delete_outbox(nids).await {
                        tracing::error!(error = %e, "deleting published outputs failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Runs [`Roomserver::prune_verdicts`] every [`VERDICT_PRUNE_INTERVAL_SECS`]
/// with [`VERDICT_KEEP_SECS`], until the room server is dropped or stops
/// tracking acknowledgements. Holds it weakly, so it keeps nothing alive.
async fn prune_verdicts_periodically(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(VERDICT_PRUNE_INTERVAL_SECS));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate, before anything is acknowledged.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.acked().is_tracking() {
            return;
        }
        let server = Roomserver { inner };
        if let Err(e) = server.prune_verdicts(Duration::from_secs(VERDICT_KEEP_SECS)).await {
            tracing::warn!(error = %e, "pruning verdicts failed; the next pass tries again");
        }
    }
}

#[async_trait]
impl RoomserverInput for Roomserver {
    async fn submit(&self, input: Input) -> Result<Verdict, RoomserverError> {
        let request_id: String =
            rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(24).map(char::from).collect();
        let input = InputRoomEvent { request_id: request_id.clone(), input };
        let key = input_key(&input);
        let payload = serde_json::to_vec(&input).map_err(fault)?;
        // Invariant: the waiter exists before the input can be processed.
        let (tx, rx) = oneshot::channel();
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(request_id.clone(), tx);
        // Provisional: the writer answers nobody before the verdict, which
        // commits durably (and makes this record durable with it). No
        // de-duplication ID: this record is published once, and a
        // redelivered one is answered by its stored verdict (by request ID).
        let published = self.inner.log.publish_provisional(neurite_log::INPUT_ROOM_EVENT, &key, payload, None).await;
        if let Err(e) = published {
            self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&request_id);
            return Err(fault(e));
        }
        match tokio::time::timeout(Duration::from_millis(VERDICT_WAIT_MS_MAX), rx).await {
            Ok(Ok(verdict)) => Ok(verdict),
            _ => {
                self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&request_id);
                Err(RoomserverError::Timeout)
            }
        }
    }
}
