//! `/account/whoami`, `/account/password`, `/account/deactivate`.

use neurite_test::{PASSWORD, TestServer, TestUser};
use serde_json::{Value, json};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn password_auth(user: &TestUser, password: &str, session: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": password, "session": session})
}

#[tokio::test]
async fn whoami_names_the_user_and_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let body = server.get(WHOAMI, Some(&alice.access_token)).await.ok().clone();
    assert_eq!(body, json!({"user_id": alice.user_id, "device_id": alice.device_id}));
    let r0 = server.get("/_matrix/client/r0/account/whoami", Some(&alice.access_token)).await.ok().clone();
    assert_eq!(r0, body);
}

#[tokio::test]
async fn changing_the_password_needs_the_old_one_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = server.login("alice", PASSWORD).await;
    let path = "/_matrix/client/v3/account/password";

    server.post(path, None, json!({"new_password": "new-password-1"})).await.expect_error(401, "M_MISSING_TOKEN");
    let first = server.post(path, Some(&alice.access_token), json!({"new_password": "new-password-1"})).await;
    assert_eq!(first.status.as_u16(), 401);
    let session = first.body["session"].as_str().unwrap().to_owned();
    assert_eq!(first.body, json!({"flows": [{"stages": ["m.login.password"]}], "params": {}, "session": session}));

    // A wrong password: 401, same session, with errcode and error.
    let wrong = json!({"new_password": "new-password-1", "auth": password_auth(&alice, "not-it-at-all", &session)});
    let answer = server.post(path, Some(&alice.access_token), wrong).await;
    assert_eq!((answer.status.as_u16(), answer.errcode()), (401, "M_FORBIDDEN"));
    assert_eq!(answer.body["session"], json!(session));
    assert!(answer.body["error"].is_string());

    // Another user's identifier does not prove anything.
    let bob = server.register("bob").await;
    let as_bob = json!({"new_password": "new-password-1", "auth": password_auth(&bob, PASSWORD, &session)});
    assert_eq!(server.post(path, Some(&alice.access_token), as_bob).await.errcode(), "M_FORBIDDEN");

    // A weak new password is refused before any authentication.
    server
        .post(path, Some(&alice.access_token), json!({"new_password": "short"}))
        .await
        .expect_error(400, "M_WEAK_PASSWORD");

    let right = json!({"new_password": "new-password-1", "auth": password_auth(&alice, PASSWORD, &session)});
    server.post(path, Some(&alice.access_token), right).await.ok();
    server.get(WHOAMI, Some(&alice.access_token)).await.ok();
    server.get(WHOAMI, Some(&other.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    let old = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD});
    server.post("/_matrix/client/v3/login", None, old).await.expect_error(403, "M_FORBIDDEN");
    let kept = server.login("alice", "new-password-1").await;

    // logout_devices: false keeps the other devices.
    let first = server.post(path, Some(&alice.access_token), json!({"new_password": "new-password-2"})).await;
    let session = first.body["session"].as_str().unwrap().to_owned();
    let body = json!({"new_password": "new-password-2", "logout_devices": false, "auth": password_auth(&alice, "new-password-1", &session)});
    server.post(path, Some(&alice.access_token), body).await.ok();
    server.get(WHOAMI, Some(&kept.access_token)).await.ok();
}

#[tokio::test]
async fn a_session_for_one_endpoint_is_refused_by_another() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = server.post("/_matrix/client/v3/account/deactivate", Some(&alice.access_token), json!({})).await;
    let session = first.body["session"].as_str().unwrap().to_owned();
    let body = json!({"new_password": "new-password-1", "auth": password_auth(&alice, PASSWORD, &session)});
    server
        .post("/_matrix/client/v3/account/password", Some(&alice.access_token), body)
        .await
        .expect_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn deactivation_ends_the_account_for_good() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = server.login("alice", PASSWORD).await;
    server
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            Some(&alice.access_token),
            json!({"displayname": "Alice"}),
        )
        .await
        .ok();
    let path = "/_matrix/client/v3/account/deactivate";
    let first = server.post(path, Some(&alice.access_token), json!({})).await;
    assert_eq!(first.status.as_u16(), 401);
    let session = first.body["session"].as_str().unwrap().to_owned();
    let done = server
        .post(path, Some(&alice.access_token), json!({"auth": password_auth(&alice, PASSWORD, &session)}))
        .await
        .ok()
        .clone();
    assert_eq!(done, json!({"id_server_unbind_result": "no-support"}));

    server.get(WHOAMI, Some(&alice.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    server.get(WHOAMI, Some(&other.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    let login = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD});
    server.post("/_matrix/client/v3/login", None, login).await.expect_error(403, "M_USER_DEACTIVATED");
    // The name is never given out again, and the profile is gone.
    let again = json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
    server.post("/_matrix/client/v3/register", None, again).await.expect_error(400, "M_USER_IN_USE");
    assert_eq!(server.get("/_matrix/client/v3/profile/@alice:localhost", None).await.ok().clone(), json!({}));
}
