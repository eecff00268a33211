//! The invariants of the testing plan, checked against real databases.

use crate::world::Device;
pub use crate::world::SimReport;
use burrow_client::Client;
use burrow_core::Schema;
use burrow_core::conflict::ConflictEntry;
use burrow_server::SqliteServerStore;
use burrow_server::http::AppState;
use burrow_server::store::ServerStore;
use std::collections::BTreeMap;

/// table → id → column → value (NULLs left out), the comparable state of a replica.
pub type Dump = BTreeMap<String, BTreeMap<String, BTreeMap<String, serde_json::Value>>>;

/// Helpers on dumps.
pub trait Fingerprint {
    /// A stable text summary for the trace.
    fn fingerprint(d: &Self) -> String;
}

impl Fingerprint for Dump {
    fn fingerprint(d: &Dump) -> String {
        serde_json::to_string(d).unwrap_or_default()
    }
}

/// The visible synced tables of a client.
pub fn client_dump(client: &Client, schema: &Schema) -> Result<Dump, String> {
    let mut dump = Dump::new();
    for t in schema.tables.values() {
        let rows = client
            .query_json(&format!("SELECT * FROM \"{}\"", t.name))
            .map_err(|e| format!("dump {}: {e}", t.name))?;
        let table = dump.entry(t.name.clone()).or_default();
        for mut row in rows {
            let Some(serde_json::Value::String(id)) = row.remove("id") else {
                continue;
            };
            let fields = row.into_iter().filter(|(_, v)| !v.is_null()).collect();
            table.insert(id, fields);
        }
    }
    Ok(dump)
}

/// The live rows of the server store, read from its file.
/// CRDT columns are materialized (the store keeps their loro documents); conflict records
/// are left out (checked by [`conflict_records_agree`]).
pub fn server_dump(db: &std::path::Path, schema: &Schema) -> Result<Dump, String> {
    let conn = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT tbl, id, seq, fields FROM rows WHERE deleted = 0 AND tbl != '_burrow_conflicts'")
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut dump = Dump::new();
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let table: String = r.get(0).map_err(|e| e.to_string())?;
        let id: String = r.get(1).map_err(|e| e.to_string())?;
        let seq: i64 = r.get(2).map_err(|e| e.to_string())?;
        let blob: Vec<u8> = r.get(3).map_err(|e| e.to_string())?;
        let row = burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
            .map_err(|e| e.to_string())?;
        let kind = |c: &str| {
            schema
                .table(&table)
                .and_then(|t| t.column(c))
                .and_then(|col| burrow_core::resolve::crdt_kind(&col.policy))
        };
        let fields = row
            .fields
            .into_iter()
            .map(|(c, f)| {
                let v = match (kind(&c), &f.value) {
                    (Some(k), burrow_core::Value::Blob(b)) => burrow_core::crdt::materialize(k, b)
                        .map(|v| v.to_json())
                        .unwrap_or_default(),
                    _ => f.value.to_json(),
                };
                (c, v)
            })
            .filter(|(_, v)| !v.is_null())
            .collect();
        dump.entry(table).or_default().insert(id, fields);
    }
    Ok(dump)
}

/// I3: a replica holds exactly the server's state.
pub fn same_state(index: usize, dump: &Dump, server: &Dump, report: &mut SimReport) {
    let empty = BTreeMap::new();
    let tables: std::collections::BTreeSet<&String> = dump.keys().chain(server.keys()).collect();
    for t in tables {
        let mine = dump.get(t).unwrap_or(&empty);
        let theirs = server.get(t).unwrap_or(&empty);
        if mine != theirs {
            let only_mine: Vec<&String> = mine
                .keys()
                .filter(|k| !theirs.contains_key(*k))
                .take(3)
                .collect();
            let only_server: Vec<&String> = theirs
                .keys()
                .filter(|k| !mine.contains_key(*k))
                .take(3)
                .collect();
            let differ: Vec<String> = mine
                .iter()
                .filter_map(|(k, v)| {
                    theirs
                        .get(k)
                        .filter(|w| *w != v)
                        .map(|w| format!("{k}: {v:?} vs server {w:?}"))
                })
                .take(2)
                .collect();
            report.violations.push(format!(
                "I3 device {index} diverges from the server in {t}: only local {only_mine:?}, only server {only_server:?}, differing {differ:?}"
            ));
        }
    }
}

