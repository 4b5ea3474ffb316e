//! Rooms: createRoom, send (idempotent), state, membership, events, redaction,
//! and one test per class of authorization-rule rejection.

use neurite_test::{Answer, TestServer, TestUser};
use serde_json::{Value, json};

fn token(user: &TestUser) -> Option<&str> {
    Some(user.access_token.as_str())
}

async fn create_room(server: &TestServer, user: &TestUser, body: Value) -> String {
    let answer = server.post("/_matrix/client/v3/createRoom", token(user), body).await;
    answer.ok()["room_id"].as_str().expect("room_id").to_owned()
}

async fn send_text(server: &TestServer, user: &TestUser, room: &str, txn: &str, text: &str) -> Answer {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    server.put(&path, token(user), json!({"msgtype": "m.text", "body": text})).await
}

async fn state(server: &TestServer, user: &TestUser, room: &str, event_type: &str, key: &str) -> Answer {
    server.get(&format!("/_matrix/client/v3/rooms/{room}/state/{event_type}/{key}"), token(user)).await
}

async fn put_state(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    event_type: &str,
    key: &str,
    content: Value,
) -> Answer {
    server.put(&format!("/_matrix/client/v3/rooms/{room}/state/{event_type}/{key}"), token(user), content).await
}

async fn membership(server: &TestServer, user: &TestUser, room: &str, action: &str, body: Value) -> Answer {
    server.post(&format!("/_matrix/client/v3/rooms/{room}/{action}"), token(user), body).await
}

#[tokio::test]
async fn create_room_applies_every_option() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server
        .put("/_matrix/client/v3/profile/@alice:localhost/displayname", token(&alice), json!({"displayname": "Alice"}))
        .await
        .ok();
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "name": "The room",
            "topic": "Things",
            "invite": ["@bob:localhost"],
            "is_direct": true,
            "creation_content": {"m.federate": false},
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}],
            "power_level_content_override": {"events_default": 10},
        }),
    )
    .await;
    assert!(room.starts_with('!'), "{room}");
    let create = state(&server, &alice, &room, "m.room.create", "").await.ok().clone();
    assert_eq!(create["room_version"], json!("12"), "the spec's default room version");
    assert_eq!(create["m.federate"], json!(false));
    assert_eq!(state(&server, &alice, &room, "m.room.name", "").await.ok().clone(), json!({"name": "The room"}));
    assert_eq!(state(&server, &alice, &room, "m.room.topic", "").await.ok()["topic"], json!("Things"));
    assert_eq!(
        state(&server, &alice, &room, "m.room.join_rules", "").await.ok().clone(),
        json!({"join_rule": "public"})
    );
    // initial_state wins over the preset.
    assert_eq!(
        state(&server, &alice, &room, "m.room.history_visibility", "").await.ok()["history_visibility"],
        json!("joined")
    );
    assert_eq!(state(&server, &alice, &room, "m.room.power_levels", "").await.ok()["events_default"], json!(10));
    let me = state(&server, &alice, &room, "m.room.member", "@alice:localhost").await.ok().clone();
    assert_eq!(me, json!({"membership": "join", "displayname": "Alice"}));
    let invite = state(&server, &alice, &room, "m.room.member", "@bob:localhost").await.ok().clone();
    assert_eq!(invite, json!({"membership": "invite", "is_direct": true}));
    // Bob is invited, so he may join an invite-only... here public room, and see it listed.
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    let rooms = server.get("/_matrix/client/v3/joined_rooms", token(&bob)).await.ok().clone();
    assert_eq!(rooms, json!({"joined_rooms": [room]}));
}

