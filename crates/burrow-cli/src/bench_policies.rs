//! `burrow bench policies`: what each conflict policy costs — bytes per captured op on the
//! wire (a batch of 100 ops, through a real client and server on loopback) and the server's
//! merge throughput (concurrent ops resolved and committed per second by the store).

use crate::bench::{fixture_for, median};
use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use burrow_core::crdt::{CrdtDoc, CrdtKind};
use burrow_core::{ClaimSet, FieldValue, Hlc, Op, OpKind, Schema, Value};
use burrow_server::store::{IngestOp, IngestRequest, IngestTx, ResolveEnv, ServerStore};
use std::collections::BTreeMap;
use std::time::Instant;

/// One column per measured policy.
pub const POLICY_SCHEMA: &str = r#"
version = 1
[tables.items.columns]
status = { type = "text", policy = "lww" }
label = "text"
qty = { type = "integer", policy = "counter" }
notes = { type = "text", policy = "text" }
checklist = { type = "json", policy = "list" }
high = { type = "integer", policy = "max" }
phase = { type = "text", policy = "order", order = ["created", "loaded", "in_transit", "delivered"] }
approved = { type = "bool", policy = "prefer", claim = "role", value = "manager" }
pick = { type = "text", policy = "manual" }
"#;

/// A measured policy: its column and the SQL of the i-th small edit.
struct Case {
    policy: &'static str,
    column: &'static str,
    edit: fn(usize) -> String,
}

const CASES: [Case; 9] = [
    Case {
        policy: "lww (field set)",
        column: "status",
        edit: |i| format!("status = 'done-{i}'"),
    },
    Case {
        policy: "merge (field set)",
        column: "label",
        edit: |i| format!("label = 'L{i}'"),
    },
    Case {
        policy: "counter (increment)",
        column: "qty",
        edit: |_| "qty = qty + 1".into(),
    },
    Case {
        policy: "text (one-character edit)",
        column: "notes",
        edit: |_| "notes = substr(notes, 1, 100) || 'x' || substr(notes, 101)".into(),
    },
    Case {
        policy: "list (append one item)",
        column: "checklist",
        edit: |i| format!("checklist = json_insert(checklist, '$[#]', 'item{i}')"),
    },
    Case {
        policy: "max",
        column: "high",
        edit: |i| format!("high = {}", 1000 + i),
    },
    Case {
        policy: "order",
        column: "phase",
        edit: |_| "phase = 'loaded'".into(),
    },
    Case {
        policy: "prefer",
        column: "approved",
        edit: |_| "approved = 1".into(),
    },
    Case {
        policy: "manual",
        column: "pick",
        edit: |i| format!("pick = 'p{i}'"),
    },
];

const NOTE: &str = "Pump room B2: check the pressure valve, replace the gasket if worn, and log the \
                    reading before and after. Access code at the front desk; the key is in box 4.";

/// Bytes on the wire per op for a batch of `batch` single-op transactions of each policy.
async fn bytes_per_op(batch: usize) -> Result<Vec<(&'static str, f64)>> {
    let f = fixture_for(POLICY_SCHEMA).await?;
    let transport = HttpTransport::new(&f.server.url(), &f.token)?;
    let client = Client::open(f.dir.join("device.db"), &f.schema)?;
    client.write(|tx| {
        for i in 0..batch {
            tx.execute(
                "INSERT INTO items(id, status, label, qty, notes, checklist, high, phase, approved, pick)
                 VALUES (?1, 'new', 'L', 0, ?2, '[\"a\",\"b\"]', 0, 'created', 0, 'p')",
                rusqlite::params![format!("item-{i:04}"), NOTE],
            )?;
        }
        Ok(())
    })?;
    client.sync(&transport).await?;
    // The cost of a request that carries no op (header and cursor), subtracted below.
    let empty = client.sync(&transport).await?.bytes_up as f64;
    let mut out = Vec::new();
    for case in &CASES {
        for i in 0..batch {
            let sql = format!(
                "UPDATE items SET {} WHERE id = 'item-{i:04}'",
                (case.edit)(i)
            );
            client.execute(&sql)?;
        }
        anyhow::ensure!(
            client.status()?.pending_ops == batch as u64,
            "{}: expected {batch} pending ops",
            case.policy
        );
        let r = client.sync(&transport).await?;
        anyhow::ensure!(r.ops_acked == batch as u64, "{}: {r:?}", case.policy);
        out.push((case.policy, (r.bytes_up as f64 - empty) / batch as f64));
    }
    f.server.shutdown().await;
    Ok(out)
}

fn op(seq: u64, row: usize, column: &str, value: Value, hlc: u64, kind: OpKind) -> IngestOp {
    IngestOp {
        client_seq: seq,
        payload_hash: seq,
        op: Ok(Op {
            client_seq: seq,
            tx: seq,
            table: "items".into(),
            row_id: format!("item-{row:05}"),
            kind,
            fields: vec![FieldValue {
                column: column.into(),
                value,
            }],
            hlc: Hlc::from_ms(hlc),
            base_seq: 0,
        }),
    }
}

fn request(client: &str, ops: Vec<IngestOp>, env: &ResolveEnv, now_ms: u64) -> IngestRequest {
    IngestRequest {
        user_id: client.into(),
        client_id: client.into(),
        txs: ops
            .into_iter()
            .map(|o| IngestTx {
                tx_id: o.client_seq,
                ops: vec![o],
                more_parts: false,
            })
            .collect(),
        now_ms,
        claims: ClaimSet::new().with("role", "driver"),
        clock_offset_ms: 0,
        env: env.clone(),
    }
}

