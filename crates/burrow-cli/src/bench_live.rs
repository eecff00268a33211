//! `burrow bench live`: propagation latency with live push. An embedded server on loopback, a
//! writer device A and a reader device B, each running the real background runner
//! ([`Client::run`], live push on), and `clients - 1` more idle devices holding a
//! `GET /v1/live` WebSocket each (lightweight [`LiveSubscriber`]s that read every poke, so the
//! server really fans out to every socket). Each sample is one local transaction on A (one
//! inserted row); its latency runs from A's commit (`Client::write` returned) to the moment the
//! row is visible in B's SQLite file (read through a separate connection).
//!
//! What a sample crosses: A's runner wakes on the write and uploads (`POST /v1/sync`, one
//! server transaction with `synchronous=FULL`), the server publishes its head and pokes every
//! socket, B's runner pulls (`POST /v1/sync`) and applies the change in one local transaction.

use anyhow::{Context, Result, bail};
use burrow_client::live::LiveSubscriber;
use burrow_client::{Client, HttpTransport, RunOptions, SyncEvent};
use burrow_core::Schema;
use burrow_server::ServerConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::bench::median;
use crate::demo::DELIVERY_SCHEMA;

/// Unrecorded samples before the measured ones (connections and caches warm up).
const WARMUP_SAMPLES: usize = 5;
/// Longest wait for one sample to show up in B.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the idle subscribers to connect, or to catch up at the end.
const FLEET_TIMEOUT: Duration = Duration::from_secs(60);
/// WebSocket handshakes in flight at once while the fleet connects.
const CONNECT_CONCURRENCY: usize = 64;
/// File descriptors kept free for the server, the databases and the runtime.
const FD_HEADROOM: u64 = 256;
/// Pause between two samples, so each starts from idle runners.
const SAMPLE_GAP: Duration = Duration::from_millis(3);

/// One repetition at one client count.
#[derive(Debug, Clone, serde::Serialize)]
struct Rep {
    p50_ms: f64,
    /// Median time until B's runner received the poke (upload, ingest and fan-out).
    poke_p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    max_ms: f64,
    /// Pokes the idle subscribers received in total.
    fleet_pokes: u64,
    /// Seconds to connect the idle subscribers.
    fleet_connect_seconds: f64,
}

/// The `q`-quantile (nearest rank) of sorted `xs`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` when unknown.
pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// The soft open-file limit when it is below `need` (`None`: enough, or unknown).
pub(crate) fn open_files_short_of(need: u64) -> Option<u64> {
    open_files_limit().filter(|limit| *limit < need)
}

/// Fails with advice when `clients` sockets (two descriptors each on loopback: client and
/// server side) would not fit under the open-file limit.
fn check_fd_limit(clients: usize) -> Result<()> {
    let need = 2 * clients as u64 + FD_HEADROOM;
    match open_files_short_of(need) {
        Some(limit) => bail!(
            "{clients} live clients need about {need} open files (a socket on each side of \
             loopback per client) but the soft limit is {limit}; raise it (e.g. `ulimit -n \
             {need}`, up to the hard limit `ulimit -Hn`) or use fewer --clients"
        ),
        _ => Ok(()),
    }
}

/// A server on loopback that accepts `live_max` live connections per user.
struct Server {
    _dir: tempfile::TempDir,
    server: burrow_server::RunningServer,
    token: String,
    schema: Schema,
}

async fn server(live_max: usize) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    // Measures sync, not the per-user rate limit (every device here is one user).
    config.limits.requests_per_second_per_user = 0.0;
    config.secret = Some(b"bench".to_vec());
    // Every device of the bench signs in as the same user.
    config.limits.live_connections_per_user_max = live_max;
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = burrow_server::auth::mint(b"bench", "bench", BTreeMap::new(), now, 86_400)?;
    Ok(Server {
        _dir: dir,
        server,
        token,
        schema,
    })
}

