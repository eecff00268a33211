//! Reading the outbox into upload batches, and recording the server's verdicts.

use crate::error::Result;
use crate::sql_value::from_trigger_json;
use burrow_core::{FieldValue, Hlc, Op, OpKind, Schema};
use rusqlite::{Connection, TransactionBehavior, params};

/// Most ops in one upload request (a larger local transaction still goes whole).
pub const UPLOAD_OPS_MAX: usize = 5_000;
/// Most (estimated) bytes in one upload request.
pub const UPLOAD_BYTES_MAX: usize = 4 << 20;

/// Ops ready to upload, grouped by local transaction in outbox order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// `(tx, ops)` groups.
    pub txs: Vec<(u64, Vec<Op>)>,
    /// Total ops.
    pub op_count: usize,
    /// Ops that cannot be sent, with code and reason: an undecodable op and the rest of its
    /// local transaction (which must not apply without it). They go to the rejected list.
    pub undecodable: Vec<(u64, &'static str, String)>,
}

impl Batch {
    /// Whether there is nothing to upload.
    pub fn is_empty(&self) -> bool {
        self.op_count == 0
    }
}

/// Decodes one outbox row (`seq, tx, tbl, row_id, kind, data, hlc, base_seq`) into an op.
fn decode_op(
    schema: &Schema,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<std::result::Result<Op, String>> {
    let seq: i64 = r.get(0)?;
    let tx: i64 = r.get(1)?;
    let table: String = r.get(2)?;
    let row_id: String = r.get(3)?;
    let kind: i64 = r.get(4)?;
    let data: Option<String> = r.get(5)?;
    let hlc: i64 = r.get(6)?;
    let base_seq: i64 = r.get(7)?;
    Ok(
        decode_fields(schema, table.clone(), data).and_then(|fields| {
            let kind = OpKind::from_code(kind).ok_or_else(|| format!("unknown op kind {kind}"))?;
            Ok(Op {
                client_seq: seq as u64,
                tx: tx as u64,
                table,
                row_id,
                kind,
                fields,
                hlc: Hlc(hlc as u64),
                base_seq: base_seq as u64,
            })
        }),
    )
}

fn decode_fields(
    schema: &Schema,
    table: String,
    data: Option<String>,
) -> std::result::Result<Vec<FieldValue>, String> {
    let t = schema
        .table(&table)
        .ok_or_else(|| format!("table {table} is not in the schema"))?;
    let mut fields = Vec::new();
    if let Some(data) = data {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&data).map_err(|e| format!("bad op data: {e}"))?;
        for (column, v) in obj {
            let col = t
                .column(&column)
                .ok_or_else(|| format!("unknown column {column}"))?;
            let value = from_trigger_json(col.ty, &v)
                .ok_or_else(|| format!("column {column}: {v} is not a {}", col.ty))?;
            fields.push(FieldValue { column, value });
        }
    }
    Ok(fields)
}

/// Seals the current capture group (so later writes from other connections start a new
/// local transaction) and reads pending ops up to the limits, whole transactions only.
pub fn read_batch(
    conn: &mut Connection,
    schema: &Schema,
    ops_max: usize,
    bytes_max: usize,
) -> Result<Batch> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("UPDATE _burrow_local SET tx = tx + 1 WHERE id = 1", [])?;
    let mut batch = Batch::default();
    let mut bytes = 0usize;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, tx, tbl, row_id, kind, data, hlc, base_seq FROM _burrow_outbox
             WHERE ack_seq IS NULL ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut current: Option<(u64, Vec<Op>)> = None;
        // A group with an undecodable op is refused whole: `(tx, first bad seq, reason)`.
        let mut poisoned: Option<(u64, u64, String)> = None;
        let mut poisoned_groups: Vec<(u64, u64, String)> = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let txid = r.get::<_, i64>(1)? as u64;
            if current.as_ref().is_some_and(|(t, _)| *t != txid) {
                if let Some(done) = current.take() {
                    batch.txs.push(done);
                }
                if batch.op_count >= ops_max || bytes >= bytes_max {
                    break;
                }
            }
            if poisoned.as_ref().is_some_and(|(t, _, _)| *t != txid) {
                poisoned_groups.extend(poisoned.take());
            }
            let op = decode_op(schema, r)?;
            match op {
                Ok(op) => {
                    bytes += op.approx_size();
                    batch.op_count += 1;
                    current.get_or_insert_with(|| (txid, Vec::new())).1.push(op);
                }
                Err(reason) => {
                    if poisoned.is_none() {
                        poisoned = Some((txid, seq as u64, reason.clone()));
                    }
                    batch.undecodable.push((seq as u64, "undecodable", reason));
                }
            }
        }
        if let Some(done) = current {
            batch.txs.push(done);
        }
        poisoned_groups.extend(poisoned);
        for (bad_tx, bad_seq, reason) in poisoned_groups {
            let Some(pos) = batch.txs.iter().position(|(t, _)| *t == bad_tx) else {
                continue;
            };
            let (_, ops) = batch.txs.remove(pos);
            batch.op_count -= ops.len();
            for op in ops {
                batch.undecodable.push((
                    op.client_seq,
                    "transaction_rejected",
                    format!("op {bad_seq} of the same transaction cannot be sent: {reason}"),
                ));
            }
        }
        batch.undecodable.sort_by_key(|(seq, _, _)| *seq);
    }
    tx.commit()?;
    Ok(batch)
}

/// Where a rejected op pointed, so the caller can restore the visible row.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    /// Table.
    pub table: String,
    /// Row id.
    pub row_id: String,
    /// The op's trigger JSON.
    pub data: Option<String>,
    /// The op kind code.
    pub kind: i64,
}

/// Moves an op from the outbox to the rejected list with its reason.
pub fn reject(
    tx: &rusqlite::Transaction<'_>,
    seq: u64,
    code: &str,
    message: &str,
    now_ms: u64,
) -> Result<Option<RejectedRow>> {
    let moved = tx.execute(
        "INSERT OR REPLACE INTO _burrow_rejected(seq, tx, tbl, row_id, kind, data, hlc, code, message, rejected_at_ms)
         SELECT seq, tx, tbl, row_id, kind, data, hlc, ?2, ?3, ?4 FROM _burrow_outbox WHERE seq = ?1",
        params![seq as i64, code, message, now_ms as i64],
    )?;
    if moved == 0 {
        return Ok(None);
    }
    let info = tx.query_row(
        "SELECT tbl, row_id, data, kind FROM _burrow_outbox WHERE seq = ?1",
        [seq as i64],
        |r| {
            Ok(RejectedRow {
                table: r.get(0)?,
                row_id: r.get(1)?,
                data: r.get(2)?,
                kind: r.get(3)?,
            })
        },
    )?;
    tx.execute("DELETE FROM _burrow_outbox WHERE seq = ?1", [seq as i64])?;
    Ok(Some(info))
}

/// Marks an op acknowledged: it leaves the outbox once the cursor reaches `ack_seq`.
pub fn acknowledge(tx: &rusqlite::Transaction<'_>, seq: u64, ack_seq: u64) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE _burrow_outbox SET ack_seq = ?2 WHERE seq = ?1 AND ack_seq IS NULL",
        )?
        .execute(params![seq as i64, ack_seq as i64])?;
    Ok(n > 0)
}
