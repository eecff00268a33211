//! `burrow bench capture`: what change capture costs an app's writes, as a ratio to plain
//! SQLite doing the same writes.
//!
//! Burrow: a client database opened with [`Client::open`] and written through
//! [`Client::write`], as an app does — capture triggers write each op to the outbox in the same
//! transaction, and the op journal (`<db>.journal`, ADR 0007) is appended and synced after the
//! commit. Plain: a rusqlite connection to a file holding the same app table (its `CREATE
//! TABLE` and indexes copied from the Burrow database) with the same pragmas (WAL,
//! `synchronous=FULL`, `temp_store=MEMORY`, `foreign_keys=OFF`) and no triggers. A third
//! variant, "triggers only", writes through a plain rusqlite connection to a Burrow database
//! (the triggers fire, the library's journal and bookkeeping do not) to show where the cost is.

use crate::bench::median;
use crate::bench_seed::{insert_shipments, shipment_id};
use crate::demo::DELIVERY_SCHEMA;
use anyhow::{Context, Result};
use burrow_client::Client;
use burrow_core::Schema;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::time::Instant;

/// Target for inserts in one transaction (from the product brief).
pub const INSERT_TARGET: f64 = 1.5;
/// Target for single-row update transactions.
pub const UPDATE_TARGET: f64 = 1.3;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Rows inserted in one transaction.
    pub rows: u64,
    /// Single-row update transactions.
    pub updates: u64,
    /// Repetitions (fresh databases each).
    pub reps: usize,
}

const UPDATE_SQL: &str = "UPDATE shipments SET status = ?1 WHERE id = ?2";

/// The row the `k`-th of `updates` single-row updates touches (spread over the table).
fn update_target(k: u64, updates: u64, rows: u64) -> u64 {
    (k * rows.max(1) / updates.max(1)) % rows.max(1)
}

/// One repetition's timings in seconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Rep {
    plain_insert_s: f64,
    burrow_insert_s: f64,
    triggers_insert_s: f64,
    plain_update_s: f64,
    burrow_update_s: f64,
    triggers_update_s: f64,
}

/// Opens a plain SQLite file with the client's pragmas.
fn plain_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

