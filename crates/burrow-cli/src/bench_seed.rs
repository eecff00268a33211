//! Synthetic shipments for the benchmarks, and a fast way to put many of them on a server:
//! straight into the server's store (as uploads would land) before the server starts, instead
//! of capturing them in a client and uploading them (which `initial-sync --rows 1000000` would
//! spend minutes on).

use crate::bench::Fixture;
use crate::demo::DELIVERY_SCHEMA;
use anyhow::Result;
use burrow_core::{ClaimSet, FieldValue, Hlc, Op, OpKind, Schema, Value};
use burrow_server::ServerConfig;
use burrow_server::store::{IngestOp, IngestRequest, IngestTx, ResolveEnv, ServerStore};
use rusqlite::Connection;
use std::collections::BTreeMap;

/// The insert the benchmarks use: one shipment of about 200 bytes.
const INSERT_SQL: &str = "INSERT INTO shipments(id, route_id, status, address, recipient, \
     weight_kg, pieces, fragile, notes) VALUES (?1, ?2, 'loaded', ?3, ?4, ?5, ?6, ?7, ?8)";

/// Ops per local transaction when seeding the store.
const STORE_TX_OPS: usize = 10_000;

/// The id of the `i`-th synthetic shipment (UUIDv7-like: time-ordered).
pub(crate) fn shipment_id(i: u64) -> String {
    format!(
        "0193a1b2-{:04x}-7{:03x}-8{:03x}-{:012x}",
        (i >> 24) & 0xffff,
        (i >> 12) & 0xfff,
        i & 0xfff,
        i * 7919
    )
}

/// The columns of the `i`-th synthetic shipment except `id` and `status` (`'loaded'`).
fn shipment_fields(i: u64) -> [(&'static str, Value); 7] {
    [
        ("route_id", Value::Text(format!("route-{:04}", i % 500))),
        (
            "address",
            Value::Text(format!(
                "{} Harbour Road, Unit {}, 4021 Portsmouth",
                1 + i % 997,
                i % 40
            )),
        ),
        ("recipient", Value::Text(format!("Customer {i:06}"))),
        ("weight_kg", Value::Real(1.0 + (i % 300) as f64 / 10.0)),
        ("pieces", Value::Integer((1 + i % 5) as i64)),
        ("fragile", Value::Bool(i % 2 == 1)),
        (
            "notes",
            Value::Text(format!("Leave with neighbour at no. {}", i % 50)),
        ),
    ]
}

/// `v` as SQLite stores it (a bool as 0 or 1).
fn sql(v: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Text(t) => S::Text(t),
        Value::Real(x) => S::Real(x),
        Value::Integer(x) => S::Integer(x),
        Value::Bool(b) => S::Integer(i64::from(b)),
        _ => S::Null,
    }
}

/// Inserts shipments `start..start + n` through `conn` (inside the caller's transaction).
pub(crate) fn insert_shipments(conn: &Connection, start: u64, n: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(INSERT_SQL)?;
    for i in start..start + n {
        let [route, address, recipient, weight, pieces, fragile, notes] =
            shipment_fields(i).map(|(_, v)| sql(v));
        stmt.execute(rusqlite::params![
            shipment_id(i),
            route,
            address,
            recipient,
            weight,
            pieces,
            fragile,
            notes
        ])?;
    }
    Ok(())
}

/// A [`Fixture`] (delivery schema) whose server holds `rows` shipments, written into the
/// store before the server starts, in local transactions of 10,000 inserts from one device.
pub(crate) async fn store_seeded_fixture(rows: u64) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    {
        let store =
            burrow_server::store::SqliteServerStore::open(&data.join(burrow_server::DB_FILE))?;
        let env = ResolveEnv::new(schema.clone());
        let mut seq = 0u64;
        let mut next = 0u64;
        let mut tx_id = 0u64;
        while next < rows {
            let n = (STORE_TX_OPS as u64).min(rows - next);
            tx_id += 1;
            let ops = (next..next + n)
                .map(|i| {
                    seq += 1;
                    let mut fields = vec![FieldValue {
                        column: "status".into(),
                        value: Value::Text("loaded".into()),
                    }];
                    fields.extend(FieldValue::list(shipment_fields(i)));
                    IngestOp {
                        client_seq: seq,
                        payload_hash: seq,
                        op: Ok(Op {
                            client_seq: seq,
                            tx: tx_id,
                            table: "shipments".into(),
                            row_id: shipment_id(i),
                            kind: OpKind::Insert,
                            fields,
                            hlc: Hlc::from_ms(now_ms),
                            base_seq: 0,
                        }),
                    }
                })
                .collect();
            store
                .ingest(IngestRequest {
                    user_id: "bench".into(),
                    client_id: "bench-seeder".into(),
                    txs: vec![IngestTx {
                        tx_id,
                        ops,
                        more_parts: false,
                    }],
                    now_ms,
                    claims: ClaimSet::new(),
                    clock_offset_ms: 0,
                    env: env.clone(),
                })
                .await?;
            next += n;
        }
    }
    let mut config = ServerConfig::new(data, schema.clone());
    config.limits.requests_per_second_per_user = 0.0;
    config.secret = Some(b"bench".to_vec());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    let token =
        burrow_server::auth::mint(b"bench", "bench", BTreeMap::new(), now_ms / 1000, 86_400)?;
    Ok(Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        server,
        token,
        schema,
    })
}

/// The size of the JSON array of every shipment of the database at `path` (what
/// `serde_json::to_vec` of `SELECT … FROM shipments` as objects gives), computed row by row
/// so a million rows never sit in memory at once.
pub(crate) fn raw_json_bytes_of(path: &std::path::Path) -> Result<u64> {
    let conn = Connection::open(path)?;
    let mut stmt = conn.prepare(
        "SELECT id, route_id, status, address, recipient, weight_kg, pieces, fragile, notes \
         FROM shipments",
    )?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt.query([])?;
    let (mut total, mut n) = (2u64, 0u64);
    while let Some(r) = rows.next()? {
        let mut obj = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            obj.insert(
                name.clone(),
                burrow_client::sql_value::sql_to_json(r.get_ref(i)?),
            );
        }
        total += serde_json::to_vec(&obj)?.len() as u64;
        n += 1;
    }
    // Commas between the objects.
    Ok(total + n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_distinct() {
        assert!(shipment_id(1) < shipment_id(2));
        assert!(shipment_id(4095) < shipment_id(4096));
        assert_ne!(shipment_id(0), shipment_id(1 << 24));
    }
}