/// I4: every multi-row transaction is visible whole or not at all.
pub fn no_partial_batch(who: &str, dump: &Dump, report: &mut SimReport) {
    let Some(batches) = dump.get("batches") else {
        return;
    };
    let mut seen: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for fields in batches.values() {
        let tag = fields.get("tag").and_then(|v| v.as_str()).unwrap_or("");
        let size = fields.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
        let e = seen.entry(tag).or_insert((0, size));
        e.0 += 1;
    }
    for (tag, (count, size)) in seen {
        if count != size {
            report.violations.push(format!(
                "I4 {who}: batch {tag} shows {count} of {size} rows"
            ));
        }
    }
}

/// I1 + I2: every committed op of the device is recorded by the server exactly once.
pub(crate) async fn zero_loss_no_dups(
    d: &Device,
    client: &Client,
    server: &AppState<SqliteServerStore>,
    report: &mut SimReport,
) -> Result<(), String> {
    let rejected = client.rejected_ops().map_err(|e| e.to_string())?;
    for r in &rejected {
        report.violations.push(format!(
            "I1 device {}: op {} rejected in a valid workload: {} {}",
            d.index, r.client_seq, r.code, r.message
        ));
    }
    let store = server.store();
    for seq in 1..=d.ops_committed {
        let n = store
            .op_effect_count(&d.client_id, seq)
            .map_err(|e| e.to_string())?;
        if n != 1 {
            report.violations.push(format!(
                "I{} device {}: op {seq} recorded {n} times by the server",
                if n == 0 { 1 } else { 2 },
                d.index
            ));
            break;
        }
    }
    Ok(())
}

/// The server's whole conflict log.
pub async fn conflict_log(
    server: &AppState<SqliteServerStore>,
) -> Result<Vec<ConflictEntry>, String> {
    server
        .store()
        .conflicts(usize::MAX >> 1)
        .await
        .map_err(|e| e.to_string())
}

/// I5: every value a device lost in a conflict is in the server's conflict log.
pub fn conflicts_preserved(
    index: usize,
    client: &Client,
    log: &[ConflictEntry],
    report: &mut SimReport,
) -> Result<(), String> {
    let local = client.lost_writes().map_err(|e| e.to_string())?;
    for c in &local {
        for col in &c.lost_columns {
            let value = c
                .data
                .as_ref()
                .and_then(|d| d.get(col))
                .cloned()
                .unwrap_or_default();
            let found = log.iter().any(|e| {
                e.table == c.table
                    && e.row_id == c.row_id
                    && &e.column == col
                    && e.losers().any(|l| l.value == value)
            });
            if !found {
                report.violations.push(format!(
                    "I5 device {index}: lost value {col}={value} of {}/{} is not in the conflict log",
                    c.table, c.row_id
                ));
            }
        }
    }
    Ok(())
}

/// I5: every conflict record a device holds is the server's record (same status, versions
/// and winner), and the device holds every record it is involved in.
pub fn conflict_records_agree(
    index: usize,
    client: &Client,
    log: &[ConflictEntry],
    report: &mut SimReport,
) -> Result<(), String> {
    let local = client.conflicts().map_err(|e| e.to_string())?;
    for c in &local {
        match log.iter().find(|e| e.id == c.id) {
            Some(e) if e.status == c.status && e.versions == c.versions => {}
            Some(e) => report.violations.push(format!(
                "I5 device {index}: conflict {} is {:?} with {} versions here, {:?} with {} on the server",
                c.id,
                c.status,
                c.versions.len(),
                e.status,
                e.versions.len()
            )),
            None => report
                .violations
                .push(format!("I5 device {index}: conflict {} unknown to the server", c.id)),
        }
    }
    let me = client.client_id();
    for e in log {
        let involved = e.versions.iter().any(|v| v.client.as_deref() == Some(me))
            || e.resolved_by.as_deref() == Some(me);
        if involved && !local.iter().any(|c| c.id == e.id) {
            report.violations.push(format!(
                "I5 device {index}: conflict {} involves this device but did not reach it",
                e.id
            ));
        }
    }
    Ok(())
}

