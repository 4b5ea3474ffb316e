//! The room server driven through its input directly: branches and merges
//! resolve with state resolution v2, rejected events never enter the state,
//! and stored state grows with the number of changes, not with room size.

use std::sync::Arc;

use neurite_log::{Log, SqliteLog};
use neurite_roomserver::{
    BuildEvents, Input, PduInput, ProtoEvent, Roomserver, RoomserverInput, RoomserverQuery, Signer, Target, Verdict,
};
use neurite_storage::packed::PackedJson;
use neurite_storage::sqlite::SqlitePool;
use ruma::canonical_json::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId, UserId, server_name};
use serde_json::{Value, json};

struct Harness {
    _dir: tempfile::TempDir,
    pool: SqlitePool,
    rs: Roomserver,
    signer: Signer,
}

async fn start() -> Harness {
    start_with_worker_idle(std::time::Duration::from_millis(neurite_roomserver::limits::ROOM_WORKER_IDLE_MS)).await
}

/// The test server's signer for the key in `der` (PKCS#8); a restarted room
/// server gets a signer for the same key.
fn signer(der: &[u8]) -> Signer {
    Signer {
        server_name: server_name!("test.local").to_owned(),
        key: Ed25519KeyPair::from_der(der, "test".into()).unwrap(),
    }
}

/// A room server on a fresh database whose room workers retire after `idle`
/// without inputs.
async fn start_with_worker_idle(idle: std::time::Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("rs.db")).unwrap();
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let key_der = Ed25519KeyPair::generate();
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log), signer(&key_der), idle).await.unwrap();
    Harness { _dir: dir, pool, rs, signer: signer(&key_der) }
}

fn user(name: &str) -> ruma::OwnedUserId {
    UserId::parse(format!("@{name}:test.local")).unwrap()
}

fn state(sender: &str, event_type: &str, key: &str, content: Value) -> ProtoEvent {
    ProtoEvent {
        event_type: event_type.into(),
        state_key: Some(key.into()),
        sender: user(sender),
        content,
        redacts: None,
    }
}

fn accepted(verdict: Verdict) -> (OwnedRoomId, Vec<OwnedEventId>) {
    match verdict {
        Verdict::Accepted { room_id, event_ids } => (room_id, event_ids),
        other => panic!("expected acceptance, got {other:?}"),
    }
}

/// A public v11 room made by alice (power 100), joined by bob.
async fn room(h: &Harness) -> OwnedRoomId {
    room_named(h, "!branch:test.local").await
}

/// [`room`] under the given room ID.
async fn room_named(h: &Harness, room_id: &str) -> OwnedRoomId {
    let room_id: OwnedRoomId = room_id.try_into().unwrap();
    let events = vec![
        state("alice", "m.room.create", "", json!({"room_version": "11"})),
        state("alice", "m.room.member", "@alice:test.local", json!({"membership": "join"})),
        state("alice", "m.room.power_levels", "", json!({"users": {"@alice:test.local": 100}})),
        state("alice", "m.room.join_rules", "", json!({"join_rule": "public"})),
        state("bob", "m.room.member", "@bob:test.local", json!({"membership": "join"})),
    ];
    let build = BuildEvents {
        target: Target::NewRoom { room_version: RoomVersionId::V11, room_id: Some(room_id.clone()) },
        events,
        txn: None,
    };
    accepted(h.rs.submit(Input::Build(build)).await.unwrap()).0
}

async fn current(h: &Harness, room: &OwnedRoomId, event_type: &str, key: &str) -> Option<Value> {
    h.rs.current_state_event(room, event_type, key).await.unwrap()
}

/// A signed PDU by alice with explicit prev events.
async fn pdu(
    h: &Harness,
    room: &OwnedRoomId,
    event_type: &str,
    key: Option<&str>,
    content: Value,
    prev: &[&OwnedEventId],
    ts: u64,
) -> (OwnedEventId, Value) {
    let mut auth = Vec::new();
    for (t, k) in [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", "@alice:test.local")] {
        auth.push(current(h, room, t, k).await.unwrap()["event_id"].clone());
    }
    let mut object = json!({
        "auth_events": auth,
        "content": content,
        "depth": 100,
        "origin_server_ts": ts,
        "prev_events": prev.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "room_id": room,
        "sender": "@alice:test.local",
        "type": event_type,
    });
    if let Some(key) = key {
        object["state_key"] = json!(key);
    }
    let mut object: CanonicalJsonObject = serde_json::from_value(object).unwrap();
    let rules = RoomVersionId::V11.rules().unwrap();
    let id = h.signer.sign(&rules, &mut object).unwrap();
    (id, serde_json::to_value(&object).unwrap())
}

