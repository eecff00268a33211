//! `burrow`: run the sync server, act as a scriptable client, mint dev tokens, and run the
//! demo and benchmarks.

mod bench;
mod bench_all;
mod bench_capture;
mod bench_delta;
mod bench_edge;
mod bench_ingest;
mod bench_live;
mod bench_memory;
mod bench_policies;
mod bench_scope;
mod bench_seed;
mod cli_client;
mod demo;
mod duration;
mod proxy_cmd;
mod run_cmd;
mod serve;
mod workload;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code when the server refused the credentials (sysexits EX_NOPERM).
pub const EXIT_AUTH: u8 = 77;
/// Exit code when the server could not be reached (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code when a demo or check found a broken promise.
pub const EXIT_CHECK_FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "burrow",
    version,
    about = "Offline-first sync engine: server, client, demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(serve::ServeArgs),
    /// Print a signed development token (HS256 JWT) for a user.
    Token(serve::TokenArgs),
    /// Work with a client database: write, query, sync, inspect.
    Client(cli_client::ClientArgs),
    /// Run a delivery fleet through a bad network against an embedded server and print the
    /// brief's promises as measured facts (exit 3 if one fails).
    Demo(demo::DemoArgs),
    /// Measure sync figures (initial sync, push, delta, capture, ingest, memory, policies,
    /// live latency, EDGE, selective sync; `all` for every figure of the brief).
    Bench(bench::BenchArgs),
    /// Run a fault-injecting TCP proxy (latency, bandwidth caps, drops, stalls, outages) in
    /// front of a server.
    Proxy(proxy_cmd::ProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BURROW_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve::serve(a),
        Command::Token(a) => serve::token(a),
        Command::Client(a) => cli_client::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Proxy(a) => proxy_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// A multi-threaded tokio runtime for the subcommands that need one.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
