//! `burrow bench edge`: sync over a simulated EDGE (2G) link. A server on loopback, and one
//! device running the real background runner ([`Client::run`], live push on) whose every byte
//! goes through a [`burrow_proxy`] instance with [`Profile::edge`] (840 ms round trip, 240 kbit/s
//! down, 200 kbit/s up; `--profile` may change it).
//!
//! Three figures per repetition:
//! - **(a) offline queue drain:** `--ops` small updates (normal lane, one local transaction
//!   each) of rows synced before, queued while the app reports no network; wall time from the
//!   network coming back (`set_network`) until the outbox is empty (every op acknowledged).
//! - **(b) critical behind bulk, queued offline:** `--bulk` "photo" rows of `--bulk-bytes`
//!   each (the bulk-lane `scans` table) and then one critical update (`shipments` is a
//!   critical table) queued offline; time from the network coming back until the server has
//!   committed the critical op, and until the device knows (its outbox no longer holds it).
//! - **(c) critical during a bulk upload:** the same bulk rows queued offline, the network
//!   comes back, and once the bulk upload is on the wire the app writes the critical update;
//!   the same two times, from that write.

use anyhow::{Context, Result, bail};
use burrow_client::{Client, ClientOptions, HttpTransport, Network, NetworkState, RunOptions};
use burrow_proxy::{Profile, ProxyHandle};
use rand::RngCore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::bench::{Fixture, fixture_for, median};
use crate::demo::DELIVERY_SCHEMA;

/// Longest any one phase may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the client's outbox and the server's rows are checked.
const POLL: Duration = Duration::from_millis(5);
/// The target of figure (a), in seconds.
const TARGET_DRAIN_S: f64 = 5.0;
/// The target of figures (b) and (c), in seconds.
const TARGET_CRITICAL_S: f64 = 2.0;
/// The shipment the critical op updates.
const SHIPMENT: &str = "shipment-critical";

/// Settings of `burrow bench edge`.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Normal-lane ops queued offline for figure (a).
    pub ops: usize,
    /// Bulk rows queued ahead of the critical op for figures (b) and (c).
    pub bulk: usize,
    /// Payload bytes per bulk row (base64 of random bytes: incompressible, like a photo).
    pub bulk_bytes: usize,
    /// The link between device and server.
    pub profile: Profile,
    /// The device's upload request size limit (`None`: the library default).
    pub upload_bytes_max: Option<usize>,
    /// Seed of the proxy's random choices.
    pub seed: u64,
}

/// One repetition's figures, in seconds.
#[derive(Debug, Clone, serde::Serialize)]
struct Rep {
    drain_s: f64,
    queued_critical_server_s: f64,
    queued_critical_ack_s: f64,
    queued_bulk_done_s: f64,
    inflight_critical_server_s: f64,
    inflight_critical_ack_s: f64,
    inflight_bulk_done_s: f64,
    bytes_up: u64,
    bytes_down: u64,
}