/// The stored PDU of an event, and whether it was rejected.
async fn stored_pdu(h: &Harness, event_id: &str) -> (Value, bool) {
    let id = event_id.to_owned();
    let (PackedJson(json), rejected): (PackedJson, bool) = h
        .pool
        .read(move |tx| {
            tx.query_row("SELECT json, is_rejected FROM roomserver_events WHERE event_id = ?1", [&id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(neurite_storage::StorageError::from)
        })
        .await
        .unwrap();
    (serde_json::from_str(&json).unwrap(), rejected)
}

async fn submit_pdu(h: &Harness, pdu: Value) -> Verdict {
    h.rs.submit(Input::Pdu(PduInput { room_version: RoomVersionId::V11, pdu })).await.unwrap()
}

#[tokio::test]
async fn a_branch_and_merge_resolves_with_state_resolution_v2() {
    let h = start().await;
    let room = room(&h).await;
    let fork = h.rs.latest_events(&room).await.unwrap().remove(0);
    // Two branches from one event: the first sets the name and a topic, the
    // second sets the name later.
    let (a1, p) = pdu(&h, &room, "m.room.name", Some(""), json!({"name": "from branch A"}), &[&fork], 1_000).await;
    accepted(submit_pdu(&h, p).await);
    let (a2, p) = pdu(&h, &room, "m.room.topic", Some(""), json!({"topic": "only in A"}), &[&a1], 1_001).await;
    accepted(submit_pdu(&h, p).await);
    let (b1, p) = pdu(&h, &room, "m.room.name", Some(""), json!({"name": "from branch B"}), &[&fork], 2_000).await;
    accepted(submit_pdu(&h, p).await);
    // Two forward extremities now.
    let mut latest = h.rs.latest_events(&room).await.unwrap();
    latest.sort();
    let mut expected = vec![a2.clone(), b1.clone()];
    expected.sort();
    assert_eq!(latest, expected);

    // The merge references both branches.
    let (merge, p) = pdu(&h, &room, "m.room.message", None, json!({"body": "merge"}), &[&a2, &b1], 3_000).await;
    accepted(submit_pdu(&h, p).await);
    let at_merge = h.rs.state_at_event(&room, &merge).await.unwrap().unwrap();
    let get = |t: &str| at_merge.iter().find(|e| e["type"] == t).cloned();
    // v2: both name events are by the same sender at the same power level in
    // the same mainline position, so the later timestamp wins; the
    // unconflicted topic from branch A is kept.
    assert_eq!(get("m.room.name").unwrap()["event_id"], json!(b1), "{at_merge:?}");
    assert_eq!(get("m.room.topic").unwrap()["event_id"], json!(a2));
    assert_eq!(get("m.room.join_rules").unwrap()["content"]["join_rule"], json!("public"));
    // The merge leaves one extremity, and current state is the resolved state.
    assert_eq!(h.rs.latest_events(&room).await.unwrap(), vec![merge]);
    assert_eq!(current(&h, &room, "m.room.name", "").await.unwrap()["content"]["name"], json!("from branch B"));
    assert_eq!(current(&h, &room, "m.room.topic", "").await.unwrap()["content"]["topic"], json!("only in A"));
}

#[tokio::test]
async fn rejected_events_never_enter_current_state() {
    let h = start().await;
    let room = room(&h).await;
    accepted(
        h.rs.submit(Input::Build(BuildEvents {
            target: Target::Room { room_id: room.clone() },
            events: vec![state("alice", "m.room.name", "", json!({"name": "good"}))],
            txn: None,
        }))
        .await
        .unwrap(),
    );

    // Bob (power 0) may not change the name.
    let verdict =
        h.rs.submit(Input::Build(BuildEvents {
            target: Target::Room { room_id: room.clone() },
            events: vec![state("bob", "m.room.name", "", json!({"name": "bad"}))],
            txn: None,
        }))
        .await
        .unwrap();
    assert!(matches!(verdict, Verdict::Rejected { .. }), "{verdict:?}");
    let rejected = |pool: SqlitePool| async move {
        pool.read(|t| {
            Ok::<i64, neurite_storage::StorageError>(t.query_row(
                "SELECT COUNT(*) FROM roomserver_events WHERE is_rejected = 1",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap()
    };
    assert_eq!(rejected(h.pool.clone()).await, 1, "the rejected local event is recorded as rejected");

    // A complete PDU from someone who is not in the room is rejected and
    // recorded as such: not in the state, not served.
    let latest = h.rs.latest_events(&room).await.unwrap().remove(0);
    let (id, mut p) = pdu(&h, &room, "m.room.name", Some(""), json!({"name": "intruder"}), &[&latest], 5_000).await;
    p["sender"] = json!("@carol:test.local");
    let mut object: CanonicalJsonObject = serde_json::from_value(p).unwrap();
    object.remove("signatures");
    object.remove("hashes");
    let id2 = h.signer.sign(&RoomVersionId::V11.rules().unwrap(), &mut object).unwrap();
    assert_ne!(id, id2);
    let verdict = submit_pdu(&h, serde_json::to_value(&object).unwrap()).await;
    assert!(matches!(verdict, Verdict::Rejected { .. }), "{verdict:?}");
    assert_eq!(current(&h, &room, "m.room.name", "").await.unwrap()["content"]["name"], json!("good"));
    assert!(h.rs.event(&room, &id2).await.unwrap().is_none(), "a rejected event is not served");
    assert_eq!(rejected(h.pool.clone()).await, 2);
    let state = h.rs.current_state(&room).await.unwrap();
    assert!(state.iter().all(|e| e["content"]["name"] != "bad" && e["content"]["name"] != "intruder"));
}

#[tokio::test]
async fn stored_state_grows_with_changes_not_with_room_size() {
    const CHANGES: usize = 10_000;
    const BATCH: usize = 250;
    let h = start().await;
    let room = room(&h).await;
    let mut ids = Vec::new();
    for batch in 0..CHANGES / BATCH {
        let events = (0..BATCH)
            .map(|i| {
                state(
                    "alice",
                    "org.example.counter",
                    &format!("k{}", batch * BATCH + i),
                    json!({"n": batch * BATCH + i}),
                )
            })
            .collect();
        let verdict = h.rs.submit(Input::Build(BuildEvents {
            target: Target::Room { room_id: room.clone() },
            events,
            txn: None,
        }));
        ids.extend(accepted(verdict.await.unwrap()).1);
    }
    assert_eq!(ids.len(), CHANGES);
    let rows: i64 = h
        .pool
        .read(|t| {
            Ok::<_, neurite_storage::StorageError>(t.query_row(
                "SELECT COUNT(*) FROM roomserver_state_blocks",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    let per_change = rows as f64 / CHANGES as f64;
    println!("{rows} state-block rows for {CHANGES} state changes ({per_change:.2} per change)");
    assert!(per_change < 4.0, "{rows} rows for {CHANGES} changes");

    // State at an early event is exact: the 10th change sees the 9 before it.
    let early = h.rs.state_at_event(&room, &ids[9]).await.unwrap().unwrap();
    let mut counters: Vec<u64> = early
        .iter()
        .filter(|e| e["type"] == "org.example.counter")
        .map(|e| e["content"]["n"].as_u64().unwrap())
        .collect();
    counters.sort();
    assert_eq!(counters, (0..9).collect::<Vec<_>>());
    // And the current state holds all of them.
    let now = h.rs.current_state(&room).await.unwrap();
    assert_eq!(now.iter().filter(|e| e["type"] == "org.example.counter").count(), CHANGES);
}

#[tokio::test]
async fn state_delta_names_the_keys_that_changed_between_two_events() {
    let h = start().await;
    let other = room_named(&h, "!other:test.local").await;
    let room = room(&h).await;
    let send = |event: ProtoEvent| {
        let build = BuildEvents { target: Target::Room { room_id: room.clone() }, events: vec![event], txn: None };
        let rs = h.rs.clone();
        async move { accepted(rs.submit(Input::Build(build)).await.unwrap()).1.remove(0) }
    };
    let first_name = send(state("alice", "m.room.name", "", json!({"name": "a"}))).await;
    let topic = send(state("alice", "m.room.topic", "", json!({"topic": "t"}))).await;
    let second_name = send(state("alice", "m.room.name", "", json!({"name": "b"}))).await;
    let message = send(ProtoEvent {
        event_type: "m.room.message".into(),
        state_key: None,
        sender: user("bob"),
        content: json!({"msgtype": "m.text", "body": "hi"}),
        redacts: None,
    })
    .await;
    let key = |t: &str| (t.to_owned(), String::new());

    // Before the first name: neither key; before the message: the second
    // name and the topic. The first name came and went in between.
    let forwards = h.rs.state_delta(&room, &first_name, &message).await.unwrap().unwrap();
    assert_eq!(
        forwards,
        [(key("m.room.name"), Some(second_name.clone())), (key("m.room.topic"), Some(topic.clone()))].into()
    );
    // Backwards, both keys leave the state.
    let backwards = h.rs.state_delta(&room, &message, &first_name).await.unwrap().unwrap();
    assert_eq!(backwards, [(key("m.room.name"), None), (key("m.room.topic"), None)].into());
    // The state before the second name has the first one.
    let one_step = h.rs.state_delta(&room, &topic, &second_name).await.unwrap().unwrap();
    assert_eq!(one_step, [(key("m.room.topic"), Some(topic.clone()))].into());
    assert!(h.rs.state_delta(&room, &message, &message).await.unwrap().unwrap().is_empty());

    let unknown: OwnedEventId = "$unknown".try_into().unwrap();
    assert!(h.rs.state_delta(&room, &unknown, &message).await.unwrap().is_none());
    // Events are found only in their own room.
    assert!(h.rs.state_delta(&other, &first_name, &message).await.unwrap().is_none());
    assert!(h.rs.state_at_event(&other, &message).await.unwrap().is_none());
    assert!(h.rs.event(&other, &message).await.unwrap().is_none());
    assert!(h.rs.event(&room, &message).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inputs_of_one_room_form_one_chain_and_a_rejected_one_spoils_nothing() {
    let h = start().await;
    let room = room(&h).await;
    // More inputs than one worker batch takes; every seventh is from a
    // stranger and must be rejected without touching its batch neighbours.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let rs = h.rs.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let sender = if i % 7 == 3 {
                "mallory"
            } else if i % 2 == 0 {
                "alice"
            } else {
                "bob"
            };
            let event = ProtoEvent {
                event_type: "m.room.message".into(),
                state_key: None,
                sender: user(sender),
                content: json!({"msgtype": "m.text", "body": format!("message {i}")}),
                redacts: None,
            };
            let build = BuildEvents { target: Target::Room { room_id: room }, events: vec![event], txn: None };
            (i, rs.submit(Input::Build(build)).await.unwrap())
        }));
    }
    let mut accepted_ids = std::collections::HashSet::new();
    for task in tasks {
        let (i, verdict) = task.await.unwrap();
        match verdict {
            Verdict::Accepted { event_ids, .. } => {
                assert_ne!(i % 7, 3, "a stranger's message was accepted");
                accepted_ids.insert(event_ids[0].to_string());
            }
            Verdict::Rejected { .. } => assert_eq!(i % 7, 3, "message {i} was rejected"),
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    assert_eq!(accepted_ids.len(), 100 - 14);

    // Walk back from the single forward extremity: one linear chain holding
    // every accepted message once, depth growing by one per event.
    assert_one_chain(&h, &room, &accepted_ids).await;
}

/// Walks back from `room`'s single forward extremity and asserts one linear
/// chain holding every event of `accepted` once (none rejected, each on the
/// one before it, depths consecutive); returns the event the chain stands on.
async fn assert_one_chain(h: &Harness, room: &OwnedRoomId, accepted: &std::collections::HashSet<String>) -> String {
    let latest = h.rs.latest_events(room).await.unwrap();
    assert_eq!(latest.len(), 1, "one forward extremity in {room}");
    let mut depths = Vec::new();
    let mut cursor = latest[0].to_string();
    while accepted.contains(&cursor) {
        let (pdu, rejected) = stored_pdu(h, &cursor).await;
        assert!(!rejected);
        let prevs = pdu["prev_events"].as_array().unwrap();
        assert_eq!(prevs.len(), 1, "each message stands on exactly the one before it");
        depths.push(pdu["depth"].as_u64().unwrap());
        cursor = prevs[0].as_str().unwrap().to_owned();
    }
    assert_eq!(depths.len(), accepted.len(), "every accepted message of {room} is on its chain once");
    assert!(depths.windows(2).all(|w| w[0] == w[1] + 1), "depths are consecutive");
    cursor
}

/// Sends `count` messages to each of `rooms`, all at once; returns each
/// room's accepted event IDs.
async fn send_messages_concurrently(h: &Harness, rooms: &[OwnedRoomId], count: usize, wave: usize) -> Vec<Vec<String>> {
    let mut tasks = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for i in 0..count {
            let (rs, room) = (h.rs.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                let event = ProtoEvent {
                    event_type: "m.room.message".into(),
                    state_key: None,
                    sender: user(if i % 2 == 0 { "alice" } else { "bob" }),
                    content: json!({"msgtype": "m.text", "body": format!("wave {wave} message {i}")}),
                    redacts: None,
                };
                let build = BuildEvents { target: Target::Room { room_id: room }, events: vec![event], txn: None };
                (r, accepted(rs.submit(Input::Build(build)).await.unwrap()).1.remove(0).to_string())
            }));
        }
    }
    let mut ids = vec![Vec::new(); rooms.len()];
    for task in tasks {
        let (r, id) = task.await.unwrap();
        ids[r].push(id);
    }
    ids
}

/// Waits until the room server runs no room worker.
async fn until_no_workers(h: &Harness) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.rs.worker_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{} room workers are still alive", h.rs.worker_count());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_room_workers_retire_and_respawned_ones_keep_each_room_one_chain() {
    let idle = std::time::Duration::from_millis(200);
    let h = start_with_worker_idle(idle).await;
    let mut rooms = Vec::new();
    let mut creation_ends = Vec::new();
    for name in ["one", "two", "three"] {
        let room_id: OwnedRoomId = format!("!{name}:test.local").try_into().unwrap();
        let build = BuildEvents {
            target: Target::NewRoom { room_version: RoomVersionId::V11, room_id: Some(room_id.clone()) },
            events: vec![
                state("alice", "m.room.create", "", json!({"room_version": "11"})),
                state("alice", "m.room.member", "@alice:test.local", json!({"membership": "join"})),
                state("alice", "m.room.power_levels", "", json!({"users": {"@alice:test.local": 100}})),
                state("alice", "m.room.join_rules", "", json!({"join_rule": "public"})),
                state("bob", "m.room.member", "@bob:test.local", json!({"membership": "join"})),
            ],
            txn: None,
        };
        let (room, ids) = accepted(h.rs.submit(Input::Build(build)).await.unwrap());
        rooms.push(room);
        creation_ends.push(ids.last().unwrap().to_string());
    }
    let mut sent = vec![Vec::new(); rooms.len()];

    // One worker per room written to. Seen only when a round ends within the
    // idle time (no worker can have been retired since it started), so a
    // round is repeated on a slow machine.
    let mut seen_three = false;
    for round in 0..20 {
        let started = tokio::time::Instant::now();
        let ids = send_messages_concurrently(&h, &rooms, 1, round).await;
        let count = h.rs.worker_count();
        let quick = started.elapsed() < idle;
        for (all, new) in sent.iter_mut().zip(ids) {
            all.extend(new);
        }
        assert!(count <= rooms.len(), "{count} workers for {} rooms", rooms.len());
        if quick {
            assert_eq!(count, rooms.len(), "one worker per room");
            seen_three = true;
            break;
        }
    }
    assert!(seen_three, "no round of three messages ended within {idle:?}");

    // Idle workers are retired: no task is left.
    until_no_workers(&h).await;

    // Inputs after retirement start new workers. Waves a little apart, some
    // arriving while the previous workers are being retired, all in order.
    for wave in 100..106 {
        let ids = send_messages_concurrently(&h, &rooms, 12, wave).await;
        for (all, new) in sent.iter_mut().zip(ids) {
            all.extend(new);
        }
        let pause = if wave % 2 == 0 { idle } else { idle + idle / 2 };
        tokio::time::sleep(pause).await;
    }
    until_no_workers(&h).await;

    // Each room is still one chain: from its single forward extremity back to
    // the end of its creation, every accepted message once, consecutive depths.
    for ((room, sent), creation_end) in rooms.iter().zip(&sent).zip(&creation_ends) {
        let accepted_ids: std::collections::HashSet<String> = sent.iter().cloned().collect();
        assert_eq!(accepted_ids.len(), sent.len(), "event IDs are distinct");
        let start = assert_one_chain(&h, room, &accepted_ids).await;
        assert_eq!(&start, creation_end, "the chain of {room} reaches back to its creation");
    }
}

/// A log in a database of its own (so the room server publishes its outputs
/// after its commit, through the outbox) whose output publishes take
/// `delay`: a worker is then busy after its commit for as long as the test
/// needs, without holding the database's writer.
struct SlowOutputLog {
    log: SqliteLog,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl neurite_log::Log for SlowOutputLog {
    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        dedup_id: Option<&str>,
    ) -> Result<u64, neurite_log::LogError> {
        self.log.publish(topic, key, payload, dedup_id).await
    }

    async fn publish_batch(
        &self,
        topic: &str,
        records: Vec<neurite_log::PublishRecord>,
    ) -> Result<Vec<u64>, neurite_log::LogError> {
        if topic == neurite_log::OUTPUT_ROOM_EVENT {
            tokio::time::sleep(self.delay).await;
        }
        self.log.publish_batch(topic, records).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        name: &str,
    ) -> Result<Box<dyn neurite_log::Subscription>, neurite_log::LogError> {
        self.log.subscribe(topic, name).await
    }

    async fn unsubscribe(&self, topic: &str, name: &str) -> Result<(), neurite_log::LogError> {
        self.log.unsubscribe(topic, name).await
    }

    async fn latest_offset(&self, topic: &str) -> Result<u64, neurite_log::LogError> {
        self.log.latest_offset(topic).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_arriving_while_its_rooms_retired_worker_still_publishes_waits_for_it() {
    use neurite_log::Log;

    let idle = std::time::Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("rs.db")).unwrap();
    let log = SqliteLog::open(SqlitePool::open(&dir.path().join("log.db")).unwrap()).await.unwrap();
    assert!(log.appender(&pool).is_none(), "the log lives elsewhere: outputs go through the outbox");
    let mut outputs = log.subscribe(neurite_log::OUTPUT_ROOM_EVENT, "order-check").await.unwrap();
    let key_der = Ed25519KeyPair::generate();
    let slow = SlowOutputLog { log, delay: idle * 8 };
    let rs = Roomserver::start_with(pool.clone(), Arc::new(slow), signer(&key_der), idle).await.unwrap();
    let h = Harness { _dir: dir, pool, rs, signer: signer(&key_der) };
    let room = room(&h).await;
    until_no_workers(&h).await;

    // The first input's worker publishes its outputs for `idle * 8`; it is
    // retired (idle for `idle`, its queue empty) while it still publishes.
    let message = |body: String| ProtoEvent {
        event_type: "m.room.message".into(),
        state_key: None,
        sender: user("alice"),
        content: json!({"msgtype": "m.text", "body": body}),
        redacts: None,
    };
    let submit = |events: Vec<ProtoEvent>| {
        let (rs, room) = (h.rs.clone(), room.clone());
        tokio::spawn(async move {
            let build = BuildEvents { target: Target::Room { room_id: room }, events, txn: None };
            accepted(rs.submit(Input::Build(build)).await.unwrap()).1
        })
    };
    let first = submit((0..50).map(|i| message(format!("first {i}"))).collect());
    tokio::time::sleep(idle * 4).await;
    assert!(!first.is_finished(), "the first input's worker is still publishing");
    let second = submit(vec![message("after the first".into())]);
    let mut most_workers = 0;
    while !second.is_finished() {
        most_workers = most_workers.max(h.rs.worker_count());
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let first = first.await.unwrap();
    let second = second.await.unwrap().remove(0);
    // The retired worker and the one started for the next input were alive
    // together: the new one waited.
    assert_eq!(most_workers, 2, "the room's next worker did not overlap the retired one");

    // The second input was processed after the first: built on its last
    // event, and published after all of its outputs.
    let latest = h.rs.latest_events(&room).await.unwrap();
    assert_eq!(latest, vec![second.clone()]);
    let (pdu, _) = stored_pdu(&h, second.as_str()).await;
    assert_eq!(pdu["prev_events"], json!([first.last().unwrap()]));
    let (second, first): (String, Vec<String>) = (second.to_string(), first.iter().map(|id| id.to_string()).collect());
    let mut published = Vec::new();
    while !(published.contains(&second) && published.contains(first.last().unwrap())) {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), outputs.next(256));
        for record in next.await.expect("every output is published").unwrap() {
            let output: Value = serde_json::from_slice(&record.payload).unwrap();
            published.push(output["event"]["event_id"].as_str().unwrap().to_owned());
        }
    }
    let at = |id: &String| published.iter().position(|p| p == id).unwrap();
    assert_eq!(at(&second), at(first.last().unwrap()) + 1, "the second input's output comes right after the first's");
    assert_eq!(published[at(&first[0])..at(&second)], first[..], "the first input's outputs come in order");
}

/// Waits until `rs` knows every input through `offset` is acknowledged.
async fn until_acknowledged(rs: &Roomserver, offset: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rs.inputs_acknowledged_through() < Some(offset) {
        assert!(std::time::Instant::now() < deadline, "inputs through {offset} not acknowledged");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The request IDs of the stored verdicts, sorted.
async fn verdicts(pool: &SqlitePool) -> Vec<String> {
    pool.read(|tx| {
        let mut ids: Vec<String> = tx
            .prepare("SELECT request_id FROM roomserver_verdicts UNION ALL SELECT request_id FROM roomserver_inputs")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok::<_, neurite_storage::StorageError>(ids)
    })
    .await
    .unwrap()
}

/// Runs `sql` on the database.
async fn execute(pool: &SqlitePool, sql: &'static str) {
    pool.write(move |tx| tx.execute_batch(sql).map_err(neurite_storage::StorageError::from)).await.unwrap();
}

/// Sends one message by alice to `room` through `rs`.
async fn send_message(rs: &Roomserver, room: &OwnedRoomId, body: &str) {
    let event = ProtoEvent {
        event_type: "m.room.message".into(),
        state_key: None,
        sender: user("alice"),
        content: json!({"msgtype": "m.text", "body": body}),
        redacts: None,
    };
    let build = BuildEvents { target: Target::Room { room_id: room.clone() }, events: vec![event], txn: None };
    accepted(rs.submit(Input::Build(build)).await.unwrap());
}

#[tokio::test]
async fn verdicts_are_pruned_once_acknowledged_and_old_enough_and_kept_otherwise() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("rs.db")).unwrap();
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let key_der = Ed25519KeyPair::generate();
    let idle = Duration::from_secs(60);
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log.clone()), signer(&key_der), idle).await.unwrap();
    let h = Harness { _dir: dir, pool: pool.clone(), rs, signer: signer(&key_der) };
    let room = room(&h).await;
    send_message(&h.rs, &room, "first run").await;
    until_acknowledged(&h.rs, 2).await;
    assert_eq!(h.rs.prune_verdicts(Duration::from_secs(3600)).await.unwrap(), 0, "acknowledged but recent");
    assert_eq!(verdicts(&pool).await.len(), 2);

    // The first run's verdicts as if stored before migration 0005 (no
    // offset), and a verdict on an input not acknowledged (as after a crash
    // between the verdict's commit and the acknowledgement), long ago.
    execute(
        &pool,
        "INSERT INTO roomserver_inputs (request_id, verdict, room_nid, event_nids, created_ts)
             SELECT request_id, verdict, room_nid, event_nids, created_ts FROM roomserver_verdicts;
         DELETE FROM roomserver_verdicts",
    )
    .await;
    execute(
        &pool,
        r#"INSERT INTO roomserver_verdicts (input_offset, request_id, verdict, created_ts)
           VALUES (1000, 'unacknowledged', '{"rejected":{"reason":"no"}}', 0)"#,
    )
    .await;

    // A restart: nothing is known acknowledged before this run's first input.
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log), signer(&key_der), idle).await.unwrap();
    assert_eq!(rs.prune_verdicts(Duration::ZERO).await.unwrap(), 0);
    send_message(&rs, &room, "second run").await;
    until_acknowledged(&rs, 3).await;
    assert_eq!(rs.prune_verdicts(Duration::from_secs(3600)).await.unwrap(), 0, "all acknowledged ones are recent");

    // Old enough: the first run's verdicts (published before this run
    // started, so at or below its acknowledged position) go; this run's
    // recent one and the unacknowledged one stay.
    execute(&pool, "UPDATE roomserver_inputs SET created_ts = 0").await;
    assert_eq!(rs.prune_verdicts(Duration::from_secs(60)).await.unwrap(), 2);
    let left = verdicts(&pool).await;
    assert_eq!(left.len(), 2);
    assert!(left.contains(&"unacknowledged".to_owned()));
    assert_eq!(rs.prune_verdicts(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(verdicts(&pool).await, ["unacknowledged"]);

    // Many at once (from before 0005, so all acknowledged): deleted in
    // bounded writes, all of them.
    execute(
        &pool,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO roomserver_inputs (request_id, verdict, created_ts)
         SELECT 'many-' || i, '{}', 0 FROM n",
    )
    .await;
    assert_eq!(rs.prune_verdicts(Duration::ZERO).await.unwrap(), 2500);
    assert_eq!(verdicts(&pool).await, ["unacknowledged"]);
}

#[tokio::test]
async fn verdicts_are_kept_when_the_input_log_lives_in_another_database() {
    use neurite_log::Log;

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("rs.db")).unwrap();
    let log = SqliteLog::open(SqlitePool::open(&dir.path().join("log.db")).unwrap()).await.unwrap();
    assert!(log.appender(&pool).is_none());
    let key_der = Ed25519KeyPair::generate();
    let idle = std::time::Duration::from_secs(60);
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log), signer(&key_der), idle).await.unwrap();
    let h = Harness { _dir: dir, pool: pool.clone(), rs, signer: signer(&key_der) };
    room(&h).await;
    until_acknowledged(&h.rs, 1).await;
    // Its acknowledgements are not ordered with this database's commits.
    assert_eq!(h.rs.prune_verdicts(std::time::Duration::ZERO).await.unwrap(), 0);
    assert_eq!(verdicts(&pool).await.len(), 1);
}

