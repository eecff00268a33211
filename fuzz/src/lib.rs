//! The checks behind the fuzz targets. Each function takes arbitrary bytes, must never panic
//! on any input, and panics (with a message) when an invariant breaks. The fuzz targets in
//! `fuzz_targets/` call them, and `crates/burrow-server/tests/fuzz_regressions.rs` includes this
//! file with `#[path]` to replay `fuzz/corpus-seed/` and `fuzz/regressions/` under `cargo test`.

use burrow_core::resolve::{ServerRow, apply_op, replica_tag};
use burrow_core::{OpKind, Schema, Value};
use burrow_proto::{convert, decode_frame, encode_frame, v1};
use prost::Message;
use std::collections::HashMap;

/// Decompressed-size limit the targets pass to `decode_frame` (the server's default is larger;
/// the code path is the same).
pub const MAX_DECODED: usize = 1 << 20;

/// The worked example's schema, which the sync-rules target checks rules against.
pub const EXAMPLE_SCHEMA: &str = include_str!("../../examples/delivery/schema.toml");

/// The demo's delivery schema: the server serves it in the quickstart.
pub const DELIVERY_SCHEMA: &str = include_str!("../../crates/burrow-cli/assets/delivery.toml");

/// A schema with a column of every type and both policies, so the validator converts every
/// kind of value.
pub const ALL_TYPES_SCHEMA: &str = r#"
version = 2
[tables.t]
priority = "critical"
[tables.t.columns]
id = "text"
s = "text"
i = "integer"
r = "real"
b = "bool"
x = "blob"
j = { type = "json", policy = "lww" }
ref = { type = "text", references = "t" }
"#;

/// The names of the fuzz targets, which are also the directory names under `corpus-seed/` and
/// `regressions/`.
pub const TARGETS: [&str; 4] = [
    "sync_request",
    "schema_file",
    "batch_validator",
    "sync_rules",
];

/// Runs the check of target `name` on `data`. Returns false for an unknown target.
pub fn run_target(name: &str, data: &[u8]) -> bool {
    match name {
        "sync_request" => sync_request(data),
        "schema_file" => schema_file(data),
        "batch_validator" => batch_validator(data),
        "sync_rules" => sync_rules(data),
        _ => return false,
    }
    true
}

/// `encode(decode(encode(m))) == encode(m)`: decoding what we encoded gives back the same
/// message. Compared as bytes because a NaN `real` is not equal to itself.
fn assert_reencodes<M: Message + Default>(m: &M, what: &str) {
    let bytes = m.encode_to_vec();
    let back = match M::decode(bytes.as_slice()) {
        Ok(b) => b,
        Err(e) => panic!("{what}: cannot decode its own encoding: {e}"),
    };
    assert!(
        back.encode_to_vec() == bytes,
        "{what}: re-encoding a decoded message changed it"
    );
}

/// Target `sync_request`: the server's request decoder (`decode_frame`) and the raw protobuf
/// decoder on arbitrary bytes; the client's response decoder too. Whatever decodes must survive
/// an encode/decode round trip, framed and unframed.
pub fn sync_request(data: &[u8]) {
    if let Ok(req) = decode_frame::<v1::SyncRequest>(data, MAX_DECODED) {
        assert_reencodes(&req, "framed SyncRequest");
        let frame = match encode_frame(&req) {
            Ok(f) => f,
            Err(e) => panic!("cannot frame a decoded request: {e}"),
        };
        match decode_frame::<v1::SyncRequest>(&frame, usize::MAX >> 1) {
            Ok(back) => assert!(back.encode_to_vec() == req.encode_to_vec()),
            Err(e) => panic!("cannot decode our own frame: {e}"),
        }
    }
    if let Ok(req) = v1::SyncRequest::decode(data) {
        assert_reencodes(&req, "SyncRequest");
        for tx in req.upload {
            for op in tx.ops {
                let seq = op.client_seq;
                if let Ok(domain) = convert::op_from_wire(op, tx.tx_id) {
                    assert_eq!(domain.client_seq, seq);
                    // Domain → wire → domain keeps the op (fields as sent, values typed).
                    let wire = convert::op_to_wire(&domain);
                    match convert::op_from_wire(wire, tx.tx_id) {
                        Ok(again) => assert!(
                            convert::op_to_wire(&again).encode_to_vec()
                                == convert::op_to_wire(&domain).encode_to_vec()
                        ),
                        Err(e) => panic!("op_to_wire produced an undecodable op: {e}"),
                    }
                }
            }
        }
    }
    if let Ok(resp) = decode_frame::<v1::SyncResponse>(data, MAX_DECODED) {
        assert_reencodes(&resp, "framed SyncResponse");
    }
    if let Ok(resp) = v1::SyncResponse::decode(data) {
        assert_reencodes(&resp, "SyncResponse");
        for c in resp.changes {
            let row_seq = c.seq;
            let n = c.fields.len();
            let domain = convert::row_change_from_wire(c);
            assert_eq!(domain.fields.len(), n);
            assert!(domain.fields.iter().all(|f| f.seq != 0 || row_seq == 0));
            let _ = convert::row_change_into_wire(domain);
        }
    }
    if let Ok(v) = convert::value_from_bytes(data) {
        let bytes = convert::value_to_bytes(&v);
        match convert::value_from_bytes(&bytes) {
            Ok(back) => assert!(convert::value_to_bytes(&back) == bytes),
            Err(e) => panic!("cannot decode an encoded value: {e}"),
        }
    }
}

