//! Criterion micro-benchmarks of conflict resolution (issue #7): `resolve::apply_op`, the
//! server's per-op merge of an upload into the stored row, under the policies that matter
//! most, and `crdt::merge`, which folds a device's text edit into the stored CRDT document.
//!
//! Every case applies one op to a stored row of a ten-column table (`shipments`):
//! - `lww_field_update`: an update of one `lww` field whose writer had seen the current value
//!   (the common case: no conflict);
//! - `counter_increment`: an increment of a `counter` column;
//! - `concurrent_conflict_wins` / `concurrent_conflict_loses`: an update of two fields, one
//!   of which another device changed concurrently (field-level merge: the untouched field
//!   applies, the concurrent one is decided by LWW and logged as a `ConflictRecord`); the
//!   incoming write has the later clock in the first case and the earlier one in the second;
//! - `text_crdt_field`: an update of a `text`-policy field carrying a concurrent CRDT edit
//!   (`apply_op` calls `crdt::merge`).
//!
//! `crdt_merge_text` benchmarks `crdt::merge` on its own: the server holds a ~1 KB note with
//! one device's edit merged in, and a second device's concurrent edit of the same base
//! arrives.
//!
//! Run: `cargo bench -p burrow-core --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_core::crdt::{self, CrdtDoc, CrdtKind};
use burrow_core::resolve::{ApplyContext, FieldVersion, ServerRow, StoredField, apply_op};
use burrow_core::{FieldValue, Hlc, Op, OpKind, OutcomeKind, Schema, Value};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const SCHEMA: &str = r#"
version = 1
[tables.shipments.columns]
status = { type = "text", policy = "lww" }
driver_id = "text"
route_id = "text"
address = "text"
weight_kg = "real"
stops = "integer"
scans = { type = "integer", policy = "counter" }
notes = { type = "text", policy = "text" }
delivered_at = "integer"
signed_by = "text"
"#;

/// An HLC in 2026 (48 bits of ms, 16 bits of counter), `ms` later.
fn hlc(ms: u64) -> Hlc {
    Hlc((1_780_000_000_000 + ms) << 16)
}

/// Replica tags of the devices.
const DEVICE_A: u64 = 0x1111_2222_3333_4444;
const DEVICE_B: u64 = 0x5555_6666_7777_8888;

/// The server's row: every plain field set by device A at seq 100, except `status`, which
/// device A changed again at seq 120; `notes` holds `notes` (CRDT document bytes).
fn stored_row(notes: Vec<u8>) -> ServerRow {
    let v = |seq, ms| FieldVersion {
        seq,
        hlc: hlc(ms),
        replica: DEVICE_A,
    };
    let plain = |value: Value, version| StoredField {
        value,
        version,
        rank: Value::Null,
    };
    let merged = |value: Value| StoredField {
        value,
        version: FieldVersion {
            replica: 0,
            ..v(100, 1_000)
        },
        rank: Value::Integer(DEVICE_A as i64),
    };
    let fields = [
        (
            "status",
            plain(Value::Text("in_transit".into()), v(120, 5_000)),
        ),
        (
            "driver_id",
            plain(Value::Text("driver-007".into()), v(100, 1_000)),
        ),
        (
            "route_id",
            plain(Value::Text("route-0042".into()), v(100, 1_000)),
        ),
        (
            "address",
            plain(
                Value::Text("12 Harbour Street, Unit 3".into()),
                v(100, 1_000),
            ),
        ),
        ("weight_kg", plain(Value::Real(3.25), v(100, 1_000))),
        ("stops", plain(Value::Integer(4), v(100, 1_000))),
        ("scans", merged(Value::Integer(17))),
        ("notes", merged(Value::Blob(notes))),
        ("delivered_at", plain(Value::Null, v(100, 1_000))),
        ("signed_by", plain(Value::Null, v(100, 1_000))),
    ]
    .into_iter()
    .map(|(c, f)| (c.to_string(), f))
    .collect();
    ServerRow {
        deleted: false,
        seq: 120,
        hlc: hlc(5_000),
        replica: DEVICE_A,
        fields,
    }
}

fn update(fields: Vec<(&str, Value)>, hlc: Hlc, base_seq: u64) -> Op {
    Op {
        client_seq: 77,
        tx: 31,
        table: "shipments".into(),
        row_id: "0197a3c2-7d1e-7b40-9c2f-000000000123".into(),
        kind: OpKind::Update,
        fields: FieldValue::list(fields),
        hlc,
        base_seq,
    }
}

/// A ~1 KB delivery note, and two devices' concurrent edits of it: (base document bytes,
/// device A's update, device B's update).
fn concurrent_text_edits() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let base_text: String = (0..20)
        .map(|i| format!("Line {i}: ring the bell, leave with the neighbour if out.\n"))
        .collect();
    let mut base = CrdtDoc::new(CrdtKind::Text, 1).unwrap();
    base.set_value(&Value::Text(base_text.clone())).unwrap();
    let base_bytes = base.export_all().unwrap();
    let mut a = CrdtDoc::load(CrdtKind::Text, &base_bytes, 2).unwrap();
    let edit_a = a
        .set_value(&Value::Text(base_text.replacen(
            "Line 3: ring the bell",
            "Line 3: knock twice",
            1,
        )))
        .unwrap()
        .unwrap();
    let mut b = CrdtDoc::load(CrdtKind::Text, &base_bytes, 3).unwrap();
    let edit_b = b
        .set_value(&Value::Text(format!(
            "{base_text}Line 20: dog in the yard, use the side gate.\n"
        )))
        .unwrap()
        .unwrap();
    (base_bytes, edit_a, edit_b)
}