/// Polls `done` every [`POLL`] until it holds; the seconds since `t0`.
async fn until(t0: Instant, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<f64> {
    loop {
        if done()? {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > PHASE_TIMEOUT {
            bail!("{what}: not done after {} s", PHASE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Read-only views of the device's outbox and the server's rows, through connections of
/// their own (the runner's lock is never taken).
struct Probe {
    device: rusqlite::Connection,
    server: rusqlite::Connection,
}

impl Probe {
    fn pending(&self, filter: &str) -> Result<i64> {
        Ok(self.device.query_row(
            &format!("SELECT count(*) FROM _burrow_outbox {filter}"),
            [],
            |r| r.get(0),
        )?)
    }

    /// The server's change sequence of the critical shipment.
    fn shipment_seq(&self) -> Result<i64> {
        Ok(self.server.query_row(
            "SELECT coalesce(max(seq), 0) FROM rows WHERE tbl = 'shipments' AND id = ?1",
            [SHIPMENT],
            |r| r.get(0),
        )?)
    }
}

fn offline(client: &Client) {
    client.set_network(NetworkState {
        network: Network::Offline,
        low_battery: false,
    });
}

fn online(client: &Client) {
    client.set_network(NetworkState {
        network: Network::Unmetered,
        low_battery: false,
    });
}

/// Queues `n` bulk "photo" rows, one local transaction each; `tag` keeps ids unique.
fn queue_bulk(client: &Client, n: usize, bytes: usize, tag: &str) -> Result<()> {
    let mut rng = rand::rng();
    let mut raw = vec![0u8; bytes * 3 / 4];
    for i in 0..n {
        rng.fill_bytes(&mut raw);
        let photo = base64(&raw);
        client.write(|tx| {
            tx.execute(
                "INSERT INTO scans(id, shipment_id, code, scanned_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![format!("photo-{tag}-{i}"), SHIPMENT, photo, i as i64],
            )
        })?;
    }
    Ok(())
}

/// The critical op: the shipment is delivered.
fn write_critical(client: &Client, status: &str) -> Result<()> {
    client.write(|tx| {
        tx.execute(
            "UPDATE shipments SET status = ?1 WHERE id = ?2",
            [status, SHIPMENT],
        )
    })?;
    Ok(())
}

/// Standard base64 (no dependency needed for a payload filler).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Seeds the rows the ops update and syncs them straight to the server (setup, not measured).
async fn seed(client: &Client, f: &Fixture, ops: usize) -> Result<()> {
    client.write(|tx| {
        let mut stmt = tx.prepare(
            "INSERT INTO routes(id, driver_id, day) VALUES (?1, 'driver-1', '2026-11-26')",
        )?;
        for i in 0..ops {
            stmt.execute([format!("route-{i}")])?;
        }
        tx.execute(
            "INSERT INTO shipments(id, route_id, status, address, recipient, weight_kg, pieces, fragile, notes)
             VALUES (?1, 'route-0', 'loaded', '1 Harbour Road', 'Customer 1', 2.5, 1, 0, '')",
            [SHIPMENT],
        )?;
        Ok(())
    })?;
    client
        .sync(&HttpTransport::new(&f.server.url(), &f.token)?)
        .await?;
    anyhow::ensure!(client.status()?.pending_ops == 0, "seed rows not synced");
    Ok(())
}

/// Waits until `bytes` more than `from` went up through the proxy (a request is on the wire),
/// or the outbox is empty (it all went already).
async fn upload_started(proxy: &ProxyHandle, probe: &Probe, from: u64, bytes: u64) -> Result<()> {
    until(Instant::now(), "bulk upload start", || {
        Ok(proxy.stats().bytes_up >= from + bytes || probe.pending("")? == 0)
    })
    .await?;
    Ok(())
}

async fn rep(o: &EdgeOptions, rep: usize) -> Result<Rep> {
    let f = fixture_for(DELIVERY_SCHEMA).await?;
    let proxy = burrow_proxy::spawn(
        "127.0.0.1:0",
        f.server.local_addr(),
        o.profile.clone(),
        o.seed.wrapping_add(rep as u64),
    )
    .await?;
    let mut options = ClientOptions::default();
    if let Some(b) = o.upload_bytes_max {
        options.upload_bytes_max = b;
    }
    let client = Arc::new(Client::open_with(
        f.dir.join("device.db"),
        &f.schema,
        None,
        options,
    )?);
    seed(&client, &f, o.ops.max(1)).await?;
    let probe = Probe {
        device: rusqlite::Connection::open(client.path())?,
        server: rusqlite::Connection::open(f.dir.join("server").join("burrow-server.db"))?,
    };
    offline(&client);
    // The runner, as an app starts it; every request and the live socket go through the proxy.
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = {
        let c = client.clone();
        let transport = HttpTransport::new(&proxy.url(), &f.token)?;
        tokio::spawn(async move {
            let options = RunOptions {
                poll_interval_ms: 60_000,
                live: true,
                ..RunOptions::default()
            };
            c.run(&transport, &options, async {
                let _ = stopped.await;
            })
            .await
        })
    };

    // (a) offline queue drain.
    for i in 0..o.ops {
        client.write(|tx| {
            tx.execute(
                "UPDATE routes SET day = ?1 WHERE id = ?2",
                [format!("2026-12-{:02}", 1 + i % 28), format!("route-{i}")],
            )
        })?;
    }
    anyhow::ensure!(probe.pending("")? == o.ops as i64, "ops not queued");
    let t0 = Instant::now();
    online(&client);
    let drain_s = until(t0, "(a) drain", || Ok(probe.pending("")? == 0)).await?;

    // (b) critical behind bulk, everything queued offline.
    offline(&client);
    queue_bulk(&client, o.bulk, o.bulk_bytes, "queued")?;
    write_critical(&client, "delivered")?;
    let seq0 = probe.shipment_seq()?;
    let t0 = Instant::now();
    online(&client);
    let critical_gone = "WHERE tbl = 'shipments'";
    let queued_critical_server_s =
        until(t0, "(b) server commit", || Ok(probe.shipment_seq()? > seq0)).await?;
    let queued_critical_ack_s =
        until(t0, "(b) ack", || Ok(probe.pending(critical_gone)? == 0)).await?;
    let queued_bulk_done_s = until(t0, "(b) bulk", || Ok(probe.pending("")? == 0)).await?;

    // (c) critical written while the bulk upload is on the wire.
    offline(&client);
    queue_bulk(&client, o.bulk, o.bulk_bytes, "inflight")?;
    let seq0 = probe.shipment_seq()?;
    let up0 = proxy.stats().bytes_up;
    let bulk_t0 = Instant::now();
    online(&client);
    let threshold = ((o.bulk * o.bulk_bytes) as u64 / 4).clamp(1, 8 << 10);
    upload_started(&proxy, &probe, up0, threshold).await?;
    write_critical(&client, "delivered-again")?;
    let t0 = Instant::now();
    let inflight_critical_server_s =
        until(t0, "(c) server commit", || Ok(probe.shipment_seq()? > seq0)).await?;
    let inflight_critical_ack_s =
        until(t0, "(c) ack", || Ok(probe.pending(critical_gone)? == 0)).await?;
    let inflight_bulk_done_s = until(bulk_t0, "(c) bulk", || Ok(probe.pending("")? == 0)).await?;

    let stats = proxy.stats();
    let _ = stop.send(());
    runner.await?.context("runner")?;
    let server_photos: i64 = probe.server.query_row(
        "SELECT count(*) FROM rows WHERE tbl = 'scans' AND deleted = 0",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(
        server_photos == 2 * o.bulk as i64,
        "server holds {server_photos} of {} photos",
        2 * o.bulk
    );
    drop(proxy);
    let _ = tokio::time::timeout(Duration::from_secs(5), f.server.shutdown()).await;
    Ok(Rep {
        drain_s,
        queued_critical_server_s,
        queued_critical_ack_s,
        queued_bulk_done_s,
        inflight_critical_server_s,
        inflight_critical_ack_s,
        inflight_bulk_done_s,
        bytes_up: stats.bytes_up,
        bytes_down: stats.bytes_down,
    })
}

fn verdict(s: f64, target: f64) -> &'static str {
    if s <= target { "met" } else { "MISSED" }
}

/// Runs `burrow bench edge`: `reps` repetitions; prints the median of each figure.
pub async fn run(o: &EdgeOptions, reps: usize, json: bool) -> Result<()> {
    anyhow::ensure!(o.bulk > 0, "--bulk must be at least 1");
    let mut runs = Vec::new();
    for r in 0..reps {
        runs.push(rep(o, r).await.with_context(|| format!("rep {}", r + 1))?);
    }
    let med = |f: fn(&Rep) -> f64| median(runs.iter().map(f).collect());
    let drain = med(|r| r.drain_s);
    let (qs, qa, qb) = (
        med(|r| r.queued_critical_server_s),
        med(|r| r.queued_critical_ack_s),
        med(|r| r.queued_bulk_done_s),
    );
    let (is, ia, ib) = (
        med(|r| r.inflight_critical_server_s),
        med(|r| r.inflight_critical_ack_s),
        med(|r| r.inflight_bulk_done_s),
    );
    let p = &o.profile;
    let link = format!(
        "{}: {} ms RTT, {} / {} B/s down / up",
        p.name,
        2 * p.latency.as_millis(),
        p.down_bytes_per_sec.map_or("∞".into(), |b| b.to_string()),
        p.up_bytes_per_sec.map_or("∞".into(), |b| b.to_string()),
    );
    let upload_max = o
        .upload_bytes_max
        .unwrap_or(ClientOptions::default().upload_bytes_max);
    if json {
        let result = serde_json::json!({
            "bench": "edge",
            "profile": link,
            "ops": o.ops,
            "bulk": o.bulk,
            "bulk_bytes": o.bulk_bytes,
            "upload_bytes_max": upload_max,
            "reps": reps,
            "drain_seconds_median": drain,
            "drain_target_seconds": TARGET_DRAIN_S,
            "queued_critical_server_seconds_median": qs,
            "queued_critical_ack_seconds_median": qa,
            "queued_bulk_done_seconds_median": qb,
            "inflight_critical_server_seconds_median": is,
            "inflight_critical_ack_seconds_median": ia,
            "inflight_bulk_done_seconds_median": ib,
            "critical_target_seconds": TARGET_CRITICAL_S,
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let lines = [
        ("link".to_string(), link),
        (
            "device upload request limit".into(),
            format!("{upload_max} B"),
        ),
        (
            format!("(a) {} offline ops → all acked", o.ops),
            format!(
                "{drain:.2} s  (target ≤ {TARGET_DRAIN_S} s: {})",
                verdict(drain, TARGET_DRAIN_S)
            ),
        ),
        (
            format!(
                "(b) {} bulk × {} B + 1 critical, queued offline",
                o.bulk, o.bulk_bytes
            ),
            String::new(),
        ),
        (
            "    critical committed on the server".into(),
            format!("{qs:.2} s"),
        ),
        (
            "    critical acked on the device".into(),
            format!(
                "{qa:.2} s  (target ≤ {TARGET_CRITICAL_S} s: {})",
                verdict(qa, TARGET_CRITICAL_S)
            ),
        ),
        ("    all bulk acked".into(), format!("{qb:.2} s")),
        (
            "(c) critical written during the bulk upload".into(),
            String::new(),
        ),
        (
            "    critical committed on the server".into(),
            format!("{is:.2} s"),
        ),
        (
            "    critical acked on the device".into(),
            format!(
                "{ia:.2} s  (target ≤ {TARGET_CRITICAL_S} s: {})",
                verdict(ia, TARGET_CRITICAL_S)
            ),
        ),
        (
            "    all bulk acked (from going online)".into(),
            format!("{ib:.2} s"),
        ),
    ];
    for (k, v) in lines {
        println!("{k:<48} {v}");
    }
    println!("medians over {reps} rep(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