#[tokio::test]
async fn create_room_with_older_versions_and_bad_input() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "11"})).await;
    assert!(room.ends_with(":localhost"), "v11 room IDs carry the server name: {room}");
    let create = state(&server, &alice, &room, "m.room.create", "").await.ok().clone();
    assert_eq!(create["room_version"], json!("11"));
    let path = "/_matrix/client/v3/createRoom";
    server
        .post(path, token(&alice), json!({"room_version": "1"}))
        .await
        .expect_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    server
        .post(path, token(&alice), json!({"room_version": "99"}))
        .await
        .expect_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    let bad_initial = json!({"initial_state": [{"type": "m.room.create", "state_key": "", "content": {}}]});
    server.post(path, token(&alice), bad_initial).await.expect_error(400, "M_INVALID_ROOM_STATE");
    server.post(path, None, json!({})).await.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn send_is_idempotent_per_device_and_transaction() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let first = send_text(&server, &alice, &room, "txn1", "hello").await.ok()["event_id"].clone();
    let again = send_text(&server, &alice, &room, "txn1", "hello").await.ok()["event_id"].clone();
    assert_eq!(first, again, "a repeat returns the same event");
    let other = send_text(&server, &alice, &room, "txn2", "hello").await.ok()["event_id"].clone();
    assert_ne!(first, other);
    // The same ID in another room is another transaction.
    let room2 = create_room(&server, &alice, json!({})).await;
    let elsewhere = send_text(&server, &alice, &room2, "txn1", "hello").await.ok()["event_id"].clone();
    assert_ne!(first, elsewhere);
    // Another device of the same user has its own transaction IDs.
    let phone = server.login("alice", neurite_test::PASSWORD).await;
    let from_phone = send_text(&server, &phone, &room, "txn1", "hello").await.ok()["event_id"].clone();
    assert_ne!(first, from_phone);

    let event =
        server.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", first.as_str().unwrap()), token(&alice)).await;
    let event = event.ok();
    assert_eq!(event["type"], json!("m.room.message"));
    assert_eq!(event["content"], json!({"msgtype": "m.text", "body": "hello"}));
    assert_eq!(event["sender"], json!("@alice:localhost"));
    assert_eq!(event["room_id"], json!(room));
    // An event is found only under its own room: asked under another room
    // the user is in, it is unknown, and so is the state at it.
    let wrong_room = format!("/_matrix/client/v3/rooms/{room2}/event/{}", first.as_str().unwrap());
    server.get(&wrong_room, token(&alice)).await.expect_error(404, "M_NOT_FOUND");
    let members_at = format!("/_matrix/client/v3/rooms/{room2}/members?at={}", first.as_str().unwrap());
    server.get(&members_at, token(&alice)).await.expect_error(404, "M_NOT_FOUND");
    let members_at_own = format!("/_matrix/client/v3/rooms/{room}/members?at={}", first.as_str().unwrap());
    assert!(server.get(&members_at_own, token(&alice)).await.ok()["chunk"].as_array().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn room_errors_have_the_spec_codes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, "!unknown:localhost", "t", "x").await.expect_error(404, "M_NOT_FOUND");
    send_text(&server, &alice, "not-a-room-id", "t", "x").await.expect_error(400, "M_INVALID_PARAM");
    state(&server, &alice, "!unknown:localhost", "m.room.name", "").await.expect_error(404, "M_NOT_FOUND");
    let huge = "x".repeat(70_000);
    send_text(&server, &alice, &room, "big", &huge).await.expect_error(413, "M_TOO_LARGE");
    let missing = format!("/_matrix/client/v3/rooms/{room}/event/$nope");
    server.get(&missing, token(&alice)).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn state_with_an_empty_key_works_on_every_path_form() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for (i, path) in [
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        format!("/_matrix/client/r0/rooms/{room}/state/m.room.name/"),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("name {i}");
        let put = server.put(path, token(&alice), json!({"name": name})).await;
        assert!(put.ok()["event_id"].as_str().unwrap().starts_with('$'));
        assert_eq!(server.get(path, token(&alice)).await.ok().clone(), json!({"name": name}));
    }
    let all = server.get(&format!("/_matrix/client/v3/rooms/{room}/state"), token(&alice)).await.ok().clone();
    let types: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        assert!(types.contains(&expected), "{types:?}");
    }
    assert_eq!(types.iter().filter(|t| **t == "m.room.name").count(), 1, "one current name");
    // A custom state key.
    put_state(&server, &alice, &room, "org.example.thing", "key 1", json!({"a": 1})).await.ok();
    assert_eq!(state(&server, &alice, &room, "org.example.thing", "key%201").await.ok().clone(), json!({"a": 1}));
    state(&server, &alice, &room, "org.example.thing", "other").await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn members_and_joined_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    membership(&server, &alice, &room, "invite", json!({"user_id": "@carol:localhost"})).await.ok();
    let members = |query: &'static str| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let body =
                server.get(&format!("/_matrix/client/v3/rooms/{room}/members{query}"), token(alice)).await.ok().clone();
            let mut users: Vec<String> =
                body["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap().to_owned()).collect();
            users.sort();
            users
        }
    };
    assert_eq!(members("").await, ["@alice:localhost", "@bob:localhost", "@carol:localhost"]);
    assert_eq!(members("?membership=join").await, ["@alice:localhost", "@bob:localhost"]);
    assert_eq!(members("?not_membership=join").await, ["@carol:localhost"]);
    let joined =
        server.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), token(&alice)).await.ok().clone();
    assert_eq!(joined["joined"].as_object().unwrap().len(), 2);
    // Not joined: no member list.
    server
        .get(&format!("/_matrix/client/v3/rooms/{room}/members"), token(&carol))
        .await
        .expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn leave_kick_ban_unban() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    membership(&server, &bob, &room, "leave", json!({})).await.ok();
    assert_eq!(server.get("/_matrix/client/v3/joined_rooms", token(&bob)).await.ok()["joined_rooms"], json!([]));
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    membership(&server, &alice, &room, "kick", json!({"user_id": "@bob:localhost", "reason": "bye"})).await.ok();
    let kicked = state(&server, &alice, &room, "m.room.member", "@bob:localhost").await.ok().clone();
    assert_eq!(kicked, json!({"membership": "leave", "reason": "bye"}));
    membership(&server, &alice, &room, "ban", json!({"user_id": "@bob:localhost"})).await.ok();
    membership(&server, &alice, &room, "unban", json!({"user_id": "@alice:localhost"}))
        .await
        .expect_error(400, "M_BAD_STATE");
    membership(&server, &alice, &room, "unban", json!({"user_id": "@bob:localhost"})).await.ok();
    membership(&server, &bob, &room, "join", json!({})).await.ok();
}

