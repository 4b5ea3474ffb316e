//! Rate limits: a token bucket per client, keyed by access token when the
//! request has one and by client address otherwise.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use neurite_core::config::{Config, Switch};
use neurite_core::{ErrorKind, MatrixError, MatrixResult};

type Keyed = governor::RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// How often idle buckets are dropped so the limiter's memory stays bounded
/// by the clients active in the last interval.
pub const BUCKET_PRUNE_INTERVAL_SECS: u64 = 60;

/// The server's rate limiter. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    buckets: Arc<Keyed>,
}

impl RateLimiter {
    /// A limiter as configured, or `None` when rate limits are off.
    pub fn from_config(config: &Config) -> Option<Self> {
        if config.rate_limits == Switch::Off {
            return None;
        }
        let rate = NonZeroU32::new(config.rate_limit_per_second).expect("validated above 0 with the config");
        let burst = NonZeroU32::new(config.rate_limit_burst).expect("validated above 0 with the config");
        Some(Self { buckets: Arc::new(Keyed::keyed(Quota::per_second(rate).allow_burst(burst))) })
    }

    /// Takes one request from `key`'s bucket, or says how long to wait
    /// (429 `M_LIMIT_EXCEEDED` with `retry_after_ms`).
    pub fn check(&self, key: &str) -> MatrixResult<()> {
        // Keys are owned by the store; look up before allocating a new one.
        match self.buckets.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after_ms = (wait.as_millis() as u64).max(1);
                Err(MatrixError::new(ErrorKind::LimitExceeded { retry_after_ms }, "Too many requests"))
            }
        }
    }

    /// Drops buckets that are full again (their clients went quiet).
    pub fn prune(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}