/// Target `schema_file`: the schema parser on arbitrary text. An accepted schema must render
/// (`Schema::to_toml`, what clients store when opened with a schema built in
/// code) to a text that parses back to an equal schema, must be a no-op migration of itself, and
/// its client DDL must build.
pub fn schema_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schema) = Schema::from_toml_str(text) else {
        return;
    };
    assert!(!schema.tables.is_empty());
    assert!(schema.version >= 1);
    let rendered = schema.to_toml();
    let back = match Schema::from_toml_str(&rendered) {
        Ok(b) => b,
        Err(e) => panic!(
            "rendered schema does not parse: {e}\n--- input\n{text}\n--- rendered\n{rendered}"
        ),
    };
    assert!(
        back == schema,
        "rendered schema parses to another schema\n--- input\n{text}\n--- rendered\n{rendered}"
    );
    assert_eq!(back.fingerprint(), schema.fingerprint());
    assert_eq!(back.to_toml(), rendered);
    match schema.migration_from(&schema) {
        Ok(diff) => assert!(diff.is_empty(), "a schema differs from itself: {diff:?}"),
        Err(e) => panic!("a schema is not a migration of itself: {e}"),
    }
    for t in schema.tables.values() {
        assert!(burrow_core::schema::is_valid_identifier(&t.name));
        assert!(
            t.columns
                .iter()
                .all(|c| c.name != burrow_core::schema::ID_COLUMN)
        );
        let _ = burrow_client::ddl::create_table(t);
        let _ = burrow_client::ddl::create_triggers(t);
        let _ = burrow_client::ddl::drop_triggers(t);
    }
}

const REJECTION_CODES: [&str; 6] = [
    "invalid_op",
    "unknown_table",
    "invalid_row_id",
    "unknown_column",
    "wrong_type",
    "schema_version_unsupported",
];

/// Target `batch_validator`: a protobuf `SyncRequest` (not framed, so the fuzzer reaches the
/// ops quickly) through the server's per-op validation
/// (`burrow_server::validate::validate_request`) against two schemas, then every accepted op
/// through conflict resolution (`burrow_core::resolve::apply_op`) and the stored-row encoding,
/// as the store would. Checks that what validation accepts is what the store may assume.
pub fn batch_validator(data: &[u8]) {
    let Ok(req) = v1::SyncRequest::decode(data) else {
        return;
    };
    for text in [DELIVERY_SCHEMA, ALL_TYPES_SCHEMA] {
        let schema = match Schema::from_toml_str(text) {
            Ok(s) => s,
            Err(e) => panic!("built-in schema: {e}"),
        };
        validate_against(&schema, req.clone());
    }
}

