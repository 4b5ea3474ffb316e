//! The sync API's hot path (issue 6): assembling a complete and an
//! incremental `/sync` for an account joined to 500 rooms.
//!
//! The fixture is real: a room server, the SQLite log and the sync API on one
//! database in a temporary folder on disk, wired as `neurite::build` wires
//! them. Each room is created with one input of 8 state events (as
//! `createRoom` does), then gets 20 messages, one input each (as `/send`
//! does), rooms in parallel. The old token is taken between the two phases,
//! so an incremental sync from it is 10,000 events behind.
//!
//! Each measured sync ends in its serialized body, as the client API
//! answers it (assembling alone would leave the serializing out).
//!
//! `cargo bench -p neurite-syncapi --bench sync`. Figures are never asserted
//! in tests. The fixture is built once per process, and only if a benchmark
//! of this file is selected.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use neurite_log::SqliteLog;
use neurite_roomserver::{BuildEvents, Input, ProtoEvent, Roomserver, RoomserverInput, Signer, Target, Verdict};
use neurite_storage::sqlite::SqlitePool;
use neurite_syncapi::{RoomEventFilter, SyncApi, SyncRequest, SyncService, SyncToken};
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedRoomId, RoomVersionId, UserId, device_id, server_name};
use serde_json::{Value, json};

const ROOMS: usize = 500;
const STATE_EVENTS_PER_ROOM: usize = 8;
const MESSAGES_PER_ROOM: usize = 20;
const TIMELINE_LIMIT: usize = 10;
const USER: &str = "@alice:bench.local";

struct Fixture {
    _dir: tempfile::TempDir,
    _rs: Roomserver,
    sync: SyncService,
    /// The sync token after every room's state, before any message.
    old: String,
}

fn event(event_type: &str, state_key: Option<&str>, content: Value) -> ProtoEvent {
    ProtoEvent {
        event_type: event_type.into(),
        state_key: state_key.map(Into::into),
        sender: UserId::parse(USER).unwrap(),
        content,
        redacts: None,
    }
}

/// The usual state of a room alice created, plus one custom state event.
fn room_state(i: usize) -> Vec<ProtoEvent> {
    let levels = json!({
        "ban": 50, "events_default": 0, "invite": 0, "kick": 50, "redact": 50, "state_default": 50,
        "users_default": 0, "events": {"m.room.name": 50, "m.room.power_levels": 100},
    });
    vec![
        // Unique content: a v12 room's ID is its create event's ID, so two
        // identical create events by one sender in one millisecond collide
        // (a UNIQUE violation the room server retries 4 times, then drops
        // the input: at this rate dozens of creations time out after 30 s).
        event("m.room.create", Some(""), json!({"room_version": "12", "org.example.bench.room": i})),
        event("m.room.member", Some(USER), json!({"membership": "join", "displayname": "alice"})),
        event("m.room.power_levels", Some(""), levels),
        event("m.room.join_rules", Some(""), json!({"join_rule": "public"})),
        event("m.room.history_visibility", Some(""), json!({"history_visibility": "shared"})),
        event("m.room.name", Some(""), json!({"name": format!("Room {i}")})),
        event("m.room.topic", Some(""), json!({"topic": format!("The topic of room {i}")})),
        event("org.example.bench", Some(""), json!({"room": i})),
    ]
}

async fn submit(rs: &Roomserver, target: Target, events: Vec<ProtoEvent>) -> OwnedRoomId {
    match rs.submit(Input::Build(BuildEvents { target, events, txn: None })).await.unwrap() {
        Verdict::Accepted { room_id, .. } => room_id,
        other => panic!("expected acceptance, got {other:?}"),
    }
}

fn request(since: Option<&str>) -> SyncRequest {
    SyncRequest {
        since: since.map(Into::into),
        timeline: RoomEventFilter { limit: Some(TIMELINE_LIMIT), ..Default::default() },
        ..Default::default()
    }
}

/// A sync's body, serialized.
async fn sync(service: &SyncService, since: Option<&str>) -> Vec<u8> {
    let body = service.sync(&UserId::parse(USER).unwrap(), device_id!("BENCH"), request(since)).await.unwrap();
    serde_json::to_vec(&body).unwrap()
}

/// A sync's body, parsed back, for checks outside the measurements.
async fn sync_value(service: &SyncService, since: Option<&str>) -> Value {
    serde_json::from_slice(&sync(service, since).await).unwrap()
}