/// Server merge throughput of one policy: `ops` writes over `rows` rows from two devices
/// taking turns by request (one write per row per request), so every write is concurrent
/// with the value it meets; each op is its own local transaction. Returns ops per second.
async fn merge_throughput(case: &Case, rows: usize, ops: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_toml_str(POLICY_SCHEMA)?;
    let env = ResolveEnv::new(schema);
    let store = burrow_server::SqliteServerStore::open(&dir.path().join("server.db"))?;
    let now = 1_800_000_000_000u64;
    let base_value = |kind: &str| -> Result<Value> {
        Ok(match kind {
            "qty" | "high" => Value::Integer(0),
            "approved" => Value::Bool(false),
            "phase" => Value::Text("created".into()),
            "notes" | "checklist" => {
                let k = if kind == "notes" {
                    CrdtKind::Text
                } else {
                    CrdtKind::List
                };
                let mut d = CrdtDoc::new(k, 1)?;
                let v = if kind == "notes" {
                    Value::Text(NOTE.into())
                } else {
                    Value::Json("[\"a\"]".into())
                };
                Value::Blob(d.set_value(&v)?.context("initial update")?)
            }
            _ => Value::Text("first".into()),
        })
    };
    // Device A creates every row (its value is what B's writes are concurrent with).
    let mut seed = Vec::new();
    for r in 0..rows {
        seed.push(op(
            r as u64 + 1,
            r,
            case.column,
            base_value(case.column)?,
            now - 10_000,
            OpKind::Insert,
        ));
    }
    for chunk in seed.chunks(1000) {
        store
            .ingest(request("device-a", chunk.to_vec(), &env, now))
            .await?;
    }
    // Devices B and C take turns by request (1,000 writes, one per row): every write is
    // concurrent with the other device's value of its field. Built before timing (CRDT
    // updates from each device's own documents).
    let mut docs: BTreeMap<(usize, usize), CrdtDoc> = BTreeMap::new();
    let mut requests: Vec<(&str, Vec<IngestOp>)> = Vec::new();
    for i in 0..ops {
        let r = i % rows;
        let turn = (i / rows) % 2;
        if i % rows == 0 || requests.is_empty() {
            requests.push((["device-b", "device-c"][turn], Vec::new()));
        }
        let value = match case.column {
            "qty" => Value::Integer(1),
            "high" => Value::Integer(i as i64),
            "approved" => Value::Bool(i % 2 == 0),
            "phase" => Value::Text(["loaded", "in_transit", "delivered"][i % 3].into()),
            "notes" | "checklist" => {
                let kind = if case.column == "notes" {
                    CrdtKind::Text
                } else {
                    CrdtKind::List
                };
                let doc = match docs.entry((turn, r)) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let Value::Blob(b) = base_value(case.column)? else {
                            anyhow::bail!("no base document");
                        };
                        e.insert(CrdtDoc::load(kind, &b, 2 + turn as u64)?)
                    }
                };
                let next = match doc.value() {
                    Value::Text(t) => Value::Text(format!("{t}x")),
                    Value::Json(j) => {
                        let mut items: Vec<serde_json::Value> = serde_json::from_str(&j)?;
                        items.push(serde_json::json!(format!("i{i}")));
                        Value::Json(serde_json::Value::Array(items).to_string())
                    }
                    _ => anyhow::bail!("unexpected document value"),
                };
                Value::Blob(doc.set_value(&next)?.context("an edit")?)
            }
            _ => Value::Text(format!("b-{i}")),
        };
        let w = op(
            i as u64 + 1,
            r,
            case.column,
            value,
            now - 5_000 + i as u64,
            OpKind::Update,
        );
        if let Some((_, batch)) = requests.last_mut() {
            batch.push(w);
        }
    }
    let t = Instant::now();
    for (device, batch) in requests {
        store.ingest(request(device, batch, &env, now)).await?;
    }
    Ok(ops as f64 / t.elapsed().as_secs_f64())
}

/// Runs the benchmark: prints a table (or JSON) of bytes per op and merge throughput.
pub async fn run(batch: usize, rows: usize, ops: usize, reps: usize, json: bool) -> Result<()> {
    let mut bytes: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..reps {
        for (p, b) in bytes_per_op(batch).await? {
            bytes.entry(p).or_default().push(b);
        }
        for case in &CASES {
            rates
                .entry(case.policy)
                .or_default()
                .push(merge_throughput(case, rows, ops).await?);
        }
    }
    let results: Vec<serde_json::Value> = CASES
        .iter()
        .map(|c| {
            serde_json::json!({
                "policy": c.policy,
                "bytes_per_op_median": median(bytes.get(c.policy).cloned().unwrap_or_default()),
                "merge_ops_per_second_median": median(rates.get(c.policy).cloned().unwrap_or_default()),
            })
        })
        .collect();
    if json {
        let out = serde_json::json!({
            "bench": "policies",
            "batch": batch,
            "merge_rows": rows,
            "merge_ops": ops,
            "reps": reps,
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<28} {:>14} {:>22}",
            "policy",
            format!("B/op (of {batch})"),
            "server merge ops/s"
        );
        for r in &results {
            println!(
                "{:<28} {:>14.1} {:>22.0}",
                r["policy"].as_str().unwrap_or(""),
                r["bytes_per_op_median"].as_f64().unwrap_or(f64::NAN),
                r["merge_ops_per_second_median"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            );
        }
        println!(
            "(medians of {reps}; merge: {ops} writes over {rows} rows by two devices taking turns, every write concurrent with the value it meets)"
        );
    }
    Ok(())
}
