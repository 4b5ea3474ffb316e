//! The room directory: aliases, createRoom's `room_alias_name` and
//! `visibility`, join by alias, directory visibility, `/publicRooms`; also
//! forget and the propagation of profile changes to member events.

use neurite_test::{Answer, TestServer, TestUser};
use serde_json::{Value, json};

fn token(user: &TestUser) -> Option<&str> {
    Some(user.access_token.as_str())
}

async fn create_room(server: &TestServer, user: &TestUser, body: Value) -> String {
    let answer = server.post("/_matrix/client/v3/createRoom", token(user), body).await;
    answer.ok()["room_id"].as_str().expect("room_id").to_owned()
}

/// The path of an alias, with its `#` percent-encoded.
fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", alias.replace('#', "%23"))
}

async fn put_alias(server: &TestServer, user: &TestUser, alias: &str, room: &str) -> Answer {
    server.put(&alias_path(alias), token(user), json!({"room_id": room})).await
}

async fn join(server: &TestServer, user: &TestUser, room: &str) -> Answer {
    server.post(&format!("/_matrix/client/v3/rooms/{room}/join"), token(user), json!({})).await
}

async fn state(server: &TestServer, user: &TestUser, room: &str, event_type: &str, key: &str) -> Answer {
    server.get(&format!("/_matrix/client/v3/rooms/{room}/state/{event_type}/{key}"), token(user)).await
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{room}")
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

#[tokio::test]
async fn aliases_are_set_resolved_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    put_alias(&server, &alice, "#lounge:localhost", &room).await.ok();
    // No access token needed to resolve.
    let resolved = server.get(&alias_path("#lounge:localhost"), None).await.ok().clone();
    assert_eq!(resolved, json!({"room_id": room, "servers": ["localhost"]}));
    // The r0 path serves it too.
    let r0 = server.get("/_matrix/client/r0/directory/room/%23lounge:localhost", None).await;
    assert_eq!(r0.ok()["room_id"], json!(room));

    put_alias(&server, &alice, "#lounge:localhost", &room).await.expect_error(409, "M_UNKNOWN");
    put_alias(&server, &alice, "#lounge:elsewhere.example", &room).await.expect_error(400, "M_INVALID_PARAM");
    put_alias(&server, &alice, "lounge", &room).await.expect_error(400, "M_INVALID_PARAM");
    put_alias(&server, &alice, "#nowhere:localhost", "!unknown:localhost").await.expect_error(404, "M_NOT_FOUND");
    put_alias(&server, &bob, "#bobs:localhost", &room).await.expect_error(403, "M_FORBIDDEN");
    server.get(&alias_path("#unknown:localhost"), None).await.expect_error(404, "M_NOT_FOUND");
    server.put(&alias_path("#x:localhost"), None, json!({"room_id": room})).await.expect_error(401, "M_MISSING_TOKEN");

    // Bob joins and makes his own alias; he may delete it, but not Alice's.
    join(&server, &bob, &room).await.ok();
    put_alias(&server, &bob, "#bobs:localhost", &room).await.ok();
    server.delete(&alias_path("#lounge:localhost"), token(&bob), json!({})).await.expect_error(403, "M_FORBIDDEN");
    server.delete(&alias_path("#bobs:localhost"), token(&bob), json!({})).await.ok();
    server.get(&alias_path("#bobs:localhost"), None).await.expect_error(404, "M_NOT_FOUND");
    server.delete(&alias_path("#bobs:localhost"), token(&bob), json!({})).await.expect_error(404, "M_NOT_FOUND");

    // Alice, with the power to set the canonical alias, may delete Bob's.
    put_alias(&server, &bob, "#bobs:localhost", &room).await.ok();
    server.delete(&alias_path("#bobs:localhost"), token(&alice), json!({})).await.ok();
    server.delete(&alias_path("#lounge:localhost"), token(&alice), json!({})).await.ok();
    server.get(&alias_path("#lounge:localhost"), None).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn room_aliases_are_listed_for_members_and_world_readable_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    put_alias(&server, &alice, "#b:localhost", &room).await.ok();
    put_alias(&server, &alice, "#a:localhost", &room).await.ok();
    let path = format!("/_matrix/client/v3/rooms/{room}/aliases");
    let listed = server.get(&path, token(&alice)).await.ok().clone();
    assert_eq!(listed, json!({"aliases": ["#a:localhost", "#b:localhost"]}));
    server.get(&path, token(&bob)).await.expect_error(403, "M_FORBIDDEN");
    server
        .get("/_matrix/client/v3/rooms/!unknown:localhost/aliases", token(&bob))
        .await
        .expect_error(403, "M_FORBIDDEN");

    let visibility = json!({"history_visibility": "world_readable"});
    let put = format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/");
    server.put(&put, token(&alice), visibility).await.ok();
    assert_eq!(server.get(&path, token(&bob)).await.ok()["aliases"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn create_room_with_an_alias_name() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "town-square"})).await;
    let canonical = state(&server, &alice, &room, "m.room.canonical_alias", "").await.ok().clone();
    assert_eq!(canonical, json!({"alias": "#town-square:localhost"}));
    assert_eq!(server.get(&alias_path("#town-square:localhost"), None).await.ok()["room_id"], json!(room));
    let aliases = server.get(&format!("/_matrix/client/v3/rooms/{room}/aliases"), token(&alice)).await;
    assert_eq!(aliases.ok()["aliases"], json!(["#town-square:localhost"]));

    let path = "/_matrix/client/v3/createRoom";
    server
        .post(path, token(&alice), json!({"room_alias_name": "town-square"}))
        .await
        .expect_error(400, "M_ROOM_IN_USE");
    server.post(path, token(&alice), json!({"room_alias_name": "a:b"})).await.expect_error(400, "M_INVALID_PARAM");
    server.post(path, token(&alice), json!({"room_alias_name": "a b"})).await.expect_error(400, "M_INVALID_PARAM");
    let joined = server.get("/_matrix/client/v3/joined_rooms", token(&alice)).await.ok().clone();
    assert_eq!(joined, json!({"joined_rooms": [room]}), "no room is made when the alias is refused");

    // Deleting the alias takes it out of the canonical alias event too.
    server.delete(&alias_path("#town-square:localhost"), token(&alice), json!({})).await.ok();
    assert_eq!(state(&server, &alice, &room, "m.room.canonical_alias", "").await.ok().clone(), json!({}));
    // And the name is free again.
    create_room(&server, &alice, json!({"room_alias_name": "town-square"})).await;
}

