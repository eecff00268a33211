//! `burrow bench ingest`: how many small ops per second the server (SQLite store) ingests.
//!
//! Headline, "http": `devices` devices upload concurrently through real HTTP (`POST /v1/sync`
//! on loopback, upload-only requests), each sending its ops in requests of `batch` local
//! transactions of one op each (a warehouse scan: one small row insert). The requests are
//! built before the clock starts, so the devices cost only protobuf encoding, zstd and HTTP:
//! the figure is the server's (decode, authenticate, resolve, commit with `synchronous=FULL`,
//! answer). Second figure, "store": the same requests straight into
//! `SqliteServerStore::ingest`, without HTTP and encoding.

use crate::bench::median;
use crate::demo::DELIVERY_SCHEMA;
use anyhow::{Context, Result};
use burrow_client::HttpTransport;
use burrow_client::transport::Transport;
use burrow_core::env::{Clock, SystemClock};
use burrow_core::{ClaimSet, FieldValue, Hlc, Op, OpKind, Schema, Value};
use burrow_proto::v1;
use burrow_server::ServerConfig;
use burrow_server::store::{IngestOp, IngestRequest, IngestTx, ResolveEnv, ServerStore};
use std::collections::BTreeMap;
use std::time::Instant;

/// Target ops per second (from the product brief).
pub const TARGET_OPS_PER_SECOND: f64 = 20_000.0;

/// What to measure.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Devices uploading at once.
    pub devices: usize,
    /// Ops in all (split evenly over the devices).
    pub ops: usize,
    /// Local transactions (of one op each) per request.
    pub batch: usize,
    /// Repetitions (a fresh server each).
    pub reps: usize,
}

/// The `seq`-th scan of device `device`: a one-op local transaction inserting a small row.
fn scan_op(device: usize, seq: u64, now: u64) -> Op {
    Op {
        client_seq: seq,
        tx: seq,
        table: "scans".into(),
        row_id: format!("scan-{device:03}-{seq:08}"),
        kind: OpKind::Insert,
        fields: vec![
            FieldValue {
                column: "shipment_id".into(),
                value: Value::Text(format!("shipment-{:06}", seq % 100_000)),
            },
            FieldValue {
                column: "code".into(),
                value: Value::Text(format!(
                    "{:016x}",
                    burrow_core::hash::fnv1a64(&seq.to_le_bytes())
                )),
            },
            FieldValue {
                column: "scanned_at".into(),
                value: Value::Integer((now + seq) as i64),
            },
        ],
        hlc: Hlc::from_ms(now),
        base_seq: 0,
    }
}

/// Each device's requests: lists of ops, one local transaction each.
fn workload(o: &IngestOptions, now: u64) -> Vec<Vec<Vec<Op>>> {
    let per_device = o.ops.div_ceil(o.devices);
    (0..o.devices)
        .map(|d| {
            let ops: Vec<Op> = (1..=per_device as u64)
                .map(|s| scan_op(d, s, now))
                .collect();
            ops.chunks(o.batch).map(<[Op]>::to_vec).collect()
        })
        .collect()
}

fn client_id(device: usize) -> String {
    format!("ingest-device-{device:03}")
}

fn wire_request(device: usize, ops: &[Op], schema_version: u32) -> v1::SyncRequest {
    v1::SyncRequest {
        protocol_version: burrow_proto::PROTOCOL_VERSION,
        schema_version,
        client_id: client_id(device),
        device_time_ms: SystemClock.now_ms(),
        upload: ops
            .iter()
            .map(|op| v1::LocalTx {
                tx_id: op.tx,
                ops: vec![burrow_proto::convert::op_to_wire(op)],
                more_parts: false,
            })
            .collect(),
        cursor: Some(v1::Cursor::default()),
        download: false,
        ..Default::default()
    }
}

