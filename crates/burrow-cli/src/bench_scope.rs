//! `burrow bench scope`: selective sync's cost follows the subset. A server holding
//! `drivers × rows_per_driver` shipments (the delivery example's schema and sync rules)
//! serves one driver's initial sync; the same is measured with a tenth of the drivers, and
//! the ratio of the two wall times shows whether serving a user costs in proportion to their
//! rows rather than to the database. A third run syncs a driver's day of `edge_rows` rows
//! through the `edge` proxy profile.

use crate::bench::median;
use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use burrow_core::env::{Clock, SystemClock};
use burrow_core::rules::SyncRules;
use burrow_core::{ClaimSet, Hlc, Op, OpKind, Schema, Value, op::FieldValue};
use burrow_server::ServerConfig;
use burrow_server::store::{IngestOp, IngestRequest, IngestTx, ResolveEnv, ServerStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The worked example's schema and rules (`examples/delivery/`).
pub const EXAMPLE_SCHEMA: &str = include_str!("../../../examples/delivery/schema.toml");
/// The worked example's `burrow.toml`.
pub const EXAMPLE_RULES: &str = include_str!("../../../examples/delivery/burrow.toml");

/// What to measure.
#[derive(Debug, Clone)]
pub struct ScopeOptions {
    /// Drivers in the large database.
    pub drivers: usize,
    /// Shipments per driver (on today's route).
    pub rows_per_driver: usize,
    /// Shipments of the driver synced over EDGE.
    pub edge_rows: usize,
    /// Link profile for the EDGE run.
    pub profile: burrow_proxy::Profile,
    /// Repetitions.
    pub reps: usize,
}

/// A server seeded with routes and shipments for `drivers` drivers.
struct Seeded {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    server: burrow_server::RunningServer,
    schema: Schema,
    rules: Arc<SyncRules>,
    secret: Vec<u8>,
}

fn text(s: String) -> Value {
    Value::Text(s)
}

/// Writes the rows straight through the store's ingest (as an admin's uploads would), in
/// local transactions of up to 10,000 ops.
async fn seed(drivers: &[(String, usize)], day: &str) -> Result<Seeded> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_toml_str(EXAMPLE_SCHEMA)?;
    let rules = Arc::new(SyncRules::parse(EXAMPLE_RULES, &schema)?);
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data)?;
    let secret = b"bench-scope".to_vec();
    {
        let store =
            burrow_server::store::SqliteServerStore::open(&data.join(burrow_server::DB_FILE))?;
        let mut env = ResolveEnv::new(schema.clone());
        env.rules = Some(rules.clone());
        let mut ops = Vec::new();
        for (d, n) in drivers {
            ops.push((
                "routes",
                format!("route-{d}"),
                vec![
                    ("driver_id", text(d.clone())),
                    ("day", text(day.to_string())),
                ],
            ));
            for i in 0..*n {
                ops.push((
                    "shipments",
                    format!("{d}-s{i:05}"),
                    vec![
                        ("route_id", text(format!("route-{d}"))),
                        ("status", text("planned".into())),
                        (
                            "address",
                            text(format!(
                                "{} Harbour Road, Unit {}, 4021 Portsmouth",
                                1 + i % 997,
                                i % 40
                            )),
                        ),
                        // A tracking code that does not compress, like real ones.
                        (
                            "recipient",
                            text(format!(
                                "Customer {i:06} / {:016x}",
                                burrow_core::hash::fnv1a64(format!("{d}-{i}").as_bytes())
                            )),
                        ),
                        ("weight_kg", Value::Real(1.0 + (i % 300) as f64 / 10.0)),
                    ],
                ));
            }
        }
        let mut seq = 0u64;
        for (chunk_no, chunk) in ops.chunks(10_000).enumerate() {
            let tx_id = chunk_no as u64 + 1;
            let txs = vec![IngestTx {
                tx_id,
                more_parts: false,
                ops: chunk
                    .iter()
                    .map(|(table, id, fields)| {
                        seq += 1;
                        IngestOp {
                            client_seq: seq,
                            payload_hash: seq,
                            op: Ok(Op {
                                client_seq: seq,
                                tx: tx_id,
                                table: table.to_string(),
                                row_id: id.clone(),
                                kind: OpKind::Insert,
                                fields: FieldValue::list(
                                    fields.iter().map(|(c, v)| (*c, v.clone())),
                                ),
                                hlc: Hlc::from_ms(SystemClock.now_ms()),
                                base_seq: 0,
                            }),
                        }
                    })
                    .collect(),
            }];
            store
                .ingest(IngestRequest {
                    user_id: "office".into(),
                    client_id: "bench-office".into(),
                    txs,
                    now_ms: SystemClock.now_ms(),
                    claims: ClaimSet::new()
                        .with("sub", "office")
                        .with("role", "dispatcher"),
                    clock_offset_ms: 0,
                    env: env.clone(),
                })
                .await?;
        }
    }
    let mut config = ServerConfig::new(data, schema.clone());
    config.limits.requests_per_second_per_user = 0.0;
    config.secret = Some(secret.clone());
    config.rules = Some(rules.clone());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    Ok(Seeded {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        server,
        schema,
        rules,
        secret,
    })
}

impl Seeded {
    fn driver_token(&self, user: &str) -> Result<String> {
        let extra = BTreeMap::from([("role".to_string(), serde_json::json!("driver"))]);
        Ok(burrow_server::auth::mint(
            &self.secret,
            user,
            extra,
            SystemClock.now_ms() / 1000,
            86_400,
        )?)
    }

