//! One open subscription: reading records, and acknowledging them from any task.
//!
//! The reader ([`SqliteSubscription`], `&mut` for `next`) and the ackers share
//! a [`SubscriptionShared`]. Its [`AckWindow`] knows which records were given
//! out and not yet acknowledged; the position is the offset below the first
//! of them. Before `ack` returns `Ok`, the position is written to
//! `log_subscriptions` if it is ahead of the stored one; acknowledgements
//! that arrive during a write are covered by the next one (group commit:
//! one write per wait, not per ack). Acknowledgements above a gap stay in
//! memory until the gap closes: a crash forgets them and the records are
//! delivered again, never lost.

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use neurite_storage::StorageError;
use neurite_storage::sqlite::SqlitePool;
use tokio::sync::{Notify, watch};

use super::{Topic, append, lock, to_offset};
use crate::api::{Acker, Acknowledge, LogError, Record, Subscription};
use crate::limits::{ACK_PRUNE_RECORDS_MAX, SUBSCRIPTION_BATCH_BYTES_MAX, SUBSCRIPTION_BATCH_RECORDS_MAX};

/// What one subscription handle gave out and what came back.
#[derive(Debug)]
pub(crate) struct AckWindow {
    /// Every record up to here is acknowledged (or was never given out
    /// because it does not exist).
    position: u64,
    /// Every offset up to here was considered by `next`.
    delivered: u64,
    /// Records given out and not acknowledged. Invariant: all are in
    /// `position + 1 ..= delivered`. Bounded by the backlog bound, since the
    /// position is at most that far behind the last published offset.
    outstanding: BTreeSet<u64>,
}

impl AckWindow {
    /// A window resuming after `position`.
    pub(crate) fn new(position: u64) -> Self {
        Self { position, delivered: position, outstanding: BTreeSet::new() }
    }

    /// Records that `offsets` were given out and that nothing else exists up
    /// to `through` (offsets in between were pruned or never used).
    pub(crate) fn deliver(&mut self, offsets: impl IntoIterator<Item = u64>, through: u64) {
        self.outstanding.extend(offsets);
        self.delivered = self.delivered.max(through);
    }

    /// Acknowledges `offset`; returns the new position if it moved.
    pub(crate) fn ack(&mut self, offset: u64) -> Result<Option<u64>, LogError> {
        if offset > self.delivered {
            return Err(LogError::NotDelivered { offset });
        }
        // Not outstanding: acknowledged before, or at or below the position.
        if !self.outstanding.remove(&offset) {
            return Ok(None);
        }
        let position = match self.outstanding.first() {
            Some(first_unacked) => first_unacked - 1,
            None => self.delivered,
        };
        if position > self.position {
            self.position = position;
            Ok(Some(position))
        } else {
            Ok(None)
        }
    }
}

/// The state a subscription handle shares with its ackers.
pub(crate) struct SubscriptionShared {
    topic: Arc<Topic>,
    name: String,
    pool: SqlitePool,
    /// Set (under the topic lock) when a newer handle or an unsubscribe replaced this one.
    closed: AtomicBool,
    /// Wakes a `next` waiting on a closed handle.
    closing: Notify,
    window: Mutex<AckWindow>,
    /// The position last written to `log_subscriptions`. Held across the
    /// write, so one write runs at a time and acks waiting for it find their
    /// position already covered.
    stored: tokio::sync::Mutex<u64>,
    /// A copy of `stored` readable without waiting for a write in flight.
    stored_hint: AtomicU64,
}

impl SubscriptionShared {
    /// A handle of subscription `name` resuming after its stored `position`.
    pub(crate) fn new(topic: Arc<Topic>, name: String, pool: SqlitePool, position: u64) -> Self {
        Self {
            topic,
            name,
            pool,
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            window: Mutex::new(AckWindow::new(position)),
            stored: tokio::sync::Mutex::new(position),
            stored_hint: AtomicU64::new(position),
        }
    }

