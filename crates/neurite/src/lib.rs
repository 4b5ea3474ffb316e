//! The Neurite homeserver: builds every component from the configuration,
//! wires them into one HTTP application, and serves it.
//!
//! `main.rs` is the CLI over this library; the test harness (`neurite-test`)
//! boots the same wiring through [`build`] and [`serve`].

#![warn(missing_docs)]

mod http;
mod keys;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use neurite_clientapi::{ClientApi, Components, RateLimiter};
use neurite_core::Config;
use neurite_log::SqliteLog;
use neurite_roomserver::{Roomserver, Signer};
use neurite_storage::sqlite::SqlitePool;
use neurite_syncapi::SyncService;
use neurite_userapi::UserApiService;
use tokio::net::TcpListener;

pub use keys::SigningKey;

/// File name of the SQLite database inside the data folder.
pub const DATABASE_FILE: &str = "neurite.db";

/// Why the server could not start. Each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data folder cannot be created or written.
    #[error("cannot use data folder {path}: {reason}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The database cannot be opened or migrated.
    #[error("cannot open the database {path}: {reason}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The signing key cannot be read or created.
    #[error("signing key {path}: {reason}")]
    SigningKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Every component of a running server, wired together.
pub struct Server {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The userapi (also used by the CLI's account commands).
    pub users: UserApiService,
    /// The room server.
    pub roomserver: Roomserver,
    router: axum::Router,
    limiter: Option<RateLimiter>,
    log: SqliteLog,
    pool: SqlitePool,
}

/// How often the server drops idle rate-limit buckets and log records every
/// subscription has acknowledged, and gives free database pages back to the
/// file system, in seconds.
pub const MAINTENANCE_INTERVAL_SECS: u64 = 10;

/// How long a graceful stop waits for deferred writes (acknowledgements and
/// outbox clean-ups, gathered for `COALESCE_DELAY`) before its last
/// maintenance: a few of those delays, so the last round has been written.
pub const DEFERRED_WRITES_SETTLE: std::time::Duration = neurite_storage::coalesce::COALESCE_DELAY.saturating_mul(4);

/// Most free database pages (4 KiB each) one write of a maintenance pass
/// gives back, so it never holds the writer long; a pass takes as many
/// writes as it needs, letting other writes in between (see
/// `neurite_log::limits::PRUNE_BATCH_RECORDS_MAX` for the sizes).
pub const FREE_PAGES_RELEASED_PER_WRITE_MAX: u32 = 16;

/// Opens (creating on first start) the data folder, the signing key and the
/// database, and builds every component.
///
/// # Errors
/// An unwritable data folder, an unreadable key, or a database that cannot
/// be opened or migrated.
pub async fn build(config: Config) -> Result<Server, StartupError> {
    let config = Arc::new(config);
    let dir = &config.data_dir;
    let dir_error = |e: &dyn std::fmt::Display| StartupError::DataDir { path: dir.clone(), reason: e.to_string() };
    create_private_dir(dir).map_err(|e| dir_error(&e))?;
    // Fail early and clearly if the folder exists but is read-only.
    let probe = dir.join(".neurite-write-test");
    std::fs::write(&probe, b"").map_err(|e| dir_error(&e))?;
    std::fs::remove_file(&probe).map_err(|e| dir_error(&e))?;

    let signing_key = SigningKey::load_or_create(dir)?;
    let signer = Signer { server_name: config.server_name(), key: signing_key.pair };

    let db_path = dir.join(DATABASE_FILE);
    let db_error = |e: &dyn std::fmt::Display| StartupError::Database { path: db_path.clone(), reason: e.to_string() };
    let pool = SqlitePool::open(&db_path).map_err(|e| db_error(&e))?;
    // Invariant: one pool, so one writer connection, for every component on
    // the embedded database.
    let users = UserApiService::open_sqlite(pool.clone(), &config).await.map_err(|e| db_error(&e))?;
    let log = SqliteLog::open(pool.clone()).await.map_err(|e| db_error(&e))?;
    // Invariant: every log reader subscribes before the server serves, so a
    // topic's backlog bound applies from its first record.
    let sync = SyncService::start(pool.clone(), Arc::new(log.clone())).await.map_err(|e| db_error(&e))?;
    let roomserver = Roomserver::start(pool.clone(), Arc::new(log.clone()), signer).await.map_err(|e| db_error(&e))?;

    let components = Components {
        users: Arc::new(users.clone()),
        room_input: Arc::new(roomserver.clone()),
        rooms: Arc::new(roomserver.clone()),
        directory: Arc::new(roomserver.clone()),
        sync: Arc::new(sync),
    };
    let client_api = ClientApi::new(components, config.clone());
    let limiter = client_api.limiter().cloned();
    let router = http::app(&config, neurite_clientapi::router(client_api));
    Ok(Server { config, users, roomserver, router, limiter, log, pool })
}

/// One maintenance pass: idle rate-limit buckets, acknowledged log records,
/// free heap memory, free database pages. Failures are logged; the next pass tries again.
async fn maintain(limiter: Option<&RateLimiter>, log: &SqliteLog, pool: &SqlitePool) {
    let started = std::time::Instant::now();
    if let Some(limiter) = limiter {
        limiter.prune();
    }
    let mut records = 0;
    for topic in [neurite_log::INPUT_ROOM_EVENT, neurite_log::OUTPUT_ROOM_EVENT] {
        match log.prune(topic).await {
            Ok(deleted) => records += deleted,
            Err(e) => tracing::warn!(error = %e, topic, "pruning a log failed"),
        }
    }
    neurite_core::memory::release_free_heap();
    let mut pages = 0;
    loop {
        match pool.release_free_pages(FREE_PAGES_RELEASED_PER_WRITE_MAX).await {
            Ok(released) => {
                pages += released;
                if released < FREE_PAGES_RELEASED_PER_WRITE_MAX {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving free database pages back failed");
                break;
            }
        }
    }
    if records > 0 || pages > 0 {
        tracing::debug!(records, pages, elapsed_ms = started.elapsed().as_millis() as u64, "maintenance pass");
    }
}

/// Creates the data folder (and parents) if absent; the folder itself is
/// readable only by its owner, since it holds password and token hashes.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Serves `server` on `listener` until `shutdown` completes, then stops
/// accepting connections and lets in-flight requests finish.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (limiter, log, pool) = (server.limiter.clone(), server.log.clone(), server.pool.clone());
    let roomserver = server.roomserver.clone();
    let maintenance = tokio::spawn({
        let (limiter, log, pool) = (limiter.clone(), log.clone(), pool.clone());
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(MAINTENANCE_INTERVAL_SECS));
            loop {
                tick.tick().await;
                maintain(limiter.as_ref(), &log, &pool).await;
            }
        }
    });
    let app = server.router.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    maintenance.abort();
    // A tidy database on a graceful stop: one file, no processed log records.
    // Acknowledgements and clean-ups are gathered for a few tens of
    // milliseconds before they are written: let the last ones land first.
    tokio::time::sleep(DEFERRED_WRITES_SETTLE).await;
    // Every writer has its answer now: verdicts the input log can never
    // redeliver go, whatever their age (before maintenance gives the pages
    // they leave free back).
    if let Err(e) = roomserver.prune_verdicts(std::time::Duration::ZERO).await {
        tracing::warn!(error = %e, "pruning verdicts on stop failed");
    }
    maintain(limiter.as_ref(), &log, &pool).await;
    if let Err(e) = pool.checkpoint().await {
        tracing::warn!(error = %e, "checkpointing the database on stop failed");
    }
    result
}
