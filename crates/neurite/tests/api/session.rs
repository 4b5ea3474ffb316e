//! `/login`, `/refresh`, `/logout`, `/logout/all`.

use neurite_test::{PASSWORD, TestServer};
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn login_flows_offer_password() {
    let server = TestServer::start().await;
    let body = server.get(LOGIN, None).await.ok().clone();
    assert_eq!(body, json!({"flows": [{"type": "m.login.password"}]}));
}

#[tokio::test]
async fn password_login_accepts_every_way_of_naming_the_user() {
    let server = TestServer::start().await;
    server.register("alice").await;
    for body in [
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:localhost"}, "password": PASSWORD}),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "ALICE"}, "password": PASSWORD}),
        json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
    ] {
        let answer = server.post(LOGIN, None, body).await.ok().clone();
        assert_eq!(answer["user_id"], json!("@alice:localhost"));
        assert_eq!(answer["well_known"]["m.homeserver"]["base_url"], json!(server.config.client_base_url()));
        let token = answer["access_token"].as_str().unwrap();
        assert_eq!(server.get(WHOAMI, Some(token)).await.ok()["device_id"], answer["device_id"]);
    }
}

#[tokio::test]
async fn wrong_credentials_are_403_forbidden() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let login = |user: &str, password: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
    server.post(LOGIN, None, login("alice", "wrong-password")).await.expect_error(403, "M_FORBIDDEN");
    server.post(LOGIN, None, login("nobody", PASSWORD)).await.expect_error(403, "M_FORBIDDEN");
    server.post(LOGIN, None, login("@alice:elsewhere.org", PASSWORD)).await.expect_error(403, "M_FORBIDDEN");
    let third_party = json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": PASSWORD});
    server.post(LOGIN, None, third_party).await.expect_error(403, "M_FORBIDDEN");
    server.post(LOGIN, None, json!({"type": "m.login.token", "token": "abc"})).await.expect_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn reusing_a_device_id_keeps_the_device_and_revokes_its_old_token() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let login = |device: &str, name: &str| json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": device, "initial_device_display_name": name});
    let first = server.post(LOGIN, None, login("LAPTOP", "Laptop")).await.ok().clone();
    assert_eq!(first["device_id"], json!("LAPTOP"));
    let second = server.post(LOGIN, None, login("LAPTOP", "Ignored for a known device")).await.ok().clone();
    assert_eq!(second["device_id"], json!("LAPTOP"));
    server.get(WHOAMI, first["access_token"].as_str()).await.expect_error(401, "M_UNKNOWN_TOKEN");
    let token = second["access_token"].as_str();
    let device = server.get("/_matrix/client/v3/devices/LAPTOP", token).await.ok().clone();
    assert_eq!(device["display_name"], json!("Laptop"));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_expired_access_tokens_soft_logout() {
    let server = TestServer::start_with(|c| c.access_token_lifetime_ms = 1500).await;
    server.register("alice").await;
    let body = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": true});
    let login = server.post(LOGIN, None, body).await.ok().clone();
    assert_eq!(login["expires_in_ms"], json!(1500));
    let (access, refresh) = (login["access_token"].as_str().unwrap(), login["refresh_token"].as_str().unwrap());
    server.get(WHOAMI, Some(access)).await.ok();

    // Refreshing gives a new pair; the old refresh token stays valid until the new pair is used.
    let first = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await.ok().clone();
    assert_eq!(first["expires_in_ms"], json!(1500));
    // The access token the refresh replaced is gone at once, though it was just used.
    server.get(WHOAMI, Some(access)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    let retry = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await.ok().clone();
    let new_access = retry["access_token"].as_str().unwrap();
    assert_eq!(server.get(WHOAMI, Some(new_access)).await.ok()["device_id"], login["device_id"]);
    // The new access token was used: the old refresh token is revoked.
    server
        .post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh}))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");

    // An expired access token is a soft logout.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let expired = server.get(WHOAMI, Some(new_access)).await;
    expired.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], json!(true));
    // ... and the refresh token still brings the session back.
    let newest = retry["refresh_token"].as_str().unwrap();
    let back = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": newest})).await.ok().clone();
    server.get(WHOAMI, back["access_token"].as_str()).await.ok();
    server
        .post("/_matrix/client/v3/refresh", None, json!({"refresh_token": "nrt_unknown"}))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn logout_ends_one_device_and_logout_all_ends_every_device() {
    let server = TestServer::start().await;
    let phone = server.register("alice").await;
    let laptop = server.login("alice", PASSWORD).await;
    let tablet = server.login("alice", PASSWORD).await;

    server.post("/_matrix/client/v3/logout", Some(&phone.access_token), json!({})).await.ok();
    let gone = server.get(WHOAMI, Some(&phone.access_token)).await;
    gone.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(gone.body["soft_logout"], json!(false));
    let devices = server.get("/_matrix/client/v3/devices", Some(&laptop.access_token)).await.ok().clone();
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert!(!ids.contains(&phone.device_id.as_str()) && ids.len() == 2, "{ids:?}");

    // An empty body is accepted, as clients send one.
    server
        .raw(
            neurite_test::Method::POST,
            "/_matrix/client/r0/logout/all",
            &[("Authorization", &format!("Bearer {}", laptop.access_token))],
            vec![],
        )
        .await
        .ok();
    server.get(WHOAMI, Some(&laptop.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    server.get(WHOAMI, Some(&tablet.access_token)).await.expect_error(401, "M_UNKNOWN_TOKEN");
    // The account itself is fine.
    server.login("alice", PASSWORD).await;
}
