#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Property tests of the conflict-resolution policies (`burrow_core::resolve`), one column per
//! policy, driven through `apply_op` exactly as the server store drives it.
//!
//! A scenario: device 0 inserts the row (seq 1); then 2–5 devices (device 0 among them) each
//! write 1–3 updates, all with `base_seq = 1`, so every device's writes are concurrent with
//! every other device's. Each device's ops reach the server in the device's order, interleaved
//! at random with the other devices' ops and with resent duplicates.
//!
//! Rules (`min`, `max`, `order`, `prefer`, `max_by`, `custom`) judge every write, so a rule
//! column ends with the rule's maximum over all writes (the insert's included), ties broken by
//! LWW. Every `max_by` write carries its ranking column, as the client's capture trigger
//! makes it do.

use burrow_core::claims::ClaimSet;
use burrow_core::crdt::{self, CrdtDoc, CrdtKind, peer_id_for};
use burrow_core::env::SeededRng;
use burrow_core::hlc::{Hlc, correct_device_hlc};
use burrow_core::resolve::{
    ApplyContext, ConflictRecord, CustomChoice, CustomInput, CustomResolver, CustomResolvers,
    ServerRow, apply_op, replica_tag,
};
use burrow_core::{FieldValue, Op, OpKind, Schema, Table, Value};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// True time of the insert (ms).
const T0: u64 = 1_700_000_000_000;
/// The server's clock when it applies the ops: later than every true write time.
const NOW_MS: u64 = T0 + 10_000_000;
const HOUR_MS: i64 = 3_600_000;

const SCHEMA: &str = r#"
version = 1
[tables.shipments.columns]
id = "text"
status = { type = "text", policy = "lww" }
qty = "integer"
scans = { type = "integer", policy = "counter" }
weight = { type = "real", policy = "counter" }
eta = { type = "integer", policy = "min" }
temp = { type = "real", policy = "max" }
stage = { type = "text", policy = "order", order = ["created", "loaded", "in_transit", "delivered"] }
approved = { type = "bool", policy = "prefer", claim = "role", value = "manager" }
at = { type = "real", policy = "max" }
lat = { type = "real", policy = "max_by", column = "at" }
note = { type = "text", policy = "manual" }
report = { type = "text", policy = "custom:longest" }
body = { type = "text", policy = "text" }
tags = { type = "json", policy = "list" }
"#;

/// Every column, in the order of the op specs' slots.
const COLUMNS: [&str; 14] = [
    "status", "qty", "scans", "weight", "eta", "temp", "stage", "approved", "at", "lat", "note",
    "report", "body", "tags",
];
/// Plain columns (one value chosen among the writers').
const PLAIN: [&str; 10] = [
    "status", "qty", "eta", "temp", "stage", "approved", "at", "lat", "note", "report",
];
const ORDER: [&str; 4] = ["created", "loaded", "in_transit", "delivered"];

fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).unwrap()
}

/// `custom:longest`: the longer text wins; equal lengths: the lexicographically larger one;
/// equal texts: the later write (so even the stored version does not depend on order).
#[derive(Debug)]
struct Longest;

fn longest_key(v: &Value) -> (bool, usize, String) {
    match v {
        Value::Text(s) => (true, s.chars().count(), s.clone()),
        _ => (false, 0, String::new()),
    }
}

impl CustomResolver for Longest {
    fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice {
        let inc = longest_key(input.incoming);
        let cur = longest_key(&input.current.value);
        let later = (input.incoming_write.hlc, input.incoming_write.replica)
            > (input.current.version.hlc, input.current.version.replica);
        match inc.cmp(&cur) {
            Ordering::Greater => CustomChoice::TakeIncoming,
            Ordering::Equal if later => CustomChoice::TakeIncoming,
            _ => CustomChoice::KeepCurrent,
        }
    }
}

fn resolvers() -> CustomResolvers {
    let mut r = CustomResolvers::new();
    r.insert(
        "longest".into(),
        Arc::new(Longest) as Arc<dyn CustomResolver>,
    );
    r
}

// ---------------------------------------------------------------------------------------------
// The server model.

/// One uploaded op, as the store receives it.
#[derive(Debug, Clone)]
struct Upload {
    replica: u64,
    op: Op,
    claims: ClaimSet,
    /// The device clock's offset the server measured from the request carrying this op.
    offset_ms: i64,
    /// The write's true time (what a perfect correction yields); for expectations only.
    true_hlc: Hlc,
}

/// The server's state of the one row, applied as `store/sqlite.rs::ingest_tx` applies ops.
struct Server<'a> {
    table: &'a Table,
    custom: &'a CustomResolvers,
    row: Option<ServerRow>,
    head: u64,
    seen: HashSet<(u64, u64)>,
    conflicts: Vec<ConflictRecord>,
}

impl<'a> Server<'a> {
    fn new(table: &'a Table, custom: &'a CustomResolvers) -> Self {
        Server {
            table,
            custom,
            row: None,
            head: 0,
            seen: HashSet::new(),
            conflicts: Vec::new(),
        }
    }

    fn apply(&mut self, u: &Upload) {
        self.apply_with_offset(u, u.offset_ms);
    }

