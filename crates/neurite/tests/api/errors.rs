//! The error model: every class of bad request gets the spec's errcode and status.

use neurite_test::{Method, TestServer};
use serde_json::json;

#[tokio::test]
async fn unknown_endpoint_is_404_unrecognized() {
    let server = TestServer::start().await;
    server.get("/_matrix/client/v3/no_such_endpoint", None).await.expect_error(404, "M_UNRECOGNIZED");
    server.get("/", None).await.expect_error(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn known_path_with_wrong_method_is_405_unrecognized() {
    let server = TestServer::start().await;
    server.request(Method::DELETE, "/_matrix/client/v3/login", None, None).await.expect_error(405, "M_UNRECOGNIZED");
    server.put("/_matrix/client/v3/account/whoami", None, json!({})).await.expect_error(405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_401() {
    let server = TestServer::start().await;
    let whoami = "/_matrix/client/v3/account/whoami";
    server.get(whoami, None).await.expect_error(401, "M_MISSING_TOKEN");
    let unknown = server.get(whoami, Some("nat_not_a_real_token")).await;
    unknown.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(unknown.body["soft_logout"], json!(false));
    // Another Authorization scheme is no access token at all.
    server
        .raw(Method::GET, whoami, &[("Authorization", "Basic abc")], vec![])
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    // The query parameter works too.
    let alice = server.register("alice").await;
    let body = server.get(&format!("{whoami}?access_token={}", alice.access_token), None).await.ok().clone();
    assert_eq!(body["user_id"], json!(alice.user_id));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_not_json() {
    let server = TestServer::start().await;
    let answer = server
        .raw(Method::POST, "/_matrix/client/v3/login", &[("Content-Type", "application/json")], b"{not json".to_vec())
        .await;
    answer.expect_error(400, "M_NOT_JSON");
    let answer = server.raw(Method::POST, "/_matrix/client/v3/register", &[], vec![0xff, 0xfe, 0x00]).await;
    answer.expect_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // `password` must be a string.
    server
        .post("/_matrix/client/v3/login", None, json!({"type": "m.login.password", "user": "alice", "password": 5}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // A required field is missing.
    server.post("/_matrix/client/v3/refresh", None, json!({})).await.expect_error(400, "M_BAD_JSON");
    // A JSON array where an object is required.
    server
        .put(&format!("/_matrix/client/v3/devices/{}", alice.device_id), Some(&alice.access_token), json!([1, 2]))
        .await
        .expect_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn bad_identifiers_in_the_path_are_invalid_param() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.get("/_matrix/client/v3/profile/not-a-user-id", None).await.expect_error(400, "M_INVALID_PARAM");
    server
        .get("/_matrix/client/v3/user/nobody/filter/0", Some(&alice.access_token))
        .await
        .expect_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_too_large() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 1024).await;
    let big = json!({"type": "m.login.password", "user": "alice", "password": "x".repeat(2000)});
    server.post("/_matrix/client/v3/login", None, big).await.expect_error(413, "M_TOO_LARGE");
    // Under the limit the same endpoint works as usual.
    server
        .post("/_matrix/client/v3/login", None, json!({"type": "m.login.password", "user": "alice", "password": "x"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = neurite_core::config::Switch::On;
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let body = json!({"type": "m.login.password", "user": "nobody", "password": "wrong-password"});
    let mut limited = None;
    for _ in 0..10 {
        let answer = server.post("/_matrix/client/v3/login", None, body.clone()).await;
        if answer.status.as_u16() == 429 {
            limited = Some(answer);
            break;
        }
        answer.expect_error(403, "M_FORBIDDEN");
    }
    let limited = limited.expect("the fourth login within a second is limited");
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    let retry = limited.body["retry_after_ms"].as_u64().expect("retry_after_ms is a number");
    assert!(retry > 0 && retry <= 1000, "{retry}");
    assert!(limited.headers.contains_key("retry-after"));
    // Endpoints the spec does not rate-limit still answer.
    server.get("/_matrix/client/versions", None).await.ok();
}

#[tokio::test]
async fn made_up_tokens_do_not_escape_the_rate_limit() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = neurite_core::config::Switch::On;
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    // /login takes no token: whatever Authorization says, the bucket is the client address's.
    let body = json!({"type": "m.login.password", "user": "nobody", "password": "wrong-password"}).to_string();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let auth = format!("Bearer made-up-{i}");
        let answer = server
            .raw(Method::POST, "/_matrix/client/v3/login", &[("Authorization", &auth)], body.clone().into_bytes())
            .await;
        statuses.push(answer.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn authenticated_requests_are_limited_per_user() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = neurite_core::config::Switch::On;
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 5;
    })
    .await;
    let alice = server.register("alice").await;
    let second_device = server.login("alice", neurite_test::PASSWORD).await;
    let mut limited = false;
    for i in 0..8 {
        let token = if i % 2 == 0 { &alice.access_token } else { &second_device.access_token };
        let answer = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
        if answer.status.as_u16() == 429 {
            answer.expect_error(429, "M_LIMIT_EXCEEDED");
            limited = true;
            break;
        }
        answer.ok();
    }
    assert!(limited, "two devices of one user share the user's bucket");
}

#[tokio::test]
async fn endpoints_without_tokens_ignore_the_authorization_header() {
    let server = TestServer::start().await;
    for header in ["Basic dXNlcjpwYXNz", "Bearer not-a-token"] {
        let answer = server.raw(Method::GET, "/_matrix/client/v3/login", &[("Authorization", header)], vec![]).await;
        assert_eq!(answer.status.as_u16(), 200, "{header}");
    }
    // /versions takes an optional token: another scheme is no token, but a
    // bearer token that is given must be valid.
    let answer =
        server.raw(Method::GET, "/_matrix/client/versions", &[("Authorization", "Basic dXNlcjpwYXNz")], vec![]).await;
    assert_eq!(answer.status.as_u16(), 200);
    let answer =
        server.raw(Method::GET, "/_matrix/client/versions", &[("Authorization", "Bearer not-a-token")], vec![]).await;
    answer.expect_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn rate_limits_can_be_switched_off() {
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 1;
    })
    .await;
    let body = json!({"type": "m.login.password", "user": "nobody", "password": "wrong-password"});
    for _ in 0..5 {
        server.post("/_matrix/client/v3/login", None, body.clone()).await.expect_error(403, "M_FORBIDDEN");
    }
}
