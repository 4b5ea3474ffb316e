//! Secrets at rest: passwords only as argon2id hashes, tokens only as hashes.

use neurite_test::{PASSWORD, TestServer};
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_password_or_token_is_stored_in_the_clear() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let body = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": true});
    let login = server.post("/_matrix/client/v3/login", None, body).await.ok().clone();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let refreshed =
        server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await.ok().clone();

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&server.config.data_dir).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(contains(&stored, "$argon2id$"), "passwords are argon2id hashes");
    for secret in [
        PASSWORD,
        alice.access_token.as_str(),
        login["access_token"].as_str().unwrap(),
        refresh.as_str(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!contains(&stored, secret), "{secret} is stored in the clear");
    }
}
