//! `burrow bench`: measures sync figures against an embedded server on loopback and prints
//! medians over repetitions (plus JSON with `--json`).

use crate::demo::DELIVERY_SCHEMA;
use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use burrow_core::Schema;
use burrow_server::ServerConfig;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `burrow bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
    /// Repetitions; the median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    reps: usize,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Empty client → complete copy of N shipments (~200 B each), measured in a separate
    /// client process: wall time, bytes on the wire vs raw JSON, client peak RSS.
    InitialSync {
        /// Rows on the server.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// How the server gets its rows: `client` (captured in a client and uploaded, as an
        /// app would), `store` (written into the server's store before it starts: much
        /// faster), or `auto` (client up to 200,000 rows, store above).
        #[arg(long, default_value = "auto")]
        seed: SeedMode,
    },
    /// N offline edits (one local transaction each) pushed in one sync.
    Push {
        /// Number of edits.
        #[arg(long, default_value_t = 10_000)]
        edits: u64,
    },
    /// Per conflict policy: bytes on the wire per captured op (a batch of `--batch` ops) and
    /// the server's merge throughput for concurrent writes.
    Policies {
        /// Ops per batch for the bytes figure.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Rows the concurrent writes are spread over.
        #[arg(long, default_value_t = 1_000)]
        rows: usize,
        /// Concurrent writes per policy for the throughput figure.
        #[arg(long, default_value_t = 10_000)]
        ops: usize,
    },
    /// Propagation latency with live push: a write on device A until it is visible in
    /// device B's SQLite, with B and idle live subscribers connected (p50/p99 per count).
    Live {
        /// Live clients per run (comma-separated): B plus idle subscribers.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        clients: Vec<usize>,
        /// Measured writes per run.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Selective sync's cost follows the subset: one driver's initial sync from a server
    /// holding `drivers × rows-per-driver` shipments vs a tenth of that, and a driver's day
    /// over the `edge` profile (the delivery example's sync rules).
    Scope {
        /// Drivers in the large database (the small one has a tenth).
        #[arg(long, default_value_t = 1_000)]
        drivers: usize,
        /// Shipments per driver.
        #[arg(long, default_value_t = 1_000)]
        rows_per_driver: usize,
        /// Shipments of the driver synced over EDGE.
        #[arg(long, default_value_t = 2_000)]
        edge_rows: usize,
        /// Link profile for that run.
        #[arg(long, default_value = "edge")]
        profile: String,
    },
    /// Sync over a simulated EDGE link (through the fault proxy): draining an offline queue,
    /// and a critical op behind bulk uploads.
    Edge {
        /// Normal-lane ops queued offline.
        #[arg(long, default_value_t = 1_000)]
        ops: usize,
        /// Bulk "photo" rows queued ahead of the critical op.
        #[arg(long, default_value_t = 200)]
        bulk: usize,
        /// Bytes per bulk row.
        #[arg(long, default_value_t = 2_048)]
        bulk_bytes: usize,
        /// Link profile (`edge`, or e.g. `edge:latency=50ms`; see `burrow proxy`).
        #[arg(long, default_value = "edge")]
        profile: String,
        /// The device's upload request size limit in bytes (default: the library's).
        #[arg(long)]
        upload_bytes_max: Option<usize>,
        /// Seed of the proxy's random choices.
        #[arg(long, default_value_t = 5)]
        seed: u64,
    },
    /// Change-capture overhead: N inserts in one transaction and single-row update
    /// transactions through `Client::write`, as a ratio to plain SQLite (same table and
    /// pragmas, no triggers).
    Capture {
        /// Rows inserted in one transaction.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Single-row update transactions.
        #[arg(long, default_value_t = 2_000)]
        updates: u64,
    },
    /// Delta pull: a synced device pulls the changes another device pushed (wall, bytes).
    Delta {
        /// Rows both devices hold.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Changes to pull (one row each).
        #[arg(long, default_value_t = 10_000)]
        changes: u64,
    },
    /// Server ingest throughput (SQLite store): devices uploading one-op transactions
    /// concurrently through HTTP, and the same requests into the store directly.
    Ingest {
        /// Devices uploading at once.
        #[arg(long, default_value_t = 8)]
        devices: usize,
        /// Ops in all.
        #[arg(long, default_value_t = 40_000)]
        ops: usize,
        /// One-op transactions per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Server memory per live connection: `burrow serve` as a child process, N live
    /// WebSockets opened from this one, the child's RSS from /proc (Linux; needs
    /// `ulimit -n` above N).
    Memory {
        /// Live connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Every figure of the brief's table, each benchmark in a child process, then a summary
    /// (figure, result, target, met/MISSED) and all JSON written to `--out`. Sizes and
    /// repetitions (`--reps` is ignored): initial-sync 100k rows ×3 and 1M rows ×3 (seeded
    /// into the store); capture 100k inserts + 1,000 updates ×5; push 10k ×3; delta 10k of
    /// 100k ×3; policies ×1; live 1,000 clients ×3; edge ×1; scope ×3; ingest 8 devices ×
    /// 5,000 ops ×5; memory 10,000 connections. About 5 minutes on 2 cores (4–6 under load).
    /// Exit code 0 when a target is missed (it is a measurement), 1 when a benchmark could
    /// not run.
    All {
        /// Where to write the JSON of everything.
        #[arg(long, default_value = "bench-results.json")]
        out: std::path::PathBuf,
        /// Tiny sizes for every benchmark (checks the plumbing in seconds; figures
        /// meaningless).
        #[arg(long)]
        tiny: bool,
    },
}

/// How `initial-sync` puts its rows on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SeedMode {
    /// Captured by a client and uploaded.
    Client,
    /// Written into the server's store before it starts.
    Store,
    /// `client` up to [`AUTO_STORE_SEED_ROWS`] rows, `store` above.
    Auto,
}

/// Above this many rows `--seed auto` seeds the store directly.
const AUTO_STORE_SEED_ROWS: u64 = 200_000;

/// The median of `xs` (NaN when empty).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A server on loopback serving a schema, with a token, in a temporary directory.
pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) server: burrow_server::RunningServer,
    pub(crate) token: String,
    pub(crate) schema: Schema,
}

async fn fixture() -> Result<Fixture> {
    fixture_for(DELIVERY_SCHEMA).await
}

/// A [`Fixture`] serving the schema file text `schema`.
pub(crate) async fn fixture_for(schema: &str) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_toml_str(schema)?;
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    // Measures sync, not the per-user rate limit (every device here is one user).
    config.limits.requests_per_second_per_user = 0.0;
    config.secret = Some(b"bench".to_vec());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = burrow_server::auth::mint(b"bench", "bench", BTreeMap::new(), now, 86_400)?;
    Ok(Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        server,
        token,
        schema,
    })
}

/// Inserts `n` shipments of about 200 bytes in one local transaction.
fn seed(client: &Client, n: u64) -> Result<()> {
    client.write(|tx| {
        let mut stmt = tx.prepare(
            "INSERT INTO shipments(id, route_id, status, address, recipient, weight_kg, pieces, fragile, notes)
             VALUES (?1, ?2, 'loaded', ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for i in 0..n {
            stmt.execute(rusqlite::params![
                format!("0193a1b2-{:04x}-7{:03x}-8{:03x}-{:012x}", (i >> 24) & 0xffff, (i >> 12) & 0xfff, i & 0xfff, i * 7919),
                format!("route-{:04}", i % 500),
                format!("{} Harbour Road, Unit {}, 4021 Portsmouth", 1 + i % 997, i % 40),
                format!("Customer {:06}", i),
                1.0 + (i % 300) as f64 / 10.0,
                (1 + i % 5) as i64,
                (i % 2) as i64,
                format!("Leave with neighbour at no. {}", i % 50),
            ])?;
        }
        Ok(())
    })?;
    Ok(())
}

fn raw_json_bytes(client: &Client) -> Result<u64> {
    let rows = client.query_json(
        "SELECT id, route_id, status, address, recipient, weight_kg, pieces, fragile, notes FROM shipments",
    )?;
    Ok(serde_json::to_vec(&rows)?.len() as u64)
}

async fn initial_sync(rows: u64, seed_mode: SeedMode, reps: usize, json: bool) -> Result<()> {
    let by_store = match seed_mode {
        SeedMode::Store => true,
        SeedMode::Client => false,
        SeedMode::Auto => rows > AUTO_STORE_SEED_ROWS,
    };
    let (f, seed_secs, upload_secs, mut raw) = if by_store {
        let t = Instant::now();
        let f = crate::bench_seed::store_seeded_fixture(rows).await?;
        // The raw JSON size is read from the first synced client below.
        (f, t.elapsed().as_secs_f64(), 0.0, None)
    } else {
        let f = fixture().await?;
        let seeder = Client::open(f.dir.join("seed.db"), &f.schema)?;
        let t = Instant::now();
        seed(&seeder, rows)?;
        let seed_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        seeder
            .sync(&HttpTransport::new(&f.server.url(), &f.token)?)
            .await?;
        let upload_secs = t.elapsed().as_secs_f64();
        let raw = raw_json_bytes(&seeder)?;
        (f, seed_secs, upload_secs, Some(raw))
    };
    let schema_path = f.dir.join("schema.toml");
    std::fs::write(&schema_path, DELIVERY_SCHEMA)?;
    let exe = std::env::current_exe()?;
    let (mut walls, mut bytes, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut read_p99, mut read_max) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let db = f.dir.join(format!("fresh-{rep}.db"));
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["client", "--db"])
            .arg(&db)
            .arg("--schema")
            .arg(&schema_path)
            .args([
                "sync",
                "--json",
                "--server",
                &f.server.url(),
                "--token",
                &f.token,
                "--probe-read",
                PROBE_READ_SQL,
            ])
            .output()?;
        let wall = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "client sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            report["changes_received"].as_u64() == Some(rows),
            "expected {rows} rows: {report}"
        );
        check_count(&db, rows)?;
        if raw.is_none() {
            raw = Some(crate::bench_seed::raw_json_bytes_of(&db)?);
        }
        walls.push(wall);
        bytes.push(report["bytes_down"].as_f64().unwrap_or(f64::NAN));
        rss.push(report["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN));
        read_p99.push(report["read_probe"]["p99_ms"].as_f64().unwrap_or(f64::NAN));
        read_max.push(report["read_probe"]["max_ms"].as_f64().unwrap_or(f64::NAN));
    }
    let (wall, down, peak) = (median(walls.clone()), median(bytes), median(rss));
    let (read_p99, read_max) = (median(read_p99), median(read_max));
    let raw = raw.unwrap_or(0);
    let result = serde_json::json!({
        "bench": "initial-sync",
        "rows": rows,
        "reps": reps,
        "wall_seconds_median": wall,
        "wall_seconds_all": walls,
        "rows_per_second": rows as f64 / wall,
        "bytes_down": down,
        "raw_json_bytes": raw,
        "wire_to_json_ratio": down / raw as f64,
        "client_peak_rss_bytes": peak,
        "app_read_p99_ms": read_p99,
        "app_read_max_ms": read_max,
        "seed": if by_store { "store" } else { "client" },
        "seed_local_seconds": seed_secs,
        "seed_upload_seconds": upload_secs,
    });
    print_result(
        &result,
        json,
        &[
            ("rows", format!("{rows}")),
            (
                "wall (median, separate client process)",
                format!("{wall:.3} s  ({:.0} rows/s)", rows as f64 / wall),
            ),
            ("bytes on the wire (down)", format!("{down:.0} B")),
            ("raw JSON of the same rows", format!("{raw} B")),
            ("wire / raw JSON", format!("{:.3}", down / raw as f64)),
            ("client peak RSS", format!("{:.1} MB", peak / 1e6)),
            (
                "app reads during the sync (every 5 ms, p99 / max)",
                format!("{read_p99:.1} ms / {read_max:.1} ms"),
            ),
            if by_store {
                (
                    "(setup) rows written into the server's store",
                    format!("{seed_secs:.2} s"),
                )
            } else {
                (
                    "(setup) local insert / upload",
                    format!("{seed_secs:.2} s / {upload_secs:.2} s"),
                )
            },
        ],
    )
}

/// The app read the initial-sync bench times during the sync: a primary-key range read, as
/// a list screen would do.
const PROBE_READ_SQL: &str = "SELECT id, status FROM shipments ORDER BY id LIMIT 20";

fn check_count(db: &Path, rows: u64) -> Result<()> {
    let c = Client::open_existing(db)?;
    let n = c.query_json("SELECT count(*) AS n FROM shipments")?;
    anyhow::ensure!(
        n.first().and_then(|r| r["n"].as_u64()) == Some(rows),
        "row count mismatch"
    );
    Ok(())
}

async fn push(edits: u64, reps: usize, json: bool) -> Result<()> {
    let (mut walls, mut ups) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let f = fixture().await?;
        let transport = HttpTransport::new(&f.server.url(), &f.token)?;
        let client = Client::open(f.dir.join("device.db"), &f.schema)?;
        seed(&client, edits)?;
        client.sync(&transport).await?;
        let ids = client.query_json("SELECT id FROM shipments")?;
        for (i, row) in ids.iter().enumerate() {
            let id = row["id"].as_str().context("id")?.to_string();
            client.write(|tx| {
                tx.execute(
                    "UPDATE shipments SET status = ?1 WHERE id = ?2",
                    rusqlite::params![format!("delivered-{i}"), id],
                )
            })?;
        }
        anyhow::ensure!(
            client.status()?.pending_ops == edits,
            "expected {edits} pending edits"
        );
        let t = Instant::now();
        let r = client.sync(&transport).await?;
        walls.push(t.elapsed().as_secs_f64());
        ups.push(r.bytes_up as f64);
        anyhow::ensure!(
            r.ops_acked == edits && client.status()?.pending_ops == 0,
            "not all edits acked: {r:?}"
        );
    }
    let wall = median(walls.clone());
    let up = median(ups);
    let result = serde_json::json!({
        "bench": "push",
        "edits": edits,
        "reps": reps,
        "wall_seconds_median": wall,
        "wall_seconds_all": walls,
        "ops_per_second": edits as f64 / wall,
        "bytes_up": up,
        "bytes_per_op": up / edits as f64,
    });
    print_result(
        &result,
        json,
        &[
            ("offline edits (one transaction each)", format!("{edits}")),
            (
                "push wall (median, upload + ack + settle)",
                format!("{wall:.3} s ({:.0} ops/s)", edits as f64 / wall),
            ),
            (
                "bytes up",
                format!("{up:.0} B ({:.1} B/op)", up / edits as f64),
            ),
        ],
    )
}

pub(crate) fn print_result(
    result: &serde_json::Value,
    json: bool,
    lines: &[(&str, String)],
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        for (k, v) in lines {
            println!("{k:<44} {v}");
        }
    }
    Ok(())
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let reps = args.reps.max(1);
    if let Which::All { out, tiny } = &args.which {
        return crate::bench_all::run(out, *tiny, args.json);
    }
    let json = args.json;
    let print = move |(result, lines): (serde_json::Value, Vec<(String, String)>)| {
        let lines: Vec<(&str, String)> =
            lines.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        print_result(&result, json, &lines)
    };
    crate::runtime()?.block_on(async move {
        match args.which {
            Which::InitialSync { rows, seed } => initial_sync(rows, seed, reps, json).await,
            Which::Push { edits } => push(edits, reps, args.json).await,
            Which::Policies { batch, rows, ops } => {
                crate::bench_policies::run(batch, rows, ops, reps, args.json).await
            }
            Which::Live { clients, samples } => {
                crate::bench_live::run(&clients, samples, reps, args.json).await
            }
            Which::Edge {
                ops,
                bulk,
                bulk_bytes,
                profile,
                upload_bytes_max,
                seed,
            } => {
                let options = crate::bench_edge::EdgeOptions {
                    ops,
                    bulk,
                    bulk_bytes,
                    profile: profile.parse()?,
                    upload_bytes_max,
                    seed,
                };
                crate::bench_edge::run(&options, reps, args.json).await
            }
            Which::Scope {
                drivers,
                rows_per_driver,
                edge_rows,
                profile,
            } => {
                let options = crate::bench_scope::ScopeOptions {
                    drivers,
                    rows_per_driver,
                    edge_rows,
                    profile: profile.parse()?,
                    reps,
                };
                let (result, lines) = crate::bench_scope::run(&options).await?;
                let lines: Vec<(&str, String)> =
                    lines.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                print_result(&result, args.json, &lines)
            }
            Which::Capture { rows, updates } => {
                let options = crate::bench_capture::CaptureOptions {
                    rows,
                    updates,
                    reps,
                };
                print(crate::bench_capture::run(&options)?)
            }
            Which::Delta { rows, changes } => {
                let options = crate::bench_delta::DeltaOptions {
                    rows,
                    changes,
                    reps,
                };
                print(crate::bench_delta::run(&options).await?)
            }
            Which::Ingest {
                devices,
                ops,
                batch,
            } => {
                let options = crate::bench_ingest::IngestOptions {
                    devices,
                    ops,
                    batch,
                    reps,
                };
                print(crate::bench_ingest::run(&options).await?)
            }
            Which::Memory { connections } => {
                let options = crate::bench_memory::MemoryOptions { connections };
                print(crate::bench_memory::run(&options).await?)
            }
            Which::All { .. } => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
