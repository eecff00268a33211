//! `burrow bench memory`: the server's memory per live connection. The server runs as a child
//! process (`burrow serve`, the same binary) so its resident set is its own; this process
//! opens `connections` `GET /v1/live` WebSockets to it ([`LiveSubscriber`]s that read every
//! poke) and reads the child's `VmRSS` from `/proc/PID/status` before and after (Linux only).
//! One write is then pushed to every socket (the fan-out's buffers count too) and the RSS is
//! read again.

use anyhow::{Context, Result, bail};
use burrow_client::{Client, HttpTransport};
use burrow_core::Schema;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench_live::connect_fleet;
use crate::bench_live::open_files_limit;
use crate::demo::DELIVERY_SCHEMA;

/// Target: this many connections …
pub const TARGET_CONNECTIONS: usize = 10_000;
/// … in at most this resident set (bytes).
pub const TARGET_RSS_BYTES: f64 = 500e6;
/// File descriptors kept free in each process beyond one per connection.
const FD_HEADROOM: u64 = 256;
/// Longest wait for the fleet to connect, or to see the poke.
const FLEET_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before reading the RSS, so allocations of the last handshakes settle.
const SETTLE: Duration = Duration::from_millis(500);
/// Connections from one source address to one server port cannot exceed the port range.
const EPHEMERAL_PORTS_MAX: usize = 64_000;
const SECRET: &str = "bench-memory-secret";

/// What to measure.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Live connections to open.
    pub connections: usize,
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (the memory bench needs Linux /proc)"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("no {field} in {path}"))?;
    let kb: u64 = line
        .trim_start_matches(&format!("{field}:"))
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unreadable {field} line in {path}: {line}"))?;
    Ok(kb * 1024)
}

/// The server child; killed and reaped when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `burrow serve` on a free loopback port, allowing `live_max` live connections per
/// user and no request rate limit; waits for its "listening on" line.
fn start_server(dir: &std::path::Path, live_max: usize) -> Result<ServerProcess> {
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, DELIVERY_SCHEMA)?;
    let config = dir.join("burrow.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nlive_connections_per_user_max = {live_max}\n\
             requests_per_second_per_user = 0\n"
        ),
    )?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--data")
        .arg(dir.join("server"))
        .arg("--schema")
        .arg(&schema)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--secret", SECRET])
        .env_remove("BURROW_LISTEN_ADDR")
        .env_remove("BURROW_CONFIG")
        .env_remove("BURROW_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `burrow serve`")?;
    let stderr = child.stderr.take().context("no stderr of the server")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Reads the server's stderr to the end (so it never blocks on a full pipe), handing the
    // first lines over.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut server = ServerProcess {
        child,
        url: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    server.url = url.to_string();
                    return Ok(server);
                }
                seen.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = server.child.try_wait()? {
                    bail!("`burrow serve` exited ({status}): {}", seen.join(" | "));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("`burrow serve` closed its stderr: {}", seen.join(" | "))
            }
        }
    }
    bail!("`burrow serve` did not report its address within 30 s")
}

/// Runs the benchmark; returns the JSON result and the table lines.
pub async fn run(o: &MemoryOptions) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    let n = o.connections;
    anyhow::ensure!(n > 0, "--connections must be at least 1");
    let need = n as u64 + FD_HEADROOM;
    match open_files_limit() {
        Some(limit) if limit < need => bail!(
            "{n} live connections need about {need} open files in this process and in the \
             server's, but the soft limit is {limit}; raise it (e.g. `ulimit -n {need}`, up to \
             the hard limit `ulimit -Hn`) or pass fewer --connections"
        ),
        Some(_) => {}
        None => bail!("cannot read /proc/self/limits: the memory bench needs Linux"),
    }
    // Every connection takes an ephemeral port of 127.0.0.1 towards one server port.
    anyhow::ensure!(
        n <= EPHEMERAL_PORTS_MAX,
        "{n} connections from one address to one port need more ephemeral ports than \
         Linux has ({EPHEMERAL_PORTS_MAX} at most)"
    );
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), n + 16)?;
    let pid = server.child.id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token =
        burrow_server::auth::mint(SECRET.as_bytes(), "fleet", BTreeMap::new(), now, 86_400)?;
    // Warm-up: one sync and one live connection, so the baseline holds the server's
    // per-process set-up (runtime threads, database pages, the live hub).
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let writer = Client::open(dir.path().join("writer.db"), &schema)?;
    let transport = HttpTransport::new(&server.url, &token)?;
    writer.execute("INSERT INTO routes(id, driver_id, day) VALUES ('r0', 'd', '2026-01-01')")?;
    writer.sync(&transport).await?;
    let warm = connect_fleet(1, &server.url, &token, FLEET_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = status_bytes(pid, "VmRSS")?;
    let t = Instant::now();
    let fleet = connect_fleet(n, &server.url, &token, FLEET_TIMEOUT).await?;
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_idle = status_bytes(pid, "VmRSS")?;
    // One write pushed to every socket.
    writer.execute("INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'd', '2026-01-01')")?;
    let head = writer.sync(&transport).await?.cursor;
    anyhow::ensure!(head > 0, "the writer's sync reported no server head");
    fleet.wait_for_head(head).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after = status_bytes(pid, "VmRSS")?;
    let hwm = status_bytes(pid, "VmHWM")?;
    drop(fleet);
    drop(warm);
    drop(server);
    let peak = rss_after.max(rss_idle) as f64;
    let per_conn = (peak - rss_before as f64) / n as f64;
    // Scaled to the target's count when fewer were opened.
    let projected = rss_before as f64 + per_conn * TARGET_CONNECTIONS as f64;
    let met = projected <= TARGET_RSS_BYTES;
    let result = serde_json::json!({
        "bench": "memory",
        "connections": n,
        "server": "child process `burrow serve` (SQLite store), RSS from /proc/PID/status",
        "rss_before_bytes": rss_before,
        "rss_idle_bytes": rss_idle,
        "rss_after_poke_bytes": rss_after,
        "rss_peak_hwm_bytes": hwm,
        "rss_bytes": peak,
        "bytes_per_connection": per_conn,
        "projected_rss_at_10000_bytes": projected,
        "connect_seconds": connect_secs,
        "target_connections": TARGET_CONNECTIONS,
        "target_rss_bytes": TARGET_RSS_BYTES,
        "met": met,
    });
    let lines = vec![
        (
            format!("server RSS with {n} live connections"),
            format!(
                "{:.1} MB (before: {:.1} MB; after a poke to all: {:.1} MB)",
                rss_idle as f64 / 1e6,
                rss_before as f64 / 1e6,
                rss_after as f64 / 1e6
            ),
        ),
        (
            "per connection".to_string(),
            format!("{:.1} KB", per_conn / 1e3),
        ),
        (
            "at 10,000 connections (target ≤ 500 MB)".to_string(),
            format!(
                "{:.1} MB{} {}",
                projected / 1e6,
                if n == TARGET_CONNECTIONS {
                    ""
                } else {
                    " (projected)"
                },
                if met { "met" } else { "MISSED" }
            ),
        ),
        (
            "(setup) connecting".to_string(),
            format!("{connect_secs:.1} s"),
        ),
    ];
    Ok((result, lines))
}
