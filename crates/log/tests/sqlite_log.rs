//! The SQLite log through its public API, on a real database file.

use std::time::Duration;

use neurite_log::limits::RECORD_BYTES_MAX;
use neurite_log::{INPUT_ROOM_EVENT, Log, LogError, OUTPUT_ROOM_EVENT, PublishRecord, Record, SqliteLog, Subscription};
use neurite_storage::sqlite::SqlitePool;
use tempfile::TempDir;
use tokio::time::timeout;

/// Long enough that an operation that should complete always does.
const DONE: Duration = Duration::from_secs(10);
/// How long an operation that should be blocked is watched to stay blocked.
const PENDING: Duration = Duration::from_millis(200);

const TOPIC: &str = INPUT_ROOM_EVENT;

fn pool(dir: &TempDir) -> SqlitePool {
    SqlitePool::open(&dir.path().join("neurite.db")).expect("open the database")
}

async fn open(dir: &TempDir) -> SqliteLog {
    SqliteLog::open(pool(dir)).await.expect("open the log")
}

async fn publish(log: &SqliteLog, key: &str, payload: &str) -> u64 {
    log.publish(TOPIC, key, payload.as_bytes().to_vec(), None).await.expect("publish")
}

/// Publishes the payloads "1" to "n" under one key.
async fn publish_numbered(log: &SqliteLog, n: u32) {
    for i in 1..=n {
        publish(log, "!a:x", &i.to_string()).await;
    }
}

/// The next batch, failing the test instead of hanging.
async fn next(sub: &mut Box<dyn Subscription>, max: usize) -> Vec<Record> {
    timeout(DONE, sub.next(max)).await.expect("next returns").expect("next succeeds")
}

/// Asserts that `sub` has nothing to give: `next` stays pending.
async fn assert_nothing_new(sub: &mut Box<dyn Subscription>) {
    assert!(timeout(PENDING, sub.next(10)).await.is_err(), "next should wait for a new record");
}

fn offsets(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

fn payloads(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8(r.payload.clone()).expect("utf-8")).collect()
}

#[tokio::test]
async fn records_come_in_publish_order_overall_and_per_key() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    for (i, key) in ["!a:x", "!b:x", "!a:x", "!b:x", "!a:x"].into_iter().enumerate() {
        assert_eq!(publish(&log, key, &format!("{key}-{i}")).await, i as u64 + 1, "offsets are 1, 2, 3, ...");
    }
    let records = next(&mut sub, 100).await;
    assert_eq!(offsets(&records), [1, 2, 3, 4, 5]);
    let room_a: Vec<_> = records.iter().filter(|r| r.key == "!a:x").map(|r| r.offset).collect();
    assert_eq!(room_a, [1, 3, 5]);
    assert_eq!(payloads(&records)[..2], ["!a:x-0", "!b:x-1"]);
}

#[tokio::test]
async fn next_returns_at_most_max_and_continues_after_the_batch() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    for i in 0..5 {
        publish(&log, "!a:x", &i.to_string()).await;
    }
    assert_eq!(offsets(&next(&mut sub, 2).await), [1, 2]);
    assert_eq!(offsets(&next(&mut sub, 0).await), [3], "max 0 is read as 1");
    assert_eq!(offsets(&next(&mut sub, 10).await), [4, 5]);
    assert_nothing_new(&mut sub).await;
}

#[tokio::test]
async fn concurrent_publishes_get_distinct_offsets_and_each_key_keeps_its_order() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    // Ten rooms, each publishing 20 records in sequence, all at once: the
    // pool's writer thread commits them in shared batches.
    let mut tasks = Vec::new();
    for room in 0..10 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                log.publish(TOPIC, &format!("!{room}:x"), i.to_string().into_bytes(), None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        timeout(DONE, task).await.unwrap().unwrap();
    }
    let mut records = Vec::new();
    while records.len() < 200 {
        records.extend(next(&mut sub, 256).await);
    }
    assert_eq!(offsets(&records), (1..=200).collect::<Vec<_>>());
    for room in 0..10 {
        let key = format!("!{room}:x");
        let order: Vec<String> = payloads(&records.iter().filter(|r| r.key == key).cloned().collect::<Vec<_>>());
        assert_eq!(order, (0..20).map(|i| i.to_string()).collect::<Vec<_>>(), "room {room} in publish order");
    }
}

