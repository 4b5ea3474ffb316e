//! `/sync` with seed 001's semantics, and `/messages`.

use std::time::{Duration, Instant};

use neurite_test::{TestServer, TestUser};
use serde_json::{Value, json};

fn token(user: &TestUser) -> Option<&str> {
    Some(user.access_token.as_str())
}

async fn sync(server: &TestServer, user: &TestUser, query: &str) -> Value {
    server.get(&format!("/_matrix/client/v3/sync{query}"), token(user)).await.ok().clone()
}

async fn create_room(server: &TestServer, user: &TestUser, body: Value) -> String {
    let answer = server.post("/_matrix/client/v3/createRoom", token(user), body).await;
    answer.ok()["room_id"].as_str().unwrap().to_owned()
}

async fn send(server: &TestServer, user: &TestUser, room: &str, txn: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    server.put(&path, token(user), json!({"msgtype": "m.text", "body": body})).await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn put_state(server: &TestServer, user: &TestUser, room: &str, ty: &str, key: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/{ty}/{key}");
    server.put(&path, token(user), content).await.ok()["event_id"].as_str().unwrap().to_owned()
}

async fn act(server: &TestServer, user: &TestUser, room: &str, action: &str, body: Value) {
    server.post(&format!("/_matrix/client/v3/rooms/{room}/{action}"), token(user), body).await.ok();
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

fn ids(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

fn filter(limit: u32) -> String {
    let f = json!({"room": {"timeline": {"limit": limit}}}).to_string();
    format!("filter={}", urlencode(&f))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seed 001's worked example, built for real: state events A, B, C, D, then
/// messages 1-3, D', 4, D'', 5, B', D''', D'''', 6, synced with `since` at
/// several points and a timeline limit of 5.
#[tokio::test]
async fn the_seed_worked_example_to_the_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut after = Vec::new(); // the since token right after each of the 15 events
    let mut id = std::collections::HashMap::new();
    let steps: [(&str, Option<&str>); 15] = [
        ("A", Some("a")),
        ("B", Some("b")),
        ("C", Some("c")),
        ("D", Some("d")),
        ("1", None),
        ("2", None),
        ("3", None),
        ("D'", Some("d")),
        ("4", None),
        ("D''", Some("d")),
        ("5", None),
        ("B'", Some("b")),
        ("D'''", Some("d")),
        ("D''''", Some("d")),
        ("6", None),
    ];
    for (name, key) in steps {
        let event_id = match key {
            Some(key) => put_state(&server, &alice, &room, "org.example.letter", key, json!({"value": name})).await,
            None => send(&server, &alice, &room, name, name).await,
        };
        id.insert(name, event_id);
        after.push(next_batch(&sync(&server, &alice, "").await));
    }
    let names = |events: &Value| -> Vec<String> {
        let by_id: std::collections::HashMap<&String, &str> = id.iter().map(|(n, i)| (i, *n)).collect();
        ids(events)
            .iter()
            .map(|i| by_id.get(i).map(|n| n.to_string()).unwrap_or_else(|| format!("other {i}")))
            .collect()
    };
    let room_of = |body: &Value| body["rooms"]["join"][&room].clone();

    // since=14 (after D''''): timeline [6], no state.
    let body = sync(&server, &alice, &format!("?since={}&{}", after[13], filter(5))).await;
    let r = room_of(&body);
    assert_eq!(names(&r["timeline"]["events"]), ["6"]);
    assert_eq!(names(&r["state"]["events"]), Vec::<String>::new());
    assert_eq!(r["timeline"]["limited"], json!(false));

    // since=9 (after 4): timeline [5, B', D''', D'''', 6]; state [D''] (between 9 and 11, exclusive).
    let body = sync(&server, &alice, &format!("?since={}&{}", after[8], filter(5))).await;
    let r = room_of(&body);
    assert_eq!(names(&r["timeline"]["events"]), ["5", "B'", "D'''", "D''''", "6"]);
    assert_eq!(names(&r["state"]["events"]), ["D''"]);
    assert_eq!(r["timeline"]["limited"], json!(true), "D'' was left out");

    // since=10 (after D''): the same timeline, nothing left out, no state change before it.
    let body = sync(&server, &alice, &format!("?since={}&{}", after[9], filter(5))).await;
    let r = room_of(&body);
    assert_eq!(names(&r["timeline"]["events"]), ["5", "B'", "D'''", "D''''", "6"]);
    assert_eq!(names(&r["state"]["events"]), Vec::<String>::new());
    assert_eq!(r["timeline"]["limited"], json!(false));

    // since=4 (after D): B is unchanged before the timeline, D changed twice: only D''.
    let body = sync(&server, &alice, &format!("?since={}&{}", after[3], filter(5))).await;
    let r = room_of(&body);
    assert_eq!(names(&r["state"]["events"]), ["D''"]);

    // A complete sync with limit 5: the full state at the start of the timeline: A, B, C, D''.
    let body = sync(&server, &alice, &format!("?{}", filter(5))).await;
    let r = room_of(&body);
    assert_eq!(names(&r["timeline"]["events"]), ["5", "B'", "D'''", "D''''", "6"]);
    let mut letters: Vec<String> =
        names(&r["state"]["events"]).into_iter().filter(|n| !n.starts_with("other")).collect();
    letters.sort();
    assert_eq!(letters, ["A", "B", "C", "D''"]);
    assert_eq!(r["timeline"]["limited"], json!(true));
    // Current state (from /state) is A, B', C, D''''.
    let state = server.get(&format!("/_matrix/client/v3/rooms/{room}/state"), token(&alice)).await.ok().clone();
    let mut current: Vec<String> = names(&state).into_iter().filter(|n| !n.starts_with("other")).collect();
    current.sort();
    assert_eq!(current, ["A", "B'", "C", "D''''"]);
}

#[tokio::test]
async fn complete_sync_has_joined_rooms_invites_and_a_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"name": "Room", "invite": ["@bob:localhost"]})).await;
    send(&server, &alice, &room, "t1", "hello").await;
    let body = sync(&server, &alice, "").await;
    assert!(next_batch(&body).starts_with('s'));
    let joined = &body["rooms"]["join"][&room];
    let state_types: Vec<&str> =
        joined["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    let timeline = joined["timeline"]["events"].as_array().unwrap();
    assert!(!timeline.is_empty());
    assert_eq!(timeline.last().unwrap()["content"]["body"], json!("hello"));
    // State and timeline together hold the room's state once.
    let timeline_types: Vec<&str> = timeline.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(state_types.contains(&"m.room.create") || timeline_types.contains(&"m.room.create"));
    assert!(joined["timeline"]["prev_batch"].is_string());

    // Bob sees the invite, with stripped state.
    let body = sync(&server, &bob, "").await;
    assert!(body["rooms"]["join"].as_object().unwrap().is_empty());
    let invite_state = body["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap().clone();
    let types: Vec<&str> = invite_state.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.member"] {
        assert!(types.contains(&expected), "{types:?}");
    }
    assert!(invite_state.iter().all(|e| e.get("event_id").is_none()), "stripped state has no event IDs");
    let inviter = invite_state.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:localhost");
    assert!(inviter.is_some(), "the inviter's member event");
}

