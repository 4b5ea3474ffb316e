//! One client, one request at a time: the latency of a durable `PUT`, either
//! the floor's or a Matrix homeserver's `PUT /rooms/{room}/send/m.room.message/{txn}`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Unmeasured requests sent before the timed ones (connection set-up, caches).
pub const WARMUP_REQUESTS: usize = 5;

/// How long one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The password of the accounts the client registers.
const PASSWORD: &str = "neurite-bench-password";

/// What the client times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `PUT /floor/{txn}` on the floor server.
    Floor,
    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}` on a homeserver.
    Matrix,
}

/// A latency summary in milliseconds, with nearest-rank percentiles.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of timed requests.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Summary {
    /// The summary as JSON, each figure rounded to the microsecond.
    pub fn to_json(&self) -> Value {
        let ms = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "count": self.count,
            "p50_ms": ms(self.p50_ms),
            "p90_ms": ms(self.p90_ms),
            "p99_ms": ms(self.p99_ms),
            "max_ms": ms(self.max_ms),
            "mean_ms": ms(self.mean_ms),
        })
    }
}

/// Summarizes durations; `None` when there are none.
pub fn summarize(durations: &[Duration]) -> Option<Summary> {
    if durations.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least q of the sample at or below it.
    let pick = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Summary {
        count: ms.len(),
        p50_ms: pick(0.50),
        p90_ms: pick(0.90),
        p99_ms: pick(0.99),
        max_ms: ms[ms.len() - 1],
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
    })
}

/// One timed request: when it started (Unix time) and how long it took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Start of the request, milliseconds since the Unix epoch.
    pub started_unix_ms: f64,
    /// Time from sending the request to the end of reading its response.
    pub elapsed: Duration,
}

/// Times `n` sequential `PUT`s against `base_url` (after [`WARMUP_REQUESTS`]
/// unmeasured ones) over one keep-alive connection; returns them in the
/// order sent. For [`Target::Matrix`] it first registers a fresh user (open
/// registration, `m.login.dummy`) and creates a room.
///
/// # Errors
/// A request fails or answers other than 200.
pub async fn run(base_url: &str, n: usize, target: Target) -> anyhow::Result<Vec<Sample>> {
    let client = Client::builder().tcp_nodelay(true).timeout(REQUEST_TIMEOUT).build()?;
    let base = base_url.trim_end_matches('/');
    let run_id = unique_id();
    let (path_prefix, token) = match target {
        Target::Floor => (format!("{base}/floor/"), None),
        Target::Matrix => {
            let token = register(&client, base, &run_id).await?;
            let room = call(&client, "POST", &format!("{base}/_matrix/client/v3/createRoom"), Some(&token), &json!({}))
                .await?
                .get("room_id")
                .and_then(Value::as_str)
                .context("createRoom answered without a room_id")?
                .to_owned();
            let prefix = format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/", encode(&room));
            (prefix, Some(token))
        }
    };
    let send = |txn: String, text: String| {
        let url = format!("{path_prefix}{txn}");
        let body = json!({"msgtype": "m.text", "body": text});
        let mut request = client.put(url).json(&body);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        async move {
            let started_unix_ms =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            let started = Instant::now();
            let response = request.send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            let elapsed = started.elapsed();
            if status != StatusCode::OK {
                bail!("PUT answered {status}: {}", String::from_utf8_lossy(&bytes));
            }
            Ok(Sample { started_unix_ms, elapsed })
        }
    };
    for i in 0..WARMUP_REQUESTS {
        send(format!("{run_id}.w{i}"), format!("warm-up {i}")).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        samples.push(send(format!("{run_id}.{i}"), format!("sequential {i}")).await?);
    }
    Ok(samples)
}

/// Registers a fresh account through the `m.login.dummy` UIA flow; returns its access token.
async fn register(client: &Client, base: &str, run_id: &str) -> anyhow::Result<String> {
    let url = format!("{base}/_matrix/client/v3/register");
    let mut body = json!({
        "username": format!("bench{run_id}"),
        "password": PASSWORD,
        "initial_device_display_name": "neurite-bench",
    });
    let response = client.post(&url).json(&body).send().await?;
    let mut status = response.status();
    let mut answer: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED
        && let Some(session) = answer.get("session").and_then(Value::as_str)
    {
        body["auth"] = json!({"type": "m.login.dummy", "session": session});
        let response = client.post(&url).json(&body).send().await?;
        status = response.status();
        answer = response.json().await.unwrap_or(Value::Null);
    }
    if status != StatusCode::OK {
        bail!("register answered {status}: {answer} (open registration with m.login.dummy is needed)");
    }
    answer.get("access_token").and_then(Value::as_str).map(str::to_owned).context("register answered without a token")
}

/// One JSON request that must answer 200; returns the JSON body.
async fn call(client: &Client, method: &str, url: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
    let mut request = client.request(method.parse()?, url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK {
        bail!("{method} {url} answered {status}: {answer}");
    }
    Ok(answer)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a room ID in a path).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A lowercase ID unique to this run, for user names and transaction IDs.
fn unique_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let durations: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let s = summarize(&durations).unwrap();
        assert_eq!((s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (200, 100.0, 180.0, 198.0, 200.0));
        assert!((s.mean_ms - 100.5).abs() < 1e-9);
        let one = summarize(&[Duration::from_millis(3)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn room_ids_are_encoded_for_a_path() {
        assert_eq!(encode("!abc-_X:localhost"), "%21abc-_X%3Alocalhost");
    }

    #[tokio::test]
    async fn the_client_times_the_floor_server() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::floor::open(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, crate::floor::router(pool)).await });
        let samples = run(&format!("http://{addr}"), 20, Target::Floor).await.unwrap();
        assert!(samples.windows(2).all(|w| w[0].started_unix_ms <= w[1].started_unix_ms));
        let s = summarize(&samples.iter().map(|s| s.elapsed).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.count, 20);
        assert!(s.p50_ms > 0.0 && s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        let pool = crate::floor::open(dir.path()).await.unwrap();
        let rows: i64 = pool
            .read(|tx| {
                tx.query_row("SELECT COUNT(*) FROM floor_events", [], |r| r.get(0))
                    .map_err(neurite_storage::StorageError::from)
            })
            .await
            .unwrap();
        assert_eq!(rows, 20 + WARMUP_REQUESTS as i64);
    }
}