/// One HTTP repetition: returns (ops/s, seconds, requests).
async fn http_rep(o: &IngestOptions, schema: &Schema) -> Result<(f64, f64, usize)> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    config.limits.requests_per_second_per_user = 0.0;
    config.secret = Some(b"bench-ingest".to_vec());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    let now = SystemClock.now_ms();
    let mut devices = Vec::new();
    for (d, reqs) in workload(o, now).into_iter().enumerate() {
        let token = burrow_server::auth::mint(
            b"bench-ingest",
            &format!("user-{d}"),
            BTreeMap::new(),
            now / 1000,
            86_400,
        )?;
        let transport = HttpTransport::new(&server.url(), &token)?;
        let reqs: Vec<(usize, v1::SyncRequest)> = reqs
            .iter()
            .map(|ops| (ops.len(), wire_request(d, ops, schema.version)))
            .collect();
        devices.push((transport, reqs));
    }
    let total: usize = devices
        .iter()
        .flat_map(|(_, r)| r.iter().map(|(n, _)| n))
        .sum();
    let requests: usize = devices.iter().map(|(_, r)| r.len()).sum();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (transport, reqs) in devices {
        tasks.spawn(async move {
            for (n, req) in reqs {
                let (resp, _) = transport
                    .sync(req)
                    .await
                    .map_err(|e| anyhow::anyhow!("upload: {e}"))?;
                let applied = resp
                    .outcomes
                    .iter()
                    .filter(|x| x.kind == v1::OutcomeKind::Applied as i32)
                    .count();
                anyhow::ensure!(
                    applied == n,
                    "{applied} of {n} ops applied: {:?}",
                    resp.outcomes.first()
                );
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("an uploading device panicked")??;
    }
    let secs = t.elapsed().as_secs_f64();
    let head = server.store().head_seq().await?;
    anyhow::ensure!(
        head >= total as u64,
        "the server's head is {head} after {total} applied ops"
    );
    server.shutdown().await;
    Ok((total as f64 / secs, secs, requests))
}

/// One store repetition: the same requests straight into the store; returns ops/s.
async fn store_rep(o: &IngestOptions, schema: &Schema) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = burrow_server::SqliteServerStore::open(&dir.path().join("server.db"))?;
    let env = ResolveEnv::new(schema.clone());
    let now = SystemClock.now_ms();
    let per_device = workload(o, now);
    // Interleaved as concurrent devices would arrive: round-robin by request.
    let longest = per_device.iter().map(Vec::len).max().unwrap_or(0);
    let mut requests = Vec::new();
    for i in 0..longest {
        for (d, reqs) in per_device.iter().enumerate() {
            if let Some(ops) = reqs.get(i) {
                requests.push(IngestRequest {
                    user_id: format!("user-{d}"),
                    client_id: client_id(d),
                    txs: ops
                        .iter()
                        .map(|op| IngestTx {
                            tx_id: op.tx,
                            ops: vec![IngestOp {
                                client_seq: op.client_seq,
                                payload_hash: op.client_seq,
                                op: Ok(op.clone()),
                            }],
                            more_parts: false,
                        })
                        .collect(),
                    now_ms: now,
                    claims: ClaimSet::new(),
                    clock_offset_ms: 0,
                    env: env.clone(),
                });
            }
        }
    }
    let total: usize = requests.iter().map(|r| r.txs.len()).sum();
    let t = Instant::now();
    for r in requests {
        store.ingest(r).await?;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// Runs the benchmark; returns the JSON result and the table lines.
pub async fn run(o: &IngestOptions) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    anyhow::ensure!(o.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(o.ops > 0, "--ops must be at least 1");
    anyhow::ensure!(o.batch > 0, "--batch must be at least 1");
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let (mut http, mut secs, mut store) = (Vec::new(), Vec::new(), Vec::new());
    let mut requests = 0;
    for r in 0..o.reps.max(1) {
        let (rate, s, n) = http_rep(o, &schema)
            .await
            .with_context(|| format!("http repetition {}", r + 1))?;
        http.push(rate);
        secs.push(s);
        requests = n;
        store.push(
            store_rep(o, &schema)
                .await
                .with_context(|| format!("store repetition {}", r + 1))?,
        );
    }
    let (rate, store_rate) = (median(http.clone()), median(store.clone()));
    let ops = o.ops.div_ceil(o.devices) * o.devices;
    let result = serde_json::json!({
        "bench": "ingest",
        "mode": "http",
        "mode_description": "devices uploading concurrently through POST /v1/sync on loopback \
                             (requests pre-built), SQLite store, synchronous=FULL",
        "devices": o.devices,
        "ops": ops,
        "batch": o.batch,
        "requests": requests,
        "reps": o.reps.max(1),
        "ops_per_second_median": rate,
        "ops_per_second_all": http,
        "seconds_median": median(secs),
        "store_ops_per_second_median": store_rate,
        "store_ops_per_second_all": store,
        "target_ops_per_second": TARGET_OPS_PER_SECOND,
    });
    let met = if rate >= TARGET_OPS_PER_SECOND {
        "met"
    } else {
        "MISSED"
    };
    let lines = vec![
        (
            format!(
                "ingest via HTTP: {} devices, {ops} one-op txs, {} per request",
                o.devices, o.batch
            ),
            format!("{rate:.0} ops/s {met}"),
        ),
        (
            "  same requests into the store directly".to_string(),
            format!("{store_rate:.0} ops/s"),
        ),
        ("target".to_string(), "≥ 20,000 ops/s (SQLite)".to_string()),
    ];
    Ok((result, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_splits_ops_over_devices_and_batches() {
        let o = IngestOptions {
            devices: 3,
            ops: 10,
            batch: 2,
            reps: 1,
        };
        let w = workload(&o, 1);
        assert_eq!(w.len(), 3);
        // 4 ops per device (10 rounded up), in requests of 2.
        assert!(
            w.iter()
                .all(|d| d.len() == 2 && d.iter().all(|r| r.len() == 2))
        );
    }
}
