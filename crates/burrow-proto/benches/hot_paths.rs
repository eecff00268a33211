//! Criterion micro-benchmarks of the wire format's hot paths (issue #7): encoding a message
//! and wrapping it in a zstd frame (`encode_frame`), and the reverse (`decode_frame`), for the
//! two shapes that dominate sync traffic:
//!
//! - a `SyncRequest` uploading 100 small update ops (one single-op local transaction each, as
//!   a device that made 100 one-row edits offline sends them), built from domain ops with
//!   `convert::op_to_wire`;
//! - a `SyncResponse` carrying a page of 1,000 row changes (six fields each, as an initial
//!   pull sends them), built with `convert::row_change_into_wire`.
//!
//! Throughput is reported in elements (ops or row changes). For the page, `protobuf_*_only`
//! measure the same message without zstd (to split the frame's cost between compression and
//! protobuf), and `to_domain` the client's conversion of a decoded page back to domain
//! `RowChange`s.
//!
//! Run: `cargo bench -p burrow-proto --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_core::op::ChangedField;
use burrow_core::{FieldValue, Hlc, Op, OpKind, RowChange, Value};
use burrow_proto::convert::{op_to_wire, row_change_from_wire, row_change_into_wire};
use burrow_proto::{PROTOCOL_VERSION, decode_frame, encode_frame, v1};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use std::hint::black_box;
use std::time::Duration;

/// Ops in the upload request.
const UPLOAD_OPS: u64 = 100;
/// Row changes in the downloaded page.
const PAGE_CHANGES: u64 = 1_000;
/// Generous decode limit (the client allows 256 MiB).
const MAX_DECODED: usize = 64 << 20;
/// An HLC in 2026: 48 bits of milliseconds, 16 bits of counter.
const HLC_BASE: u64 = 1_780_000_000_000 << 16;
const STATUSES: [&str; 4] = ["created", "loaded", "in_transit", "delivered"];

fn row_id(n: u64) -> String {
    format!("0197a3c2-7d1e-7b40-9c2f-{n:012x}")
}

/// 100 single-row updates (status, sometimes a note), one local transaction each.
fn upload_request() -> v1::SyncRequest {
    let upload = (0..UPLOAD_OPS)
        .map(|n| {
            let mut fields = vec![FieldValue {
                column: "status".into(),
                value: Value::Text(STATUSES[(n % 4) as usize].into()),
            }];
            if n.is_multiple_of(3) {
                fields.push(FieldValue {
                    column: "note".into(),
                    value: Value::Text(format!("left at the back door, stop {n}")),
                });
            }
            let op = Op {
                client_seq: 5_000 + n,
                tx: 2_000 + n,
                table: "shipments".into(),
                row_id: row_id(n * 7),
                kind: OpKind::Update,
                fields,
                hlc: Hlc(HLC_BASE + (n << 16) + 3),
                base_seq: 41_000 + n * 11,
            };
            v1::LocalTx {
                tx_id: op.tx,
                ops: vec![op_to_wire(&op)],
                more_parts: false,
            }
        })
        .collect();
    v1::SyncRequest {
        protocol_version: PROTOCOL_VERSION,
        schema_version: 3,
        client_id: "0197a3c2-0000-7000-8000-00000000d3v1".into(),
        device_time_ms: 1_780_000_123_456,
        upload,
        cursor: Some(v1::Cursor {
            since: 41_230,
            after: 41_230,
            ..Default::default()
        }),
        page_bytes_max: 4 << 20,
        download: true,
        include_own_changes: false,
        subscriptions: vec![],
    }
}

/// A page of 1,000 live rows with six fields each (all set at the row's sequence).
fn page_response() -> v1::SyncResponse {
    let changes = (0..PAGE_CHANGES)
        .map(|n| {
            let seq = 100_000 + n;
            let field = |column: &str, value: Value| ChangedField {
                column: column.into(),
                value,
                seq,
            };
            row_change_into_wire(RowChange {
                table: "shipments".into(),
                row_id: row_id(n),
                seq,
                deleted: false,
                fields: vec![
                    field("status", Value::Text(STATUSES[(n % 4) as usize].into())),
                    field("driver_id", Value::Text(format!("driver-{:03}", n % 40))),
                    field("route_id", Value::Text(format!("route-{:04}", n / 25))),
                    field("weight_kg", Value::Real(0.5 + (n % 97) as f64 * 0.25)),
                    field("stops", Value::Integer((n % 12) as i64)),
                    field(
                        "address",
                        Value::Text(format!("{} Harbour Street, Unit {}", 10 + n % 300, n % 9)),
                    ),
                ],
                hlc: Hlc(HLC_BASE + (n << 16)),
                evicted: false,
            })
        })
        .collect();
    v1::SyncResponse {
        outcomes: vec![],
        ack_seq: 0,
        changes,
        cursor: Some(v1::Cursor {
            since: 100_000 + PAGE_CHANGES - 1,
            after: 100_000 + PAGE_CHANGES - 1,
            ..Default::default()
        }),
        more: false,
        server_time_ms: 1_780_000_123_999,
        head_seq: 100_000 + PAGE_CHANGES - 1,
        subscription_errors: vec![],
    }
}

fn bench_request(c: &mut Criterion) {
    let req = upload_request();
    let frame = encode_frame(&req).unwrap();
    let back: v1::SyncRequest = decode_frame(&frame, MAX_DECODED).unwrap();
    assert_eq!(back, req);
    eprintln!(
        "sync_request_100_updates: {} bytes protobuf, {} bytes framed",
        req.encoded_len(),
        frame.len()
    );
    let mut g = c.benchmark_group("sync_request_100_updates");
    g.throughput(Throughput::Elements(UPLOAD_OPS));
    g.bench_function("encode_frame", |b| {
        b.iter(|| encode_frame(black_box(&req)).unwrap())
    });
    g.bench_function("decode_frame", |b| {
        b.iter(|| decode_frame::<v1::SyncRequest>(black_box(&frame), MAX_DECODED).unwrap())
    });
    g.finish();
}

fn bench_response(c: &mut Criterion) {
    let resp = page_response();
    let frame = encode_frame(&resp).unwrap();
    let back: v1::SyncResponse = decode_frame(&frame, MAX_DECODED).unwrap();
    assert_eq!(back, resp);
    eprintln!(
        "sync_response_1000_changes: {} bytes protobuf, {} bytes framed",
        resp.encoded_len(),
        frame.len()
    );
    let mut g = c.benchmark_group("sync_response_1000_changes");
    g.throughput(Throughput::Elements(PAGE_CHANGES));
    g.bench_function("encode_frame", |b| {
        b.iter(|| encode_frame(black_box(&resp)).unwrap())
    });
    g.bench_function("decode_frame", |b| {
        b.iter(|| decode_frame::<v1::SyncResponse>(black_box(&frame), MAX_DECODED).unwrap())
    });
    // The same work without zstd, to tell the compression's share from protobuf's.
    let raw = resp.encode_to_vec();
    g.bench_function("protobuf_encode_only", |b| {
        b.iter(|| black_box(&resp).encode_to_vec())
    });
    g.bench_function("protobuf_decode_only", |b| {
        b.iter(|| v1::SyncResponse::decode(black_box(raw.as_slice())).unwrap())
    });
    g.bench_function("to_domain", |b| {
        b.iter_batched(
            || resp.changes.clone(),
            |changes| {
                changes
                    .into_iter()
                    .map(row_change_from_wire)
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_request, bench_response
}
criterion_main!(benches);