#[tokio::test]
async fn an_input_delivered_again_after_a_lost_acknowledgement_is_answered_by_its_verdict_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("rs.db")).unwrap();
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let key_der = Ed25519KeyPair::generate();
    let idle = std::time::Duration::from_secs(60);
    // A subscription that acknowledges nothing keeps the input records: the
    // write that stores an acknowledgement also prunes, so in a real crash
    // the lost one pruned nothing either.
    let _holder = log.subscribe(neurite_log::INPUT_ROOM_EVENT, "holder").await.unwrap();
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log.clone()), signer(&key_der), idle).await.unwrap();
    let h = Harness { _dir: dir, pool: pool.clone(), rs, signer: signer(&key_der) };
    let room = room(&h).await;
    send_message(&h.rs, &room, "once").await;
    until_acknowledged(&h.rs, 2).await;
    let events = || async {
        pool.read(|tx| {
            tx.query_row("SELECT COUNT(*) FROM roomserver_events", [], |r| r.get::<_, i64>(0))
                .map_err(neurite_storage::StorageError::from)
        })
        .await
        .unwrap()
    };
    let (stored, latest) = (events().await, h.rs.latest_events(&room).await.unwrap());

    // As after a crash between the message's commit and its stored
    // acknowledgement: the input log delivers its record again to the next run.
    execute(&pool, "UPDATE log_subscriptions SET acked_offset = 1 WHERE name = 'roomserver'").await;
    let rs = Roomserver::start_with(pool.clone(), Arc::new(log), signer(&key_der), idle).await.unwrap();
    until_acknowledged(&rs, 2).await;
    assert_eq!(events().await, stored, "the message was built and stored again");
    assert_eq!(rs.latest_events(&room).await.unwrap(), latest);
}
