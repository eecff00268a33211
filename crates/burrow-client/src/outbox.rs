//! Reading the outbox into upload batches, and recording the server's verdicts.

use crate::error::Result;
use crate::sql_value::from_trigger_json;
use burrow_core::conflict::CONFLICTS_TABLE;
use burrow_core::resolve::crdt_kind;
use burrow_core::{FieldValue, Hlc, Op, OpKind, Schema, Value};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Most ops in one upload request; a larger local transaction is sent in parts.
pub const UPLOAD_OPS_MAX: usize = 5_000;
/// Most (estimated) bytes in one upload request; a larger local transaction is sent in parts.
pub const UPLOAD_BYTES_MAX: usize = 4 << 20;
/// Largest single op the client sends; larger values belong in attachments.
pub const OP_BYTES_MAX: usize = 8 << 20;

/// One local transaction, or one part of it, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadTx {
    /// The local transaction number.
    pub tx: u64,
    /// Its ops (or this part's ops) in outbox order.
    pub ops: Vec<Op>,
    /// More parts of the transaction follow in later requests.
    pub more_parts: bool,
}

/// An op that cannot be sent, with its stable code and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsendable {
    /// The op's client sequence.
    pub seq: u64,
    /// `undecodable` or `op_too_large`.
    pub code: &'static str,
    /// Why.
    pub reason: String,
}

/// How much one upload request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most ops.
    pub ops_max: usize,
    /// Most bytes (approximate, uncompressed).
    pub bytes_max: usize,
    /// Most bytes when the request carries the bulk lane: about a second of upload at the
    /// measured rate, so a critical op written meanwhile waits little.
    pub bulk_bytes_max: usize,
}

impl BatchLimits {
    /// Limits without a separate bulk size.
    pub fn new(ops_max: usize, bytes_max: usize) -> BatchLimits {
        BatchLimits {
            ops_max,
            bytes_max,
            bulk_bytes_max: bytes_max,
        }
    }
}

/// Ops ready to upload, grouped by local transaction in outbox order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Transactions (or parts) in outbox order.
    pub txs: Vec<UploadTx>,
    /// Total ops.
    pub op_count: usize,
    /// Approximate uncompressed size of the ops.
    pub bytes: usize,
    /// Ops per lane.
    pub by_lane: std::collections::BTreeMap<burrow_core::Priority, u64>,
    /// The first op that cannot be sent; when set, `txs` is empty and the caller rejects the
    /// op's whole local transaction before reading again.
    pub unsendable: Option<Unsendable>,
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

pub(crate) fn decode_fields(
    schema: &Schema,
    table: String,
    data: Option<String>,
) -> std::result::Result<Vec<FieldValue>, String> {
    if table == CONFLICTS_TABLE {
        return decode_resolution(data);
    }
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
            let value = if crdt_kind(&col.policy).is_some() {
                crate::merged::decode_crdt_json(&v)
                    .ok_or_else(|| format!("column {column}: CRDT edit not converted: {v}"))?
            } else {
                from_trigger_json(col.ty, &v)
                    .ok_or_else(|| format!("column {column}: {v} is not a {}", col.ty))?
            };
            fields.push(FieldValue { column, value });
        }
    }
    Ok(fields)
}

/// The fields of a conflict resolution op (`Client::resolve`): `status` and `resolution`.
fn decode_resolution(data: Option<String>) -> std::result::Result<Vec<FieldValue>, String> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(data.as_deref().unwrap_or("{}"))
            .map_err(|e| format!("bad resolution data: {e}"))?;
    Ok(obj
        .into_iter()
        .map(|(column, v)| {
            let value = match (column.as_str(), v) {
                ("resolution", v) => Value::Json(v.to_string()),
                (_, serde_json::Value::String(s)) => Value::Text(s),
                (_, other) => Value::Json(other.to_string()),
            };
            FieldValue { column, value }
        })
        .collect())
}

/// Appends an op the library writes itself (not a trigger: a conflict resolution, a retried
/// op) to the current local transaction, with the next HLC; returns its sequence.
pub fn append_op(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    row_id: &str,
    kind: i64,
    data: Option<&str>,
    lane: burrow_core::Priority,
    now_ms: u64,
) -> Result<u64> {
    tx.execute(
        "UPDATE _burrow_local SET hlc = max(hlc + 1, coalesce(clock_ms, ?1) * 65536) WHERE id = 1",
        [now_ms as i64],
    )?;
    tx.execute(
        "INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc, base_seq, lane)
         SELECT l.tx, ?1, ?2, ?3, ?4, l.hlc, l.cursor_since, ?5 FROM _burrow_local l",
        params![table, row_id, kind, data, lane as i64],
    )?;
    Ok(tx.last_insert_rowid() as u64)
}

/// Builds an upload batch from ops offered in upload order, within the limits.
struct Accumulator {
    batch: Batch,
    current: Option<(UploadTx, usize)>,
    total_bytes: usize,
    ops_max: usize,
    bytes_max: usize,
    /// No more ops fit.
    full: bool,
}

