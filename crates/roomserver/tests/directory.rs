//! The room directory driven directly: aliases, public room summaries from
//! current state (redactions included), paging, and forgetting, which holds
//! only until the user's membership changes again.

use std::sync::Arc;

use neurite_log::SqliteLog;
use neurite_roomserver::{
    BuildEvents, ForgetOutcome, Input, ProtoEvent, PublicRoomsQuery, Roomserver, RoomserverDirectory, RoomserverInput,
    Signer, Target, Verdict,
};
use neurite_storage::sqlite::SqlitePool;
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedEventId, OwnedRoomId, RoomAliasId, RoomVersionId, UserId, server_name};
use serde_json::{Value, json};

struct Harness {
    _dir: tempfile::TempDir,
    rs: Roomserver,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pool = SqlitePool::open(&dir.path().join("rs.db")).expect("the database opens");
    let log = SqliteLog::open(pool.clone()).await.expect("the log opens");
    let signer = Signer {
        server_name: server_name!("test.local").to_owned(),
        key: Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "test".into()).expect("a key"),
    };
    let rs = Roomserver::start(pool, Arc::new(log), signer).await.expect("the room server starts");
    Harness { _dir: dir, rs }
}

fn user(name: &str) -> ruma::OwnedUserId {
    UserId::parse(format!("@{name}:test.local")).expect("a valid user ID")
}

fn event(sender: &str, event_type: &str, key: Option<&str>, content: Value) -> ProtoEvent {
    ProtoEvent {
        event_type: event_type.into(),
        state_key: key.map(str::to_owned),
        sender: user(sender),
        content,
        redacts: None,
    }
}

fn member(name: &str, membership: &str) -> ProtoEvent {
    event(name, "m.room.member", Some(&format!("@{name}:test.local")), json!({"membership": membership}))
}

async fn submit(h: &Harness, target: Target, events: Vec<ProtoEvent>) -> (OwnedRoomId, Vec<OwnedEventId>) {
    let verdict = h.rs.submit(Input::Build(BuildEvents { target, events, txn: None })).await.expect("a verdict");
    match verdict {
        Verdict::Accepted { room_id, event_ids } => (room_id, event_ids),
        other => panic!("expected acceptance, got {other:?}"),
    }
}

