//! The real `neurite` binary: start, register over HTTP, stop with SIGTERM,
//! restart, log in again; the CLI commands; clear start-up errors.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neurite_storage::packed::PackedJson;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_neurite");

/// A command for the binary with no NEURITE_* variables from the caller's environment.
fn neurite(config: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("NEURITE_") {
            command.env_remove(key);
        }
    }
    command.arg("--config").arg(config);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("neurite.toml");
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "server_name = \"localhost\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nregistration = \"open\"\nrate_limits = \"off\"\n{extra}",
            data.display()
        ),
    )
    .unwrap();
    path
}

async fn wait_until_up(base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/_matrix/client/versions")).await
            && r.status() == 200
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the server exited during start-up");
        assert!(Instant::now() < deadline, "the server did not start within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn survives_sigterm_and_restart_with_the_same_account() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let base = format!("http://127.0.0.1:{port}");

    let mut server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
    wait_until_up(&base, &mut server).await;
    let register = json!({"username": "alice", "password": "a-long-password", "auth": {"type": "m.login.dummy"}});
    let (status, body) = post(&base, "/_matrix/client/v3/register", register).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(dir.path().join("data/signing.key").exists(), "the signing key is created on first start");
    let key = std::fs::read_to_string(dir.path().join("data/signing.key")).unwrap();

    let status = sigterm_and_wait(&mut server);
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");

    let mut server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
    wait_until_up(&base, &mut server).await;
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "a-long-password"});
    let (status, body) = post(&base, "/_matrix/client/v3/login", login).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], json!("@alice:localhost"));
    // The first device's token survived the restart too, and so did the key.
    let whoami = reqwest::Client::new()
        .get(format!("{base}/_matrix/client/v3/account/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    assert_eq!(std::fs::read_to_string(dir.path().join("data/signing.key")).unwrap(), key);
    assert!(sigterm_and_wait(&mut server).success());
}

fn run_with_stdin(mut command: Command, stdin: &str) -> Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn cli_creates_accounts_and_registration_tokens_while_registration_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("\"open\"", "\"closed\"")).unwrap();

    // Password from standard input.
    let mut command = neurite(&config);
    command.args(["create-account", "admin", "--admin"]);
    let out = run_with_stdin(command, "an-admin-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "created @admin:localhost (admin)");

    // No password on standard input: one is generated and printed.
    let mut command = neurite(&config);
    command.args(["create-account", "bob"]);
    let out = run_with_stdin(command, "");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let generated = stdout.lines().find_map(|l| l.strip_prefix("password: ")).expect("a generated password").to_owned();

    // A taken name is a clear error.
    let mut command = neurite(&config);
    command.args(["create-account", "bob"]);
    let out = run_with_stdin(command, "another-password\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));

    let out = neurite(&config).arg("create-registration-token").output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());

    let base = format!("http://127.0.0.1:{port}");
    let mut server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
    wait_until_up(&base, &mut server).await;
    for (user, password) in [("admin", "an-admin-password"), ("bob", generated.as_str())] {
        let login = json!({"type": "m.login.password", "user": user, "password": password});
        let (status, body) = post(&base, "/_matrix/client/v3/login", login).await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    let register = json!({"username": "carol", "password": "a-long-password", "auth": {"type": "m.login.dummy"}});
    assert_eq!(post(&base, "/_matrix/client/v3/register", register).await.0, 403);
    assert!(sigterm_and_wait(&mut server).success());
}

#[test]
fn generate_config_prints_a_loadable_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("registration = \"closed\"") && text.contains("rate_limits = \"on\""));
    let path = dir.path().join("generated.toml");
    std::fs::write(&path, text).unwrap();
    // The generated file, with the data folder moved into the temp dir, starts a server.
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("data_dir = \"./neurite-data\"", &format!("data_dir = \"{}\"", dir.path().join("d").display()));
    std::fs::write(&path, config).unwrap();
    let out = neurite(&path).args(["create-registration-token"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("neurite: error:")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {stderr}");
    lines[0].to_owned()
}

#[test]
fn a_bad_config_is_a_one_line_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, needle) in [
        ("server_name = 12", "server_name"),
        ("no_such_key = true", "no_such_key"),
        ("registration = \"sometimes\"", "registration"),
        ("server_name = \"not a server name\"", "server_name"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = neurite(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let line = one_line_error(&out);
        assert!(line.contains(needle), "{text}: {line}");
    }
    let out = neurite(&dir.path().join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("does not exist"));
    // The environment is read too, and wins over the file.
    std::fs::write(&path, "").unwrap();
    let out = neurite(&path).env("NEURITE_RATE_LIMITS", "maybe").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).to_lowercase().contains("rate_limits"));
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(dir.path(), taken.local_addr().unwrap().port(), "");
    let out = neurite(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("cannot listen on"));
}