#[tokio::test]
async fn incremental_sync_and_the_transaction_id_of_the_sending_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", neurite_test::PASSWORD).await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    let phone_since = next_batch(&sync(&server, &phone, "").await);
    send(&server, &alice, &room, "txn-42", "from the laptop").await;
    let body = sync(&server, &alice, &format!("?since={since}")).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["unsigned"]["transaction_id"], json!("txn-42"));
    let body = sync(&server, &phone, &format!("?since={phone_since}")).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert!(events[0]["unsigned"].get("transaction_id").is_none(), "only the sending device sees its txn ID");
    // Nothing new: the room is not in the answer.
    let body = sync(&server, &alice, &format!("?since={}", next_batch(&body))).await;
    assert!(body["rooms"]["join"].as_object().unwrap().is_empty());
}

#[tokio::test]
async fn membership_transitions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Public"})).await;
    for i in 0..15 {
        send(&server, &alice, &room, &format!("m{i}"), "history").await;
    }
    let since = next_batch(&sync(&server, &bob, "").await);

    // A newly joined room: full current state, limited.
    act(&server, &bob, &room, "join", json!({})).await;
    let body = sync(&server, &bob, &format!("?since={since}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], json!(true));
    let state_types: Vec<&str> =
        joined["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        assert!(state_types.contains(&expected), "full state on join: {state_types:?}");
    }
    let since = next_batch(&body);

    // A profile change by an already-joined user is not a new join.
    server
        .put("/_matrix/client/v3/profile/@bob:localhost/displayname", token(&bob), json!({"displayname": "Bob"}))
        .await
        .ok();
    let body = sync(&server, &bob, &format!("?since={since}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 1);
    assert_eq!(joined["timeline"]["events"][0]["content"]["displayname"], json!("Bob"));
    assert!(joined["state"]["events"].as_array().unwrap().is_empty(), "no state resent");
    assert_eq!(joined["timeline"]["limited"], json!(false));
    let since = next_batch(&body);

    // Kicked: the room moves to leave, with the events up to the kick.
    send(&server, &alice, &room, "before-kick", "last words").await;
    act(&server, &alice, &room, "kick", json!({"user_id": "@bob:localhost"})).await;
    send(&server, &alice, &room, "after-kick", "not for bob").await;
    let body = sync(&server, &bob, &format!("?since={since}")).await;
    assert!(body["rooms"]["join"].get(&room).is_none());
    let left = body["rooms"]["leave"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let bodies: Vec<&Value> = left.iter().map(|e| &e["content"]).collect();
    assert_eq!(left.last().unwrap()["content"]["membership"], json!("leave"), "{bodies:?}");
    assert!(left.iter().all(|e| e["content"]["body"] != "not for bob"));
    let since = next_batch(&body);
    // Once reported, the left room stays out.
    let body = sync(&server, &bob, &format!("?since={since}")).await;
    assert!(body["rooms"]["leave"].as_object().unwrap().is_empty());

    // An invite arrives in `invite`.
    let private = create_room(&server, &alice, json!({})).await;
    act(&server, &alice, &private, "invite", json!({"user_id": "@bob:localhost"})).await;
    let body = sync(&server, &bob, &format!("?since={since}")).await;
    assert!(body["rooms"]["invite"].get(&private).is_some());
}

#[tokio::test]
async fn full_state_sends_every_state_event_again() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({"name": "N"})).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    send(&server, &alice, &room, "t", "x").await;
    let body = sync(&server, &alice, &format!("?since={since}&full_state=true")).await;
    let state_types: Vec<&str> = body["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(state_types.contains(&"m.room.name") && state_types.contains(&"m.room.create"), "{state_types:?}");
}

#[tokio::test]
async fn long_polls_wake_for_their_user_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    act(&server, &bob, &room, "join", json!({})).await;
    let bob_since = next_batch(&sync(&server, &bob, "").await);
    let carol_since = next_batch(&sync(&server, &carol, "").await);

    let server = std::sync::Arc::new(server);
    let (s, b, r) = (server.clone(), bob.clone(), room.clone());
    let bob_poll = tokio::spawn(async move {
        let start = Instant::now();
        let body = sync(&s, &b, &format!("?since={bob_since}&timeout=20000")).await;
        (start.elapsed(), body["rooms"]["join"][&r]["timeline"]["events"].as_array().map(|a| a.len()).unwrap_or(0))
    });
    let (s, c) = (server.clone(), carol.clone());
    let carol_poll = tokio::spawn(async move {
        let start = Instant::now();
        let body = sync(&s, &c, &format!("?since={carol_since}&timeout=1500")).await;
        (start.elapsed(), body)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&server, &alice, &room, "wake", "wake up").await;
    let (elapsed, events) = bob_poll.await.unwrap();
    assert_eq!(events, 1);
    assert!(elapsed < Duration::from_secs(10), "bob woke when the message came: {elapsed:?}");
    let (elapsed, body) = carol_poll.await.unwrap();
    assert!(elapsed >= Duration::from_millis(1400), "carol slept until her timeout: {elapsed:?}");
    assert!(body["rooms"]["join"].as_object().unwrap().is_empty());
    assert_eq!(body["next_batch"].as_str().unwrap(), carol_since_after(&body));
}

fn carol_since_after(body: &Value) -> &str {
    body["next_batch"].as_str().unwrap()
}

#[tokio::test]
async fn timeline_filters() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({})).await;
    act(&server, &bob, &room, "join", json!({})).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    send(&server, &alice, &room, "a1", "from alice").await;
    send(&server, &bob, &room, "b1", "from bob").await;
    put_state(&server, &alice, &room, "m.room.topic", "", json!({"topic": "t"})).await;
    send(&server, &alice, &other, "o1", "elsewhere").await;
    let with = |f: Value| format!("?since={since}&filter={}", urlencode(&f.to_string()));

    let body = sync(&server, &alice, &with(json!({"room": {"timeline": {"senders": ["@bob:localhost"]}}}))).await;
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().len(), 1);
    let body = sync(&server, &alice, &with(json!({"room": {"timeline": {"not_types": ["m.room.message"]}}}))).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert!(events.iter().all(|e| e["type"] == "m.room.topic"));
    let body = sync(&server, &alice, &with(json!({"room": {"rooms": [other.clone()]}}))).await;
    assert!(body["rooms"]["join"].get(&room).is_none() && body["rooms"]["join"].get(&other).is_some());
    let body = sync(
        &server,
        &alice,
        &with(json!({"room": {"not_rooms": [other.clone()], "timeline": {"limit": 1}}, "unknown_field": 1})),
    )
    .await;
    assert!(body["rooms"]["join"].get(&other).is_none());
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], json!(true));
    // A stored filter works the same.
    let filter_id = server
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            token(&alice),
            json!({"room": {"timeline": {"limit": 2}}}),
        )
        .await
        .ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = sync(&server, &alice, &format!("?since={since}&filter={filter_id}")).await;
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_tokens_are_invalid_param() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.get("/_matrix/client/v3/sync?since=garbage", token(&alice)).await.expect_error(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync", None).await.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn messages_pages_back_from_prev_batch_and_forwards() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..12 {
        send(&server, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
    }
    let body = sync(&server, &alice, &format!("?{}", filter(3))).await;
    let prev_batch = body["rooms"]["join"][&room]["timeline"]["prev_batch"].as_str().unwrap().to_owned();
    // The sync timeline holds 9, 10, 11; paging back gives 8, 7, 6, 5.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=4&from={prev_batch}");
    let page = server.get(&path, token(&alice)).await.ok().clone();
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["message 8", "message 7", "message 6", "message 5"]);
    assert_eq!(page["start"], json!(prev_batch));
    let end = page["end"].as_str().unwrap().to_owned();
    // Forwards from `end` comes back up.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=2&from={end}");
    let page = server.get(&path, token(&alice)).await.ok().clone();
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["message 5", "message 6"]);
    // Without `from`, backwards starts at the live end.
    let page = server
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"), token(&alice))
        .await
        .ok()
        .clone();
    assert_eq!(page["chunk"][0]["content"]["body"], json!("message 11"));
    // Paging to the very beginning ends without `end`.
    let page = server
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), token(&alice))
        .await
        .ok()
        .clone();
    assert_eq!(page["chunk"].as_array().unwrap().last().unwrap()["type"], json!("m.room.create"));
    assert!(page.get("end").is_none());
    // Someone never in the room sees nothing.
    server
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), token(&bob))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server
        .get("/_matrix/client/v3/rooms/!nope:localhost/messages?dir=b", token(&alice))
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn members_at_a_sync_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let at_end = next_batch(&sync(&server, &alice, "").await);
    act(&server, &bob, &room, "join", json!({})).await;
    let members = |at: String| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let body = server
                .get(&format!("/_matrix/client/v3/rooms/{room}/members?at={at}"), token(alice))
                .await
                .ok()
                .clone();
            let mut users: Vec<String> =
                body["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap().to_owned()).collect();
            users.sort();
            users
        }
    };
    assert_eq!(members(at_end).await, ["@alice:localhost"], "bob joined after that token");
    let now = next_batch(&sync(&server, &alice, "").await);
    assert_eq!(members(now).await, ["@alice:localhost", "@bob:localhost"]);
    // Before the room's first events, alice was not in it yet.
    let answer = server.get(&format!("/_matrix/client/v3/rooms/{room}/members?at=s0"), token(&alice)).await;
    answer.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn history_visibility_hides_what_came_before_joining() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    send(&server, &alice, &room, "secret", "before bob").await;
    act(&server, &bob, &room, "join", json!({})).await;
    send(&server, &alice, &room, "public", "after bob").await;
    let bodies = |events: &Value| -> Vec<String> {
        events.as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
    };
    let body = sync(&server, &bob, "").await;
    assert_eq!(bodies(&body["rooms"]["join"][&room]["timeline"]["events"]), ["after bob"]);
    let page =
        server.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), token(&bob)).await.ok().clone();
    assert_eq!(bodies(&page["chunk"]), ["after bob"]);
    // Alice, joined all along, sees both; "shared" shows members everything.
    let page = server
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), token(&alice))
        .await
        .ok()
        .clone();
    assert_eq!(bodies(&page["chunk"]), ["after bob", "before bob"]);
    put_state(&server, &alice, &room, "m.room.history_visibility", "", json!({"history_visibility": "shared"})).await;
    send(&server, &alice, &room, "later", "under shared").await;
    act(&server, &carol, &room, "join", json!({})).await;
    let body = sync(&server, &carol, &format!("?{}", filter(50))).await;
    let seen = bodies(&body["rooms"]["join"][&room]["timeline"]["events"]);
    // Carol joined under "shared": she sees what was sent under "shared",
    // but not what was sent while the room said "joined" and she was out.
    assert_eq!(seen, ["under shared"]);
}

#[tokio::test]
async fn use_state_after_sends_the_state_at_the_end_of_the_timeline() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({"name": "first"})).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    put_state(&server, &alice, &room, "m.room.name", "", json!({"name": "second"})).await;
    send(&server, &alice, &room, "t", "after the rename").await;
    let body = sync(&server, &alice, &format!("?since={since}&use_state_after=true")).await;
    let r = &body["rooms"]["join"][&room];
    assert!(r.get("state").is_none(), "state is omitted with use_state_after");
    let after = r["state_after"]["events"].as_array().unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["content"]["name"], json!("second"), "state_after counts the timeline's own state events");
    // A complete sync: the full state at the end of the timeline.
    let body = sync(&server, &alice, &format!("?use_state_after=true&{}", filter(1))).await;
    let after = body["rooms"]["join"][&room]["state_after"]["events"].as_array().unwrap().clone();
    let name = after.iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], json!("second"));
    assert!(after.iter().any(|e| e["type"] == "m.room.create"));
}
