//! Replays the fuzz inputs kept in the repository through the fuzz targets' checks, so plain
//! `cargo test` runs them: the hand-made seeds in `fuzz/corpus-seed/<target>/` and every input
//! a fuzzer ever crashed on, saved by `scripts/fuzz.sh` in `fuzz/regressions/<target>/`.
//!
//! The checks themselves live in `fuzz/src/lib.rs` (the fuzz crate is not a workspace member)
//! and are included here verbatim.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

use burrow_proto::v1;
use prost::Message;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every regular file under `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
}

/// Runs every input of every target found under `fuzz/<kind>/`; returns how many ran.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failed = Vec::new();
    for target in checks::TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&path).unwrap();
            let ok = std::panic::catch_unwind(|| assert!(checks::run_target(target, &data)));
            if ok.is_err() {
                failed.push(format!("{target}: {}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz inputs that fail:\n{}",
        failed.join("\n")
    );
    ran
}

#[test]
fn corpus_seeds_pass_every_check() {
    for target in checks::TARGETS {
        let n = inputs(&fuzz_dir().join("corpus-seed").join(target)).len();
        assert!(n > 0, "no seeds for fuzz target {target}");
    }
    assert!(replay("corpus-seed") >= checks::TARGETS.len());
}

#[test]
fn saved_crashes_no_longer_crash() {
    replay("regressions");
}

#[test]
fn seeds_are_what_they_claim() {
    let seeds = fuzz_dir().join("corpus-seed");
    let framed = std::fs::read(seeds.join("sync_request/valid_request.zst")).unwrap();
    let req: v1::SyncRequest = burrow_proto::decode_frame(&framed, checks::MAX_DECODED).unwrap();
    assert_eq!(req, seed_request());
    let truncated = std::fs::read(seeds.join("sync_request/truncated_frame.zst")).unwrap();
    assert!(
        burrow_proto::decode_frame::<v1::SyncRequest>(&truncated, checks::MAX_DECODED).is_err()
    );
    let delivery = std::fs::read_to_string(seeds.join("schema_file/delivery.toml")).unwrap();
    assert_eq!(delivery, checks::DELIVERY_SCHEMA);
    let raw = std::fs::read(seeds.join("batch_validator/valid_request.pb")).unwrap();
    assert_eq!(
        v1::SyncRequest::decode(raw.as_slice()).unwrap(),
        seed_request()
    );
    // The valid request validates cleanly against the delivery schema.
    let schema = burrow_core::Schema::from_toml_str(checks::DELIVERY_SCHEMA).unwrap();
    let mut req = seed_request();
    let ingest = burrow_server::validate::validate_request(&schema, &mut req, "ann".into(), 0);
    for tx in &ingest.txs {
        for op in &tx.ops {
            assert!(op.op.is_ok(), "{:?}", op.op);
        }
    }
    // Each invalid op is refused with its own code.
    let mut bad = invalid_request();
    let ingest = burrow_server::validate::validate_request(&schema, &mut bad, "ann".into(), 0);
    let codes: Vec<&str> = ingest.txs[0]
        .ops
        .iter()
        .map(|o| o.op.as_ref().map(|_| "ok").unwrap_or_else(|r| r.code))
        .collect();
    assert_eq!(
        codes,
        [
            "unknown_table",
            "invalid_row_id",
            "invalid_op",
            "invalid_op",
            "invalid_op",
            "unknown_column",
            "wrong_type",
            "invalid_op",
        ]
    );
}

fn val(kind: v1::value::Kind) -> Option<v1::Value> {
    Some(v1::Value { kind: Some(kind) })
}

fn field(column: &str, value: Option<v1::Value>) -> v1::Field {
    v1::Field {
        column: column.into(),
        value,
        seq: 0,
    }
}

fn op(seq: u64, table: &str, row: &str, kind: v1::OpKind, fields: Vec<v1::Field>) -> v1::Op {
    v1::Op {
        client_seq: seq,
        table: table.into(),
        row_id: row.into(),
        kind: kind as i32,
        fields,
        hlc: (1_700_000_000_000 << 16) + seq,
        base_seq: 3,
    }
}

/// A request as the client library sends it: two local transactions on the delivery schema.
fn seed_request() -> v1::SyncRequest {
    use v1::value::Kind;
    v1::SyncRequest {
        protocol_version: 1,
        schema_version: 1,
        client_id: "0190a5e2-7c3b-7def-8000-000000000001".into(),
        device_time_ms: 1_700_000_000_000,
        upload: vec![
            v1::LocalTx {
                tx_id: 7,
                more_parts: false,
                ops: vec![
                    op(
                        1,
                        "routes",
                        "r1",
                        v1::OpKind::Insert,
                        vec![
                            field("driver_id", val(Kind::Text("ann".into()))),
                            field("day", None),
                        ],
                    ),
                    op(
                        2,
                        "shipments",
                        "s1",
                        v1::OpKind::Insert,
                        vec![
                            field("route_id", val(Kind::Text("r1".into()))),
                            field("status", val(Kind::Text("loaded".into()))),
                            field("weight_kg", val(Kind::Integer(3))),
                            field("pieces", val(Kind::Integer(2))),
                            field("fragile", val(Kind::Integer(1))),
                            field("notes", Some(v1::Value { kind: None })),
                        ],
                    ),
                ],
            },
            v1::LocalTx {
                tx_id: 9,
                more_parts: false,
                ops: vec![
                    op(
                        3,
                        "shipments",
                        "s1",
                        v1::OpKind::Update,
                        vec![
                            field("status", val(Kind::Text("delivered".into()))),
                            field("weight_kg", val(Kind::Real(2.5))),
                            field("fragile", val(Kind::Boolean(false))),
                        ],
                    ),
                    op(4, "scans", "x1", v1::OpKind::Delete, vec![]),
                ],
            },
        ],
        cursor: Some(v1::Cursor {
            since: 3,
            after: 3,
            ..Default::default()
        }),
        page_bytes_max: 1 << 20,
        download: true,
        include_own_changes: false,
        subscriptions: vec![],
    }
}

/// One transaction of ops the validator must refuse, one reason each.
fn invalid_request() -> v1::SyncRequest {
    use v1::value::Kind;
    let text = |s: &str| val(Kind::Text(s.into()));
    v1::SyncRequest {
        protocol_version: 1,
        schema_version: 1,
        client_id: "c".into(),
        upload: vec![v1::LocalTx {
            tx_id: 1,
            more_parts: true,
            ops: vec![
                op(1, "nope", "r", v1::OpKind::Insert, vec![]),
                op(2, "routes", "", v1::OpKind::Insert, vec![]),
                op(
                    3,
                    "routes",
                    "r",
                    v1::OpKind::Delete,
                    vec![field("day", text("x"))],
                ),
                op(
                    4,
                    "routes",
                    "r",
                    v1::OpKind::Update,
                    vec![field("id", text("x"))],
                ),
                op(
                    5,
                    "routes",
                    "r",
                    v1::OpKind::Update,
                    vec![field("day", text("a")), field("day", text("b"))],
                ),
                op(
                    6,
                    "routes",
                    "r",
                    v1::OpKind::Update,
                    vec![field("nope", None)],
                ),
                op(
                    7,
                    "shipments",
                    "s",
                    v1::OpKind::Update,
                    vec![field("fragile", val(Kind::Integer(2)))],
                ),
                v1::Op {
                    kind: 42,
                    ..op(8, "routes", "r", v1::OpKind::Insert, vec![])
                },
            ],
        }],
        ..Default::default()
    }
}

/// A request with every value kind against the all-types schema, including values that only
/// conform after conversion (integer → real, 0/1 → bool, text → json) and ones that do not.
fn all_types_request() -> v1::SyncRequest {
    use v1::value::Kind;
    v1::SyncRequest {
        protocol_version: 1,
        schema_version: 2,
        client_id: "c".into(),
        upload: vec![v1::LocalTx {
            tx_id: 1,
            more_parts: false,
            ops: vec![
                op(
                    1,
                    "t",
                    "a",
                    v1::OpKind::Insert,
                    vec![
                        field("s", val(Kind::Text("é\u{0}".into()))),
                        field("i", val(Kind::Integer(i64::MIN))),
                        field("r", val(Kind::Integer(-1))),
                        field("b", val(Kind::Integer(0))),
                        field("x", val(Kind::Blob(vec![0, 255]))),
                        field("j", val(Kind::Text("{\"a\": [1, null]}".into()))),
                        field("ref", val(Kind::Text("b".into()))),
                    ],
                ),
                op(
                    2,
                    "t",
                    "a",
                    v1::OpKind::Update,
                    vec![
                        field("r", val(Kind::Real(f64::NAN))),
                        field("j", val(Kind::Json("[".into()))),
                    ],
                ),
                op(3, "t", "a", v1::OpKind::Delete, vec![]),
                op(
                    4,
                    "t",
                    "a",
                    v1::OpKind::Update,
                    vec![field("b", val(Kind::Boolean(true)))],
                ),
            ],
        }],
        ..Default::default()
    }
}

/// A response page as the server sends it.
fn seed_response() -> v1::SyncResponse {
    use v1::value::Kind;
    v1::SyncResponse {
        outcomes: vec![v1::OpOutcome {
            client_seq: 1,
            kind: v1::OutcomeKind::Conflict as i32,
            code: "conflict_lost".into(),
            message: "lww".into(),
            lost_columns: vec!["status".into()],
            seq: 5,
        }],
        ack_seq: 6,
        changes: vec![v1::RowChange {
            table: "shipments".into(),
            row_id: "s1".into(),
            seq: 6,
            deleted: false,
            fields: vec![
                v1::Field {
                    column: "status".into(),
                    value: val(Kind::Text("lost".into())),
                    seq: 0,
                },
                v1::Field {
                    column: "pieces".into(),
                    value: val(Kind::Integer(4)),
                    seq: 5,
                },
            ],
            hlc: 99,
            evicted: false,
        }],
        cursor: Some(v1::Cursor {
            since: 6,
            after: 6,
            ..Default::default()
        }),
        more: false,
        server_time_ms: 1_700_000_000_000,
        head_seq: 6,
        subscription_errors: vec![],
    }
}

/// Writes `fuzz/corpus-seed/`. Run once by hand after changing the seeds:
/// `cargo test -p burrow-server --test fuzz_regressions -- --ignored write_seeds`.
#[test]
#[ignore = "writes the seed files into the source tree"]
fn write_seeds() {
    let seeds = fuzz_dir().join("corpus-seed");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let framed = burrow_proto::encode_frame(&seed_request()).unwrap();
    write("sync_request", "valid_request.zst", &framed);
    write(
        "sync_request",
        "truncated_frame.zst",
        &framed[..framed.len() / 2],
    );
    write(
        "sync_request",
        "valid_request.pb",
        &seed_request().encode_to_vec(),
    );
    let resp = seed_response();
    write(
        "sync_request",
        "response.zst",
        &burrow_proto::encode_frame(&resp).unwrap(),
    );
    write("sync_request", "response.pb", &resp.encode_to_vec());
    write(
        "schema_file",
        "delivery.toml",
        checks::DELIVERY_SCHEMA.as_bytes(),
    );
    write(
        "schema_file",
        "all_types.toml",
        checks::ALL_TYPES_SCHEMA.as_bytes(),
    );
    write(
        "schema_file",
        "examples_delivery.toml",
        &std::fs::read(fuzz_dir().join("../examples/delivery.toml")).unwrap(),
    );
    write(
        "batch_validator",
        "valid_request.pb",
        &seed_request().encode_to_vec(),
    );
    write(
        "batch_validator",
        "invalid_ops.pb",
        &invalid_request().encode_to_vec(),
    );
    write(
        "batch_validator",
        "all_types.pb",
        &all_types_request().encode_to_vec(),
    );
}