/// A device running [`Client::run`] in a task until stopped.
struct Device {
    client: Arc<Client>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Device {
    /// Opens `path` and starts its runner (live push on, polling only as a slow fallback).
    fn start(path: std::path::PathBuf, s: &Server) -> Result<Device> {
        let client = Arc::new(Client::open(path, &s.schema)?);
        let transport = HttpTransport::new(&s.server.url(), &s.token)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let c = client.clone();
        let task = tokio::spawn(async move {
            let options = RunOptions {
                poll_interval_ms: 60_000,
                live: true,
                ..RunOptions::default()
            };
            c.run(&transport, &options, async {
                let _ = stopped.await;
            })
            .await?;
            Ok(())
        });
        Ok(Device {
            client,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await??;
        Ok(())
    }
}

/// Waits until `events` shows a live poke (the runner's WebSocket is up).
async fn wait_poked(events: &mut tokio::sync::broadcast::Receiver<SyncEvent>) -> Result<()> {
    tokio::time::timeout(FLEET_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(SyncEvent::Poked { .. }) => return Ok(()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(anyhow::anyhow!("runner events ended: {e}")),
            }
        }
    })
    .await
    .context("a runner did not open its live connection")?
}

/// The idle fleet: live subscribers that only read pokes (also `burrow bench memory`'s
/// connections).
pub(crate) struct Fleet {
    pub(crate) tasks: JoinSet<()>,
    /// Each subscriber's latest head.
    heads: Arc<Vec<AtomicU64>>,
    pokes: Arc<AtomicU64>,
    dropped: Arc<AtomicUsize>,
    /// How long connecting and catching up may take.
    timeout: Duration,
}

/// Opens `n` live subscribers (`CONNECT_CONCURRENCY` at a time), each recording the heads it
/// is poked with; fails when one cannot connect or all are not up within `timeout`.
pub(crate) async fn connect_fleet(
    n: usize,
    url: &str,
    token: &str,
    timeout: Duration,
) -> Result<Fleet> {
    let heads: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let pokes = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (url, token) = (url.to_string(), token.to_string());
        let (heads, pokes, dropped, connected, failure, gate) = (
            heads.clone(),
            pokes.clone(),
            dropped.clone(),
            connected.clone(),
            failure.clone(),
            gate.clone(),
        );
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut sub = match LiveSubscriber::connect(&url, &token).await {
                Ok(s) => s,
                Err(e) => {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert_with(|| format!("subscriber {i}: {e}"));
                    return;
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::SeqCst);
            loop {
                match sub.next_head().await {
                    Ok(Some(h)) => {
                        heads[i].fetch_max(h, Ordering::SeqCst);
                        pokes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) | Err(_) => {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + timeout;
    while connected.load(Ordering::SeqCst) < n {
        if let Some(f) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            bail!("live subscriber could not connect: {f}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} live subscribers connected within {} s",
                connected.load(Ordering::SeqCst),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Fleet {
        tasks,
        heads,
        pokes,
        dropped,
        timeout,
    })
}

impl Fleet {
    /// Waits until every subscriber has seen `head`; fails if one dropped or lags behind.
    pub(crate) async fn wait_for_head(&self, head: u64) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let dropped = self.dropped.load(Ordering::SeqCst);
            if dropped > 0 {
                bail!("{dropped} live subscribers lost their connection");
            }
            let behind = self
                .heads
                .iter()
                .filter(|h| h.load(Ordering::SeqCst) < head)
                .count();
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{behind} live subscribers never saw head {head}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Whether row `id` of `routes` is in the database `conn` reads.
fn visible(conn: &rusqlite::Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM routes WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?)
}

/// One repetition: a fresh server with `clients` live readers (B and `clients - 1` idle
/// subscribers), `samples` measured writes.
async fn rep(clients: usize, samples: usize, rep: usize) -> Result<Rep> {
    let idle = clients.saturating_sub(1);
    let s = server(clients + 2).await?;
    let dir = tempfile::tempdir()?;
    let a = Device::start(dir.path().join("a.db"), &s)?;
    let mut a_events = a.client.events();
    let b = Device::start(dir.path().join("b.db"), &s)?;
    let mut b_events = b.client.events();
    wait_poked(&mut a_events).await?;
    wait_poked(&mut b_events).await?;
    let t = Instant::now();
    let fleet = connect_fleet(idle, &s.server.url(), &s.token, FLEET_TIMEOUT).await?;
    let fleet_connect_seconds = t.elapsed().as_secs_f64();
    // B's file read through a connection of its own: the runner's lock is never taken.
    let reader = rusqlite::Connection::open(b.client.path())?;
    let pokes_before = fleet.pokes.load(Ordering::SeqCst);
    let mut lat_ms = Vec::with_capacity(samples);
    let mut poke_ms = Vec::with_capacity(samples);
    for i in 0..WARMUP_SAMPLES + samples {
        let id = format!("live-{rep}-{i}");
        a.client.write(|tx| {
            tx.execute(
                "INSERT INTO routes(id, driver_id, day) VALUES (?1, 'driver-1', '2026-11-26')",
                [&id],
            )
        })?;
        let t0 = Instant::now();
        let mut poked = None;
        loop {
            if visible(&reader, &id)? {
                break;
            }
            if t0.elapsed() > SAMPLE_TIMEOUT {
                bail!(
                    "sample {i}: row not visible in B after {} s",
                    SAMPLE_TIMEOUT.as_secs()
                );
            }
            // B's events (a poke, a completed sync) wake the check at once; the short sleep
            // is a fallback.
            tokio::select! {
                ev = b_events.recv() => {
                    if let (Ok(SyncEvent::Poked { .. }), None) = (ev, poked) {
                        poked = Some(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
                _ = tokio::time::sleep(Duration::from_micros(500)) => {}
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if i >= WARMUP_SAMPLES {
            lat_ms.push(ms);
            poke_ms.extend(poked);
        }
        tokio::time::sleep(SAMPLE_GAP).await;
    }
    let head = burrow_server::store::ServerStore::head_seq(s.server.store().as_ref()).await?;
    fleet.wait_for_head(head).await?;
    let fleet_pokes = fleet.pokes.load(Ordering::SeqCst) - pokes_before;
    drop(fleet.tasks);
    a.stop().await?;
    b.stop().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), s.server.shutdown()).await;
    lat_ms.sort_by(|x, y| x.total_cmp(y));
    poke_ms.sort_by(|x, y| x.total_cmp(y));
    Ok(Rep {
        p50_ms: quantile(&lat_ms, 0.50),
        poke_p50_ms: quantile(&poke_ms, 0.50),
        p99_ms: quantile(&lat_ms, 0.99),
        mean_ms: lat_ms.iter().sum::<f64>() / lat_ms.len().max(1) as f64,
        max_ms: lat_ms.last().copied().unwrap_or(f64::NAN),
        fleet_pokes,
        fleet_connect_seconds,
    })
}

/// Runs `burrow bench live`: for each client count, `reps` repetitions of `samples` writes;
/// prints the median p50/p99 propagation latency per count.
pub async fn run(clients: &[usize], samples: usize, reps: usize, json: bool) -> Result<()> {
    anyhow::ensure!(!clients.is_empty(), "--clients lists no client count");
    anyhow::ensure!(samples > 0, "--samples must be at least 1");
    if let Some(max) = clients.iter().max() {
        check_fd_limit(*max)?;
    }
    let mut results = Vec::new();
    if !json {
        println!(
            "{:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>13}  {:>12}",
            "clients", "p50 ms", "p99 ms", "mean ms", "max ms", "B poked p50", "fleet pokes"
        );
    }
    for &n in clients {
        anyhow::ensure!(n >= 1, "a client count must be at least 1 (the reader B)");
        let mut runs = Vec::new();
        for r in 0..reps {
            runs.push(
                rep(n, samples, r)
                    .await
                    .with_context(|| format!("{n} clients, rep {}", r + 1))?,
            );
        }
        let med = |f: fn(&Rep) -> f64| median(runs.iter().map(f).collect());
        let (p50, p99, mean, max) = (
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            med(|r| r.mean_ms),
            med(|r| r.max_ms),
        );
        let pokes = med(|r| r.fleet_pokes as f64);
        let poked = med(|r| r.poke_p50_ms);
        if !json {
            println!(
                "{n:>8}  {p50:>9.2}  {p99:>9.2}  {mean:>9.2}  {max:>9.2}  {poked:>13.2}  {pokes:>12.0}"
            );
        }
        results.push(serde_json::json!({
            "clients": n,
            "idle_subscribers": n - 1,
            "p50_ms_median": p50,
            "p99_ms_median": p99,
            "mean_ms_median": mean,
            "max_ms_median": max,
            "b_poked_p50_ms_median": poked,
            "fleet_pokes_median": pokes,
            "runs": runs,
        }));
    }
    let result = serde_json::json!({
        "bench": "live",
        "samples": samples,
        "reps": reps,
        "targets": { "p50_ms": 10.0, "p99_ms": 50.0, "at_clients": 1000 },
        "results": results,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "latency: A's write committed → row visible in B's SQLite (both running \
             Client::run with live push); `clients` = B + idle live subscribers; medians over \
             {reps} rep(s) of {samples} samples. Targets at 1,000 clients: p50 ≤ 10 ms, \
             p99 ≤ 50 ms. `B poked`: until B's runner got the poke (upload, ingest, \
             fan-out); the rest is B's pull and apply."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn open_files_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