fn validate_against(schema: &Schema, mut req: v1::SyncRequest) {
    let sent: Vec<(u64, Vec<u64>)> = req
        .upload
        .iter()
        .map(|t| (t.tx_id, t.ops.iter().map(|o| o.client_seq).collect()))
        .collect();
    let mut again = req.clone();
    let ingest = burrow_server::validate::validate_request(schema, &mut req, "user".into(), 1_000);
    assert!(
        req.upload.is_empty(),
        "validate_request leaves the ops in the request"
    );
    assert_eq!(ingest.client_id, req.client_id);
    assert_eq!(ingest.txs.len(), sent.len());
    // Deterministic: the same request validates the same way, with the same payload hashes.
    let twice = burrow_server::validate::validate_request(schema, &mut again, "user".into(), 1_000);
    let mut rows: HashMap<(String, String), ServerRow> = HashMap::new();
    let mut head = 0u64;
    for (i, (tx, (tx_id, seqs))) in ingest.txs.iter().zip(&sent).enumerate() {
        assert_eq!(tx.tx_id, *tx_id);
        let got: Vec<u64> = tx.ops.iter().map(|o| o.client_seq).collect();
        assert_eq!(&got, seqs, "ops keep their ids and order");
        let replica = replica_tag(if i % 2 == 0 { "device-a" } else { "device-b" });
        for (j, o) in tx.ops.iter().enumerate() {
            let other = &twice.txs[i].ops[j];
            assert_eq!(o.payload_hash, other.payload_hash);
            assert_eq!(o.op.is_ok(), other.op.is_ok());
            let op = match &o.op {
                Err(r) => {
                    assert!(
                        REJECTION_CODES.contains(&r.code),
                        "unexpected code {}",
                        r.code
                    );
                    assert_eq!(other.op.as_ref().err().map(|r| r.code), Some(r.code));
                    continue;
                }
                Ok(op) => op,
            };
            assert_eq!(op.client_seq, o.client_seq);
            assert_eq!(op.tx, *tx_id);
            if op.table == burrow_core::conflict::CONFLICTS_TABLE {
                continue; // a conflict resolution: the store handles it apart
            }
            let Some(table) = schema.table(&op.table) else {
                panic!("accepted an op on unknown table {:?}", op.table);
            };
            assert!(!op.row_id.is_empty() && op.row_id.len() <= 256);
            if op.kind == OpKind::Delete {
                assert!(op.fields.is_empty(), "accepted a delete with fields");
            }
            let mut seen = std::collections::HashSet::new();
            for f in &op.fields {
                assert!(seen.insert(f.column.as_str()), "accepted a column twice");
                let Some(col) = table.column(&f.column) else {
                    panic!("accepted unknown column {:?}", f.column);
                };
                if burrow_core::resolve::crdt_kind(&col.policy).is_some() {
                    continue; // CRDT update bytes, checked by crdt::validate
                }
                // Accepted values already have the column's type: conforming again is a no-op.
                match f.value.clone().conform(col.ty) {
                    Ok(v) => assert!(
                        convert::value_to_bytes(&v) == convert::value_to_bytes(&f.value),
                        "conform is not idempotent"
                    ),
                    Err(e) => panic!("accepted a value of the wrong type: {e}"),
                }
                if let Value::Json(s) = &f.value {
                    assert!(serde_json::from_str::<serde_json::Value>(s).is_ok());
                }
            }
            // What the store does with an accepted op.
            let key = (op.table.clone(), op.row_id.clone());
            let seq = head + 1;
            let ctx = burrow_core::resolve::ApplyContext::plain(Some(table), replica, op.hlc, seq);
            let applied = apply_op(rows.get(&key), op, &ctx);
            if let Some(row) = applied.new_row {
                assert_eq!(row.seq, seq, "a change gets the next sequence");
                assert!(
                    !row.deleted
                        || row.fields.is_empty()
                        || table.on_delete_conflict != burrow_core::DeleteConflict::DeleteWins,
                    "a tombstone with fields"
                );
                for (c, f) in &row.fields {
                    assert!(table.column(c).is_some(), "stored unknown column {c}");
                    assert!(f.version.seq <= seq);
                }
                let bytes = convert::stored_fields_to_bytes(&row);
                match convert::server_row_from_parts(row.deleted, row.seq, row.hlc.0, &bytes) {
                    Ok(back) => {
                        assert_eq!(back.fields.len(), row.fields.len());
                        assert!(convert::stored_fields_to_bytes(&back) == bytes);
                    }
                    Err(e) => panic!("stored row does not decode: {e}"),
                }
                head = seq;
                rows.insert(key, row);
            }
        }
    }
}

/// Sync rules (`burrow.toml`): parsing and type-checking arbitrary text never panics; rules
/// that parse evaluate on sample rows, claims and subscriptions without panicking, and a
/// row's buckets are computed the same way twice.
pub fn sync_rules(data: &[u8]) {
    use burrow_core::ClaimSet;
    use burrow_core::rules::{Action, EvalContext, MemoryLookup, Subscription, SyncRules};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schema) = Schema::from_toml_str(EXAMPLE_SCHEMA) else {
        panic!("the example schema does not parse");
    };
    let Ok(rules) = SyncRules::parse(text, &schema) else {
        return;
    };
    let mut lookup = MemoryLookup::new()
        .with_row(
            "routes",
            &[
                ("id", Value::Text("r1".into())),
                ("driver_id", Value::Text("ann".into())),
                ("day", Value::Text("2026-11-26".into())),
            ],
        )
        .with_row(
            "jobs",
            &[
                ("id", Value::Text("j1".into())),
                ("technician_id", Value::Text("ann".into())),
            ],
        );
    let claims = ClaimSet::new()
        .with("sub", "ann")
        .with("role", "driver")
        .with("zones", "1");
    let ctx = EvalContext {
        claims: &claims,
        now_ms: 1_790_000_000_000,
    };
    let row = |c: &str| -> Option<Value> {
        match c {
            "id" => Some(Value::Text("s1".into())),
            "route_id" => Some(Value::Text("r1".into())),
            "status" => Some(Value::Text("planned".into())),
            "zone" => Some(Value::Integer(1)),
            _ => None,
        }
    };
    for table in schema.tables.keys() {
        let a = rules.row_buckets(table, &row);
        let b = rules.row_buckets(table, &row);
        assert_eq!(a, b, "row buckets are not deterministic");
        let _ = rules.check_write(
            &ctx,
            table,
            Action::Update,
            &["status"],
            Some(&row),
            Some(&row),
            &mut lookup,
        );
    }
    let subs: Vec<Subscription> = rules
        .streams()
        .map(|s| Subscription {
            stream: s.name().to_string(),
            params: s
                .params()
                .keys()
                .map(|k| (k.clone(), Value::Text("j1".into())))
                .collect(),
        })
        .collect();
    for s in &subs {
        let _ = rules.check_subscription(&ctx, s, &mut lookup);
    }
    let _ = rules.grants(&ctx, &subs, &mut lookup);
    let _ = rules.lookup_indexes();
}