/// A public v11 room `!<name>:test.local` made by alice, with `extra` state.
async fn room(h: &Harness, name: &str, extra: Vec<ProtoEvent>) -> OwnedRoomId {
    let room_id: OwnedRoomId = format!("!{name}:test.local").try_into().expect("a valid room ID");
    let mut events = vec![
        event("alice", "m.room.create", Some(""), json!({"room_version": "11"})),
        member("alice", "join"),
        event("alice", "m.room.power_levels", Some(""), json!({"users": {"@alice:test.local": 100}})),
        event("alice", "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
    ];
    events.extend(extra);
    let target = Target::NewRoom { room_version: RoomVersionId::V11, room_id: Some(room_id.clone()) };
    submit(h, target, events).await.0
}

impl Harness {
    /// The ID of the current state event `(event_type, "")`.
    async fn state_event_id(&self, room_id: &OwnedRoomId, event_type: &str) -> OwnedEventId {
        use neurite_roomserver::RoomserverQuery;
        let event = self.rs.current_state_event(room_id, event_type, "").await.expect("read").expect("set");
        OwnedEventId::try_from(event["event_id"].as_str().expect("an event ID")).expect("a valid event ID")
    }
}

async fn send(h: &Harness, room_id: &OwnedRoomId, events: Vec<ProtoEvent>) -> Vec<OwnedEventId> {
    submit(h, Target::Room { room_id: room_id.clone() }, events).await.1
}

#[tokio::test]
async fn aliases_map_one_room_each() {
    let h = start().await;
    let room_id = room(&h, "a", vec![]).await;
    let alias = RoomAliasId::parse("#here:test.local").expect("a valid alias");
    assert!(h.rs.set_alias(&alias, &room_id, &user("alice")).await.expect("stored"));
    assert!(!h.rs.set_alias(&alias, &room_id, &user("bob")).await.expect("stored"), "taken");
    assert_eq!(h.rs.resolve_alias(&alias).await.expect("read"), Some(room_id.clone()));
    assert_eq!(h.rs.alias_creator(&alias).await.expect("read"), Some(user("alice")), "the first creator stays");
    assert_eq!(h.rs.aliases_of(&room_id).await.expect("read"), vec![alias.clone()]);
    assert!(h.rs.remove_alias(&alias).await.expect("removed"));
    assert!(!h.rs.remove_alias(&alias).await.expect("removed"));
    assert_eq!(h.rs.resolve_alias(&alias).await.expect("read"), None);
}

#[tokio::test]
async fn summaries_follow_current_state_and_redactions() {
    let h = start().await;
    let extra = vec![
        event("alice", "m.room.name", Some(""), json!({"name": "Cheese"})),
        event("alice", "m.room.topic", Some(""), json!({"topic": "Brie"})),
        event("alice", "m.room.avatar", Some(""), json!({"url": "mxc://test.local/a"})),
        event("alice", "m.room.history_visibility", Some(""), json!({"history_visibility": "world_readable"})),
        event("alice", "m.room.guest_access", Some(""), json!({"guest_access": "can_join"})),
        member("bob", "join"),
    ];
    let room_id = room(&h, "a", extra).await;
    h.rs.set_published(&room_id, true).await.expect("published");
    h.rs.set_published(&room_id, true).await.expect("publishing twice is fine");
    assert!(h.rs.is_published(&room_id).await.expect("read"));

    let query = PublicRoomsQuery { limit: 10, ..Default::default() };
    let page = h.rs.public_rooms(query.clone()).await.expect("a page");
    assert_eq!((page.total, page.next_offset), (1, None));
    let summary = &page.rooms[0];
    assert_eq!(summary.name.as_deref(), Some("Cheese"));
    assert_eq!(summary.topic.as_deref(), Some("Brie"));
    assert_eq!(summary.avatar_url.as_ref().map(|u| u.as_str()), Some("mxc://test.local/a"));
    assert_eq!((summary.num_joined_members, summary.world_readable, summary.guest_can_join), (2, true, true));
    assert_eq!(
        (summary.join_rule.as_str(), summary.room_type.as_deref(), &summary.canonical_alias),
        ("public", None, &None)
    );

    // A redacted name is no name; a left member no longer counts.
    let name_id = h.state_event_id(&room_id, "m.room.name").await;
    let mut redaction = event("alice", "m.room.redaction", None, json!({}));
    redaction.redacts = Some(name_id);
    send(&h, &room_id, vec![redaction, member("bob", "leave")]).await;
    let summary = h.rs.public_rooms(query.clone()).await.expect("a page").rooms.remove(0);
    assert_eq!((summary.name, summary.num_joined_members), (None, 1));

    h.rs.set_published(&room_id, false).await.expect("withdrawn");
    assert!(h.rs.public_rooms(query).await.expect("a page").rooms.is_empty());
}

#[tokio::test]
async fn pages_and_totals() {
    let h = start().await;
    let mut rooms = Vec::new();
    for (name, members) in [("a", 0), ("b", 2), ("c", 1)] {
        let extra = ["bob", "carol"].into_iter().take(members).map(|m| member(m, "join")).collect();
        let room_id = room(&h, name, extra).await;
        h.rs.set_published(&room_id, true).await.expect("published");
        rooms.push(room_id);
    }
    let ids =
        |page: &neurite_roomserver::PublicRoomsPage| page.rooms.iter().map(|r| r.room_id.clone()).collect::<Vec<_>>();
    let first = h.rs.public_rooms(PublicRoomsQuery { limit: 2, ..Default::default() }).await.expect("a page");
    assert_eq!(ids(&first), [rooms[1].clone(), rooms[2].clone()], "most members first");
    assert_eq!((first.total, first.next_offset), (3, Some(2)));
    let second =
        h.rs.public_rooms(PublicRoomsQuery { limit: 2, offset: 2, ..Default::default() }).await.expect("a page");
    assert_eq!(ids(&second), [rooms[0].clone()]);
    assert_eq!(second.next_offset, None);
    let past = h.rs.public_rooms(PublicRoomsQuery { limit: 2, offset: 9, ..Default::default() }).await.expect("a page");
    assert!(past.rooms.is_empty() && past.next_offset.is_none());
}

#[tokio::test]
async fn forgetting_lasts_until_the_membership_changes() {
    let h = start().await;
    let room_id = room(&h, "a", vec![member("bob", "join")]).await;
    let bob = user("bob");
    assert_eq!(h.rs.forget_room(&room_id, &bob).await.expect("answered"), ForgetOutcome::StillInRoom);
    assert!(!h.rs.is_forgotten(&room_id, &bob).await.expect("read"));
    send(&h, &room_id, vec![member("bob", "leave")]).await;
    assert_eq!(h.rs.forget_room(&room_id, &bob).await.expect("answered"), ForgetOutcome::Forgotten);
    assert!(h.rs.is_forgotten(&room_id, &bob).await.expect("read"));
    // Rejoining brings the room back.
    send(&h, &room_id, vec![member("bob", "join")]).await;
    assert!(!h.rs.is_forgotten(&room_id, &bob).await.expect("read"));
    let unknown: OwnedRoomId = "!nope:test.local".try_into().expect("a valid room ID");
    assert_eq!(h.rs.forget_room(&unknown, &bob).await.expect("answered"), ForgetOutcome::UnknownRoom);
}
