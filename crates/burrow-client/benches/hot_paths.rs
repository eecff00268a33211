//! Criterion micro-benchmarks of the client's hot paths (issue #7), on real SQLite files in a
//! temporary directory (WAL, `synchronous=FULL`: every commit and every op-journal append is
//! synced to disk, so these numbers include the fsyncs).
//!
//! - `capture`: change capture as an app pays for it, through the public API:
//!   - `update_1_row`: `Client::execute` of a one-row `UPDATE` in its own transaction, on a
//!     database that holds 10,000 synced rows (seeded through a downloaded page, so the outbox
//!     starts empty and grows by one op per iteration, as an offline device's would);
//!   - `insert_1000_rows_execute`: `Client::execute` of one 1,000-row `INSERT ... VALUES`
//!     statement (one local transaction, 1,000 ops captured); the table grows by 1,000 rows per
//!     iteration;
//!   - `insert_1000_rows_write`: the same 1,000 rows through `Client::write` with a prepared
//!     statement executed per row, as bulk-loading apps (and `burrow bench capture`) write.
//! - `apply_page`: `Client::sync` against an in-process [`Transport`] that answers with a
//!   pre-encoded zstd frame holding one page of 1,000 row changes (`more = false`), so the
//!   measured time is the client's side of a download with no network: decoding the frame,
//!   converting and applying every change (shadow, visible row) and the cursor in one
//!   transaction, plus the fixed per-sync bookkeeping (reading the empty outbox, recording the
//!   sync's end, the op-journal check):
//!   - `1000_new_rows`: every page brings 1,000 rows the device has not seen (an initial pull;
//!     the table grows by 1,000 rows per iteration);
//!   - `1000_updated_rows`: every page brings a newer version of the same 1,000 rows (two
//!     changed fields each: steady-state catch-up).
//!
//! Each iteration's input (SQL text, encoded page) is built outside the timed routine.
//!
//! Run: `cargo bench -p burrow-client --bench hot_paths` (add a filter such as `capture` or
//! `apply_page` to run one group).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_client::{Client, TrafficStats, Transport, TransportError};
use burrow_core::Schema;
use burrow_proto::{decode_frame, encode_frame, v1};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::fmt::Write as _;
use std::time::Duration;

const SCHEMA: &str = r#"
version = 1
[tables.shipments]
[tables.shipments.columns]
route_id = "text"
status = { type = "text", policy = "lww" }
driver_id = "text"
address = "text"
weight_kg = "real"
pieces = "integer"
fragile = "bool"
"#;

/// Rows in the table the single-row updates touch.
const SEEDED_ROWS: u64 = 10_000;
/// Rows per bulk insert and per downloaded page.
const BATCH: u64 = 1_000;
/// Same limit as the HTTP transport's.
const MAX_DECODED: usize = burrow_client::transport::RESPONSE_DECODED_BYTES_MAX;
const STATUSES: [&str; 4] = ["created", "loaded", "in_transit", "delivered"];

fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).unwrap()
}

