//! No input produces a 500 or a panic: every route, fed junk, answers with a
//! Matrix error (or success), never a server error.

use neurite_test::{Method, TestServer};

/// Every route the client API serves, with placeholders filled in.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/_matrix/client/versions"),
    ("GET", "/.well-known/matrix/client"),
    ("GET", "/_matrix/client/v3/capabilities"),
    ("GET", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/refresh"),
    ("POST", "/_matrix/client/v3/logout"),
    ("POST", "/_matrix/client/v3/logout/all"),
    ("POST", "/_matrix/client/v3/register"),
    ("GET", "/_matrix/client/v3/register/available"),
    ("GET", "/_matrix/client/v1/register/m.login.registration_token/validity"),
    ("GET", "/_matrix/client/v3/account/whoami"),
    ("POST", "/_matrix/client/v3/account/password"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("GET", "/_matrix/client/v3/devices"),
    ("GET", "/_matrix/client/v3/devices/DEVICE"),
    ("PUT", "/_matrix/client/v3/devices/DEVICE"),
    ("DELETE", "/_matrix/client/v3/devices/DEVICE"),
    ("POST", "/_matrix/client/v3/delete_devices"),
    ("GET", "/_matrix/client/v3/profile/@alice:localhost"),
    ("GET", "/_matrix/client/v3/profile/@alice:localhost/displayname"),
    ("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname"),
    ("PUT", "/_matrix/client/v3/profile/@alice:localhost/avatar_url"),
    ("PUT", "/_matrix/client/v3/profile/@alice:localhost/m.custom"),
    ("DELETE", "/_matrix/client/v3/profile/@alice:localhost/m.custom"),
    ("POST", "/_matrix/client/v3/user/@alice:localhost/filter"),
    ("GET", "/_matrix/client/v3/user/@alice:localhost/filter/0"),
];

fn junk_bodies() -> Vec<Vec<u8>> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        vec![],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"{\"auth\": 5, \"username\": [], \"password\": {}}".to_vec(),
        b"{\"auth\": {\"type\": \"m.login.password\", \"session\": 7}}".to_vec(),
        b"{\"auth\": {\"type\": \"m.login.password\", \"identifier\": {\"type\": \"m.id.user\", \"user\": \"@:\"}, \"password\": \"x\"}}".to_vec(),
        b"{\"type\": \"m.login.password\", \"identifier\": {\"type\": \"m.id.user\", \"user\": \"@\\u0000:localhost\"}, \"password\": \"\"}".to_vec(),
        b"{\"devices\": [\"\"], \"display_name\": \"\\ud800\"}".to_vec(),
        b"{\"displayname\": null, \"avatar_url\": 1, \"m.custom\": {\"deep\": [1, 2, {\"x\": null}]}}".to_vec(),
        b"{\"room\": {\"timeline\": {\"limit\": 18446744073709551616}}}".to_vec(),
        deep.into_bytes(),
        vec![0xc3, 0x28, 0xa0, 0xa1],
        "{\"username\": \"\u{1F600}\", \"password\": \"\u{0}\"}".as_bytes().to_vec(),
    ]
}

const QUERIES: &[&str] =
    &["", "?username=", "?username=%FF", "?token=%00", "?kind=robot", "?access_token=", "?access_token=%ZZ"];

#[tokio::test]
async fn junk_never_gets_a_server_error() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let auth = format!("Bearer {}", alice.access_token);
    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for query in QUERIES {
            for body in junk_bodies() {
                for headers in [
                    vec![],
                    vec![("Authorization", auth.as_str())],
                    vec![("Authorization", "Bearer")],
                    vec![("Authorization", "Bearer a b")],
                ] {
                    let target = format!("{path}{query}");
                    let answer = server.raw(method.clone(), &target, &headers, body.clone()).await;
                    assert!(
                        answer.status.as_u16() < 500,
                        "{method} {target} with {:?} answered {}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(80)]),
                        answer.status,
                        answer.body
                    );
                    if !answer.status.is_success() {
                        assert!(answer.errcode().starts_with("M_"), "{method} {target}: {}", answer.body);
                    }
                }
            }
        }
    }
    // The server is still healthy afterwards (alice's own device was logged out by the sweep).
    let bob = server.register("bob").await;
    server.get("/_matrix/client/v3/account/whoami", Some(&bob.access_token)).await.ok();
}
