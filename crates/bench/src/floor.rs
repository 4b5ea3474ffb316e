//! The floor server: `PUT /floor/{txn}` stores one row (the transaction ID and
//! the JSON body) in one SQLite write transaction and answers `{}`.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use neurite_storage::StorageError;
use neurite_storage::sqlite::SqlitePool;
use serde_json::{Value, json};

/// The database file inside the floor server's data folder.
pub const DATABASE_FILE: &str = "floor.db";

/// The floor's only table, created on first start.
static MIGRATIONS: &[neurite_storage::Migration] = &[(
    "0001_create_floor_events",
    "CREATE TABLE floor_events (
        txn_id TEXT PRIMARY KEY NOT NULL,
        body TEXT NOT NULL,
        received_ts INTEGER NOT NULL
    )",
)];

/// Creates `data` if needed and opens its database the way Neurite opens its own.
///
/// # Errors
/// The folder cannot be created, or the database cannot be opened or migrated.
pub async fn open(data: &Path) -> anyhow::Result<SqlitePool> {
    std::fs::create_dir_all(data)?;
    let pool = SqlitePool::open(&data.join(DATABASE_FILE))?;
    pool.migrate("floor", MIGRATIONS).await?;
    Ok(pool)
}

/// The floor application: one route, `PUT /floor/{txn}`.
pub fn router(pool: SqlitePool) -> Router {
    Router::new().route("/floor/{txn}", put(store)).with_state(pool)
}

/// Stores one row in one write transaction; a repeated transaction ID keeps the first row.
async fn store(
    State(pool): State<SqlitePool>,
    UrlPath(txn): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let body = body.to_string();
    let result = pool
        .write(move |tx| {
            tx.execute(
                "INSERT INTO floor_events (txn_id, body, received_ts) VALUES (?1, ?2, ?3)
                 ON CONFLICT (txn_id) DO NOTHING",
                (txn, body, neurite_storage::now_ms() as i64),
            )
            .map_err(StorageError::from)
        })
        .await;
    match result {
        Ok(_) => (StatusCode::OK, Json(json!({}))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"errcode": "M_UNKNOWN", "error": e.to_string()}))),
    }
}

/// Serves the floor on `listen` until SIGTERM or Ctrl-C; prints the bound
/// address (`127.0.0.1:PORT`) as the first line on standard output.
///
/// # Errors
/// The database cannot be opened, or the address cannot be bound.
pub async fn serve(data: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let pool = open(data).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, router(pool)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
