//! `burrow proxy`: a fault-injecting TCP proxy in front of a server, for trying clients on a
//! bad network by hand or from scripts.

use anyhow::{Context, Result};
use burrow_proxy::Profile;
use clap::Args;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `burrow proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4001")]
    listen: String,
    /// Address to forward to (the server), e.g. 127.0.0.1:4000.
    #[arg(long)]
    upstream: String,
    /// Network profile: none, wifi, 3g, edge or hostile, optionally with overrides, e.g.
    /// `hostile:outage=3s-5s,outage-every=20s` or `edge:latency=300ms,jitter=200ms,drop=2%`.
    /// Keys: latency, jitter, down, up, drop, stall, stall-len, outage, outage-every.
    #[arg(long)]
    profile: String,
    /// Seed of every random choice (fault schedule); the same seed gives the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between two stats lines on stderr (0 = only at exit).
    #[arg(long, default_value_t = 5)]
    stats_every: u64,
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve upstream {addr:?}"))?
        .next()
        .with_context(|| format!("upstream {addr:?} resolves to no address"))
}

/// Runs the proxy until Ctrl-C or SIGTERM, printing stats to stderr.
pub fn run(args: ProxyArgs) -> Result<ExitCode> {
    let profile: Profile = args.profile.parse()?;
    let upstream = resolve(&args.upstream)?;
    crate::runtime()?.block_on(async move {
        let proxy = burrow_proxy::spawn(&args.listen, upstream, profile, args.seed).await?;
        eprintln!(
            "burrow proxy listening on {} -> {} (seed {}), profile {}",
            proxy.local_addr(),
            upstream,
            args.seed,
            proxy.profile()
        );
        let every = Duration::from_secs(args.stats_every.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let stop = stop_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick(), if args.stats_every > 0 => {
                    let link = if proxy.is_online() { "up" } else { "DOWN" };
                    eprintln!("proxy: link {link}; {}", proxy.stats());
                }
            }
        }
        eprintln!("proxy stopping; {}", proxy.stats());
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
