//! Applies `output.room_event` to the sync API's tables, a batch of records
//! per transaction with the offset it reached, then wakes the users concerned.

use std::collections::BTreeSet;
use std::sync::Arc;

use neurite_log::{Record, Subscription};
use neurite_roomserver::OutputRoomEvent;
use neurite_storage::StorageError;
use neurite_storage::coalesce::Coalescer;
use neurite_storage::sqlite::{SqlitePool, savepoint};
use rusqlite::Transaction;

use crate::notifier::Notifier;
use crate::storage::{self, EventRow};

/// Records taken from the output log, and applied in one transaction, at once.
const OUTPUT_BATCH_RECORDS_MAX: usize = 256;

/// Applies one record; returns the users to wake. A record at or below the
/// applied offset was applied before a crash and changes nothing.
fn apply(t: &Transaction<'_>, record: &Record) -> Result<BTreeSet<String>, StorageError> {
    let topic = neurite_log::OUTPUT_ROOM_EVENT;
    if record.offset <= storage::applied_offset(t, topic)? {
        return Ok(BTreeSet::new());
    }
    storage::set_applied_offset(t, topic, record.offset)?;
    let output: OutputRoomEvent = match serde_json::from_slice(&record.payload) {
        Ok(output) => output,
        Err(e) => {
            tracing::error!(error = %e, offset = record.offset, "undecodable output record skipped");
            return Ok(BTreeSet::new());
        }
    };
    let OutputRoomEvent::NewRoomEvent { event, adds_state_event_ids, removes_state_event_ids, txn, .. } = output;
    let txn = txn.as_ref().map(|t| (t.device_id.as_str(), t.txn_id.as_str()));
    let room_id = event["room_id"].as_str().ok_or_else(|| StorageError::Corrupt("event without room_id".into()))?;
    let room = storage::room_nid_or_insert(t, room_id)?;
    let Some(position) = storage::insert_event(t, room, &event, txn)? else { return Ok(BTreeSet::new()) };

    // Invariant: state advances only by the room server's adds and removes,
    // never by replaying state events in timeline order (seed 001).
    let mut removed_by_key = std::collections::BTreeMap::new();
    for id in &removes_state_event_ids {
        if let Some(EventRow { position: removed, event_type, state_key: Some(key), .. }) =
            storage::event_by_id(t, room, id.as_str())?
        {
            removed_by_key.insert((event_type, key), removed);
        }
    }
    let mut wake: BTreeSet<String> = BTreeSet::new();
    for id in &adds_state_event_ids {
        let Some(EventRow { position: added, event_type: ty, state_key: Some(key), json, .. }) =
            storage::event_by_id(t, room, id.as_str())?
        else {
            continue;
        };
        // Only a member event is parsed: its membership is in its content.
        let membership = if ty == "m.room.member" {
            let json = storage::parse(&json)?;
            Some(json["content"]["membership"].as_str().unwrap_or("leave").to_owned())
        } else {
            None
        };
        let state_key = (ty, key);
        let removed = removed_by_key.remove(&state_key);
        storage::apply_state_change(t, room, &state_key, Some((added, membership.as_deref())), removed, position)?;
        if let Some(membership) = &membership {
            let (_, key) = state_key;
            storage::insert_membership(t, &key, room, position, membership, added)?;
            wake.insert(key);
        }
    }
    for (key, removed) in removed_by_key {
        storage::apply_state_change(t, room, &key, None, Some(removed), position)?;
    }
    wake.extend(storage::joined_users(t, room)?);
    Ok(wake)
}

/// Consumes the output log until it fails, announcing on `applied` the
/// offset it has applied up to.
pub(crate) async fn run(
    pool: SqlitePool,
    mut subscription: Box<dyn Subscription>,
    notifier: Arc<Notifier>,
    applied: tokio::sync::watch::Sender<u64>,
) {
    let acker = subscription.acker();
    let acks = Coalescer::start(move |rounds: Vec<Vec<u64>>| {
        let acker = acker.clone();
        async move {
            let offsets: Vec<u64> = rounds.into_iter().flatten().collect();
            if let Err(e) = acker.ack_all(&offsets).await {
                tracing::error!(error = %e, "acknowledging output records failed");
            }
        }
    });
    loop {
        let records = match subscription.next(OUTPUT_BATCH_RECORDS_MAX).await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "output log failed; the sync API stops consuming");
                return;
            }
        };
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        // Deferred: these rows are rebuilt from the output log after a loss,
        // and the log keeps the records until a durable prune after them.
        let (applied_records, users, failure) = match pool.write_deferred(move |t| apply_batch(t, &records)).await {
            Ok(done) => done,
            Err(e) => (0, BTreeSet::new(), Some(e)),
        };
        if applied_records > 0 {
            let done = offsets[..applied_records].to_vec();
            let last = done[done.len() - 1];
            applied.send_replace(last);
            notifier.wake(users.iter().map(String::as_str));
            // The applied offset is committed with the rows; the log's own
            // position only lets it prune, so acknowledgements are gathered
            // and stored together rather than one commit per batch.
            acks.push(done);
        }
        if let Some(e) = failure {
            // Not acknowledged, and not applied: retried after a restart.
            tracing::error!(error = %e, offset = offsets[applied_records], "applying an output record failed");
            return;
        }
    }
}

/// Applies `records` in order inside one transaction, each under its own
/// savepoint; stops at the first that fails (its changes undone). Returns how
/// many were applied, the users to wake, and the failure.
fn apply_batch(
    t: &Transaction<'_>,
    records: &[Record],
) -> Result<(usize, BTreeSet<String>, Option<StorageError>), StorageError> {
    let mut users = BTreeSet::new();
    for (index, record) in records.iter().enumerate() {
        match savepoint(t, |t| apply(t, record)) {
            Ok(wake) => users.extend(wake),
            Err(e) => return Ok((index, users, Some(e))),
        }
    }
    Ok((records.len(), users, None))
}