#[test]
fn an_unusable_data_folder_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    // A folder under a regular file cannot be created, even by root.
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"", dir.path().join("file/data").display()),
    )
    .unwrap();
    let out = neurite(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("cannot use data folder"));
}

#[tokio::test]
async fn logs_never_carry_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "log_level = \"debug\"\nlog_format = \"json\"\n");
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut server = neurite(&config).stderr(log).spawn().unwrap();
    wait_until_up(&base, &mut server).await;

    let password = "a-very-secret-password";
    let register = json!({"username": "alice", "password": password, "auth": {"type": "m.login.dummy"}});
    let (_, body) = post(&base, "/_matrix/client/v3/register", register).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let login = json!({"type": "m.login.password", "user": "alice", "password": password, "refresh_token": true});
    let (_, body) = post(&base, "/_matrix/client/v3/login", login).await;
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // A token in the query string must not reach the log through the URI.
    let whoami = reqwest::get(format!("{base}/_matrix/client/v3/account/whoami?access_token={token}")).await.unwrap();
    assert_eq!(whoami.status(), 200);
    let wrong = json!({"type": "m.login.password", "user": "alice", "password": "wrong-secret-guess"});
    assert_eq!(post(&base, "/_matrix/client/v3/login", wrong).await.0, 403);
    assert!(sigterm_and_wait(&mut server).success());

    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.lines().count() > 3, "the server logged: {log}");
    for line in log.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "log_format = json gives JSON lines: {line}");
    }
    for secret in [password, "wrong-secret-guess", token.as_str(), refresh.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

/// Registers `n` users named `<prefix><i>` and puts them all in one public
/// room; returns their access tokens and the room.
async fn users_in_a_room(base: &str, prefix: &str, n: usize) -> (Vec<String>, String) {
    let mut tokens = Vec::new();
    for i in 0..n {
        let body = json!({"username": format!("{prefix}{i}"), "password": "a-long-password", "auth": {"type": "m.login.dummy"}});
        let (status, body) = post(base, "/_matrix/client/v3/register", body).await;
        assert_eq!(status, 200, "{body}");
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let create = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/createRoom"))
        .bearer_auth(&tokens[0])
        .json(&json!({"preset": "public_chat"}))
        .send()
        .await
        .unwrap();
    let room = create.json::<Value>().await.unwrap()["room_id"].as_str().unwrap().to_owned();
    for token in &tokens[1..] {
        let join = reqwest::Client::new().post(format!("{base}/_matrix/client/v3/join/{room}")).bearer_auth(token);
        assert_eq!(join.json(&json!({})).send().await.unwrap().status(), 200);
    }
    (tokens, room)
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An authenticated request; connection errors (a killed server) are `Err`.
async fn call(
    method: reqwest::Method,
    base: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn put(base: &str, path: &str, token: &str, body: Value) -> Result<(u16, Value), reqwest::Error> {
    call(reqwest::Method::PUT, base, path, token, Some(body)).await
}

/// A server started from a fresh config in `dir`: its config path, base URL and process.
async fn start_server(dir: &Path) -> (std::path::PathBuf, String, Child) {
    let port = free_port();
    let config = write_config(dir, port, "");
    let base = format!("http://127.0.0.1:{port}");
    let mut server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
    wait_until_up(&base, &mut server).await;
    (config, base, server)
}

#[tokio::test]
async fn sigkill_while_sending_loses_and_repeats_nothing() {
    const CLIENTS: usize = 4;
    const MESSAGES: usize = 150;
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let (config, base, mut server) = start_server(dir.path()).await;

    let (tokens, room) = users_in_a_room(&base, "c", CLIENTS).await;

    // Each client sends its messages in order, retrying a transaction until
    // it gets a 200, and records every 200 it gets.
    let mut clients = Vec::new();
    for (c, token) in tokens.iter().cloned().enumerate() {
        let (base, room) = (base.clone(), room.clone());
        clients.push(tokio::spawn(async move {
            let mut answers: Vec<(String, String)> = Vec::new();
            let mut failures = 0;
            for m in 0..MESSAGES {
                let txn = format!("c{c}m{m}");
                let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
                let deadline = Instant::now() + Duration::from_secs(120);
                // Now and then a transaction is repeated after its 200, as by a
                // client whose answer was lost.
                let repeats = if m % 7 == 0 { 2 } else { 1 };
                while answers.iter().filter(|(t, _)| *t == txn).count() < repeats {
                    match put(&base, &path, &token, json!({"msgtype": "m.text", "body": txn})).await {
                        Ok((200, body)) => answers.push((txn.clone(), body["event_id"].as_str().unwrap().to_owned())),
                        _ => {
                            failures += 1;
                            assert!(Instant::now() < deadline, "{txn} never succeeded");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            (answers, failures)
        }));
    }

    for _ in 0..KILLS {
        let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 30..150);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sigkill(&mut server);
        server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
        wait_until_up(&base, &mut server).await;
    }
    let (mut answers, mut failures) = (Vec::new(), 0);
    for client in clients {
        let (a, f) = client.await.unwrap();
        answers.extend(a);
        failures += f;
    }
    assert!(failures > 0, "the kills interrupted sending (else this test proves nothing)");
    let state = reqwest::Client::new()
        .get(format!("{base}/_matrix/client/v3/rooms/{room}/state"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(sigterm_and_wait(&mut server).success());

    // No transaction was answered with two different events.
    let mut by_txn: std::collections::HashMap<String, String> = Default::default();
    for (txn, event_id) in &answers {
        if let Some(previous) = by_txn.insert(txn.clone(), event_id.clone()) {
            assert_eq!(&previous, event_id, "{txn} answered with two event IDs");
        }
    }
    assert_eq!(by_txn.len(), CLIENTS * MESSAGES);

    // Every accepted message is in the room exactly once, and in each
    // client's order.
    let db = rusqlite::Connection::open(dir.path().join("data/neurite.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT e.event_id, e.json, e.depth, e.is_rejected, t.event_type, k.state_key FROM roomserver_events e
             JOIN roomserver_event_types t ON t.event_type_nid = e.event_type_nid
             LEFT JOIN roomserver_state_keys k ON k.state_key_nid = e.state_key_nid
             ORDER BY e.depth",
        )
        .unwrap();
    // The PDU column is packed (zstd BLOB); `PackedJson` reads it as text.
    let rows: Vec<(String, PackedJson, i64, bool, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut order: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (event_id, PackedJson(json), _, rejected, event_type, _) in &rows {
        if event_type != "m.room.message" || *rejected {
            continue;
        }
        let pdu: Value = serde_json::from_str(json).unwrap();
        let body = pdu["content"]["body"].as_str().unwrap().to_owned();
        assert_eq!(by_txn.get(&body), Some(event_id), "{body} stored as another event than answered");
        *seen.entry(body.clone()).or_default() += 1;
        let (c, m) = body[1..].split_once('m').unwrap();
        order.entry(c.parse().unwrap()).or_default().push(m.parse().unwrap());
    }
    assert_eq!(seen.len(), CLIENTS * MESSAGES, "every accepted message is stored");
    assert!(seen.values().all(|n| *n == 1), "no message is stored twice");
    for (c, ms) in order {
        assert!(ms.windows(2).all(|w| w[0] < w[1]), "client {c}'s messages are in order: {ms:?}");
    }

    // Current state equals the state recomputed from the stored events
    // (one writer, so the history is a line: the last event per key wins).
    let mut recomputed: std::collections::BTreeMap<(String, String), String> = Default::default();
    for (event_id, _, _, rejected, event_type, state_key) in &rows {
        if let (false, Some(key)) = (rejected, state_key) {
            recomputed.insert((event_type.clone(), key.clone()), event_id.clone());
        }
    }
    let served: std::collections::BTreeMap<(String, String), String> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned());
            (key, e["event_id"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(served, recomputed);
}

async fn get_json(base: &str, path: &str, token: &str) -> Result<(u16, Value), reqwest::Error> {
    call(reqwest::Method::GET, base, path, token, None).await
}

#[tokio::test]
async fn sigkill_while_syncing_serves_every_message_once_in_order() {
    const CLIENTS: usize = 3;
    const MESSAGES: usize = 60;
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let (config, base, mut server) = start_server(dir.path()).await;

    let (tokens, room) = users_in_a_room(&base, "s", CLIENTS).await;
    // No timeline gaps: a limit above everything the test sends.
    let filter = "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1000%7D%7D%7D";

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut syncers = Vec::new();
    for (c, token) in tokens.iter().cloned().enumerate() {
        senders.push(tokio::spawn({
            let (base, room, token) = (base.clone(), room.clone(), token.clone());
            async move {
                let mut failures = 0;
                for m in 0..MESSAGES {
                    let txn = format!("s{c}m{m}");
                    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !matches!(
                        put(&base, &path, &token, json!({"msgtype": "m.text", "body": txn})).await,
                        Ok((200, _))
                    ) {
                        failures += 1;
                        assert!(Instant::now() < deadline, "{txn} never succeeded");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                failures
            }
        }));
        let (base, room, done) = (base.clone(), room.clone(), done.clone());
        syncers.push(tokio::spawn(async move {
            // Each client's stream: every message body its syncs served, in order.
            let mut stream: Vec<String> = Vec::new();
            let mut since: Option<String> = None;
            let mut quiet = 0;
            let deadline = Instant::now() + Duration::from_secs(180);
            while quiet < 2 {
                assert!(Instant::now() < deadline, "sync never settled");
                let query = match &since {
                    Some(s) => format!("?since={s}&timeout=1000&{filter}"),
                    None => format!("?{filter}"),
                };
                match get_json(&base, &format!("/_matrix/client/v3/sync{query}"), &token).await {
                    Ok((200, body)) => {
                        let timeline = &body["rooms"]["join"][&room]["timeline"];
                        assert_ne!(timeline["limited"], json!(true), "no gaps with this filter");
                        let bodies: Vec<String> = timeline["events"]
                            .as_array()
                            .map(|events| {
                                events
                                    .iter()
                                    .filter(|e| e["type"] == "m.room.message")
                                    .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
                                    .collect()
                            })
                            .unwrap_or_default();
                        // Once sending is over, two empty answers mean caught up.
                        if bodies.is_empty() && done.load(std::sync::atomic::Ordering::SeqCst) {
                            quiet += 1;
                        }
                        stream.extend(bodies);
                        since = Some(body["next_batch"].as_str().unwrap().to_owned());
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            stream
        }));
    }

    for _ in 0..KILLS {
        let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 50..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sigkill(&mut server);
        server = neurite(&config).stderr(Stdio::null()).spawn().unwrap();
        wait_until_up(&base, &mut server).await;
    }
    let mut failures = 0;
    for sender in senders {
        failures += sender.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut streams = Vec::new();
    for syncer in syncers {
        streams.push(syncer.await.unwrap());
    }
    assert!(failures > 0, "the kills interrupted sending (else this test proves nothing)");

    // The room's order, from /messages.
    let (status, page) =
        get_json(&base, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000"), &tokens[0])
            .await
            .unwrap();
    assert_eq!(status, 200);
    let order: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order.len(), CLIENTS * MESSAGES, "every accepted message is in the room once");
    assert!(sigterm_and_wait(&mut server).success());
    for (c, stream) in streams.iter().enumerate() {
        assert_eq!(stream, &order, "client {c}'s sync stream served every message once, in the room's order");
    }
}

#[tokio::test]
async fn a_graceful_stop_leaves_one_compact_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, base, mut server) = start_server(dir.path()).await;
    let (tokens, room) = users_in_a_room(&base, "tidy", 1).await;
    let big = "x".repeat(4000);
    for i in 0..200 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let (status, _) = put(&base, &path, &tokens[0], json!({"msgtype": "m.text", "body": big})).await.unwrap();
        assert_eq!(status, 200);
    }
    // The events are in the room's history before the stop...
    let (status, messages) =
        get_json(&base, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"), &tokens[0]).await.unwrap();
    assert_eq!((status, messages["chunk"].as_array().map(Vec::len)), (200, Some(5)));
    assert!(sigterm_and_wait(&mut server).success());

    // ...and after it the logs hold nothing every reader has processed, no
    // verdict is left for inputs the log can never redeliver, and the file
    // has given its free pages back.
    let db = rusqlite::Connection::open(dir.path().join("data").join("neurite.db")).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'log_records_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables.len(), 2, "one records table per log topic: {tables:?}");
    let records: i64 = tables
        .iter()
        .map(|t| db.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).unwrap())
        .sum();
    let free: i64 = db.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    let events: i64 = db.query_row("SELECT COUNT(*) FROM roomserver_events", [], |r| r.get(0)).unwrap();
    let verdicts: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM roomserver_verdicts) + (SELECT COUNT(*) FROM roomserver_inputs)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(records, 0, "processed log records were kept");
    assert_eq!(verdicts, 0, "verdicts of acknowledged inputs were kept");
    assert_eq!(free, 0, "free pages were kept");
    let wal = dir.path().join("data").join("neurite.db-wal");
    assert!(std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0, "the write-ahead log was not folded in");
    assert!(events > 200, "{events} events stored");
}
