//! The room server's hot paths (issue 6): one event through the whole
//! pipeline, state at an event and the state delta between an early and the
//! latest snapshot in a room with 10,000 state events, and the canonical JSON
//! and reference hash of a large event.
//!
//! `cargo bench -p neurite-roomserver`. Figures are never asserted in tests.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use neurite_log::SqliteLog;
use neurite_roomserver::{
    BuildEvents, Input, ProtoEvent, Roomserver, RoomserverInput, RoomserverQuery, Signer, Target, Verdict,
};
use neurite_storage::sqlite::SqlitePool;
use ruma::canonical_json::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId, UserId, server_name};
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    rs: Roomserver,
    room: OwnedRoomId,
}

fn event(sender: &str, event_type: &str, state_key: Option<&str>, content: serde_json::Value) -> ProtoEvent {
    ProtoEvent {
        event_type: event_type.into(),
        state_key: state_key.map(Into::into),
        sender: UserId::parse(format!("@{sender}:bench.local")).unwrap(),
        content,
        redacts: None,
    }
}

fn accepted(verdict: Verdict) -> Vec<OwnedEventId> {
    match verdict {
        Verdict::Accepted { event_ids, .. } => event_ids,
        other => panic!("expected acceptance, got {other:?}"),
    }
}

/// A room server on a fresh database (in the system temp folder, so on disk:
/// commits pay their real fsync) with one room alice is in.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("bench.db")).unwrap();
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "bench".into()).unwrap();
    let signer = Signer { server_name: server_name!("bench.local").to_owned(), key };
    let rs = Roomserver::start(pool, Arc::new(log), signer).await.unwrap();
    let events = vec![
        event("alice", "m.room.create", Some(""), json!({"room_version": "12"})),
        event("alice", "m.room.member", Some("@alice:bench.local"), json!({"membership": "join"})),
        event("alice", "m.room.power_levels", Some(""), json!({})),
        event("alice", "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
    ];
    let build =
        BuildEvents { target: Target::NewRoom { room_version: RoomVersionId::V12, room_id: None }, events, txn: None };
    let room = match rs.submit(Input::Build(build)).await.unwrap() {
        Verdict::Accepted { room_id, .. } => room_id,
        other => panic!("{other:?}"),
    };
    Fixture { _dir: dir, rs, room }
}

async fn send(f: &Fixture, events: Vec<ProtoEvent>) -> Vec<OwnedEventId> {
    let build = BuildEvents { target: Target::Room { room_id: f.room.clone() }, events, txn: None };
    accepted(f.rs.submit(Input::Build(build)).await.unwrap())
}

fn pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let f = runtime.block_on(fixture());
    // Build, hash, sign, auth-check and persist one message, through the
    // input log and back with the verdict (its output published too).
    c.bench_function("event: build, sign, auth, persist one message", |b| {
        b.to_async(&runtime).iter(|| send(&f, vec![event("alice", "m.room.message", None, json!({"body": "hi"}))]))
    });
}

fn state(c: &mut Criterion) {
    const STATE_EVENTS: usize = 10_000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let f = runtime.block_on(fixture());
    let ids: Vec<OwnedEventId> = runtime.block_on(async {
        let mut ids = Vec::new();
        for batch in 0..STATE_EVENTS / 500 {
            let events = (0..500)
                .map(|i| event("alice", "org.example.k", Some(&format!("k{}", batch * 500 + i)), json!({"n": i})))
                .collect();
            ids.extend(send(&f, events).await);
        }
        ids
    });
    // A message after the last state event: the state before it is the current state.
    let latest = send(&f, vec![event("alice", "m.room.message", None, json!({"body": "hi"}))]);
    let latest = runtime.block_on(latest).remove(0);
    let early = ids[100].clone();
    let late = ids[STATE_EVENTS - 1].clone();
    let delta = runtime.block_on(f.rs.state_delta(&f.room, &early, &latest)).unwrap().unwrap();
    assert_eq!(delta.len(), STATE_EVENTS - 100, "the delta adds every later key");
    let mut group = c.benchmark_group("state in a room with 10,000 state events");
    group.sample_size(20);
    group.bench_function("state at an early event", |b| {
        b.to_async(&runtime).iter(|| f.rs.state_at_event(&f.room, &early))
    });
    group.bench_function("state at the latest event", |b| {
        b.to_async(&runtime).iter(|| f.rs.state_at_event(&f.room, &late))
    });
    group.bench_function("current state", |b| b.to_async(&runtime).iter(|| f.rs.current_state(&f.room)));
    // From the state before the 101st state event (104 keys) to the current
    // state (10,004 keys): 9,900 keys named, with their event IDs.
    group.bench_function("current-state delta between two distant snapshots", |b| {
        b.to_async(&runtime).iter(|| f.rs.state_delta(&f.room, &early, &latest))
    });
    group.finish();
}

fn canonical_json(c: &mut Criterion) {
    let rules = RoomVersionId::V12.rules().unwrap();
    // An event near the 64 KiB limit: many keys and long strings.
    let content: serde_json::Map<String, serde_json::Value> =
        (0..400).map(|i| (format!("key_{i:04}"), json!("x".repeat(120)))).collect();
    let object: CanonicalJsonObject = serde_json::from_value(json!({
        "auth_events": ["$a", "$b", "$c"],
        "content": content,
        "depth": 12345,
        "origin_server_ts": 1_700_000_000_000u64,
        "prev_events": ["$p"],
        "room_id": "!room:bench.local",
        "sender": "@alice:bench.local",
        "type": "org.example.large",
        "hashes": {"sha256": "abc"},
        "signatures": {},
    }))
    .unwrap();
    let mut group = c.benchmark_group("a 55 KB event");
    group.bench_function("canonical JSON", |b| b.iter(|| serde_json::to_vec(black_box(&object)).unwrap()));
    group.bench_function("reference hash (redact + canonical JSON + SHA-256)", |b| {
        b.iter(|| ruma::signatures::reference_hash(black_box(&object), &rules).unwrap())
    });
    group.finish();
}

criterion_group!(benches, pipeline, state, canonical_json);
criterion_main!(benches);
