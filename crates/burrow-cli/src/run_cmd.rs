//! `burrow client … run` and `burrow client … watch`: keep a client in sync until interrupted
//! (Ctrl-C), through the library's background runner. `run` prints a line per sync and per
//! state change; `watch` prints every event as a JSON line.

use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport, Network, NetworkState, RunOptions, SyncEvent};
use clap::Args;
use std::process::ExitCode;

/// Arguments of `run` and `watch`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server base URL, e.g. http://127.0.0.1:4000.
    #[arg(long, env = "BURROW_URL")]
    pub server: String,
    /// The network: offline, metered or unmetered.
    #[arg(long, default_value = "unmetered")]
    network: String,
    /// The battery is low: defer the bulk lane.
    #[arg(long)]
    low_battery: bool,
    /// Sync at least every this many seconds.
    #[arg(long, default_value_t = 30)]
    poll: u64,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long)]
    for_secs: Option<u64>,
}

/// Runs the client until Ctrl-C (or `--for-secs`); with `json`, every event as a JSON line.
pub fn run(
    client: Client,
    transport: HttpTransport,
    args: &RunArgs,
    json: bool,
) -> Result<ExitCode> {
    let network = Network::parse(&args.network).with_context(|| {
        format!(
            "--network {:?}: expected offline, metered or unmetered",
            args.network
        )
    })?;
    client.set_network(NetworkState {
        network,
        low_battery: args.low_battery,
    });
    let options = RunOptions {
        poll_interval_ms: args.poll.max(1) * 1_000,
        ..RunOptions::default()
    };
    let for_secs = args.for_secs;
    crate::runtime()?.block_on(async move {
        let mut events = client.events();
        let printer = async {
            loop {
                match events.recv().await {
                    Ok(e) => print_event(&e, json),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("({n} events skipped)");
                    }
                    Err(_) => break,
                }
            }
        };
        let stop = async {
            match for_secs {
                Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            r = client.run(&transport, &options, stop) => r,
            _ = printer => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_event(e: &SyncEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(e) {
            println!("{line}");
        }
        return;
    }
    match e {
        SyncEvent::Synced { report } => println!(
            "synced: {} ops acked, {} rejected, {} changes received, cursor {}",
            report.ops_acked, report.ops_rejected, report.changes_received, report.cursor
        ),
        SyncEvent::State {
            state,
            next_retry_at_ms,
        } => match next_retry_at_ms {
            Some(at) => println!(
                "state: {} (next attempt {})",
                serde_json::to_string(state)
                    .unwrap_or_default()
                    .trim_matches('"'),
                burrow_client::client::rfc3339_ms(*at)
            ),
            None => println!(
                "state: {}",
                serde_json::to_string(state)
                    .unwrap_or_default()
                    .trim_matches('"')
            ),
        },
        SyncEvent::Failed { error, .. } => println!("sync failed: {}", error.replace('\n', " ")),
        SyncEvent::Written { .. } | SyncEvent::Poked { .. } => {}
    }
}
