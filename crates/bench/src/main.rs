//! `neurite-bench`: the floor server and the latency client used by `bench/run`.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use neurite_bench::latency::{self, Target};

#[derive(Parser)]
#[command(name = "neurite-bench", version, about = "Neurite's benchmark tools (see bench/run)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `PUT /floor/{txn}`: one SQLite write transaction per request, the
    /// way Neurite writes. Prints the bound address as the first line.
    FloorServer {
        /// Folder for the database (created if needed).
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Time N sequential PUTs from one keep-alive client (after 5 warm-ups);
    /// print {"p50_ms","p90_ms","p99_ms","max_ms","mean_ms","count"} as JSON.
    Latency {
        /// Base URL of the server, e.g. http://127.0.0.1:18010.
        #[arg(long)]
        url: String,
        /// Number of timed requests.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// `matrix`: register a user, create a room, time PUT .../send; `floor`: time PUT /floor/{txn}.
        #[arg(long, value_enum, default_value = "matrix")]
        target: Target,
        /// Also write each request as a line `<start, Unix ms> <duration, ms>` to this file.
        #[arg(long)]
        raw: Option<PathBuf>,
    },
}

/// Prints the summary of `samples` as JSON and writes them one per line to `raw`.
fn report(samples: &[latency::Sample], raw: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(path) = raw {
        let lines: String = samples
            .iter()
            .map(|s| format!("{:.3} {:.3}\n", s.started_unix_ms, s.elapsed.as_secs_f64() * 1000.0))
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let durations: Vec<_> = samples.iter().map(|s| s.elapsed).collect();
    let summary = latency::summarize(&durations).context("no samples")?;
    println!("{}", summary.to_json());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Like Neurite: the multi-threaded runtime with one worker per core.
        Command::FloorServer { data, listen } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(neurite_bench::floor::serve(&data, listen))),
        Command::Latency { url, n, target, raw } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(latency::run(&url, n as usize, target)))
            .and_then(|samples| report(&samples, raw.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neurite-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