fn bench_apply_op(c: &mut Criterion) {
    let schema = Schema::from_toml_str(SCHEMA).unwrap();
    let table = schema.table("shipments");
    let (base, edit_a, edit_b) = concurrent_text_edits();
    // The server already merged device A's edit of the note.
    let (notes_state, _) = crdt::merge(CrdtKind::Text, Some(&base), &edit_a).unwrap();
    let row = stored_row(notes_state);
    // Device B writes at seq 121, having last seen seq 110 (so status, changed at 120, is
    // concurrent with its write; the other fields it had seen).
    let ctx = |ms| ApplyContext::plain(table, DEVICE_B, hlc(ms), 121);

    // An `lww` field whose current value (seq 120) the writer had seen: a plain replace.
    let lww = update(
        vec![("status", Value::Text("delivered".into()))],
        hlc(6_000),
        120,
    );
    let lww_ctx = ctx(6_000);
    let out = apply_op(Some(&row), &lww, &lww_ctx);
    assert_eq!(out.outcome, OutcomeKind::Applied);
    assert!(out.conflicts.is_empty());

    let counter = update(vec![("scans", Value::Integer(1))], hlc(6_000), 110);
    let out = apply_op(Some(&row), &counter, &lww_ctx);
    assert_eq!(out.outcome, OutcomeKind::Applied);
    assert_eq!(
        out.new_row.unwrap().fields["scans"].value,
        Value::Integer(18)
    );

    let fields = || {
        vec![
            ("status", Value::Text("delivered".into())),
            ("signed_by", Value::Text("J. Doe".into())),
        ]
    };
    let wins = update(fields(), hlc(6_000), 110);
    let wins_ctx = ctx(6_000);
    let out = apply_op(Some(&row), &wins, &wins_ctx);
    assert_eq!(out.conflicts.len(), 1, "the overwritten status is logged");
    assert_eq!(
        out.new_row.unwrap().fields["status"].value,
        Value::Text("delivered".into())
    );
    let loses = update(fields(), hlc(4_000), 110);
    let loses_ctx = ctx(4_000);
    let out = apply_op(Some(&row), &loses, &loses_ctx);
    assert!(matches!(out.outcome, OutcomeKind::Conflict { ref lost, .. } if lost == &["status"]));
    assert_eq!(
        out.new_row.unwrap().fields["signed_by"].value,
        Value::Text("J. Doe".into()),
        "the other field merges"
    );

    let text = update(vec![("notes", Value::Blob(edit_b))], hlc(6_000), 110);
    let out = apply_op(Some(&row), &text, &lww_ctx);
    assert_eq!(out.outcome, OutcomeKind::Applied);

    let mut g = c.benchmark_group("apply_op");
    g.bench_function("lww_field_update", |b| {
        b.iter(|| apply_op(black_box(Some(&row)), black_box(&lww), &lww_ctx))
    });
    g.bench_function("counter_increment", |b| {
        b.iter(|| apply_op(black_box(Some(&row)), black_box(&counter), &lww_ctx))
    });
    g.bench_function("concurrent_conflict_wins", |b| {
        b.iter(|| apply_op(black_box(Some(&row)), black_box(&wins), &wins_ctx))
    });
    g.bench_function("concurrent_conflict_loses", |b| {
        b.iter(|| apply_op(black_box(Some(&row)), black_box(&loses), &loses_ctx))
    });
    g.bench_function("text_crdt_field", |b| {
        b.iter(|| apply_op(black_box(Some(&row)), black_box(&text), &lww_ctx))
    });
    g.finish();
}

fn bench_crdt_merge(c: &mut Criterion) {
    let (base, edit_a, edit_b) = concurrent_text_edits();
    let (state, _) = crdt::merge(CrdtKind::Text, Some(&base), &edit_a).unwrap();
    let (_, merged) = crdt::merge(CrdtKind::Text, Some(&state), &edit_b).unwrap();
    let Value::Text(merged) = merged else {
        panic!("a text field materializes as text")
    };
    assert!(merged.contains("knock twice") && merged.contains("side gate"));
    eprintln!(
        "crdt_merge_text: stored document {} bytes, incoming update {} bytes",
        state.len(),
        edit_b.len()
    );
    let mut g = c.benchmark_group("crdt_merge_text");
    g.bench_function("concurrent_edit", |b| {
        b.iter(|| crdt::merge(CrdtKind::Text, black_box(Some(&state)), black_box(&edit_b)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_apply_op, bench_crdt_merge
}
criterion_main!(benches);