#[tokio::test]
async fn redacted_events_are_served_redacted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let event_id = send_text(&server, &alice, &room, "t1", "oops").await.ok()["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/r1");
    let redaction = server.put(&path, token(&alice), json!({"reason": "typo"})).await.ok()["event_id"].clone();
    // Idempotent too.
    assert_eq!(server.put(&path, token(&alice), json!({"reason": "typo"})).await.ok()["event_id"], redaction);
    let event =
        server.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), token(&alice)).await.ok().clone();
    assert_eq!(event["content"], json!({}), "content is gone");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction);
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], json!("typo"));
}

#[tokio::test]
async fn only_the_sender_or_a_moderator_redacts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    let event_id = send_text(&server, &alice, &room, "t1", "mine").await.ok()["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/r1");
    server.put(&path, token(&bob), json!({})).await.expect_error(403, "M_FORBIDDEN");
    let unknown = format!("/_matrix/client/v3/rooms/{room}/redact/$unknown/r2");
    server.put(&unknown, token(&alice), json!({})).await.expect_error(404, "M_NOT_FOUND");
}

// ------------------------------------------------------------ auth rules

#[tokio::test]
async fn rejected_sending_without_being_joined() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &bob, &room, "t", "hi").await.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn rejected_joining_an_invite_only_room_uninvited() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.expect_error(403, "M_FORBIDDEN");
    membership(&server, &alice, &room, "invite", json!({"user_id": "@bob:localhost"})).await.ok();
    membership(&server, &bob, &room, "join", json!({})).await.ok();
}