#[tokio::test]
async fn two_subscriptions_each_see_every_record() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut first = log.subscribe(TOPIC, "first").await.unwrap();
    publish(&log, "!a:x", "one").await;
    publish(&log, "!b:x", "two").await;
    // A subscription opened later starts at the beginning of the topic.
    let mut second = log.subscribe(TOPIC, "second").await.unwrap();
    assert_eq!(payloads(&next(&mut first, 10).await), ["one", "two"]);
    assert_eq!(payloads(&next(&mut second, 10).await), ["one", "two"]);
    first.ack(1).await.unwrap();
    first.ack(2).await.unwrap();
    assert_nothing_new(&mut first).await;
    publish(&log, "!a:x", "three").await;
    assert_eq!(payloads(&next(&mut first, 10).await), ["three"]);
    assert_eq!(payloads(&next(&mut second, 10).await), ["three"]);
}

#[tokio::test]
async fn topics_are_independent() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut input = log.subscribe(INPUT_ROOM_EVENT, "reader").await.unwrap();
    let mut output = log.subscribe(OUTPUT_ROOM_EVENT, "reader").await.unwrap();
    assert_eq!(log.publish(INPUT_ROOM_EVENT, "!a:x", b"in".to_vec(), None).await.unwrap(), 1);
    assert_eq!(log.publish(OUTPUT_ROOM_EVENT, "!a:x", b"out".to_vec(), None).await.unwrap(), 1);
    assert_eq!(payloads(&next(&mut input, 10).await), ["in"]);
    assert_eq!(payloads(&next(&mut output, 10).await), ["out"]);
}

#[tokio::test]
async fn a_repeated_dedup_id_returns_the_earlier_offset_and_appends_nothing() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    let first = log.publish(TOPIC, "!a:x", b"event".to_vec(), Some("$event1")).await.unwrap();
    publish(&log, "!a:x", "other").await;
    let again = log.publish(TOPIC, "!a:x", b"event, retried".to_vec(), Some("$event1")).await.unwrap();
    assert_eq!((first, again), (1, 1));
    // The same ID on another topic is another record.
    assert_eq!(log.publish(OUTPUT_ROOM_EVENT, "!a:x", b"x".to_vec(), Some("$event1")).await.unwrap(), 1);
    assert_eq!(publish(&log, "!a:x", "next").await, 3, "the duplicate used no offset");
    assert_eq!(payloads(&next(&mut sub, 10).await), ["event", "other", "next"]);
}

#[tokio::test]
async fn out_of_order_acks_keep_the_position_below_the_first_gap() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    publish_numbered(&log, 3).await;
    assert_eq!(offsets(&next(&mut sub, 10).await), [1, 2, 3]);
    sub.ack(3).await.unwrap();
    sub.ack(2).await.unwrap();
    drop(sub);

    // Restarting the consumer redelivers 1 (not acknowledged) and 2 and 3
    // (acknowledged above the gap): the position stayed 0.
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_eq!(offsets(&next(&mut sub, 10).await), [1, 2, 3]);
    drop(sub);
    drop(log);
    // So does restarting the whole process.
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_eq!(offsets(&next(&mut sub, 10).await), [1, 2, 3]);
    sub.ack(2).await.unwrap();
    sub.ack(3).await.unwrap();
    sub.ack(1).await.unwrap();
    drop(sub);

    // Everything acknowledged: nothing old comes back, only what is new.
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_nothing_new(&mut sub).await;
    publish(&log, "!a:x", "4").await;
    assert_eq!(offsets(&next(&mut sub, 10).await), [4]);
}

#[tokio::test]
async fn ackers_acknowledge_from_worker_tasks_while_the_reader_waits() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    for i in 1..=40 {
        publish(&log, &format!("!{}:x", i % 4), &i.to_string()).await;
    }
    let records = next(&mut sub, 100).await;
    assert_eq!(records.len(), 40);
    // The reader waits in `next` on its own task while one worker per key
    // acknowledges that key's records: no lock around the subscription.
    let ackers: Vec<_> = (0..4).map(|_| sub.acker()).collect();
    let reader = tokio::spawn(async move { sub.next(10).await });
    let mut workers = Vec::new();
    for (room, acker) in ackers.into_iter().enumerate() {
        let mine: Vec<u64> = records.iter().filter(|r| r.key == format!("!{room}:x")).map(|r| r.offset).collect();
        workers.push(tokio::spawn(async move {
            for offset in mine {
                acker.ack(offset).await.unwrap();
            }
        }));
    }
    for worker in workers {
        timeout(DONE, worker).await.unwrap().unwrap();
    }
    publish(&log, "!0:x", "41").await;
    let more = timeout(DONE, reader).await.expect("the reader wakes").unwrap().unwrap();
    assert_eq!(offsets(&more), [41]);
    drop(log);
    // All 40 acknowledgements were stored: a restart redelivers only 41.
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_eq!(offsets(&next(&mut sub, 100).await), [41]);
}