/// I6: the applied server sequence never goes backwards.
pub(crate) fn cursor_monotone(d: &mut Device, client: &Client, report: &mut SimReport) {
    match client.cursor() {
        Ok(c) => {
            if c.since < d.last_cursor {
                report.violations.push(format!(
                    "I6 device {}: cursor went back from {} to {}",
                    d.index, d.last_cursor, c.since
                ));
            }
            d.last_cursor = d.last_cursor.max(c.since);
        }
        Err(e) => report
            .violations
            .push(format!("device {}: cursor unreadable: {e}", d.index)),
    }
}

/// I6: a write is visible to the device that made it, at once.
pub fn read_your_write(
    index: usize,
    client: &Client,
    expect: Option<&(String, String, String)>,
    report: &mut SimReport,
) {
    let Some((id, col, value)) = expect else {
        return;
    };
    let rows = client.query_json(&format!(
        "SELECT \"{col}\" AS v FROM items WHERE id = '{id}'"
    ));
    let got = rows
        .ok()
        .and_then(|r| r.into_iter().next())
        .map(|r| match &r["v"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    if got.as_deref() != Some(value.as_str()) {
        report.violations.push(format!(
            "I6 device {index}: wrote {col}={value} on {id}, reads {got:?}"
        ));
    }
}

fn local_i64(client: &Client, sql: &str) -> Result<i64, String> {
    client
        .with_connection(|c| {
            Ok(c.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))?
                .unwrap_or(0))
        })
        .map_err(|e| e.to_string())
}

/// I9: each captured write moves the device's HLC strictly forward.
pub(crate) fn hlc_advanced(d: &mut Device, client: &Client, report: &mut SimReport) {
    match local_i64(client, "SELECT hlc FROM _burrow_local WHERE id = 1") {
        Ok(h) => {
            let h = h as u64;
            if h <= d.last_hlc {
                report.violations.push(format!(
                    "I9 device {}: HLC did not advance ({} -> {h})",
                    d.index, d.last_hlc
                ));
            }
            d.last_hlc = h;
        }
        Err(e) => report.violations.push(format!("device {}: {e}", d.index)),
    }
}

/// I9: ops still queued carry strictly increasing HLCs in outbox order.
pub fn hlc_monotone_in_outbox(
    index: usize,
    client: &Client,
    report: &mut SimReport,
) -> Result<(), String> {
    let hlcs: Vec<i64> = client
        .with_connection(|c| {
            let mut stmt = c.prepare("SELECT hlc FROM _burrow_outbox ORDER BY seq")?;
            let v = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok(v)
        })
        .map_err(|e| e.to_string())?;
    if hlcs.windows(2).any(|w| w[1] <= w[0]) {
        report
            .violations
            .push(format!("I9 device {index}: outbox HLCs not increasing"));
    }
    Ok(())
}

/// I8: after a crash the file is intact and no op sequence number was lost or reused.
pub fn crash_integrity(index: usize, client: &Client, ops_committed: u64, report: &mut SimReport) {
    let integrity = client.with_connection(|c| {
        Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?)
    });
    match integrity {
        Ok(s) if s == "ok" => {}
        other => report
            .violations
            .push(format!("I8 device {index}: integrity_check = {other:?}")),
    }
    match local_i64(
        client,
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'), 0)",
    ) {
        Ok(n) if n as u64 == ops_committed => {}
        Ok(n) => report.violations.push(format!(
            "I8 device {index}: outbox sequence at {n} after a crash, {ops_committed} ops committed"
        )),
        Err(e) => report.violations.push(format!("I8 device {index}: {e}")),
    }
}
