//! The real `neurite` binary: start, register over HTTP, stop with SIGTERM,
//! restart, log in again; the CLI commands; clear start-up errors.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
