//! `POST /register` with user-interactive authentication, and its helpers.

use neurite_core::config::Registration;
use neurite_test::{PASSWORD, TestServer};
use serde_json::json;

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_is_closed_by_default() {
    let server = TestServer::start_with(|c| c.registration = Registration::Closed).await;
    let body = json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
    server.post(REGISTER, None, body).await.expect_error(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v3/register/available?username=alice", None).await.expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn open_registration_runs_the_dummy_flow_as_the_spec_describes() {
    let server = TestServer::start().await;
    // Stage 0: no auth gives the 401 UIA body: flows, params, session.
    let first = server.post(REGISTER, None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(first.status.as_u16(), 401);
    let session = first.body["session"].as_str().expect("a session").to_owned();
    assert_eq!(first.body, json!({"flows": [{"stages": ["m.login.dummy"]}], "params": {}, "session": session}));

    // Completing the stage registers and logs in.
    let body = json!({
        "username": "alice", "password": PASSWORD,
        "initial_device_display_name": "Alice's phone",
        "auth": {"type": "m.login.dummy", "session": session},
    });
    let done = server.post(REGISTER, None, body).await.ok().clone();
    assert_eq!(done["user_id"], json!("@alice:localhost"));
    let token = done["access_token"].as_str().unwrap();
    let device_id = done["device_id"].as_str().unwrap();
    assert!(done.get("refresh_token").is_none() && done.get("expires_in_ms").is_none());
    let me = server.get("/_matrix/client/v3/account/whoami", Some(token)).await.ok().clone();
    assert_eq!(me, json!({"user_id": "@alice:localhost", "device_id": device_id}));
    let devices = server.get("/_matrix/client/v3/devices", Some(token)).await.ok().clone();
    assert_eq!(devices["devices"][0]["display_name"], json!("Alice's phone"));

    // The session is spent: reusing it is refused.
    let again =
        json!({"username": "alice2", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}});
    server.post(REGISTER, None, again).await.expect_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn the_user_name_is_checked_before_authentication() {
    let server = TestServer::start_with(|c| c.reserved_usernames = vec!["admin".into()]).await;
    server.register("taken").await;
    for (name, errcode) in [
        ("taken", "M_USER_IN_USE"),
        ("TAKEN", "M_USER_IN_USE"),
        ("bad name", "M_INVALID_USERNAME"),
        ("ünicode", "M_INVALID_USERNAME"),
        ("", "M_INVALID_USERNAME"),
        ("_bridge_bot", "M_EXCLUSIVE"),
        ("admin", "M_EXCLUSIVE"),
    ] {
        let answer = server.post(REGISTER, None, json!({"username": name, "password": PASSWORD})).await;
        answer.expect_error(400, errcode);
    }
    let long = "a".repeat(250);
    server
        .post(REGISTER, None, json!({"username": long, "password": PASSWORD}))
        .await
        .expect_error(400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn weak_or_missing_passwords_are_refused() {
    let server = TestServer::start().await;
    server
        .post(REGISTER, None, json!({"username": "alice", "password": "short"}))
        .await
        .expect_error(400, "M_WEAK_PASSWORD");
    server
        .post(REGISTER, None, json!({"username": "alice", "auth": {"type": "m.login.dummy"}}))
        .await
        .expect_error(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn guests_are_refused() {
    let server = TestServer::start().await;
    server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await.expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn inhibit_login_creates_no_device() {
    let server = TestServer::start().await;
    let body =
        json!({"username": "alice", "password": PASSWORD, "inhibit_login": true, "auth": {"type": "m.login.dummy"}});
    let done = server.post(REGISTER, None, body).await.ok().clone();
    assert_eq!(done, json!({"user_id": "@alice:localhost"}));
    let alice = server.login("alice", PASSWORD).await;
    let devices = server.get("/_matrix/client/v3/devices", Some(&alice.access_token)).await.ok().clone();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "only the login's device");
}

#[tokio::test]
async fn a_registration_without_a_name_gets_a_generated_one() {
    let server = TestServer::start().await;
    let done = server
        .post(REGISTER, None, json!({"password": PASSWORD, "auth": {"type": "m.login.dummy"}}))
        .await
        .ok()
        .clone();
    let user_id = done["user_id"].as_str().unwrap();
    assert!(user_id.starts_with('@') && user_id.ends_with(":localhost"), "{user_id}");
}

#[tokio::test]
async fn user_names_are_lower_cased() {
    let server = TestServer::start().await;
    let body = json!({"username": "Alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
    let done = server.post(REGISTER, None, body).await.ok().clone();
    assert_eq!(done["user_id"], json!("@alice:localhost"));
}

#[tokio::test]
async fn username_availability() {
    let server = TestServer::start().await;
    let available = "/_matrix/client/v3/register/available?username=";
    assert_eq!(server.get(&format!("{available}alice"), None).await.ok()["available"], json!(true));
    server.register("alice").await;
    server.get(&format!("{available}alice"), None).await.expect_error(400, "M_USER_IN_USE");
    server.get(&format!("{available}a%20b"), None).await.expect_error(400, "M_INVALID_USERNAME");
    server.get(&format!("{available}_reserved"), None).await.expect_error(400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn token_registration_counts_uses() {
    let server = TestServer::start_with(|c| c.registration = Registration::Token).await;
    // The CLI's path: a token usable twice.
    let cli = neurite::build(server.config.clone()).await.expect("a second handle on the same data folder");
    let token = cli.users.create_registration_token(Some(1), None).await.unwrap();
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=";
    assert_eq!(server.get(&format!("{validity}{token}"), None).await.ok()["valid"], json!(true));
    assert_eq!(server.get(&format!("{validity}nope"), None).await.ok()["valid"], json!(false));

    // The flow offers the token stage.
    let first = server.post(REGISTER, None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(first.status.as_u16(), 401);
    assert_eq!(first.body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = first.body["session"].as_str().unwrap().to_owned();

    // A wrong token: 401 with the UIA body plus errcode and error.
    let wrong = json!({"username": "alice", "password": PASSWORD,
        "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}});
    let answer = server.post(REGISTER, None, wrong).await;
    assert_eq!(answer.status.as_u16(), 401);
    assert_eq!(answer.body["errcode"], json!("M_FORBIDDEN"));
    assert_eq!(answer.body["session"], json!(session));
    assert_eq!(answer.body["flows"], json!([{"stages": ["m.login.registration_token"]}]));

    // The dummy stage is not offered here.
    let dummy =
        json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}});
    assert_eq!(server.post(REGISTER, None, dummy).await.status.as_u16(), 401);

    let right = json!({"username": "alice", "password": PASSWORD,
        "auth": {"type": "m.login.registration_token", "token": token, "session": session}});
    server.post(REGISTER, None, right).await.ok();

    // The single use is spent.
    assert_eq!(server.get(&format!("{validity}{token}"), None).await.ok()["valid"], json!(false));
    let again = json!({"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}});
    let answer = server.post(REGISTER, None, again).await;
    assert_eq!((answer.status.as_u16(), answer.errcode()), (401, "M_FORBIDDEN"));
}

#[tokio::test]
async fn token_validity_is_refused_unless_token_registration_is_on() {
    let server = TestServer::start().await;
    server
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", None)
        .await
        .expect_error(403, "M_FORBIDDEN");
}