#[tokio::test]
async fn join_by_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "room_alias_name": "hall"})).await;
    let joined = server.post("/_matrix/client/v3/join/%23hall:localhost", token(&bob), json!({})).await;
    assert_eq!(joined.ok().clone(), json!({"room_id": room}));
    let rooms = server.get("/_matrix/client/v3/joined_rooms", token(&bob)).await.ok().clone();
    assert_eq!(rooms, json!({"joined_rooms": [room]}));
    server
        .post("/_matrix/client/v3/join/%23nope:localhost", token(&bob), json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server
        .post("/_matrix/client/v3/join/%23hall:elsewhere.example", token(&bob), json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn directory_visibility_is_read_and_set() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let public = create_room(&server, &alice, json!({"visibility": "public"})).await;
    let private = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(server.get(&visibility_path(&public), None).await.ok().clone(), json!({"visibility": "public"}));
    assert_eq!(server.get(&visibility_path(&private), None).await.ok().clone(), json!({"visibility": "private"}));
    server.get(&visibility_path("!unknown:localhost"), None).await.expect_error(404, "M_NOT_FOUND");

    server.put(&visibility_path(&private), token(&alice), json!({"visibility": "public"})).await.ok();
    assert_eq!(server.get(&visibility_path(&private), None).await.ok()["visibility"], json!("public"));
    server.put(&visibility_path(&public), token(&alice), json!({"visibility": "private"})).await.ok();
    assert_eq!(server.get(&visibility_path(&public), None).await.ok()["visibility"], json!("private"));

    // Not joined, then joined without power.
    let publish = json!({"visibility": "public"});
    server.put(&visibility_path(&public), token(&bob), publish.clone()).await.expect_error(403, "M_FORBIDDEN");
    join(&server, &bob, &private).await.ok();
    server.put(&visibility_path(&private), token(&bob), publish.clone()).await.expect_error(403, "M_FORBIDDEN");
    server.put(&visibility_path("!unknown:localhost"), token(&alice), publish).await.expect_error(404, "M_NOT_FOUND");
    server
        .put(&visibility_path(&private), token(&alice), json!({"visibility": "secret"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn public_rooms_are_paged_and_searched() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let big = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Big Cheese", "room_alias_name": "big"}),
    )
    .await;
    let medium = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "topic": "All about BRIE"}),
    )
    .await;
    let small =
        create_room(&server, &alice, json!({"visibility": "public", "preset": "private_chat", "name": "Quiet"})).await;
    // Not published: never listed.
    create_room(&server, &alice, json!({"preset": "public_chat", "name": "Hidden cheese"})).await;
    for user in [&bob, &carol] {
        join(&server, user, &big).await.ok();
    }
    join(&server, &bob, &medium).await.ok();

    let all = server.get("/_matrix/client/v3/publicRooms", None).await.ok().clone();
    assert_eq!(room_ids(&all), [big.clone(), medium.clone(), small.clone()], "most members first");
    assert_eq!(all["total_room_count_estimate"], json!(3));
    assert!(all.get("next_batch").is_none() && all.get("prev_batch").is_none(), "{all}");
    let first = &all["chunk"][0];
    assert_eq!(first["name"], json!("Big Cheese"));
    assert_eq!(first["canonical_alias"], json!("#big:localhost"));
    assert_eq!(first["num_joined_members"], json!(3));
    assert_eq!(first["world_readable"], json!(false));
    assert_eq!(first["guest_can_join"], json!(false));
    assert_eq!(all["chunk"][1]["topic"], json!("All about BRIE"));
    assert_eq!(all["chunk"][2]["join_rule"], json!("invite"), "a private_chat room");
    assert_eq!(all["chunk"][2]["guest_can_join"], json!(true));

    // GET with limit and since.
    let page1 = server.get("/_matrix/client/v3/publicRooms?limit=2", None).await.ok().clone();
    assert_eq!(room_ids(&page1), [big.clone(), medium.clone()]);
    assert_eq!(page1["total_room_count_estimate"], json!(3));
    let next = page1["next_batch"].as_str().expect("a next page").to_owned();
    let page2 = server.get(&format!("/_matrix/client/v3/publicRooms?limit=2&since={next}"), None).await.ok().clone();
    assert_eq!(room_ids(&page2), [small.as_str()]);
    assert!(page2.get("next_batch").is_none(), "{page2}");
    let prev = page2["prev_batch"].as_str().expect("a previous page").to_owned();
    let back = server.get(&format!("/_matrix/client/v3/publicRooms?limit=2&since={prev}"), None).await.ok().clone();
    assert_eq!(room_ids(&back), [big.clone(), medium.clone()]);
    server.get("/_matrix/client/v3/publicRooms?since=garbage", None).await.expect_error(400, "M_INVALID_PARAM");

    // POST with the same paging, and a search term.
    let path = "/_matrix/client/v3/publicRooms";
    let post1 = server.post(path, token(&bob), json!({"limit": 2})).await.ok().clone();
    assert_eq!(room_ids(&post1), [big.clone(), medium.clone()]);
    let post2 = server.post(path, token(&bob), json!({"limit": 2, "since": post1["next_batch"]})).await.ok().clone();
    assert_eq!(room_ids(&post2), [small.as_str()]);
    let search = |term: &str| json!({"filter": {"generic_search_term": term}});
    let cheese = server.post(path, token(&bob), search("cheese")).await.ok().clone();
    assert_eq!(room_ids(&cheese), [big.as_str()]);
    assert_eq!(cheese["total_room_count_estimate"], json!(1));
    assert_eq!(room_ids(server.post(path, token(&bob), search("brie")).await.ok()), [medium.as_str()]);
    assert_eq!(room_ids(server.post(path, token(&bob), search("#BIG:")).await.ok()), [big.as_str()]);
    assert_eq!(room_ids(server.post(path, token(&bob), search("nothing")).await.ok()), Vec::<String>::new());
    let spaces = json!({"filter": {"room_types": ["m.space"]}});
    assert_eq!(room_ids(server.post(path, token(&bob), spaces).await.ok()), Vec::<String>::new());
    let untyped = json!({"filter": {"room_types": [null]}});
    assert_eq!(room_ids(server.post(path, token(&bob), untyped).await.ok()).len(), 3);
    server.post(path, None, json!({})).await.expect_error(401, "M_MISSING_TOKEN");
    server.post(path, token(&bob), json!({"since": "n"})).await.expect_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn forget_needs_the_user_to_have_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let forget = format!("/_matrix/client/v3/rooms/{room}/forget");
    server.post(&forget, token(&alice), json!({})).await.expect_error(400, "M_UNKNOWN");
    server.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), token(&alice), json!({})).await.ok();
    assert_eq!(server.post(&forget, token(&alice), json!({})).await.ok().clone(), json!({}));
    let joined = server.get("/_matrix/client/v3/joined_rooms", token(&alice)).await.ok().clone();
    assert_eq!(joined, json!({"joined_rooms": []}));
    server
        .post("/_matrix/client/v3/rooms/!unknown:localhost/forget", token(&alice), json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn profile_changes_reach_every_joined_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let second = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    join(&server, &alice, &second).await.ok();
    // A room Alice left keeps her leave event.
    let left = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    join(&server, &alice, &left).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{left}/leave"), token(&alice), json!({})).await.ok();

    let profile = "/_matrix/client/v3/profile/@alice:localhost";
    server.put(&format!("{profile}/displayname"), token(&alice), json!({"displayname": "Alice"})).await.ok();
    server.put(&format!("{profile}/avatar_url"), token(&alice), json!({"avatar_url": "mxc://localhost/a"})).await.ok();
    for room in [&first, &second] {
        let member = state(&server, &alice, room, "m.room.member", "@alice:localhost").await.ok().clone();
        let expected = json!({"membership": "join", "displayname": "Alice", "avatar_url": "mxc://localhost/a"});
        assert_eq!(member, expected, "in {room}");
    }
    let member = state(&server, &bob, &left, "m.room.member", "@alice:localhost").await.ok().clone();
    assert_eq!(member, json!({"membership": "leave"}));

    server.delete(&format!("{profile}/displayname"), token(&alice), json!({})).await.ok();
    let member = state(&server, &bob, &second, "m.room.member", "@alice:localhost").await.ok().clone();
    assert_eq!(member, json!({"membership": "join", "avatar_url": "mxc://localhost/a"}));
}
