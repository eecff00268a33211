//! `burrow client workload` (hidden): the writer the real-process crash tests kill with
//! SIGKILL. It commits transactions into `scans` forever and says so on stdout only after each
//! commit has returned, so a test that sees `committed N K` knows transaction N is durable.

use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `burrow client workload`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Makes the row ids of this run unique: `w{seed}-{tx}-{i}`.
    #[arg(long)]
    seed: u64,
    /// Server base URL; without it the workload never syncs.
    #[arg(long)]
    server: Option<String>,
    /// Rows inserted per transaction.
    #[arg(long, default_value_t = 5)]
    tx_rows: u64,
    /// Sync after every this many transactions (with --server).
    #[arg(long, default_value_t = 3)]
    sync_every: u64,
    /// Stop after this many transactions (default: never).
    #[arg(long)]
    txs: Option<u64>,
}

/// Runs the workload on `client`; `token` is the bearer token for `--server`.
///
/// Transaction `n` (from 0) inserts rows `w{seed}-{n}-{i}` for `i` in `0..tx_rows` with
/// `code = n` and `scanned_at = i`, then prints `committed {n} {tx_rows}`. Every `sync_every`
/// transactions it syncs when a server is given (errors are ignored: the server may be down),
/// printing `syncing` before and `synced` or `sync failed` after.
pub fn run(client: &Client, args: &WorkloadArgs, token: Option<&str>) -> Result<ExitCode> {
    let transport = match &args.server {
        Some(url) => {
            let token = token.context("--token (or BURROW_TOKEN) is required with --server")?;
            Some(HttpTransport::new(url, token)?)
        }
        None => None,
    };
    let runtime = crate::runtime()?;
    let mut out = std::io::stdout().lock();
    let mut n: u64 = 0;
    let mut unsynced: u64 = 0;
    while args.txs.is_none_or(|max| n < max) {
        let sql: String = (0..args.tx_rows)
            .map(|i| {
                format!(
                    "INSERT INTO scans(id, code, scanned_at) VALUES ('w{}-{n}-{i}', '{n}', {i});",
                    args.seed
                )
            })
            .collect();
        client.execute(&sql)?;
        writeln!(out, "committed {n} {}", args.tx_rows)?;
        out.flush()?;
        n += 1;
        unsynced += 1;
        let Some(t) = &transport else { continue };
        if args.sync_every > 0 && unsynced >= args.sync_every {
            unsynced = 0;
            writeln!(out, "syncing")?;
            out.flush()?;
            let line = match runtime.block_on(client.sync(t)) {
                Ok(_) => "synced",
                Err(_) => "sync failed",
            };
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
