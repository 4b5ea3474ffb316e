//! `/versions`, `/.well-known/matrix/client`, `/capabilities`, CORS.

use neurite_test::{Method, TestServer};
use serde_json::json;

#[tokio::test]
async fn versions_lists_spec_versions_without_auth() {
    let server = TestServer::start().await;
    let body = server.get("/_matrix/client/versions", None).await.ok().clone();
    let versions: Vec<&str> = body["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions.contains(&"v1.1") && versions.contains(&"v1.19"), "{versions:?}");
    assert!(versions.iter().all(|v| v.starts_with("v1.")), "no r0 versions: {versions:?}");
    // No unstable feature is claimed.
    assert!(body.get("unstable_features").is_none_or(|f| f.as_object().unwrap().is_empty()));
}

#[tokio::test]
async fn well_known_gives_the_base_url() {
    let server = TestServer::start_with(|c| c.public_baseurl = "https://matrix.example.org/".into()).await;
    let body = server.get("/.well-known/matrix/client", None).await.ok().clone();
    assert_eq!(body, json!({"m.homeserver": {"base_url": "https://matrix.example.org/"}}));
}

#[tokio::test]
async fn capabilities_need_a_token_and_list_account_capabilities() {
    let server = TestServer::start().await;
    server.get("/_matrix/client/v3/capabilities", None).await.expect_error(401, "M_MISSING_TOKEN");
    let alice = server.register("alice").await;
    let body = server.get("/_matrix/client/v3/capabilities", Some(&alice.access_token)).await.ok().clone();
    let caps = &body["capabilities"];
    assert_eq!(caps["m.change_password"], json!({"enabled": true}));
    assert_eq!(caps["m.set_displayname"], json!({"enabled": true}));
    assert_eq!(caps["m.set_avatar_url"], json!({"enabled": true}));
    assert_eq!(caps["m.3pid_changes"], json!({"enabled": false}));
    assert_eq!(caps["m.room_versions"]["default"], json!("12"), "the spec's recommended default");
    let available = caps["m.room_versions"]["available"].as_object().unwrap();
    assert_eq!(available.get("11"), Some(&json!("stable")));
    assert!(available.get("1").is_none(), "versions without full state resolution support are not offered");
    // The r0 alias answers the same.
    let r0 = server.get("/_matrix/client/r0/capabilities", Some(&alice.access_token)).await.ok().clone();
    assert_eq!(r0, body);
}

#[tokio::test]
async fn every_response_carries_cors_headers_and_options_runs_no_logic() {
    let server = TestServer::start().await;
    for answer in [
        server.get("/_matrix/client/versions", None).await,
        server.get("/_matrix/client/v3/account/whoami", None).await,
        server.get("/no/such/path", None).await,
    ] {
        assert_eq!(answer.headers["access-control-allow-origin"], "*");
        assert_eq!(answer.headers["access-control-allow-methods"], "GET, POST, PUT, DELETE, OPTIONS");
        assert_eq!(answer.headers["access-control-allow-headers"], "X-Requested-With, Content-Type, Authorization");
        assert!(answer.headers["server"].to_str().unwrap().starts_with("Neurite/"));
    }
    // A preflight on an endpoint that needs a token succeeds without one.
    let preflight = server
        .raw(
            Method::OPTIONS,
            "/_matrix/client/v3/account/whoami",
            &[("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")],
            vec![],
        )
        .await;
    assert_eq!(preflight.status.as_u16(), 200);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_status() {
    let server = TestServer::start().await;
    server.get("/_matrix/client/versions", None).await.ok();
    server.get("/_matrix/client/v3/account/whoami", None).await.expect_error(401, "M_MISSING_TOKEN");
    let response = reqwest::get(format!("{}/metrics", server.base_url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"neurite_http_requests_total{method="GET",endpoint="/_matrix/client/versions",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"endpoint="/_matrix/client/v3/account/whoami",status="401"} 1"#), "{text}");
    assert!(text.contains("neurite_http_request_duration_seconds_bucket"), "{text}");
}