    /// One empty device of `user` syncs to the head via `url`: (wall seconds, bytes down,
    /// rows received).
    async fn initial_sync(&self, user: &str, url: &str, name: &str) -> Result<(f64, u64, u64)> {
        let client = Client::open(self.dir.join(format!("{name}.db")), &self.schema)?;
        let transport = HttpTransport::new(url, &self.driver_token(user)?)?;
        let t = Instant::now();
        let report = client.sync(&transport).await?;
        let wall = t.elapsed().as_secs_f64();
        let n = client.query_json("SELECT count(*) AS n FROM shipments")?;
        let rows = n.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        Ok((wall, report.bytes_down, rows))
    }
}

fn drivers(n: usize, rows: usize) -> Vec<(String, usize)> {
    (0..n).map(|i| (format!("driver-{i:04}"), rows)).collect()
}

/// Runs the benchmark; returns the JSON result and the table lines.
pub async fn run(o: &ScopeOptions) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    let small_drivers = (o.drivers / 10).max(1);
    let mut results = Vec::new();
    for (label, n) in [("large", o.drivers), ("small", small_drivers)] {
        let rules_day = {
            let schema = Schema::from_toml_str(EXAMPLE_SCHEMA)?;
            SyncRules::parse(EXAMPLE_RULES, &schema)?.today(SystemClock.now_ms())
        };
        let t = Instant::now();
        let s = seed(&drivers(n, o.rows_per_driver), &rules_day).await?;
        let seed_secs = t.elapsed().as_secs_f64();
        let _ = &s.rules;
        // One unmeasured sync first (connection set-up, a warm page cache), for both sizes.
        s.initial_sync("driver-0000", &s.server.url(), &format!("{label}-warm"))
            .await?;
        let (mut walls, mut bytes) = (Vec::new(), Vec::new());
        for rep in 0..o.reps {
            // A different driver each time, from the middle of the fleet.
            let user = format!("driver-{:04}", (n / 2 + rep) % n);
            let (wall, down, rows) = s
                .initial_sync(&user, &s.server.url(), &format!("{label}-{rep}"))
                .await?;
            anyhow::ensure!(
                rows == o.rows_per_driver as u64,
                "{user} got {rows} shipments, expected {}",
                o.rows_per_driver
            );
            walls.push(wall);
            bytes.push(down as f64);
        }
        results.push((label, n, median(walls), median(bytes), seed_secs));
    }
    let (large, small) = (&results[0], &results[1]);
    let ratio = large.2 / small.2;

    // A driver's day over EDGE.
    let day = {
        let schema = Schema::from_toml_str(EXAMPLE_SCHEMA)?;
        SyncRules::parse(EXAMPLE_RULES, &schema)?.today(SystemClock.now_ms())
    };
    let s = seed(
        &[
            ("edge-driver".to_string(), o.edge_rows),
            ("other".to_string(), o.edge_rows),
        ],
        &day,
    )
    .await?;
    let mut edge_walls = Vec::new();
    let mut edge_bytes = Vec::new();
    for rep in 0..o.reps {
        let proxy = burrow_proxy::spawn(
            "127.0.0.1:0",
            s.server.local_addr(),
            o.profile.clone(),
            rep as u64 + 1,
        )
        .await
        .context("starting the proxy")?;
        let (wall, down, rows) = s
            .initial_sync("edge-driver", &proxy.url(), &format!("edge-{rep}"))
            .await?;
        anyhow::ensure!(rows == o.edge_rows as u64, "edge driver got {rows} rows");
        edge_walls.push(wall);
        edge_bytes.push(down as f64);
    }
    let edge = median(edge_walls.clone());
    let result = serde_json::json!({
        "bench": "scope",
        "rows_per_driver": o.rows_per_driver,
        "large": {"drivers": large.1, "total_shipments": large.1 * o.rows_per_driver,
                  "driver_sync_seconds_median": large.2, "bytes_down": large.3, "seed_seconds": large.4},
        "small": {"drivers": small.1, "total_shipments": small.1 * o.rows_per_driver,
                  "driver_sync_seconds_median": small.2, "bytes_down": small.3, "seed_seconds": small.4},
        "large_to_small_ratio": ratio,
        "ratio_target": 1.5,
        "edge": {"profile": o.profile.name, "rows": o.edge_rows, "initial_sync_seconds_median": edge,
                 "initial_sync_seconds_all": edge_walls, "bytes_down": median(edge_bytes), "target_seconds": 10.0},
        "reps": o.reps,
    });
    let lines = vec![
        (
            format!(
                "driver initial sync, {} of {} shipments",
                o.rows_per_driver,
                large.1 * o.rows_per_driver
            ),
            format!("{:.3} s, {:.0} B down", large.2, large.3),
        ),
        (
            format!(
                "driver initial sync, {} of {} shipments",
                o.rows_per_driver,
                small.1 * o.rows_per_driver
            ),
            format!("{:.3} s, {:.0} B down", small.2, small.3),
        ),
        (
            "ratio large / small (target ≤ 1.5)".to_string(),
            format!("{ratio:.2}"),
        ),
        (
            format!(
                "driver's day over {} ({} rows; target ≤ 10 s)",
                o.profile.name, o.edge_rows
            ),
            format!("{edge:.2} s"),
        ),
        (
            "(setup) seeding large / small".to_string(),
            format!("{:.1} s / {:.1} s", large.4, small.4),
        ),
    ];
    Ok((result, lines))
}