    /// Applies `u` as if the server had measured `offset_ms` for its request.
    fn apply_with_offset(&mut self, u: &Upload, offset_ms: i64) {
        // The store records every op id (client, client_seq) with its outcome, and a resent op
        // is answered from that record without reaching `apply_op` again. This dedup is what
        // makes counters (and everything else) idempotent; `apply_op` itself is not.
        if !self.seen.insert((u.replica, u.op.client_seq)) {
            return;
        }
        let seq = self.head + 1;
        let ctx = ApplyContext {
            table: Some(self.table),
            replica: u.replica,
            hlc: correct_device_hlc(u.op.hlc, offset_ms, Hlc::from_ms(NOW_MS)),
            seq,
            claims: &u.claims,
            custom: self.custom,
        };
        let applied = apply_op(self.row.as_ref(), &u.op, &ctx);
        if let Some(row) = applied.new_row {
            self.head = seq;
            self.row = Some(row);
        }
        // Each record becomes a `_burrow_conflicts` row at its own sequence.
        self.head += applied.conflicts.len() as u64;
        self.conflicts.extend(applied.conflicts);
    }

    fn value(&self, column: &str) -> Value {
        self.row
            .as_ref()
            .and_then(|r| r.fields.get(column))
            .map_or(Value::Null, |f| f.value.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Debug, Clone)]
struct OpSpec {
    /// Milliseconds since the device's previous write (0: same ms, next HLC counter).
    dt_ms: u64,
    /// One slot per column of [`COLUMNS`]: `Some(seed)` writes it.
    slots: Vec<Option<u8>>,
}

#[derive(Debug, Clone)]
struct DeviceSpec {
    manager: bool,
    offset_ms: i64,
    start_ms: u64,
    ops: Vec<OpSpec>,
}

fn device_spec() -> impl Strategy<Value = DeviceSpec> {
    let op = (
        0u64..3,
        proptest::collection::vec(proptest::option::weighted(0.35, any::<u8>()), COLUMNS.len()),
    )
        .prop_map(|(dt_ms, slots)| OpSpec { dt_ms, slots });
    (
        any::<bool>(),
        -HOUR_MS..=HOUR_MS,
        1u64..30,
        proptest::collection::vec(op, 1..=3),
    )
        .prop_map(|(manager, offset_ms, start_ms, ops)| DeviceSpec {
            manager,
            offset_ms,
            start_ms,
            ops,
        })
}

fn scenario() -> impl Strategy<Value = Vec<DeviceSpec>> {
    proptest::collection::vec(device_spec(), 2..=5)
}

fn client_id(device: usize) -> String {
    format!("device-{device}")
}

const BASE_TEXT: &str = "base";
const BASE_TAGS: &str = r#"["b0"]"#;
const WORDS: [&str; 4] = ["apple", "pear", "fig", "kiwi"];
const REPORTS: [&str; 6] = ["", "ab", "ba", "abc", "xyz", "hello"];
const STAGES: [&str; 5] = ["created", "loaded", "in_transit", "delivered", "lost"];
const INSERTS: [&str; 3] = ["x", "yz", "uvw"];

fn insert_value(column: &str) -> Value {
    match column {
        "status" => Value::Text("new".into()),
        "qty" => Value::Integer(0),
        "scans" => Value::Integer(10),
        "weight" => Value::Real(1.5),
        "eta" => Value::Integer(3),
        "temp" => Value::Real(2.5),
        "stage" => Value::Text("loaded".into()),
        "approved" => Value::Bool(false),
        "at" => Value::Real(0.0),
        "lat" => Value::Real(1.0),
        "note" => Value::Text("orig".into()),
        "report" => Value::Text("orig".into()),
        other => panic!("no plain insert value for {other}"),
    }
}

/// The value a plain or counter column gets from a slot seed (small domains: ties happen).
fn plain_value(column: &str, s: u8) -> Value {
    match column {
        "status" | "note" => Value::Text(WORDS[s as usize % WORDS.len()].into()),
        "qty" => Value::Integer(i64::from(s % 5)),
        "scans" => Value::Integer(i64::from(s % 7) - 3),
        "weight" => Value::Real((f64::from(s % 41) - 20.0) * 0.1),
        "eta" if s % 6 == 5 => Value::Null,
        "eta" => Value::Integer(i64::from(s % 5)),
        "temp" if s % 6 == 5 => Value::Null,
        "temp" => Value::Real(f64::from(s % 5) * 0.5),
        "stage" => Value::Text(STAGES[s as usize % STAGES.len()].into()),
        "approved" => Value::Bool(s.is_multiple_of(2)),
        "at" => Value::Real(f64::from(s % 4)),
        "lat" => Value::Real(f64::from(s % 5)),
        "report" => Value::Text(REPORTS[s as usize % REPORTS.len()].into()),
        other => panic!("no plain value for {other}"),
    }
}

/// A built scenario: the insert, then every device's uploads in device order.
struct Built {
    insert: Upload,
    devices: Vec<Vec<Upload>>,
    /// Every word inserted into `body` and element inserted into `tags`.
    body_inserts: Vec<String>,
    tag_inserts: Vec<String>,
}

fn hlc(ms: u64, counter: u16) -> Hlc {
    Hlc(Hlc::from_ms(ms).0 | u64::from(counter))
}

/// Builds the ops. With `skew`, each device's clock (and so its ops' HLCs) runs `offset_ms`
/// off and the server measures that offset; without, every clock is exact.
fn build(specs: &[DeviceSpec], skew: bool) -> Built {
    let offset = |d: usize| if skew { specs[d].offset_ms } else { 0 };
    let frame =
        |true_hlc: Hlc, off: i64| hlc(true_hlc.ms().wrapping_add_signed(off), true_hlc.counter());
    let claims = |d: usize| {
        ClaimSet::new()
            .with(
                "role",
                if specs[d].manager {
                    "manager"
                } else {
                    "driver"
                },
            )
            .with("sub", &format!("user-{d}"))
    };

    // The insert by device 0, carrying every column (CRDT columns as update bytes).
    let mut body0 = CrdtDoc::new(CrdtKind::Text, peer_id_for(&client_id(0), 0)).unwrap();
    let body_bytes = body0
        .set_value(&Value::Text(BASE_TEXT.into()))
        .unwrap()
        .unwrap();
    let mut tags0 = CrdtDoc::new(CrdtKind::List, peer_id_for(&client_id(0), 0)).unwrap();
    let tags_bytes = tags0
        .set_value(&Value::Json(BASE_TAGS.into()))
        .unwrap()
        .unwrap();
    let mut fields: Vec<FieldValue> = COLUMNS
        .iter()
        .filter(|c| !matches!(**c, "body" | "tags"))
        .map(|c| FieldValue {
            column: (*c).into(),
            value: insert_value(c),
        })
        .collect();
    fields.push(FieldValue {
        column: "body".into(),
        value: Value::Blob(body_bytes.clone()),
    });
    fields.push(FieldValue {
        column: "tags".into(),
        value: Value::Blob(tags_bytes.clone()),
    });
    let insert_true = Hlc::from_ms(T0);
    let insert = Upload {
        replica: replica_tag(&client_id(0)),
        op: Op {
            client_seq: 1,
            tx: 1,
            table: "shipments".into(),
            row_id: "r1".into(),
            kind: OpKind::Insert,
            fields,
            hlc: frame(insert_true, offset(0)),
            base_seq: 0,
        },
        claims: claims(0),
        offset_ms: offset(0),
        true_hlc: insert_true,
    };

    let mut devices = Vec::new();
    let mut body_inserts = Vec::new();
    let mut tag_inserts = Vec::new();
    let mut docs0 = Some((body0, tags0));
    for (d, spec) in specs.iter().enumerate() {
        let peer = peer_id_for(&client_id(d), 0);
        // Device 0 keeps editing the documents it inserted; the others start from the insert.
        let (mut body, mut tags) = match docs0.take() {
            Some(docs) if d == 0 => docs,
            _ => (
                CrdtDoc::load(CrdtKind::Text, &body_bytes, peer).unwrap(),
                CrdtDoc::load(CrdtKind::List, &tags_bytes, peer).unwrap(),
            ),
        };
        let replica = replica_tag(&client_id(d));
        let (mut ms, mut counter) = (T0 + spec.start_ms, 0u16);
        let mut client_seq = if d == 0 { 1 } else { 0 };
        let mut uploads = Vec::new();
        for (k, o) in spec.ops.iter().enumerate() {
            if k > 0 {
                if o.dt_ms == 0 {
                    counter += 1;
                } else {
                    ms += o.dt_ms;
                    counter = 0;
                }
            }
            let true_hlc = hlc(ms, counter);
            let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
            let mut used: BTreeSet<&str> = BTreeSet::new();
            let slot = |c: &str| o.slots[COLUMNS.iter().position(|x| *x == c).unwrap()];
            for (i, c) in COLUMNS.iter().enumerate() {
                let Some(s) = o.slots[i] else { continue };
                match *c {
                    "body" => {
                        let word = INSERTS[s as usize % INSERTS.len()];
                        let Value::Text(cur) = body.value() else {
                            unreachable!()
                        };
                        let chars: Vec<char> = cur.chars().collect();
                        let at = (s as usize / 4) % (chars.len() + 1);
                        let new: String = chars[..at]
                            .iter()
                            .chain(word.chars().collect::<Vec<_>>().iter())
                            .chain(chars[at..].iter())
                            .collect();
                        let bytes = body.set_value(&Value::Text(new)).unwrap().unwrap();
                        body_inserts.push(word.to_string());
                        fields.insert("body", Value::Blob(bytes));
                    }
                    "tags" => {
                        let Value::Json(cur) = tags.value() else {
                            unreachable!()
                        };
                        let mut items: Vec<serde_json::Value> = serde_json::from_str(&cur).unwrap();
                        let elem = format!("d{d}e{k}");
                        let at = s as usize % (items.len() + 1);
                        items.insert(at, serde_json::Value::String(elem.clone()));
                        let json = serde_json::Value::Array(items).to_string();
                        let bytes = tags.set_value(&Value::Json(json)).unwrap().unwrap();
                        tag_inserts.push(elem);
                        fields.insert("tags", Value::Blob(bytes));
                    }
                    // A max_by write carries the column it is ranked by.
                    "lat" => {
                        if !used.contains("lat") && !used.contains("at") {
                            let at_seed = slot("at").unwrap_or(s);
                            fields.insert("lat", plain_value("lat", s));
                            fields.insert("at", plain_value("at", at_seed));
                            used.insert("lat");
                            used.insert("at");
                        }
                    }
                    "at" => {
                        if !used.contains("at") {
                            fields.insert("at", plain_value("at", s));
                            used.insert("at");
                        }
                    }
                    c => {
                        fields.insert(c, plain_value(c, s));
                    }
                }
            }
            if fields.is_empty() {
                fields.insert("status", Value::Text(WORDS[k % WORDS.len()].into()));
            }
            client_seq += 1;
            uploads.push(Upload {
                replica,
                op: Op {
                    client_seq,
                    tx: client_seq,
                    table: "shipments".into(),
                    row_id: "r1".into(),
                    kind: OpKind::Update,
                    fields: FieldValue::list(fields),
                    hlc: frame(true_hlc, offset(d)),
                    base_seq: 1,
                },
                claims: claims(d),
                offset_ms: offset(d),
                true_hlc,
            });
        }
        devices.push(uploads);
    }
    Built {
        insert,
        devices,
        body_inserts,
        tag_inserts,
    }
}

/// A delivery order: the insert first, then every device's uploads in device order,
/// interleaved at random, with resent duplicates of anything already sent.
fn deliver(built: &Built, seed: u64) -> Vec<&Upload> {
    let mut rng = SeededRng::new(seed);
    let mut next = vec![0usize; built.devices.len()];
    let mut sent: Vec<&Upload> = vec![&built.insert];
    let mut out: Vec<&Upload> = vec![&built.insert];
    loop {
        if rng.below(4) == 0 {
            out.push(sent[rng.below(sent.len() as u64) as usize]);
        }
        let open: Vec<usize> = (0..built.devices.len())
            .filter(|d| next[*d] < built.devices[*d].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let d = open[rng.below(open.len() as u64) as usize];
        let u = &built.devices[d][next[d]];
        next[d] += 1;
        sent.push(u);
        out.push(u);
    }
    for _ in 0..rng.below(3) {
        out.push(sent[rng.below(sent.len() as u64) as usize]);
    }
    out
}

fn run<'a>(table: &'a Table, custom: &'a CustomResolvers, order: &[&Upload]) -> Server<'a> {
    let mut s = Server::new(table, custom);
    for u in order {
        s.apply(u);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Expectations, computed from the scenario alone.

/// Each writing device's last write to `column`: `(value, upload)`.
fn last_writes<'b>(built: &'b Built, column: &str) -> Vec<(&'b Value, &'b Upload)> {
    built
        .devices
        .iter()
        .filter_map(|ops| {
            ops.iter().rev().find_map(|u| {
                u.op.fields
                    .iter()
                    .find(|f| f.column == column)
                    .map(|f| (&f.value, u))
            })
        })
        .collect()
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Integer(i) => *i as f64,
        Value::Real(r) => *r,
        Value::Null => f64::NEG_INFINITY,
        other => panic!("not a number: {other:?}"),
    }
}

/// What the column's rule compares first (larger wins); equal keys fall back to LWW.
fn rule_key(column: &str, value: &Value, u: &Upload) -> (f64, String) {
    match column {
        "temp" | "at" => (num(value), String::new()),
        // min: a number beats NULL, then the smaller number wins.
        "eta" => match value {
            Value::Null => (f64::NEG_INFINITY, String::new()),
            v => (-num(v), String::new()),
        },
        "stage" => {
            let pos = match value {
                Value::Text(s) => ORDER.iter().position(|o| o == s).map_or(-1.0, |p| p as f64),
                _ => -1.0,
            };
            (pos, String::new())
        }
        "approved" => (
            if u.claims.has("role", "manager") {
                1.0
            } else {
                0.0
            },
            String::new(),
        ),
        // max_by: the op's own `at` (every `lat` write carries it).
        "lat" => {
            let at =
                u.op.fields
                    .iter()
                    .find(|f| f.column == "at")
                    .map(|f| &f.value);
            (num(at.expect("lat writes carry at")), String::new())
        }
        "report" => {
            let (_, len, text) = longest_key(value);
            (len as f64, text)
        }
        _ => (0.0, String::new()),
    }
}

/// Every write to `column`, the insert's included.
fn all_writes<'b>(built: &'b Built, column: &str) -> Vec<(&'b Value, &'b Upload)> {
    std::iter::once(&built.insert)
        .chain(built.devices.iter().flatten())
        .filter_map(|u| {
            u.op.fields
                .iter()
                .find(|f| f.column == column)
                .map(|f| (&f.value, u))
        })
        .collect()
}

/// Columns whose rule judges every write.
const RULES: [&str; 6] = ["eta", "temp", "stage", "approved", "lat", "report"];

/// The value the column's policy must end with. A rule column: the rule's maximum over all
/// writes (the insert's included), ties broken by (true HLC, replica tag). Any other plain
/// column: the LWW maximum over the devices' last writes (a device's later write replaces its
/// own earlier one); the insert's value when nobody wrote it.
fn expected_winner(built: &Built, column: &str) -> Value {
    let candidates = if RULES.contains(&column) || column == "at" {
        all_writes(built, column)
    } else {
        last_writes(built, column)
    };
    let best = candidates.into_iter().max_by(|(va, ua), (vb, ub)| {
        let (ka, kb) = (rule_key(column, va, ua), rule_key(column, vb, ub));
        ka.0.partial_cmp(&kb.0)
            .unwrap()
            .then_with(|| ka.1.cmp(&kb.1))
            .then_with(|| (ua.true_hlc, ua.replica).cmp(&(ub.true_hlc, ub.replica)))
    });
    best.map_or_else(|| insert_value(column), |(v, _)| v.clone())
}

fn key(v: &Value) -> String {
    format!("{v:?}")
}

fn materialized(s: &Server<'_>, column: &str, kind: CrdtKind) -> Value {
    match s.value(column) {
        Value::Blob(b) => crdt::materialize(kind, &b).unwrap(),
        other => panic!("{column} holds {other:?}, not CRDT bytes"),
    }
}

/// The visible row: plain values as stored, CRDT fields materialized; the real counter is left
/// out (float sums depend on order, so it is compared within 1e-9).
fn visible(s: &Server<'_>) -> BTreeMap<String, String> {
    let row = s.row.as_ref().unwrap();
    let mut out = BTreeMap::new();
    out.insert("<deleted>".into(), row.deleted.to_string());
    for c in row.fields.keys() {
        let v = match c.as_str() {
            "body" => key(&materialized(s, c, CrdtKind::Text)),
            "tags" => key(&materialized(s, c, CrdtKind::List)),
            // Float sums depend on order: compared within 1e-9 by the callers.
            "weight" => continue,
            _ => key(&s.value(c)),
        };
        out.insert(c.clone(), v);
    }
    out
}

fn sum_increments(built: &Built, column: &str) -> f64 {
    built
        .devices
        .iter()
        .flatten()
        .flat_map(|u| u.op.fields.iter())
        .filter(|f| f.column == column)
        .map(|f| num(&f.value))
        .sum()
}

/// 64 cases per property (about a second in release); `PROPTEST_CASES=N` runs more.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    ProptestConfig::with_cases(cases)
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    /// A: two delivery orders (each keeping every device's own order) with random duplicates
    /// end with the same row: commutative, idempotent, convergent.
    #[test]
    fn every_order_with_duplicates_converges(specs in scenario(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let schema = schema();
        let table = schema.table("shipments").unwrap();
        let custom = resolvers();
        let built = build(&specs, false);
        let a = run(table, &custom, &deliver(&built, s1));
        let b = run(table, &custom, &deliver(&built, s2));
        prop_assert_eq!(visible(&a), visible(&b));
        let (wa, wb) = (num(&a.value("weight")), num(&b.value("weight")));
        prop_assert!((wa - wb).abs() < 1e-9, "weight {} vs {}", wa, wb);
        prop_assert_eq!(a.value("scans"), b.value("scans"));
    }

    /// B: nothing is lost. Every device's last value of a plain column is the final value or
    /// a logged loser, and nothing else appears; counters add every increment exactly once
    /// despite duplicates; CRDT fields keep every insertion.
    ///
    /// The concurrent values are each writing device's *last* value: the insert's value was
    /// seen by every writer (base 1), and a device's earlier value was replaced by its own
    /// later write, so neither is a conflict and neither need be logged (either may be, when
    /// a concurrent write overwrote it before it was replaced).
    #[test]
    fn nothing_is_lost(specs in scenario(), seed in any::<u64>()) {
        let schema = schema();
        let table = schema.table("shipments").unwrap();
        let custom = resolvers();
        let built = build(&specs, false);
        let s = run(table, &custom, &deliver(&built, seed));

        for c in PLAIN {
            let required: BTreeSet<String> = match last_writes(&built, c) {
                w if w.is_empty() => [key(&insert_value(c))].into(),
                w => w.iter().map(|(v, _)| key(v)).collect(),
            };
            let mut allowed: BTreeSet<String> = built.devices.iter().flatten()
                .flat_map(|u| u.op.fields.iter())
                .filter(|f| f.column == c)
                .map(|f| key(&f.value))
                .collect();
            allowed.insert(key(&insert_value(c)));
            let final_value = key(&s.value(c));
            let records = || s.conflicts.iter().filter(|r| r.column == c);
            let mut kept: BTreeSet<String> = records().map(|r| key(&r.loser)).collect();
            kept.insert(final_value.clone());
            let mentioned: BTreeSet<String> = records()
                .flat_map(|r| [key(&r.loser), key(&r.winner)])
                .chain([final_value.clone()])
                .collect();
            // A rule may keep any write (an earlier one of a device, or the insert's).
            let rule = RULES.contains(&c) || c == "at";
            prop_assert!(
                required.contains(&final_value) || (rule && allowed.contains(&final_value)),
                "{}: final {} not among {:?}", c, final_value, required
            );
            prop_assert!(required.is_subset(&kept), "{}: {:?} not all final or a logged loser: {:?}", c, required, kept);
            prop_assert!(mentioned.is_subset(&allowed), "{}: logged {:?}, never written {:?}", c, mentioned, allowed);
        }

        // Counters: the insert's value plus every increment, each once.
        let scans = 10 + sum_increments(&built, "scans") as i64;
        prop_assert_eq!(s.value("scans"), Value::Integer(scans));
        let weight = 1.5 + sum_increments(&built, "weight");
        prop_assert!((num(&s.value("weight")) - weight).abs() < 1e-9);

        // Text: only insertions were made, so every inserted character is there.
        let Value::Text(body) = materialized(&s, "body", CrdtKind::Text) else { unreachable!() };
        let mut want: Vec<char> = BASE_TEXT.chars().chain(built.body_inserts.iter().flat_map(|w| w.chars())).collect();
        let mut got: Vec<char> = body.chars().collect();
        want.sort_unstable();
        got.sort_unstable();
        prop_assert_eq!(got, want);
        // List: every inserted element, exactly once.
        let Value::Json(tags) = materialized(&s, "tags", CrdtKind::List) else { unreachable!() };
        let mut got: Vec<String> = serde_json::from_str(&tags).unwrap();
        let mut want: Vec<String> = built.tag_inserts.clone();
        want.push("b0".into());
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);

        // Merged columns never conflict.
        for c in ["scans", "weight", "body", "tags"] {
            prop_assert!(s.conflicts.iter().all(|r| r.column != c), "{} logged a conflict", c);
        }
    }

