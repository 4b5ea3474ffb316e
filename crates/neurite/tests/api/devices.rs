//! `/devices`, `/devices/{deviceId}`, `/delete_devices`.

use neurite_test::{PASSWORD, TestServer, TestUser};
use serde_json::{Value, json};

fn password_auth(user: &TestUser, session: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "session": session, "_for": user.user_id})
}

#[tokio::test]
async fn list_get_and_rename() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let list = server.get("/_matrix/client/v3/devices", token).await.ok().clone();
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device_id"], json!(alice.device_id));
    assert!(devices[0]["last_seen_ts"].as_u64().unwrap() > 0);
    assert_eq!(devices[0]["last_seen_ip"], json!("127.0.0.1"));

    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    server.put(&path, token, json!({"display_name": "Work laptop"})).await.ok();
    let device = server.get(&path, token).await.ok().clone();
    assert_eq!(device["device_id"], json!(alice.device_id));
    assert_eq!(device["display_name"], json!("Work laptop"));

    server.get("/_matrix/client/v3/devices/NOSUCHDEVICE", token).await.expect_error(404, "M_NOT_FOUND");
    server
        .put("/_matrix/client/v3/devices/NOSUCHDEVICE", token, json!({"display_name": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.get("/_matrix/client/v3/devices", None).await.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn another_users_devices_are_invisible() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    server.get(&path, Some(&bob.access_token)).await.expect_error(404, "M_NOT_FOUND");
    server
        .put(&path, Some(&bob.access_token), json!({"display_name": "mine now"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_device_needs_the_password_and_revokes_its_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let first = server.delete(&path, Some(&alice.access_token), json!({})).await;
    assert_eq!(first.status.as_u16(), 401);
    let session = first.body["session"].as_str().unwrap().to_owned();
    assert_eq!(first.body, json!({"flows": [{"stages": ["m.login.password"]}], "params": {}, "session": session}));
    // Still there until authentication completes.
    server.get("/_matrix/client/v3/account/whoami", Some(&phone.access_token)).await.ok();

    server.delete(&path, Some(&alice.access_token), json!({"auth": password_auth(&alice, &session)})).await.ok();
    server
        .get("/_matrix/client/v3/account/whoami", Some(&phone.access_token))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server.get(&path, Some(&alice.access_token)).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn delete_devices_removes_several_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = server.login("alice", PASSWORD).await;
    let b = server.login("alice", PASSWORD).await;
    let path = "/_matrix/client/v3/delete_devices";
    let body = json!({"devices": [a.device_id, b.device_id, "UNKNOWN"]});
    let first = server.post(path, Some(&alice.access_token), body.clone()).await;
    assert_eq!(first.status.as_u16(), 401);
    let session = first.body["session"].as_str().unwrap().to_owned();
    let mut body = body;
    body["auth"] = password_auth(&alice, &session);
    server.post(path, Some(&alice.access_token), body).await.ok();
    let list = server.get("/_matrix/client/v3/devices", Some(&alice.access_token)).await.ok().clone();
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    server.get("/_matrix/client/v3/account/whoami", Some(&a.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    server.get("/_matrix/client/v3/account/whoami", Some(&b.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
}