#[tokio::test]
async fn acknowledging_an_offset_never_given_out_is_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    publish(&log, "!a:x", "1").await;
    publish(&log, "!a:x", "2").await;
    assert_eq!(offsets(&next(&mut sub, 1).await), [1]);
    assert!(matches!(sub.ack(2).await, Err(LogError::NotDelivered { offset: 2 })));
    sub.ack(1).await.unwrap();
    sub.ack(1).await.expect("a second ack of the same record is a no-op");
}

#[tokio::test]
async fn a_waiting_next_wakes_when_another_task_publishes() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    let waiting = tokio::spawn(async move { sub.next(10).await });
    let publisher = log.clone();
    tokio::spawn(async move { publisher.publish(TOPIC, "!a:x", b"wake".to_vec(), None).await }).await.unwrap().unwrap();
    let records = timeout(DONE, waiting).await.expect("next wakes").unwrap().unwrap();
    assert_eq!(payloads(&records), ["wake"]);
}

#[tokio::test]
async fn publish_waits_while_the_backlog_is_full_until_an_ack() {
    let dir = TempDir::new().unwrap();
    let log = SqliteLog::with_backlog_max(pool(&dir), 3).await.unwrap();
    let mut sub = log.subscribe(TOPIC, "slow").await.unwrap();
    for i in 1..=3 {
        assert_eq!(timeout(DONE, log.publish(TOPIC, "!a:x", vec![i], None)).await.unwrap().unwrap(), u64::from(i));
    }
    let fourth = tokio::spawn({
        let log = log.clone();
        async move { log.publish(TOPIC, "!a:x", vec![4], None).await }
    });
    let mut fourth = Box::pin(fourth);
    assert!(timeout(PENDING, &mut fourth).await.is_err(), "the fourth publish waits for room");
    assert_eq!(offsets(&next(&mut sub, 10).await), [1, 2, 3]);
    assert!(timeout(PENDING, &mut fourth).await.is_err(), "reading alone makes no room");
    sub.ack(2).await.unwrap();
    assert!(timeout(PENDING, &mut fourth).await.is_err(), "an ack above a gap makes no room");
    sub.ack(1).await.unwrap();
    assert_eq!(timeout(DONE, fourth).await.expect("the ack makes room").unwrap().unwrap(), 4);
}

#[tokio::test]
async fn unsubscribing_a_stalled_subscription_releases_the_backlog() {
    let dir = TempDir::new().unwrap();
    let log = SqliteLog::with_backlog_max(pool(&dir), 2).await.unwrap();
    let mut stalled = log.subscribe(TOPIC, "stalled").await.unwrap();
    publish(&log, "!a:x", "1").await;
    publish(&log, "!a:x", "2").await;
    let third = tokio::spawn({
        let log = log.clone();
        async move { log.publish(TOPIC, "!a:x", vec![3], None).await }
    });
    let mut third = Box::pin(third);
    assert!(timeout(PENDING, &mut third).await.is_err());
    log.unsubscribe(TOPIC, "stalled").await.unwrap();
    assert_eq!(timeout(DONE, third).await.unwrap().unwrap().unwrap(), 3);
    assert!(matches!(stalled.next(10).await, Err(LogError::Closed)), "the removed handle is closed");
    // Without subscriptions the topic has no bound.
    for i in 4..=10 {
        assert_eq!(publish(&log, "!a:x", &i.to_string()).await, i);
    }
}

#[tokio::test]
async fn a_new_handle_with_the_same_name_closes_the_old_one() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut old = log.subscribe(TOPIC, "reader").await.unwrap();
    publish(&log, "!a:x", "1").await;
    assert_eq!(offsets(&next(&mut old, 10).await), [1]);
    let old_acker = old.acker();
    let waiting = tokio::spawn(async move { old.next(10).await });
    let mut new = log.subscribe(TOPIC, "reader").await.unwrap();
    let woken = timeout(DONE, waiting).await.expect("the waiting next wakes").unwrap();
    assert!(matches!(woken, Err(LogError::Closed)));
    assert!(matches!(old_acker.ack(1).await, Err(LogError::Closed)));
    assert_eq!(offsets(&next(&mut new, 10).await), [1], "the new handle gets what the old one never acknowledged");
}