    /// C: min/max/order/prefer/max_by/custom end with the rule's maximum over all writes,
    /// lww/merge/manual with the LWW maximum of the devices' last writes — computed
    /// independently here.
    #[test]
    fn rules_pick_their_maximum(specs in scenario(), seed in any::<u64>()) {
        let schema = schema();
        let table = schema.table("shipments").unwrap();
        let custom = resolvers();
        let built = build(&specs, false);
        let s = run(table, &custom, &deliver(&built, seed));
        for c in PLAIN {
            prop_assert_eq!(s.value(c), expected_winner(&built, c), "column {}", c);
        }
    }

    /// D: shifting every device clock by up to ±1 h, with the server correcting by the offset
    /// it measured, changes nothing: same row, same conflict records (winners included).
    #[test]
    fn corrected_clock_skew_changes_nothing(specs in scenario(), seed in any::<u64>()) {
        let schema = schema();
        let table = schema.table("shipments").unwrap();
        let custom = resolvers();
        let exact = build(&specs, false);
        let skewed = build(&specs, true);
        let a = run(table, &custom, &deliver(&exact, seed));
        let b = run(table, &custom, &deliver(&skewed, seed));
        prop_assert_eq!(&a.row, &b.row);
        prop_assert_eq!(&a.conflicts, &b.conflicts);
        prop_assert_eq!(a.head, b.head);
    }

