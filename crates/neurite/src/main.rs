//! `neurite`: the homeserver's command line.
//!
//! With no command it runs the server; the commands make the first accounts
//! and registration tokens, and print a default configuration.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use neurite_core::config::{Config, LogFormat};
use neurite_userapi::UserApi;
use rand::Rng;

/// Exit code for a configuration that cannot be loaded.
const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure to start or to run a command.
const EXIT_FAILURE: u8 = 1;

/// How long in-flight requests may run after SIGTERM/SIGINT before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Length of generated passwords for `create-account`.
const GENERATED_PASSWORD_CHARS: usize = 20;

#[derive(Parser)]
#[command(name = "neurite", version, about = "Neurite, a Matrix homeserver")]
struct Cli {
    /// Configuration file (TOML); every key can also be set as NEURITE_<KEY>.
    #[arg(long, short, env = "NEURITE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a commented configuration file with every default.
    GenerateConfig,
    /// Create an account. The password is read from standard input when it
    /// is not a terminal; otherwise one is generated and printed.
    CreateAccount {
        /// The user name (localpart), e.g. `alice` for @alice:<server_name>.
        name: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Create a registration token (for `registration = "token"`) and print it.
    CreateRegistrationToken {
        /// How many accounts the token may create (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
    },
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("neurite: error: {message}");
    ExitCode::from(code)
}

/// Allocations above this many bytes always come from `mmap` and go back to
/// the OS when freed. glibc otherwise raises its threshold after the first
/// large free and keeps such buffers in its per-thread arenas: each argon2id
/// run allocates 19 MiB, and a burst of 40 registrations left 320 MiB
/// resident across six arenas.
const MMAP_THRESHOLD_BYTES: i32 = 1024 * 1024;

/// glibc's malloc arenas. Its default (8 per core) gives each busy thread
/// its own heap, and freed memory stays spread over them: load.py's quick
/// initial-sync scenario peaked at 41.8 MiB resident with the default and
/// 21.3 MiB with one arena (same binary, same run sizes).
const MALLOC_ARENAS_MAX: i32 = 1;

/// Tunes the allocator before any other thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; it is called at
    // the start of main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS_MAX);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{}", Config::generate());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_CONFIG, format_args!("invalid configuration: {e}")),
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            return fail(EXIT_CONFIG, format_args!("invalid configuration: log_level {:?}: {e}", config.log_level));
        }
    };
    init_tracing(&config, filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(EXIT_FAILURE, format_args!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

fn init_tracing(config: &Config, filter: tracing_subscriber::EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let server = neurite::build(config).await?;
    match command {
        None => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            tracing::info!(
                server_name = %server.config.server_name,
                %listen,
                registration = ?server.config.registration,
                "Neurite is running"
            );
            // In-flight requests get a bounded time to finish after the signal.
            let signalled = Arc::new(tokio::sync::Notify::new());
            let notify = signalled.clone();
            let shutdown = async move {
                shutdown_signal().await;
                notify.notify_one();
            };
            tokio::select! {
                result = neurite::serve(listener, server, shutdown) => result?,
                () = async {
                    signalled.notified().await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway"),
            }
            tracing::info!("stopped");
            Ok(())
        }
        Some(Command::CreateAccount { name, admin }) => {
            let (password, generated) = read_or_generate_password()?;
            let user_id = server.users.create_account(&name.to_lowercase(), &password, admin, None).await?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        Some(Command::CreateRegistrationToken { uses }) => {
            let token = server.users.create_registration_token(uses, None).await?;
            println!("{token}");
            Ok(())
        }
        Some(Command::GenerateConfig) => unreachable!("handled before the configuration is loaded"),
    }
}

fn read_or_generate_password() -> anyhow::Result<(String, bool)> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut input = String::new();
        stdin.lock().read_to_string(&mut input)?;
        let password = input.lines().next().unwrap_or("").to_owned();
        if !password.is_empty() {
            return Ok((password, false));
        }
    }
    let password = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(GENERATED_PASSWORD_CHARS)
        .map(char::from)
        .collect();
    Ok((password, true))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
