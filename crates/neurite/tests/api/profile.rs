//! `/profile/{userId}` and its fields.

use neurite_test::TestServer;
use serde_json::json;

#[tokio::test]
async fn set_and_read_displayname_and_avatar_url() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let base = "/_matrix/client/v3/profile/@alice:localhost";
    assert_eq!(server.get(base, None).await.ok().clone(), json!({}));
    server.get(&format!("{base}/displayname"), None).await.expect_error(404, "M_NOT_FOUND");

    server.put(&format!("{base}/displayname"), token, json!({"displayname": "Alice A."})).await.ok();
    server.put(&format!("{base}/avatar_url"), token, json!({"avatar_url": "mxc://localhost/abc"})).await.ok();
    assert_eq!(server.get(&format!("{base}/displayname"), None).await.ok().clone(), json!({"displayname": "Alice A."}));
    assert_eq!(
        server.get(&format!("{base}/avatar_url"), None).await.ok().clone(),
        json!({"avatar_url": "mxc://localhost/abc"})
    );
    assert_eq!(
        server.get(base, None).await.ok().clone(),
        json!({"displayname": "Alice A.", "avatar_url": "mxc://localhost/abc"})
    );
    // The r0 alias serves the same.
    let r0 = server.get("/_matrix/client/r0/profile/@alice:localhost/displayname", None).await.ok().clone();
    assert_eq!(r0, json!({"displayname": "Alice A."}));

    // Extended profile fields (v1.16), and deleting one.
    server.put(&format!("{base}/m.tz"), token, json!({"m.tz": "Europe/London"})).await.ok();
    assert_eq!(server.get(&format!("{base}/m.tz"), None).await.ok().clone(), json!({"m.tz": "Europe/London"}));
    server.delete(&format!("{base}/m.tz"), token, json!({})).await.ok();
    server.get(&format!("{base}/m.tz"), None).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn only_the_owner_changes_a_profile() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let bob = server.register("bob").await;
    let path = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    server.put(path, Some(&bob.access_token), json!({"displayname": "Mallory"})).await.expect_error(403, "M_FORBIDDEN");
    server.put(path, None, json!({"displayname": "Mallory"})).await.expect_error(401, "M_MISSING_TOKEN");
    server.delete(path, Some(&bob.access_token), json!({})).await.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn bad_values_and_unknown_users() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let path = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    server.put(path, token, json!({"displayname": 42})).await.expect_error(400, "M_BAD_JSON");
    server
        .put("/_matrix/client/v3/profile/@alice:localhost/avatar_url", token, json!({"avatar_url": "not an mxc uri"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/profile/@nobody:localhost", None).await.expect_error(404, "M_NOT_FOUND");
    server.get("/_matrix/client/v3/profile/@nobody:localhost/displayname", None).await.expect_error(404, "M_NOT_FOUND");
}
