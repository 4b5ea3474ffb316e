//! The test harness: [`TestServer::start`] boots the real Neurite wiring
//! (the same [`neurite::build`] and [`neurite::serve`] the binary runs) on an
//! ephemeral port, against a fresh data folder, and talks to it over HTTP as
//! a client would.

#![warn(missing_docs)]

use std::net::SocketAddr;

use neurite_core::Config;
use neurite_core::config::{Registration, Switch};
pub use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The password [`TestServer::register`] gives every account.
pub const PASSWORD: &str = "correct-horse-battery";

/// A running server on its own data folder; stopped when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The configuration it runs with.
    pub config: Config,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

/// A logged-in device of a test account.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// `@name:localhost`.
    pub user_id: String,
    /// The device's access token.
    pub access_token: String,
    /// The device ID.
    pub device_id: String,
}

/// An HTTP answer: status and JSON body (`Value::Null` if the body was not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body as JSON.
    pub body: Value,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `errcode` of an error body.
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts a Matrix error with this status and errcode; returns self.
    #[track_caller]
    pub fn expect_error(&self, status: u16, errcode: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.errcode()), (status, errcode), "body: {}", self.body);
        assert!(self.body["error"].is_string(), "an error body has a human-readable 'error': {}", self.body);
        self
    }

    /// Asserts a 200 and returns the body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }
}

impl TestServer {
    /// A server with open registration and rate limits off.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose test defaults (open registration, no rate limits) are
    /// then changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("a temp dir can be created");
        let mut config = Config {
            data_dir: data_dir.path().join("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registration: Registration::Open,
            rate_limits: Switch::Off,
            ..Config::default()
        };
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("an ephemeral port is free");
        let addr = listener.local_addr().expect("a bound listener has an address");
        config.listen = addr;
        let server = neurite::build(config.clone()).await.expect("the server builds");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            neurite::serve(listener, server, async move {
                let _ = rx.await;
            })
            .await
            .expect("the server runs");
        });
        Self {
            base_url: format!("http://{addr}"),
            config,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _data_dir: data_dir,
        }
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task ends cleanly");
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("the server answers")).await
    }

    /// Sends a request with a raw body and extra headers.
    pub async fn raw(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::answer(request.send().await.expect("the server answers")).await
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body can be read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body, headers }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request(Method::GET, path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// `DELETE path` with a JSON body.
    pub async fn delete(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.request(Method::DELETE, path, token, Some(body)).await
    }

    /// Registers `name` with [`PASSWORD`] through the `m.login.dummy` flow
    /// (open registration) and returns its first device.
    pub async fn register(&self, name: &str) -> TestUser {
        let body = json!({"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}});
        let answer = self.post("/_matrix/client/v3/register", None, body).await;
        Self::user(answer.ok())
    }

    /// Logs `name` in with `password` on a new device.
    pub async fn login(&self, name: &str, password: &str) -> TestUser {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password});
        let answer = self.post("/_matrix/client/v3/login", None, body).await;
        Self::user(answer.ok())
    }

    fn user(body: &Value) -> TestUser {
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