/// A complete sync once the sync API has applied `events` events (it
/// answers a sync after at most 5 s of waiting for its consumer, maybe
/// before that).
async fn complete_sync_at(service: &SyncService, events: u64) -> Value {
    loop {
        let body = sync_value(service, None).await;
        let at: SyncToken = body["next_batch"].as_str().unwrap().parse().unwrap();
        if at.events >= events {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn fixture() -> Fixture {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePool::open(&dir.path().join("bench.db")).unwrap();
    let log = SqliteLog::open(pool.clone()).await.unwrap();
    let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "bench".into()).unwrap();
    let signer = Signer { server_name: server_name!("bench.local").to_owned(), key };
    // As `neurite::build`: the sync API subscribes before the room server publishes.
    let sync = SyncService::start(pool.clone(), Arc::new(log.clone())).await.unwrap();
    let rs = Roomserver::start(pool, Arc::new(log), signer).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..ROOMS {
        let rs = rs.clone();
        tasks.spawn(async move {
            let target = Target::NewRoom { room_version: RoomVersionId::V12, room_id: None };
            submit(&rs, target, room_state(i)).await
        });
    }
    let rooms: Vec<OwnedRoomId> = tasks.join_all().await;
    let state_events = (ROOMS * STATE_EVENTS_PER_ROOM) as u64;
    let old = complete_sync_at(&sync, state_events).await["next_batch"].as_str().unwrap().to_owned();
    let state_built = started.elapsed();

    let mut tasks = tokio::task::JoinSet::new();
    for room_id in rooms {
        let rs = rs.clone();
        tasks.spawn(async move {
            for j in 0..MESSAGES_PER_ROOM {
                let body = json!({"msgtype": "m.text", "body": format!("message {j} in {room_id}")});
                submit(&rs, Target::Room { room_id: room_id.clone() }, vec![event("m.room.message", None, body)]).await;
            }
        });
    }
    tasks.join_all().await;
    let messages_sent = started.elapsed();
    let all = state_events + (ROOMS * MESSAGES_PER_ROOM) as u64;
    complete_sync_at(&sync, all).await;
    let applied = started.elapsed();
    eprintln!(
        "fixture: {ROOMS} rooms in {:.1} s: {state_events} state events in {ROOMS} inputs answered and applied \
         by the sync API in {:.1} s; {} messages in as many inputs answered {:.1} s later; the sync API applied \
         the last {:.1} s after that",
        applied.as_secs_f64(),
        state_built.as_secs_f64(),
        all - state_events,
        (messages_sent - state_built).as_secs_f64(),
        (applied - messages_sent).as_secs_f64(),
    );
    Fixture { _dir: dir, _rs: rs, sync, old }
}

/// Checks the fixture's answers once: every room, `TIMELINE_LIMIT` messages,
/// the full state only in the complete sync.
async fn check(f: &Fixture) {
    for (since, state_len) in [(None, STATE_EVENTS_PER_ROOM), (Some(f.old.as_str()), 0)] {
        let body = sync_value(&f.sync, since).await;
        let join = body["rooms"]["join"].as_object().unwrap();
        assert_eq!(join.len(), ROOMS);
        for room in join.values() {
            let timeline = room["timeline"]["events"].as_array().unwrap();
            assert_eq!(timeline.len(), TIMELINE_LIMIT);
            assert!(timeline.iter().all(|e| e["type"] == "m.room.message"));
            assert_eq!(room["timeline"]["limited"], json!(true));
            assert_eq!(room["state"]["events"].as_array().unwrap().len(), state_len);
        }
    }
}

fn sync_assembly(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let built: OnceLock<Fixture> = OnceLock::new();
    let get = || {
        built.get_or_init(|| {
            let f = runtime.block_on(fixture());
            runtime.block_on(check(&f));
            f
        })
    };
    let mut group = c.benchmark_group("sync for an account in 500 rooms");
    group.sample_size(10);
    // Every room: its last 10 messages and its full state at their start.
    group.bench_function("complete sync, timeline limit 10", |b| {
        let f = get();
        b.to_async(&runtime).iter(|| sync(&f.sync, None))
    });
    // Every room: its last 10 of the 20 messages since the token (limited),
    // no state (nothing changed since).
    group.bench_function("incremental sync from 10,000 events ago, timeline limit 10", |b| {
        let f = get();
        b.to_async(&runtime).iter(|| sync(&f.sync, Some(&f.old)))
    });
    group.finish();
}

criterion_group!(benches, sync_assembly);
criterion_main!(benches);