/// The `CREATE TABLE` and `CREATE INDEX` statements of `shipments` in a Burrow database.
fn app_table_sql(client: &Client) -> Result<Vec<String>> {
    let sql = client.with_connection(|c| {
        let mut stmt = c.prepare(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'shipments' \
             AND type IN ('table', 'index') AND sql IS NOT NULL ORDER BY type = 'index'",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })?;
    anyhow::ensure!(
        sql.first().is_some_and(|s| s.starts_with("CREATE TABLE")),
        "no shipments table in the Burrow database"
    );
    Ok(sql)
}

/// Runs `f` in one immediate transaction on `conn` and commits; returns the seconds taken.
fn timed_tx(conn: &mut Connection, f: impl FnOnce(&Connection) -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    f(&tx)?;
    tx.commit()?;
    Ok(t.elapsed().as_secs_f64())
}

fn rep(o: &CaptureOptions, schema: &Schema, rep: usize) -> Result<Rep> {
    let dir = tempfile::tempdir()?;
    let rows = o.rows;
    // The three databases are created before any timing.
    let client = Client::open(dir.path().join("burrow.db"), schema)?;
    let table_sql = app_table_sql(&client)?;
    let mut plain = plain_connection(&dir.path().join("plain.db"))?;
    for s in &table_sql {
        plain.execute_batch(s)?;
    }
    let triggers_path = dir.path().join("triggers.db");
    drop(Client::open(&triggers_path, schema)?);
    let mut triggers = plain_connection(&triggers_path)?;

    // 1. Inserts in one transaction. The order of the variants rotates with the repetition so
    //    none always runs on the coldest cache.
    let mut plain_insert_s = 0.0;
    let mut burrow_insert_s = 0.0;
    let mut triggers_insert_s = 0.0;
    for k in 0..3 {
        match (k + rep) % 3 {
            0 => plain_insert_s = timed_tx(&mut plain, |c| Ok(insert_shipments(c, 0, rows)?))?,
            1 => {
                let t = Instant::now();
                let (_, report) = client.write(|tx| insert_shipments(tx, 0, rows))?;
                burrow_insert_s = t.elapsed().as_secs_f64();
                anyhow::ensure!(
                    report.ops_captured == rows,
                    "captured {} ops for {rows} inserts",
                    report.ops_captured
                );
            }
            _ => {
                triggers_insert_s = timed_tx(&mut triggers, |c| Ok(insert_shipments(c, 0, rows)?))?
            }
        }
    }

    // 2. Single-row update transactions.
    let ids: Vec<String> = (0..o.updates)
        .map(|k| shipment_id(update_target(k, o.updates, rows)))
        .collect();
    let mut plain_update_s = 0.0;
    let mut burrow_update_s = 0.0;
    let mut triggers_update_s = 0.0;
    for k in 0..3 {
        match (k + rep) % 3 {
            0 => {
                let t = Instant::now();
                for (n, id) in ids.iter().enumerate() {
                    let tx = plain.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.prepare_cached(UPDATE_SQL)?
                        .execute(rusqlite::params![format!("scanned-{n}"), id])?;
                    tx.commit()?;
                }
                plain_update_s = t.elapsed().as_secs_f64();
            }
            1 => {
                let t = Instant::now();
                for (n, id) in ids.iter().enumerate() {
                    client.write(|tx| {
                        tx.prepare_cached(UPDATE_SQL)?
                            .execute(rusqlite::params![format!("scanned-{n}"), id])
                    })?;
                }
                burrow_update_s = t.elapsed().as_secs_f64();
            }
            _ => {
                let t = Instant::now();
                for (n, id) in ids.iter().enumerate() {
                    let tx = triggers.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.prepare_cached(UPDATE_SQL)?
                        .execute(rusqlite::params![format!("scanned-{n}"), id])?;
                    tx.commit()?;
                }
                triggers_update_s = t.elapsed().as_secs_f64();
            }
        }
    }
    let pending = client.status()?.pending_ops;
    anyhow::ensure!(
        pending == rows + o.updates,
        "expected {} pending ops, found {pending}",
        rows + o.updates
    );
    Ok(Rep {
        plain_insert_s,
        burrow_insert_s,
        triggers_insert_s,
        plain_update_s,
        burrow_update_s,
        triggers_update_s,
    })
}

/// Runs the benchmark; returns the JSON result and the table lines.
pub fn run(o: &CaptureOptions) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    anyhow::ensure!(o.rows > 0, "--rows must be at least 1");
    anyhow::ensure!(o.updates > 0, "--updates must be at least 1");
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let mut reps = Vec::new();
    for r in 0..o.reps.max(1) {
        reps.push(rep(o, &schema, r).with_context(|| format!("repetition {}", r + 1))?);
    }
    let med = |f: fn(&Rep) -> f64| median(reps.iter().map(f).collect());
    // Ratios per repetition (same cache and disk state), then their median.
    let insert_ratio = med(|r| r.burrow_insert_s / r.plain_insert_s);
    let update_ratio = med(|r| r.burrow_update_s / r.plain_update_s);
    let trig_insert_ratio = med(|r| r.triggers_insert_s / r.plain_insert_s);
    let trig_update_ratio = med(|r| r.triggers_update_s / r.plain_update_s);
    let (pi, bi, ti) = (
        med(|r| r.plain_insert_s),
        med(|r| r.burrow_insert_s),
        med(|r| r.triggers_insert_s),
    );
    let per_update_ms = |s: f64| s * 1e3 / o.updates as f64;
    let (pu, bu, tu) = (
        per_update_ms(med(|r| r.plain_update_s)),
        per_update_ms(med(|r| r.burrow_update_s)),
        per_update_ms(med(|r| r.triggers_update_s)),
    );
    let result = serde_json::json!({
        "bench": "capture",
        "rows": o.rows,
        "updates": o.updates,
        "reps": o.reps.max(1),
        "insert_ratio_median": insert_ratio,
        "insert_ratio_target": INSERT_TARGET,
        "update_ratio_median": update_ratio,
        "update_ratio_target": UPDATE_TARGET,
        "plain_insert_seconds_median": pi,
        "burrow_insert_seconds_median": bi,
        "plain_update_ms_median": pu,
        "burrow_update_ms_median": bu,
        "triggers_only": {
            "insert_ratio_median": trig_insert_ratio,
            "update_ratio_median": trig_update_ratio,
            "insert_seconds_median": ti,
            "update_ms_median": tu,
        },
        "runs": reps,
    });
    let lines = vec![
        (
            format!("{} inserts, one transaction: plain SQLite", o.rows),
            format!("{pi:.3} s"),
        ),
        (
            "  … Burrow (Client::write: triggers + journal)".to_string(),
            format!("{bi:.3} s"),
        ),
        (
            "  ratio (target ≤ 1.5)".to_string(),
            format!(
                "{insert_ratio:.2}× {}",
                verdict(insert_ratio, INSERT_TARGET)
            ),
        ),
        (
            format!("{} single-row update transactions: plain", o.updates),
            format!("{pu:.3} ms each"),
        ),
        (
            "  … Burrow (Client::write)".to_string(),
            format!("{bu:.3} ms each"),
        ),
        (
            "  ratio (target ≤ 1.3)".to_string(),
            format!(
                "{update_ratio:.2}× {}",
                verdict(update_ratio, UPDATE_TARGET)
            ),
        ),
        (
            "(breakdown) triggers only, no journal: insert / update".to_string(),
            format!("{trig_insert_ratio:.2}× / {trig_update_ratio:.2}×"),
        ),
    ];
    Ok((result, lines))
}

/// "met" or "MISSED" for a figure that must stay at or below `target`.
pub(crate) fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target { "met" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_targets_spread_and_stay_in_range() {
        let t: Vec<u64> = (0..4).map(|k| update_target(k, 4, 100)).collect();
        assert_eq!(t, vec![0, 25, 50, 75]);
        assert!((0..1000).all(|k| update_target(k, 1000, 7) < 7));
    }
}