impl Accumulator {
    fn new(ops_max: usize, bytes_max: usize) -> Self {
        Accumulator {
            batch: Batch::default(),
            current: None,
            total_bytes: 0,
            ops_max,
            bytes_max,
            full: false,
        }
    }

    /// Adds the next op; sets `full` (and takes nothing) once the batch is complete: whole
    /// transactions up to the limits, or a part of a transaction too large for one request.
    fn push(&mut self, op: Op, lane: burrow_core::Priority) {
        if self.current.as_ref().is_some_and(|(t, _)| t.tx != op.tx) {
            if let Some((done, _)) = self.current.take() {
                self.batch.txs.push(done);
            }
            if self.batch.op_count >= self.ops_max || self.total_bytes >= self.bytes_max {
                self.full = true;
                return;
            }
        }
        let (ops_max, bytes_max) = (self.ops_max, self.bytes_max);
        if let Some((part, _)) = self
            .current
            .as_mut()
            .filter(|(part, bytes)| part.ops.len() >= ops_max || *bytes >= bytes_max)
        {
            part.more_parts = true;
            self.full = true;
            return;
        }
        let size = op.approx_size();
        self.total_bytes += size;
        self.batch.op_count += 1;
        self.batch.bytes += size;
        *self.batch.by_lane.entry(lane).or_default() += 1;
        let (part, part_bytes) = self.current.get_or_insert_with(|| {
            (
                UploadTx {
                    tx: op.tx,
                    ops: Vec::new(),
                    more_parts: false,
                },
                0,
            )
        });
        *part_bytes += size;
        part.ops.push(op);
    }

    fn finish(mut self) -> Batch {
        if let Some((done, _)) = self.current.take() {
            self.batch.txs.push(done);
        }
        self.batch
    }
}

/// Feeds decoded outbox rows to `acc` until it is full; returns the first op that cannot be
/// sent, if any (the caller then sends nothing and rejects it).
fn feed(
    schema: &Schema,
    rows: &mut rusqlite::Rows<'_>,
    acc: &mut Accumulator,
) -> Result<Option<Unsendable>> {
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)? as u64;
        let op = match decode_op(schema, r)? {
            Ok(op) if op.approx_size() > OP_BYTES_MAX => {
                return Ok(Some(Unsendable {
                    seq,
                    code: "op_too_large",
                    reason: format!(
                        "the op carries about {} bytes, more than the {OP_BYTES_MAX} an op may hold",
                        op.approx_size()
                    ),
                }));
            }
            Ok(op) => op,
            Err(reason) => {
                return Ok(Some(Unsendable {
                    seq,
                    code: "undecodable",
                    reason,
                }));
            }
        };
        acc.push(op, burrow_core::Priority::from_i64(r.get(8)?));
        if acc.full {
            break;
        }
    }
    Ok(None)
}

/// The order to upload pending local transactions in, when they use more than one lane or a
/// network policy holds some lanes back: transactions already partly sent (staged parts)
/// first, then [`crate::lanes::upload_order`] (higher lanes first, never overtaking an earlier
/// transaction on the same row or on a row referenced), leaving out transactions whose
/// (inherited) lane is not `allowed`. `None` when one lane holds everything and every lane may
/// go: plain outbox order.
fn upload_tx_order(
    tx: &rusqlite::Transaction<'_>,
    schema: &Schema,
    allowed: &[burrow_core::Priority],
) -> Result<Option<Vec<(u64, burrow_core::Priority)>>> {
    let every_lane = crate::network::all_lanes()
        .iter()
        .all(|l| allowed.contains(l));
    let lanes: i64 = tx.query_row(
        "SELECT count(DISTINCT lane) FROM _burrow_outbox WHERE ack_seq IS NULL AND staged = 0",
        [],
        |r| r.get(0),
    )?;
    if lanes <= 1 && every_lane {
        return Ok(None);
    }
    let mut pending: Vec<crate::lanes::PendingTx> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut in_flight: Vec<u64> = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT seq, tx, tbl, row_id, lane, data, staged FROM _burrow_outbox
         WHERE ack_seq IS NULL ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)? as u64;
        let t = r.get::<_, i64>(1)? as u64;
        let table: String = r.get(2)?;
        let row_id: String = r.get(3)?;
        let lane = burrow_core::Priority::from_i64(r.get(4)?);
        let data: Option<String> = r.get(5)?;
        let staged: bool = r.get(6)?;
        if staged && !in_flight.contains(&t) {
            in_flight.push(t);
        }
        let references = match (schema.table(&table), data) {
            (Some(tbl), Some(d)) if tbl.columns.iter().any(|c| c.references.is_some()) => {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&d)
                    .map(|obj| crate::lanes::references_of(tbl, &obj))
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let i = *index.entry(t).or_insert_with(|| {
            pending.push(crate::lanes::PendingTx {
                tx: t,
                first_seq: seq,
                lane,
                rows: Vec::new(),
                references: Vec::new(),
            });
            pending.len() - 1
        });
        if let Some(p) = pending.get_mut(i) {
            p.lane = p.lane.max(lane);
            p.rows.push((table, row_id));
            p.references.extend(references);
        }
    }
    // A network policy may hold lanes back; a transaction counts with its inherited lane.
    let lanes = crate::lanes::effective_lanes(&pending);
    let sendable = |i: usize| lanes.get(i).is_some_and(|l| allowed.contains(l));
    let lane_of = |i: usize| {
        lanes
            .get(i)
            .copied()
            .unwrap_or(burrow_core::Priority::Normal)
    };
    let mut order: Vec<(u64, burrow_core::Priority)> = in_flight
        .iter()
        .filter_map(|t| {
            index
                .get(t)
                .filter(|i| sendable(**i))
                .map(|i| (*t, lane_of(*i)))
        })
        .collect();
    order.extend(
        crate::lanes::upload_order(&pending)
            .into_iter()
            .filter(|i| sendable(*i))
            .filter_map(|i| pending.get(i).map(|p| (p.tx, lane_of(i))))
            .filter(|(t, _)| !in_flight.contains(t)),
    );
    Ok(Some(order))
}