#[tokio::test]
async fn rejected_a_banned_user_rejoining() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    membership(&server, &alice, &room, "ban", json!({"user_id": "@bob:localhost"})).await.ok();
    membership(&server, &bob, &room, "join", json!({})).await.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn rejected_changing_state_without_the_power_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    put_state(&server, &bob, &room, "m.room.name", "", json!({"name": "mine"})).await.expect_error(403, "M_FORBIDDEN");
    // The rejected event never entered the state.
    state(&server, &alice, &room, "m.room.name", "").await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn rejected_raising_ones_own_power_above_ones_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_version": "11", "power_level_content_override": {"events": {"m.room.power_levels": 50}}}),
    )
    .await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    let mut levels = state(&server, &alice, &room, "m.room.power_levels", "").await.ok().clone();
    levels["users"]["@bob:localhost"] = json!(50);
    put_state(&server, &alice, &room, "m.room.power_levels", "", levels.clone()).await.ok();
    // Bob (50) may change power levels but not raise himself to 75.
    levels["users"]["@bob:localhost"] = json!(75);
    put_state(&server, &bob, &room, "m.room.power_levels", "", levels).await.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn rejected_kicking_someone_of_higher_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "room_version": "11"})).await;
    membership(&server, &bob, &room, "join", json!({})).await.ok();
    let mut levels = state(&server, &alice, &room, "m.room.power_levels", "").await.ok().clone();
    levels["users"]["@bob:localhost"] = json!(50);
    put_state(&server, &alice, &room, "m.room.power_levels", "", levels).await.ok();
    membership(&server, &bob, &room, "kick", json!({"user_id": "@alice:localhost"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn rejected_a_second_create_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    put_state(&server, &alice, &room, "m.room.create", "", json!({"room_version": "12"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn create_room_sends_its_events_in_the_spec_order() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat", "name": "N", "topic": "T", "invite": ["@bob:localhost"],
            "room_alias_name": "ordered",
            "initial_state": [{"type": "org.example.custom", "state_key": "", "content": {"x": 1}}],
        }),
    )
    .await;
    // Read the order the room server stored them in (WAL lets a reader in
    // while the server runs).
    let db = rusqlite::Connection::open(server.config.data_dir.join("neurite.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT t.event_type FROM roomserver_events e
             JOIN roomserver_rooms r ON r.room_nid = e.room_nid
             JOIN roomserver_event_types t ON t.event_type_nid = e.event_type_nid
             WHERE r.room_id = ?1 ORDER BY e.depth",
        )
        .unwrap();
    let types: Vec<String> = stmt.query_map([&room], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        types,
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.canonical_alias",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
            "org.example.custom",
            "m.room.name",
            "m.room.topic",
            "m.room.member",
        ]
    );
}

#[tokio::test]
async fn every_supported_room_version_works() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in 6..=12 {
        let room =
            create_room(&server, &alice, json!({"room_version": version.to_string(), "preset": "public_chat"})).await;
        assert_eq!(
            state(&server, &alice, &room, "m.room.create", "").await.ok()["room_version"],
            json!(version.to_string())
        );
        membership(&server, &bob, &room, "join", json!({})).await.ok();
        send_text(&server, &bob, &room, "t", "hello").await.ok();
        put_state(&server, &alice, &room, "m.room.topic", "", json!({"topic": "v"})).await.ok();
        put_state(&server, &bob, &room, "m.room.topic", "", json!({"topic": "no"}))
            .await
            .expect_error(403, "M_FORBIDDEN");
        let event_id =
            send_text(&server, &alice, &room, "r", "redact me").await.ok()["event_id"].as_str().unwrap().to_owned();
        server
            .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/x"), token(&alice), json!({}))
            .await
            .ok();
        let event = server.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), token(&bob)).await;
        assert_eq!(event.status.as_u16(), 200, "v{version}: {}", event.body);
        assert_eq!(event.body["content"], json!({}), "v{version}");
    }
}