#[tokio::test]
async fn records_and_positions_survive_closing_and_reopening_the_database() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(&dir).await;
        let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
        let mut other = log.subscribe(TOPIC, "other").await.unwrap();
        for i in 1..=4 {
            log.publish(TOPIC, "!a:x", i.to_string().into_bytes(), Some(&format!("$e{i}"))).await.unwrap();
        }
        assert_eq!(offsets(&next(&mut sub, 2).await), [1, 2]);
        sub.ack(1).await.unwrap();
        sub.ack(2).await.unwrap();
        assert_eq!(offsets(&next(&mut other, 1).await), [1]);
        other.ack(1).await.unwrap();
    }
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    let mut other = log.subscribe(TOPIC, "other").await.unwrap();
    assert_eq!(payloads(&next(&mut sub, 10).await), ["3", "4"]);
    assert_eq!(payloads(&next(&mut other, 10).await), ["2", "3", "4"]);
    // Offsets continue, and dedup IDs are still known.
    assert_eq!(log.publish(TOPIC, "!a:x", b"again".to_vec(), Some("$e2")).await.unwrap(), 2);
    assert_eq!(publish(&log, "!a:x", "5").await, 5);
}

/// The offsets `TOPIC` still holds, as a new subscription sees them (it
/// starts at the oldest record held); the probe subscription is removed
/// again, so it holds nothing back.
async fn held(log: &SqliteLog) -> Vec<u64> {
    let mut probe = log.subscribe(TOPIC, "probe").await.unwrap();
    let held = match timeout(PENDING, probe.next(100)).await {
        Ok(records) => offsets(&records.unwrap()),
        Err(_) => Vec::new(),
    };
    drop(probe);
    log.unsubscribe(TOPIC, "probe").await.unwrap();
    held
}

#[tokio::test]
async fn acknowledging_prunes_only_what_every_subscription_acknowledged() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    publish_numbered(&log, 3).await;
    assert_eq!(log.prune(TOPIC).await.unwrap(), 0, "without subscriptions records are kept");
    let mut fast = log.subscribe(TOPIC, "fast").await.unwrap();
    let mut slow = log.subscribe(TOPIC, "slow").await.unwrap();
    for offset in offsets(&next(&mut fast, 10).await) {
        fast.ack(offset).await.unwrap();
    }
    assert_eq!(held(&log).await, [1, 2, 3], "the slow subscription still needs every record");
    assert_eq!(offsets(&next(&mut slow, 10).await), [1, 2, 3]);
    // The write that stores an acknowledged position also deletes what
    // every subscription has now acknowledged.
    slow.ack(1).await.unwrap();
    assert_eq!(held(&log).await, [2, 3]);
    slow.ack(2).await.unwrap();
    slow.ack(3).await.unwrap();
    assert_eq!(held(&log).await, Vec::<u64>::new());
    assert_eq!(log.prune(TOPIC).await.unwrap(), 0, "nothing is left for the maintenance pass");
    // Offsets are never reused, even with every record pruned.
    assert_eq!(publish(&log, "!a:x", "4").await, 4);
    // A new subscription starts at the oldest record still held.
    let mut late = log.subscribe(TOPIC, "late").await.unwrap();
    let records = next(&mut late, 10).await;
    assert_eq!(offsets(&records), [4]);
    late.ack(4).await.unwrap();
    drop(late);
    let mut late = log.subscribe(TOPIC, "late").await.unwrap();
    assert_nothing_new(&mut late).await;
}

#[tokio::test]
async fn prune_deletes_what_a_departed_subscription_held_back() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut fast = log.subscribe(TOPIC, "fast").await.unwrap();
    let slow = log.subscribe(TOPIC, "slow").await.unwrap();
    publish_numbered(&log, 3).await;
    for offset in offsets(&next(&mut fast, 10).await) {
        fast.ack(offset).await.unwrap();
    }
    assert_eq!(held(&log).await, [1, 2, 3], "the slow subscription acknowledged nothing");
    // Once it is gone, no acknowledgement comes to prune what it held back:
    // the maintenance pass does, by the positions still stored.
    drop(slow);
    log.unsubscribe(TOPIC, "slow").await.unwrap();
    assert_eq!(log.prune(TOPIC).await.unwrap(), 3);
    assert_eq!(held(&log).await, Vec::<u64>::new());
}