    /// E: the same op list applied twice to fresh servers gives the same result, bit for bit;
    /// `manual` keeps the LWW winner provisionally and logs open (manual) conflicts.
    #[test]
    fn deterministic_and_manual_is_provisional_lww(specs in scenario(), seed in any::<u64>()) {
        let schema = schema();
        let table = schema.table("shipments").unwrap();
        let custom = resolvers();
        let built = build(&specs, false);
        let order = deliver(&built, seed);
        let a = run(table, &custom, &order);
        let b = run(table, &custom, &order);
        prop_assert_eq!(&a.row, &b.row);
        prop_assert_eq!(&a.conflicts, &b.conflicts);

        let lww_winner = last_writes(&built, "note")
            .into_iter()
            .max_by_key(|(_, u)| (u.true_hlc, u.replica))
            .map_or_else(|| insert_value("note"), |(v, _)| v.clone());
        prop_assert_eq!(a.value("note"), lww_winner);
        let records: Vec<&ConflictRecord> = a.conflicts.iter().filter(|r| r.column == "note").collect();
        prop_assert!(records.iter().all(|r| r.manual && r.reason == "manual"));
        prop_assert!(a.conflicts.iter().filter(|r| r.column != "note").all(|r| !r.manual));
        if last_writes(&built, "note").len() >= 2 {
            prop_assert!(!records.is_empty(), "concurrent manual writes opened no conflict");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain tests.

/// Two concurrent single-column updates (base 1) of the shipments row, by `device-1` at true
/// time `t1` and `device-2` at true time `t2`, with `device-2`'s clock `skew2` ahead.
fn two_writers(column: &str, v1: Value, t1: u64, v2: Value, t2: u64, skew2: i64) -> [Upload; 3] {
    let specs = vec![DeviceSpec {
        manager: false,
        offset_ms: 0,
        start_ms: 1,
        ops: vec![],
    }];
    let insert = build(&specs, false).insert;
    let update = |d: usize, value: Value, t: u64, off: i64| Upload {
        replica: replica_tag(&client_id(d)),
        op: Op {
            client_seq: 1,
            tx: 1,
            table: "shipments".into(),
            row_id: "r1".into(),
            kind: OpKind::Update,
            fields: vec![FieldValue {
                column: column.into(),
                value,
            }],
            hlc: Hlc::from_ms(t.wrapping_add_signed(off)),
            base_seq: 1,
        },
        claims: ClaimSet::new(),
        offset_ms: off,
        true_hlc: Hlc::from_ms(t),
    };
    [insert, update(1, v1, t1, 0), update(2, v2, t2, skew2)]
}

#[test]
fn without_correction_a_clock_an_hour_ahead_wins_a_conflict_it_should_lose() {
    let schema = schema();
    let table = schema.table("shipments").unwrap();
    let custom = resolvers();
    // device-2 wrote first (true T0+50), device-1 later (true T0+100): device-1 must win.
    let [insert, later, earlier] = two_writers(
        "status",
        Value::Text("later".into()),
        T0 + 100,
        Value::Text("earlier".into()),
        T0 + 50,
        HOUR_MS,
    );
    for order in [[&insert, &later, &earlier], [&insert, &earlier, &later]] {
        // Corrected by the measured offset: the later write wins.
        let mut s = Server::new(table, &custom);
        for u in order {
            s.apply(u);
        }
        assert_eq!(s.value("status"), Value::Text("later".into()));
        // Trusting device clocks (offset 0 while device-2 runs an hour fast): it wins.
        let mut s = Server::new(table, &custom);
        for u in order {
            s.apply_with_offset(u, 0);
        }
        assert_eq!(s.value("status"), Value::Text("earlier".into()));
    }
}

#[test]
fn manual_keeps_the_lww_winner_provisionally_and_logs_both() {
    let schema = schema();
    let table = schema.table("shipments").unwrap();
    let custom = resolvers();
    let [insert, a, b] = two_writers(
        "note",
        Value::Text("from a".into()),
        T0 + 20,
        Value::Text("from b".into()),
        T0 + 10,
        0,
    );
    for order in [[&insert, &a, &b], [&insert, &b, &a]] {
        let mut s = Server::new(table, &custom);
        for u in order {
            s.apply(u);
        }
        assert_eq!(s.value("note"), Value::Text("from a".into()));
        assert_eq!(s.conflicts.len(), 1);
        let r = &s.conflicts[0];
        assert!(r.manual);
        assert_eq!(r.reason, "manual");
        assert_eq!(r.winner, Value::Text("from a".into()));
        assert_eq!(r.loser, Value::Text("from b".into()));
        assert_eq!(r.winner_version.replica, a.replica);
    }
}

// Delete modes: an insert (seq 1), then a concurrent update and delete (both base 1).

fn delete_schema(mode: &str) -> Schema {
    Schema::from_toml_str(&format!(
        "version = 1\n[tables.t]\non_delete_conflict = \"{mode}\"\n[tables.t.columns]\n\
         x = {{ type = \"integer\", policy = \"lww\" }}\ny = \"text\"\n"
    ))
    .unwrap()
}

fn row_op(
    device: usize,
    kind: OpKind,
    fields: Vec<(&str, Value)>,
    t: u64,
    base_seq: u64,
) -> Upload {
    Upload {
        replica: replica_tag(&client_id(device)),
        op: Op {
            client_seq: 1,
            tx: 1,
            table: "t".into(),
            row_id: "r".into(),
            kind,
            fields: FieldValue::list(fields),
            hlc: Hlc::from_ms(t),
            base_seq,
        },
        claims: ClaimSet::new(),
        offset_ms: 0,
        true_hlc: Hlc::from_ms(t),
    }
}

/// `(insert, update x = 5, delete)`.
fn delete_vs_update() -> (Upload, Upload, Upload) {
    (
        row_op(
            0,
            OpKind::Insert,
            vec![("x", Value::Integer(1)), ("y", Value::Text("keep".into()))],
            T0,
            0,
        ),
        row_op(
            1,
            OpKind::Update,
            vec![("x", Value::Integer(5))],
            T0 + 20,
            1,
        ),
        row_op(2, OpKind::Delete, vec![], T0 + 10, 1),
    )
}

fn run_delete_mode(mode: &str, update_first: bool) -> (ServerRow, Vec<ConflictRecord>) {
    let schema = delete_schema(mode);
    let custom = CustomResolvers::new();
    let (ins, upd, del) = delete_vs_update();
    let order = if update_first {
        [&ins, &upd, &del]
    } else {
        [&ins, &del, &upd]
    };
    let mut s = Server::new(schema.table("t").unwrap(), &custom);
    for u in order {
        s.apply(u);
        // Duplicates change nothing.
        s.apply(u);
    }
    (s.row.unwrap(), s.conflicts)
}

fn json(v: &Value) -> serde_json::Value {
    v.to_json()
}

#[test]
fn delete_wins_both_orders() {
    for update_first in [true, false] {
        let (row, conflicts) = run_delete_mode("delete_wins", update_first);
        assert!(row.deleted, "update_first={update_first}");
        assert!(
            row.fields.is_empty(),
            "a delete_wins tombstone keeps no fields"
        );
        assert_eq!(
            conflicts.len(),
            1,
            "update_first={update_first}: {conflicts:?}"
        );
        let r = &conflicts[0];
        assert_eq!(r.column, "x");
        assert_eq!(r.loser, Value::Integer(5));
        assert_eq!(r.winner, Value::Null);
        assert_eq!(r.reason, "deleted");
        assert!(!r.manual);
        assert_eq!(r.loser_version.replica, replica_tag(&client_id(1)));
        assert_eq!(r.winner_version.replica, replica_tag(&client_id(2)));
    }
}

#[test]
fn update_wins_both_orders() {
    for update_first in [true, false] {
        let (row, conflicts) = run_delete_mode("update_wins", update_first);
        assert!(!row.deleted, "update_first={update_first}");
        assert_eq!(row.fields["x"].value, Value::Integer(5));
        assert_eq!(
            row.fields["y"].value,
            Value::Text("keep".into()),
            "fields from before the delete"
        );
        assert_eq!(
            conflicts.len(),
            1,
            "update_first={update_first}: {conflicts:?}"
        );
        let r = &conflicts[0];
        assert_eq!(r.column, "*");
        assert_eq!(r.reason, "update_wins");
        assert_eq!(r.loser, Value::Null, "the delete lost");
        assert_eq!(r.loser_version.replica, replica_tag(&client_id(2)));
        assert!(!r.manual);
        if !update_first {
            // Resurrected: devices dropped the fields with the tombstone, so all are re-sent.
            assert!(
                row.fields.values().all(|f| f.version.seq == row.seq),
                "{row:?}"
            );
        }
    }
}

#[test]
fn manual_delete_conflict_both_orders() {
    for update_first in [true, false] {
        let (row, conflicts) = run_delete_mode("manual", update_first);
        assert!(
            row.deleted,
            "provisionally deleted (update_first={update_first})"
        );
        assert_eq!(
            conflicts.len(),
            1,
            "update_first={update_first}: {conflicts:?}"
        );
        let r = &conflicts[0];
        assert_eq!(r.column, "*");
        assert!(r.manual);
        assert_eq!(r.reason, "deleted");
        assert_eq!(r.winner, Value::Null);
        assert_eq!(json(&r.loser), serde_json::json!({"x": 5, "y": "keep"}));
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: defects these tests found in resolution, now fixed.

fn apply_all(table: &Table, custom: &CustomResolvers, order: &[&Upload]) -> Value {
    let mut s = Server::new(table, custom);
    for u in order {
        s.apply(u);
    }
    s.value(&order[1].op.fields[0].column)
}

#[test]
fn a_devices_second_write_under_max_is_order_independent() {
    let schema = schema();
    let table = schema.table("shipments").unwrap();
    let custom = resolvers();
    let insert = build(
        &[DeviceSpec {
            manager: false,
            offset_ms: 0,
            start_ms: 1,
            ops: vec![],
        }],
        false,
    )
    .insert;
    let temp = |d: usize, seq: u64, v: f64, t: u64| {
        let mut u = row_op(d, OpKind::Update, vec![("temp", Value::Real(v))], t, 1);
        u.op.table = "shipments".into();
        u.op.row_id = "r1".into();
        u.op.client_seq = seq;
        u
    };
    // device-1 sets temp 5 then (later, same device) 1; device-2 concurrently sets 3.
    // max(5, 1, 3) = 5 in every arrival order.
    let (a1, a2, b) = (
        temp(1, 1, 5.0, T0 + 10),
        temp(1, 2, 1.0, T0 + 30),
        temp(2, 1, 3.0, T0 + 20),
    );
    let one = apply_all(table, &custom, &[&insert, &a1, &a2, &b]);
    let two = apply_all(table, &custom, &[&insert, &a1, &b, &a2]);
    // A rule judges every write: device-1's own later 1 does not undo its 5.
    assert_eq!(one, Value::Real(5.0));
    assert_eq!(
        two, one,
        "max over 5, 1 and 3 must not depend on arrival order"
    );
}

#[test]
fn update_wins_record_shows_the_winning_row_in_both_orders() {
    for update_first in [true, false] {
        let (row, conflicts) = run_delete_mode("update_wins", update_first);
        assert_eq!(row.fields["x"].value, Value::Integer(5));
        assert_eq!(
            json(&conflicts[0].winner),
            serde_json::json!({"x": 5, "y": "keep"}),
            "update_first={update_first}"
        );
    }
}

#[test]
fn a_delete_conflict_names_the_device_whose_increment_it_concerns() {
    for mode in ["delete_wins", "update_wins", "manual"] {
        let schema = Schema::from_toml_str(&format!(
            "version = 1\n[tables.t]\non_delete_conflict = \"{mode}\"\n[tables.t.columns]\n\
             n = {{ type = \"integer\", policy = \"counter\" }}\ny = \"text\"\n"
        ))
        .unwrap();
        let custom = CustomResolvers::new();
        let ins = row_op(
            0,
            OpKind::Insert,
            vec![("n", Value::Integer(1)), ("y", Value::Text("keep".into()))],
            T0,
            0,
        );
        let upd = row_op(
            1,
            OpKind::Update,
            vec![("n", Value::Integer(5))],
            T0 + 20,
            1,
        );
        let del = row_op(2, OpKind::Delete, vec![], T0 + 10, 1);
        let mut s = Server::new(schema.table("t").unwrap(), &custom);
        for u in [&ins, &upd, &del] {
            s.apply(u);
        }
        let r = &s.conflicts[0];
        let update_version = if mode == "update_wins" {
            r.winner_version
        } else {
            r.loser_version
        };
        assert_eq!(update_version.replica, upd.replica, "{mode}: {r:?}");
    }
}

#[test]
fn a_devices_own_increment_does_not_conflict_with_its_own_delete() {
    for mode in ["delete_wins", "update_wins", "manual"] {
        let schema = Schema::from_toml_str(&format!(
            "version = 1\n[tables.t]\non_delete_conflict = \"{mode}\"\n[tables.t.columns]\n\
             n = {{ type = \"integer\", policy = \"counter\" }}\n"
        ))
        .unwrap();
        let custom = CustomResolvers::new();
        let ins = row_op(0, OpKind::Insert, vec![("n", Value::Integer(1))], T0, 0);
        // device-1, offline since seq 1: increments, then deletes the row.
        let inc = row_op(
            1,
            OpKind::Update,
            vec![("n", Value::Integer(5))],
            T0 + 10,
            1,
        );
        let mut del = row_op(1, OpKind::Delete, vec![], T0 + 20, 1);
        del.op.client_seq = 2;
        let mut s = Server::new(schema.table("t").unwrap(), &custom);
        for u in [&ins, &inc, &del] {
            s.apply(u);
        }
        assert!(
            s.row.as_ref().unwrap().deleted,
            "{mode}: the device's own delete must apply"
        );
        assert!(s.conflicts.is_empty(), "{mode}: {:?}", s.conflicts);
    }
}
