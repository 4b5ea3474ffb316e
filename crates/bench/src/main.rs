//! `neurite-bench`: the floor server and the latency client used by `bench/run`.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Like Neurite: the multi-threaded runtime with one worker per core.
        Command::FloorServer { data, listen } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(neurite_bench::floor::serve(&data, listen))),
        Command::Latency { url, n, target } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(latency::run(&url, n as usize, target)))
            .map(|summary| println!("{}", summary.to_json())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neurite-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
