//! `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`.

use neurite_test::TestServer;
use serde_json::json;

#[tokio::test]
async fn a_stored_filter_reads_back() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let filter = json!({
        "event_fields": ["type", "content"],
        "room": {"timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": ["@spam:localhost"]}},
        "presence": {"not_types": ["m.presence"]}
    });
    let created =
        server.post("/_matrix/client/v3/user/@alice:localhost/filter", token, filter.clone()).await.ok().clone();
    let id = created["filter_id"].as_str().unwrap().to_owned();
    let read = server.get(&format!("/_matrix/client/v3/user/@alice:localhost/filter/{id}"), token).await.ok().clone();
    assert_eq!(read["room"]["timeline"], filter["room"]["timeline"]);
    assert_eq!(read["event_fields"], filter["event_fields"]);
    // A second filter gets another ID.
    let second = server.post("/_matrix/client/v3/user/@alice:localhost/filter", token, json!({})).await.ok().clone();
    assert_ne!(second["filter_id"], created["filter_id"]);
}

#[tokio::test]
async fn bad_filters_are_400() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let path = "/_matrix/client/v3/user/@alice:localhost/filter";
    server.post(path, token, json!({"room": {"timeline": {"limit": "ten"}}})).await.expect_error(400, "M_BAD_JSON");
    server.post(path, token, json!({"room": {"timeline": {"limit": -1}}})).await.expect_error(400, "M_BAD_JSON");
    server.post(path, token, json!({"room": {"rooms": ["not a room id"]}})).await.expect_error(400, "M_BAD_JSON");
    server.post(path, token, json!({"event_format": "xml"})).await.expect_error(400, "M_INVALID_PARAM");
    server.post(path, token, json!({"room": "everything"})).await.expect_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn filters_belong_to_their_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let created = server
        .post("/_matrix/client/v3/user/@alice:localhost/filter", Some(&alice.access_token), json!({}))
        .await
        .ok()
        .clone();
    let id = created["filter_id"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/user/@alice:localhost/filter/{id}");
    server.get(&path, Some(&bob.access_token)).await.expect_error(403, "M_FORBIDDEN");
    server
        .post("/_matrix/client/v3/user/@alice:localhost/filter", Some(&bob.access_token), json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server
        .get("/_matrix/client/v3/user/@alice:localhost/filter/999", Some(&alice.access_token))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server
        .get("/_matrix/client/v3/user/@alice:localhost/filter/abc", Some(&alice.access_token))
        .await
        .expect_error(404, "M_NOT_FOUND");
}