fn shipment_id(n: u64) -> String {
    format!("s{n:09}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A transport that answers every sync request with the same pre-encoded response frame,
/// decoded on each call as the HTTP transport decodes a response body.
struct PageTransport {
    frame: Vec<u8>,
}

impl Transport for PageTransport {
    async fn sync(
        &self,
        _req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        let resp = decode_frame(&self.frame, MAX_DECODED)
            .map_err(|e| TransportError::Decode(e.to_string()))?;
        Ok((
            resp,
            TrafficStats {
                bytes_up: 0,
                bytes_down: self.frame.len() as u64,
            },
        ))
    }
}

fn text(s: impl Into<String>) -> Option<v1::Value> {
    Some(v1::Value {
        kind: Some(v1::value::Kind::Text(s.into())),
    })
}

fn field(column: &str, value: Option<v1::Value>) -> v1::Field {
    // seq 0: set at the row's own sequence.
    v1::Field {
        column: column.into(),
        value,
        seq: 0,
    }
}

/// A page with the changes `first_seq..first_seq + rows` to rows `first_row..first_row + rows`
/// (row `first_row + i` at sequence `first_seq + i`), ending the pull at its last sequence.
/// `full`: every column (a row new to the device); otherwise `status` and `driver_id` only.
fn page(first_row: u64, first_seq: u64, rows: u64, full: bool, version: u64) -> v1::SyncResponse {
    let hlc0 = (1_780_000_000_000u64 + first_seq) << 16;
    let changes = (0..rows)
        .map(|i| {
            let n = first_row + i;
            let mut fields = vec![
                field("status", text(STATUSES[((n + version) % 4) as usize])),
                field(
                    "driver_id",
                    text(format!("driver-{:03}", (n + version) % 40)),
                ),
            ];
            if full {
                fields.extend([
                    field("route_id", text(format!("route-{:04}", n / 25))),
                    field(
                        "address",
                        text(format!("{} Harbour Street, Unit {}", 10 + n % 300, n % 9)),
                    ),
                    field(
                        "weight_kg",
                        Some(v1::Value {
                            kind: Some(v1::value::Kind::Real(0.5 + (n % 97) as f64 * 0.25)),
                        }),
                    ),
                    field(
                        "pieces",
                        Some(v1::Value {
                            kind: Some(v1::value::Kind::Integer((n % 12) as i64 + 1)),
                        }),
                    ),
                    field(
                        "fragile",
                        Some(v1::Value {
                            kind: Some(v1::value::Kind::Boolean(n.is_multiple_of(5))),
                        }),
                    ),
                ]);
            }
            v1::RowChange {
                table: "shipments".into(),
                row_id: shipment_id(n),
                seq: first_seq + i,
                deleted: false,
                fields,
                hlc: hlc0 + (i << 16),
                evicted: false,
            }
        })
        .collect();
    let last = first_seq + rows - 1;
    v1::SyncResponse {
        outcomes: vec![],
        ack_seq: 0,
        changes,
        cursor: Some(v1::Cursor {
            since: last,
            after: last,
            ..Default::default()
        }),
        more: false,
        server_time_ms: 1_780_000_000_000,
        head_seq: last,
        subscription_errors: vec![],
    }
}

fn transport_for(resp: &v1::SyncResponse) -> PageTransport {
    PageTransport {
        frame: encode_frame(resp).unwrap(),
    }
}

/// One 1,000-row `INSERT ... VALUES` statement for rows `first..first + BATCH`.
fn insert_sql(first: u64) -> String {
    let mut sql = String::from(
        "INSERT INTO shipments(id, route_id, status, driver_id, address, weight_kg, pieces, fragile) VALUES ",
    );
    for n in first..first + BATCH {
        if n > first {
            sql.push_str(", ");
        }
        write!(
            sql,
            "('{}', 'route-{:04}', 'created', 'driver-{:03}', '{} Harbour Street, Unit {}', {}, {}, {})",
            shipment_id(n),
            n / 25,
            n % 40,
            10 + n % 300,
            n % 9,
            0.5 + (n % 97) as f64 * 0.25,
            n % 12 + 1,
            u8::from(n.is_multiple_of(5)),
        )
        .unwrap();
    }
    sql
}

fn bench_capture(c: &mut Criterion) {
    let rt = runtime();
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();

    // A device holding 10,000 synced rows, nothing pending.
    let updates = Client::open(dir.path().join("updates.db"), &schema).unwrap();
    let seed = transport_for(&page(0, 1, SEEDED_ROWS, true, 0));
    let report = rt.block_on(updates.sync(&seed)).unwrap();
    assert_eq!(report.changes_received, SEEDED_ROWS);
    assert_eq!(updates.status().unwrap().pending_ops, 0);
    let probe = updates
        .execute("UPDATE shipments SET status = 'probe' WHERE id = 's000000000'")
        .unwrap();
    assert_eq!((probe.rows_changed, probe.ops_captured), (1, 1));

    let inserts = Client::open(dir.path().join("inserts.db"), &schema).unwrap();
    let probe = inserts.execute(&insert_sql(0)).unwrap();
    assert_eq!((probe.rows_changed, probe.ops_captured), (BATCH, BATCH));

    let writes = Client::open(dir.path().join("writes.db"), &schema).unwrap();

    let mut g = c.benchmark_group("capture");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Elements(1));
    let mut k = 0u64;
    g.bench_function("update_1_row", |b| {
        b.iter_batched(
            || {
                k += 1;
                // Spread over the table; a new value every time.
                format!(
                    "UPDATE shipments SET status = 'scanned-{k}' WHERE id = '{}'",
                    shipment_id((k * 7_919) % SEEDED_ROWS)
                )
            },
            |sql| updates.execute(&sql).unwrap(),
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Elements(BATCH));
    let mut next = BATCH;
    g.bench_function("insert_1000_rows_execute", |b| {
        b.iter_batched(
            || {
                let sql = insert_sql(next);
                next += BATCH;
                sql
            },
            |sql| inserts.execute(&sql).unwrap(),
            BatchSize::PerIteration,
        )
    });

    let mut next = 0u64;
    g.bench_function("insert_1000_rows_write", |b| {
        b.iter_batched(
            || {
                let first = next;
                next += BATCH;
                first
            },
            |first| {
                writes
                    .write(|tx| {
                        let mut stmt = tx.prepare_cached(
                            "INSERT INTO shipments(id, route_id, status, driver_id, address, weight_kg, pieces, fragile) \
                             VALUES (?1, ?2, 'created', ?3, ?4, ?5, ?6, ?7)",
                        )?;
                        for n in first..first + BATCH {
                            stmt.execute(rusqlite::params![
                                shipment_id(n),
                                format!("route-{:04}", n / 25),
                                format!("driver-{:03}", n % 40),
                                format!("{} Harbour Street, Unit {}", 10 + n % 300, n % 9),
                                0.5 + (n % 97) as f64 * 0.25,
                                (n % 12 + 1) as i64,
                                n.is_multiple_of(5),
                            ])?;
                        }
                        Ok(())
                    })
                    .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_apply_page(c: &mut Criterion) {
    let rt = runtime();
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("apply_page");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(BATCH));

    // Page k: rows k*1000.. at sequences k*1000+1..; the cursor only moves forward.
    let fresh = Client::open(dir.path().join("fresh.db"), &schema).unwrap();
    let mut k = 0u64;
    g.bench_function("1000_new_rows", |b| {
        b.iter_batched(
            || {
                let t = transport_for(&page(k * BATCH, k * BATCH + 1, BATCH, true, 0));
                k += 1;
                t
            },
            |t| {
                let report = rt.block_on(fresh.sync(&t)).unwrap();
                debug_assert_eq!(report.changes_received, BATCH);
                report
            },
            BatchSize::PerIteration,
        )
    });
    assert_eq!(fresh.cursor().unwrap().since, k * BATCH);
    let expected = k * BATCH;
    let rows = fresh
        .query_json("SELECT count(*) AS n FROM shipments")
        .unwrap();
    assert_eq!(rows[0]["n"], expected, "every page's rows were applied");

    // The same 1,000 rows, a newer version of two fields on every page.
    let steady = Client::open(dir.path().join("steady.db"), &schema).unwrap();
    rt.block_on(steady.sync(&transport_for(&page(0, 1, BATCH, true, 0))))
        .unwrap();
    let mut k = 1u64;
    g.bench_function("1000_updated_rows", |b| {
        b.iter_batched(
            || {
                let t = transport_for(&page(0, k * BATCH + 1, BATCH, false, k));
                k += 1;
                t
            },
            |t| {
                let report = rt.block_on(steady.sync(&t)).unwrap();
                debug_assert_eq!(report.changes_received, BATCH);
                report
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let last = k - 1;
    let rows = steady
        .query_json("SELECT status, driver_id FROM shipments WHERE id = 's000000007'")
        .unwrap();
    assert_eq!(rows[0]["status"], STATUSES[((7 + last) % 4) as usize]);
    assert_eq!(
        rows[0]["driver_id"],
        format!("driver-{:03}", (7 + last) % 40)
    );
}

criterion_group!(benches, bench_capture, bench_apply_page);
criterion_main!(benches);