#[tokio::test]
async fn offsets_continue_after_a_restart_with_every_record_pruned() {
    let dir = TempDir::new().unwrap();
    {
        let log = open(&dir).await;
        let mut reader = log.subscribe(TOPIC, "reader").await.unwrap();
        publish_numbered(&log, 3).await;
        for offset in offsets(&next(&mut reader, 10).await) {
            reader.ack(offset).await.unwrap();
        }
        assert_eq!(log.prune(TOPIC).await.unwrap(), 0, "acknowledging pruned them");
        assert_eq!(held(&log).await, Vec::<u64>::new());
    }
    let log = open(&dir).await;
    assert_eq!(log.latest_offset(TOPIC).await.unwrap(), 3);
    assert_eq!(publish(&log, "!a:x", "4").await, 4);
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let at_limit = log.publish(TOPIC, "!a:x", vec![0; RECORD_BYTES_MAX], None).await;
    assert_eq!(at_limit.unwrap(), 1);
    let over = log.publish(TOPIC, "!a:x", vec![0; RECORD_BYTES_MAX + 1], None).await;
    assert!(matches!(over, Err(LogError::RecordTooLarge { bytes, max }) if bytes == max + 1));
    assert_eq!(publish(&log, "!a:x", "small").await, 2, "the refused record used no offset");
}

#[tokio::test]
async fn bad_names_keys_and_dedup_ids_are_refused() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let invalid = |result: Result<u64, LogError>| matches!(result, Err(LogError::Invalid { .. }));
    assert!(invalid(log.publish("", "k", vec![], None).await));
    assert!(invalid(log.publish("Input Room", "k", vec![], None).await));
    assert!(invalid(log.publish(TOPIC, &"k".repeat(256), vec![], None).await));
    assert!(invalid(log.publish(TOPIC, "k", vec![], Some("")).await));
    assert!(matches!(log.subscribe(TOPIC, "room.server").await.err(), Some(LogError::Invalid { .. })));
    assert!(matches!(log.subscribe(TOPIC, "").await.err(), Some(LogError::Invalid { .. })));
}

#[tokio::test]
async fn a_batch_publish_keeps_order_and_dedup_and_ack_all_stores_the_position_once() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    let record = |i: usize, dedup: Option<&str>| PublishRecord {
        key: "!a:x".into(),
        payload: format!("r{i}").into_bytes(),
        dedup_id: dedup.map(str::to_owned),
    };
    let batch = (0..5).map(|i| record(i, Some(&format!("d{i}")))).collect();
    assert_eq!(log.publish_batch(TOPIC, batch).await.unwrap(), [1, 2, 3, 4, 5]);
    // Published again (a retry after a crash): nothing new, the same offsets.
    let again = (0..5).map(|i| record(i, Some(&format!("d{i}")))).chain([record(5, None)]).collect();
    assert_eq!(log.publish_batch(TOPIC, again).await.unwrap(), [1, 2, 3, 4, 5, 6]);
    let records = next(&mut sub, 100).await;
    assert_eq!(payloads(&records), ["r0", "r1", "r2", "r3", "r4", "r5"]);

    // Acknowledged as one batch, out of order: the position covers all six.
    sub.acker().ack_all(&[3, 1, 2, 6, 5, 4]).await.unwrap();
    drop(sub);
    drop(log);
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_nothing_new(&mut sub).await;
    publish(&log, "!a:x", "r6").await;
    assert_eq!(payloads(&next(&mut sub, 100).await), ["r6"]);
}