/// Seals the current capture group (so later writes from other connections start a new
/// local transaction) and reads pending ops up to the limits: whole transactions, or parts of
/// one transaction too large for a single request.
///
/// With a `journal`, every outbox op not yet journaled is appended to it (and synced) first,
/// inside the same write transaction: no op reaches the server before it is journaled.
pub fn read_batch(
    conn: &mut Connection,
    schema: &Schema,
    limits: BatchLimits,
    allowed: &[burrow_core::Priority],
    journal: Option<&mut crate::journal::Journal>,
) -> Result<Batch> {
    let BatchLimits {
        ops_max,
        bytes_max,
        bulk_bytes_max,
    } = limits;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("UPDATE _burrow_local SET tx = tx + 1 WHERE id = 1", [])?;
    crate::merged::convert_pending(&tx, schema, None)?;
    if let Some(journal) = journal {
        journal.append_new(&tx)?;
    }
    let mut acc = Accumulator::new(ops_max, bytes_max);
    let unsendable = match upload_tx_order(&tx, schema, allowed)? {
        // One lane: outbox order, streamed.
        None => {
            let lane: Option<i64> = tx
                .query_row(
                    "SELECT lane FROM _burrow_outbox WHERE ack_seq IS NULL AND staged = 0 LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if lane.map(burrow_core::Priority::from_i64) == Some(burrow_core::Priority::Bulk) {
                acc.bytes_max = acc.bytes_max.min(bulk_bytes_max);
            }
            let mut stmt = tx.prepare_cached(
                "SELECT seq, tx, tbl, row_id, kind, data, hlc, base_seq, lane FROM _burrow_outbox
                 WHERE ack_seq IS NULL AND staged = 0 ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            feed(schema, &mut rows, &mut acc)?
        }
        // Several lanes: whole transactions in lane order (see `lanes`).
        Some(order) => {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, tx, tbl, row_id, kind, data, hlc, base_seq, lane FROM _burrow_outbox
                 WHERE tx = ?1 AND ack_seq IS NULL AND staged = 0 ORDER BY seq",
            )?;
            let mut found = None;
            let mut batch_lane = None;
            for (t, lane) in order {
                // A request carries one lane: a critical op does not wait for bulk bytes
                // packed behind it in the same request.
                if batch_lane.is_some_and(|l| l != lane) && acc.batch.op_count > 0 {
                    break;
                }
                if batch_lane.is_none() && lane == burrow_core::Priority::Bulk {
                    acc.bytes_max = acc.bytes_max.min(bulk_bytes_max);
                }
                batch_lane = Some(lane);
                let mut rows = stmt.query([t as i64])?;
                found = feed(schema, &mut rows, &mut acc)?;
                if found.is_some() || acc.full {
                    break;
                }
            }
            found
        }
    };
    let batch = match unsendable {
        Some(u) => Batch {
            unsendable: Some(u),
            ..Batch::default()
        },
        None => acc.finish(),
    };
    fail::fail_point!("client-read-batch", |_| Err(crate::error::injected(
        "client-read-batch"
    )));
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

/// Marks an op as held by the server until the rest of its transaction arrives.
pub fn mark_staged(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<()> {
    tx.prepare_cached("UPDATE _burrow_outbox SET staged = 1 WHERE seq = ?1")?
        .execute([seq as i64])?;
    Ok(())
}

/// The other ops of the local transaction of op `seq` still in the outbox.
pub fn siblings(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<Vec<u64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq FROM _burrow_outbox WHERE tx = (SELECT tx FROM _burrow_outbox WHERE seq = ?1)
         AND seq != ?1 ORDER BY seq",
    )?;
    let seqs = stmt.query_map([seq as i64], |r| r.get::<_, i64>(0))?;
    Ok(seqs
        .map(|s| s.map(|s| s as u64))
        .collect::<rusqlite::Result<_>>()?)
}

/// Removes a settled op from the outbox.
pub fn remove(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<()> {
    tx.prepare_cached("DELETE FROM _burrow_outbox WHERE seq = ?1")?
        .execute([seq as i64])?;
    Ok(())
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