    /// Marks the handle closed; call with the topic lock held.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Wakes a `next` waiting on this handle after [`Self::mark_closed`].
    pub(crate) fn wake_closed(&self) {
        self.closing.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Writes the position if `position` is not stored yet. Invariant: the
    /// stored position only grows (`MAX`), even if a cancelled write commits
    /// after a later one.
    async fn store(&self, position: u64) -> Result<(), LogError> {
        let mut stored = self.stored.lock().await;
        if *stored >= position {
            return Ok(());
        }
        // Take the newest position: it covers every ack that arrived while
        // this one waited for the lock.
        let newest = lock(&self.window).position;
        let (topic, name) = (self.topic.name.clone(), self.name.clone());
        // Deferred: a position lost in a power cut means records given
        // again, which consumers handle (at-least-once). The records every
        // subscription has now stored as acknowledged are deleted in the
        // same write (it is made anyway), so the log is pruned as it is
        // consumed instead of in a burst every maintenance pass. A power
        // cut keeps a prefix of the write-ahead log's commits, so a
        // deletion that survives kept the consumer's own rows, committed
        // before the acknowledgement, too.
        let kept = self.topic.clone();
        self.pool
            .write_deferred(move |tx| {
                tx.prepare_cached(
                    "UPDATE log_subscriptions SET acked_offset = MAX(acked_offset, ?3) WHERE topic = ?1 AND name = ?2",
                )?
                .execute((&topic, &name, newest as i64))?;
                let (_, upto, _) = super::prune_step(tx, &topic, ACK_PRUNE_RECORDS_MAX)?;
                // Before the commit, so even a cancelled store never leaves
                // memory a record the table lost (a failed commit only sends
                // readers of those records to the table).
                kept.forget_through(upto);
                Ok::<_, StorageError>(())
            })
            .await?;
        *stored = newest;
        self.stored_hint.store(newest, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl Acknowledge for SubscriptionShared {
    async fn ack(&self, offset: u64) -> Result<(), LogError> {
        self.ack_all(&[offset]).await
    }

    async fn ack_all(&self, offsets: &[u64]) -> Result<(), LogError> {
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        let (moved, position) = {
            let mut window = lock(&self.window);
            let mut moved = false;
            for offset in offsets {
                moved |= window.ack(*offset)?.is_some();
            }
            (moved, window.position)
        };
        if moved {
            {
                let mut state = lock(&self.topic.state);
                if self.is_closed() {
                    return Err(LogError::Closed);
                }
                if let Some(slot) = state.subscriptions.get_mut(&self.name) {
                    // Concurrent acks may get here out of order: keep the highest.
                    slot.position = slot.position.max(position);
                }
            }
            self.topic.space.notify_waiters();
        }
        // Also when this ack did not move the position: a position an earlier
        // ack failed to store is stored now, so `Ok` always means the
        // position is stored.
        if self.stored_hint.load(Ordering::SeqCst) >= position {
            return Ok(());
        }
        self.store(position).await
    }
}

/// The reading side of an open subscription on the SQLite log.
pub(crate) struct SqliteSubscription {
    shared: Arc<SubscriptionShared>,
    latest: watch::Receiver<u64>,
    /// Every offset up to here was given out (or does not exist).
    delivered: u64,
}

impl SqliteSubscription {
    /// Wraps `shared`, woken by `latest`, the topic's last committed offset.
    pub(crate) fn new(shared: Arc<SubscriptionShared>, latest: watch::Receiver<u64>) -> Self {
        let delivered = lock(&shared.window).delivered;
        Self { shared, latest, delivered }
    }

    /// Reads up to `max` records of the topic in `after + 1 ..= through`.
    async fn read(&self, after: u64, through: u64, max: usize) -> Result<Vec<Record>, LogError> {
        if let Some(records) = self.shared.topic.recall(after, through, max, SUBSCRIPTION_BATCH_BYTES_MAX) {
            return Ok(records);
        }
        let topic = self.shared.topic.name.clone();
        let records = self
            .shared
            .pool
            .read(move |tx| {
                let Some(nid) = append::topic_nid(tx, &topic)? else { return Ok(Vec::new()) };
                let mut statement = tx.prepare_cached(&format!(
                    "SELECT offset, key, payload FROM {} WHERE offset > ?1 AND offset <= ?2 ORDER BY offset LIMIT ?3",
                    append::records_table(nid)
                ))?;
                let mut rows = statement.query((after as i64, through as i64, max as i64))?;
                let mut records = Vec::new();
                let mut bytes = 0;
                while let Some(row) = rows.next()? {
                    let payload: Vec<u8> = row.get(2)?;
                    bytes += payload.len();
                    if !records.is_empty() && bytes > SUBSCRIPTION_BATCH_BYTES_MAX {
                        break;
                    }
                    records.push(Record { offset: to_offset(row.get(0)?)?, key: row.get(1)?, payload });
                }
                Ok::<_, StorageError>(records)
            })
            .await?;
        Ok(records)
    }
}

#[async_trait]
impl Subscription for SqliteSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let max = max.clamp(1, SUBSCRIPTION_BATCH_RECORDS_MAX);
        loop {
            let mut closing = pin!(self.shared.closing.notified());
            closing.as_mut().enable();
            if self.shared.is_closed() {
                return Err(LogError::Closed);
            }
            // Invariant: checked against `delivered`, not only on change, so
            // a call cancelled after marking the value seen loses nothing.
            let latest = *self.latest.borrow_and_update();
            if latest > self.delivered {
                let records = self.read(self.delivered, latest, max).await?;
                // Nothing recorded before here, so cancelling the read gives out nothing.
                let through = records.last().map_or(latest, |r| r.offset);
                lock(&self.shared.window).deliver(records.iter().map(|r| r.offset), through);
                self.delivered = through;
                if !records.is_empty() {
                    return Ok(records);
                }
                // Only pruned offsets (after an unsubscribe): look again.
                continue;
            }
            tokio::select! {
                changed = self.latest.changed() => changed.map_err(|_| LogError::Closed)?,
                () = closing => return Err(LogError::Closed),
            }
        }
    }

    fn acker(&self) -> Acker {
        Acker::new(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_moves_only_over_contiguous_acks() {
        let mut window = AckWindow::new(0);
        window.deliver([1, 2, 3], 3);
        assert_eq!(window.ack(2).unwrap(), None);
        assert_eq!(window.ack(3).unwrap(), None);
        assert_eq!(window.ack(1).unwrap(), Some(3));
        assert_eq!(window.ack(1).unwrap(), None, "a repeated ack is a no-op");
    }

    #[test]
    fn pruned_offsets_count_as_acknowledged() {
        let mut window = AckWindow::new(0);
        window.deliver([5, 9], 10);
        assert_eq!(window.ack(5).unwrap(), Some(8));
        assert_eq!(window.ack(9).unwrap(), Some(10));
    }

    #[test]
    fn acking_an_offset_never_given_out_is_refused() {
        let mut window = AckWindow::new(4);
        window.deliver([5], 5);
        assert!(matches!(window.ack(6), Err(LogError::NotDelivered { offset: 6 })));
        assert_eq!(window.ack(3).unwrap(), None);
    }
}