#[tokio::test]
async fn a_batch_larger_than_the_backlog_bound_commits_what_fits_and_waits_for_acks() {
    let dir = TempDir::new().unwrap();
    let log = SqliteLog::with_backlog_max(pool(&dir), 2).await.unwrap();
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    let batch = (0..5_u8).map(|i| PublishRecord { key: "!a:x".into(), payload: vec![i], dedup_id: None }).collect();
    let publishing = tokio::spawn({
        let log = log.clone();
        async move { log.publish_batch(TOPIC, batch).await }
    });
    // The reader sees the first two before the batch is done, and each ack
    // lets the rest in, in order.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let records = next(&mut sub, 10).await;
        for record in &records {
            sub.ack(record.offset).await.unwrap();
        }
        seen.extend(records.into_iter().map(|r| r.payload[0]));
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    assert_eq!(timeout(DONE, publishing).await.unwrap().unwrap().unwrap(), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_provisional_publish_is_delivered_in_order_with_durable_ones() {
    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    publish(&log, "!a:x", "durable").await;
    let offset = log.publish_provisional(TOPIC, "!a:x", b"provisional".to_vec(), Some("p1")).await.unwrap();
    assert_eq!(offset, 2);
    // Its de-duplication ID holds like any other's.
    assert_eq!(log.publish_provisional(TOPIC, "!a:x", b"again".to_vec(), Some("p1")).await.unwrap(), 2);
    publish(&log, "!a:x", "after").await;
    assert_eq!(payloads(&next(&mut sub, 10).await), ["durable", "provisional", "after"]);
    // And it is a committed record: it survives reopening the database.
    drop(sub);
    drop(log);
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    assert_eq!(payloads(&next(&mut sub, 10).await), ["durable", "provisional", "after"]);
}

#[tokio::test]
async fn an_appender_puts_records_in_the_writers_own_transaction() {
    let dir = TempDir::new().unwrap();
    let pool = pool(&dir);
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let other = SqlitePool::open(&dir.path().join("other.db")).unwrap();
    assert!(log.appender(&other).is_none(), "a log in another database gives no appender");
    let appender = log.appender(&pool).expect("the log's own pool gets an appender");
    let mut sub = log.subscribe(OUTPUT_ROOM_EVENT, "reader").await.unwrap();
    let record = |p: &str| PublishRecord { key: "!a:x".into(), payload: p.as_bytes().to_vec(), dedup_id: None };

    // A write that fails undoes its records with its own rows: the offsets
    // are given back to the next append.
    appender.ready(OUTPUT_ROOM_EVENT).await.unwrap();
    let failed = pool
        .write({
            let (appender, record) = (appender.clone(), record("undone"));
            move |tx| {
                appender
                    .append(tx, OUTPUT_ROOM_EVENT, vec![record])
                    .map_err(|e| neurite_storage::StorageError::Corrupt(e.to_string()))?;
                Err::<(), _>(neurite_storage::StorageError::Corrupt("the writer's own rows failed".into()))
            }
        })
        .await;
    assert!(failed.is_err());
    let appended = pool
        .write({
            let (appender, records) = (appender.clone(), vec![record("one"), record("two")]);
            move |tx| {
                appender
                    .append(tx, OUTPUT_ROOM_EVENT, records)
                    .map_err(|e| neurite_storage::StorageError::Corrupt(e.to_string()))
            }
        })
        .await
        .unwrap();
    assert_eq!(appended.offsets().collect::<Vec<_>>(), [1, 2]);
    // Committed but not announced: readers are not woken yet.
    assert_nothing_new(&mut sub).await;
    appender.committed(appended);
    assert_eq!(payloads(&next(&mut sub, 10).await), ["one", "two"]);
    // Publishes continue after the appended offsets.
    assert_eq!(log.publish(OUTPUT_ROOM_EVENT, "!a:x", b"three".to_vec(), None).await.unwrap(), 3);
    assert_eq!(payloads(&next(&mut sub, 10).await), ["three"]);
}

#[tokio::test]
async fn readers_behind_the_records_kept_in_memory_read_the_rest_from_the_database() {
    use neurite_log::limits::RECENT_RECORDS_MAX;

    let dir = TempDir::new().unwrap();
    let log = open(&dir).await;
    let mut sub = log.subscribe(TOPIC, "reader").await.unwrap();
    // More than memory keeps: the oldest come from the database, the newest
    // from memory, and the reader sees one unbroken sequence either way.
    let total = RECENT_RECORDS_MAX * 2 + 10;
    for i in 0..total {
        publish(&log, if i % 2 == 0 { "!a:x" } else { "!b:x" }, &format!("r{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < total {
        let records = next(&mut sub, 100).await;
        assert!(records.len() <= 100);
        seen.extend(records);
    }
    assert_eq!(offsets(&seen), (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(payloads(&seen), (0..total).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(seen[1].key, "!b:x");
    assert_nothing_new(&mut sub).await;
}
