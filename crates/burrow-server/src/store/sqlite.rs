//! The embedded SQLite store: one writer connection (ingest) and one reader (pulls), WAL,
//! `synchronous=FULL` so an acknowledged op survives power loss.

use super::conflict_log::{self, Uploader};
use super::{IngestOp, IngestRequest, IngestResult, IngestTx, Page, PullRequest, ServerStore};
use crate::error::StoreError;
use crate::validate::Rejection;
use burrow_core::conflict::{CONFLICTS_TABLE, ConflictEntry};
use burrow_core::hlc::correct_device_hlc;
use burrow_core::op::ChangedField;
use burrow_core::resolve::{ApplyContext, ServerRow, apply_op, replica_tag};
use burrow_core::{Cursor, Hlc, OutcomeKind, RowChange};
use burrow_proto::convert::{op_from_wire, op_to_wire};
use burrow_proto::convert::{server_row_from_parts, stored_fields_to_bytes};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(key, value) VALUES ('head_seq', 0), ('store_version', 1);
CREATE TABLE IF NOT EXISTS clients (
  node INTEGER PRIMARY KEY,
  client_id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  replica INTEGER NOT NULL,
  first_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
  tbl TEXT NOT NULL,
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  deleted INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  replica INTEGER NOT NULL,
  fields BLOB NOT NULL,
  PRIMARY KEY (tbl, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_seq ON rows(seq);
CREATE TABLE IF NOT EXISTS ops (
  node INTEGER NOT NULL,
  client_seq INTEGER NOT NULL,
  tx_id INTEGER NOT NULL,
  payload_hash INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  outcome INTEGER NOT NULL,
  message TEXT NOT NULL,
  lost TEXT NOT NULL,
  PRIMARY KEY (node, client_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ops_by_tx ON ops(node, tx_id);
CREATE TABLE IF NOT EXISTS staged (
  node INTEGER NOT NULL,
  tx_id INTEGER NOT NULL,
  client_seq INTEGER NOT NULL,
  payload_hash INTEGER NOT NULL,
  op BLOB NOT NULL,
  PRIMARY KEY (node, tx_id, client_seq)
) WITHOUT ROWID;
";

const OUTCOME_APPLIED: i64 = 1;
const OUTCOME_CONFLICT: i64 = 2;
/// A permission refusal, recorded so a replay of the request gets the same answer (`lost`
/// holds the code).
const OUTCOME_REJECTED: i64 = 3;

/// The SQLite implementation of [`ServerStore`].
#[derive(Debug, Clone)]
pub struct SqliteServerStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    Ok(conn)
}

fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite half-written (the transaction
    // rolls back when dropped), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteServerStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = open_conn(path)?;
        writer.execute_batch(SCHEMA_SQL)?;
        conflict_log::migrate(&writer)?;
        writer.execute_batch(super::scope::SCOPE_SQL)?;
        super::scope::migrate(&writer)?;
        let reader = open_conn(path)?;
        Ok(SqliteServerStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn blocking<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Number of times the effect of op `(client_id, client_seq)` is recorded (0 or 1);
    /// used by tests that prove deduplication.
    pub fn op_effect_count(&self, client_id: &str, client_seq: u64) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM ops JOIN clients USING(node)
             WHERE client_id = ?1 AND client_seq = ?2 AND outcome != 3",
            params![client_id, client_seq as i64],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Whether op `(client_id, client_seq)` has a recorded answer (applied, or refused by the
    /// permissions): a replay gets that answer. For the simulator's oracle.
    pub fn op_answer_recorded(&self, client_id: &str, client_seq: u64) -> Result<bool, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM ops JOIN clients USING(node) WHERE client_id = ?1 AND client_seq = ?2)",
            params![client_id, client_seq as i64],
            |r| r.get(0),
        )?)
    }

    /// Total number of ops applied and number of live rows; for reports.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let conn = lock(&self.reader);
        let ops: i64 = conn.query_row("SELECT count(*) FROM ops WHERE outcome != 3", [], |r| {
            r.get(0)
        })?;
        let rows: i64 = conn.query_row(
            "SELECT count(*) FROM rows WHERE deleted = 0 AND tbl != '_burrow_conflicts'",
            [],
            |r| r.get(0),
        )?;
        Ok((ops as u64, rows as u64))
    }
}

/// The stored row (live or tombstone), `None` when the row was never written.
pub(super) fn read_row(
    tx: &rusqlite::Connection,
    table: &str,
    row_id: &str,
) -> Result<Option<ServerRow>, StoreError> {
    let raw: Option<(bool, i64, i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT deleted, seq, hlc, replica, fields FROM rows WHERE tbl = ?1 AND id = ?2",
        )?
        .query_row(params![table, row_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    raw.map(|(deleted, seq, hlc, replica, fields)| {
        let mut row =
            server_row_from_parts(deleted, seq as u64, hlc as u64, &fields).map_err(|source| {
                StoreError::Corrupt {
                    table: table.into(),
                    row_id: row_id.into(),
                    source,
                }
            })?;
        row.replica = replica as u64;
        Ok(row)
    })
    .transpose()
}

fn node_for(
    tx: &rusqlite::Transaction<'_>,
    client_id: &str,
    user_id: &str,
    now_ms: u64,
) -> Result<i64, StoreError> {
    let found: Option<(i64, String)> = tx
        .query_row(
            "SELECT node, user_id FROM clients WHERE client_id = ?1",
            [client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match found {
        Some((node, owner)) if owner == user_id => Ok(node),
        Some(_) => Err(StoreError::ClientBound {
            client_id: client_id.to_string(),
        }),
        None => {
            tx.execute(
                "INSERT INTO clients(client_id, user_id, replica, first_seen_ms) VALUES (?1, ?2, ?3, ?4)",
                params![client_id, user_id, replica_tag(client_id) as i64, now_ms as i64],
            )?;
            Ok(tx.last_insert_rowid())
        }
    }
}

fn outcome_from_stored(outcome: i64, message: String, lost: String) -> OutcomeKind {
    if outcome == OUTCOME_REJECTED {
        return OutcomeKind::Rejected {
            code: lost,
            message,
        };
    }
    if outcome == OUTCOME_CONFLICT {
        OutcomeKind::Conflict {
            lost: lost
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            reason: message,
        }
    } else {
        OutcomeKind::Applied
    }
}

/// The recorded outcome of an op id, if the op was already applied:
/// `(hash, outcome, change seq)`.
fn recorded(
    tx: &rusqlite::Transaction<'_>,
    node: i64,
    client_seq: u64,
) -> Result<Option<(u64, OutcomeKind, u64)>, StoreError> {
    let stored: Option<(i64, i64, String, String, i64)> = tx
        .prepare_cached(
            "SELECT payload_hash, outcome, message, lost, seq FROM ops WHERE node = ?1 AND client_seq = ?2",
        )?
        .query_row(params![node, client_seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    Ok(stored.map(|(hash, o, m, l, seq)| (hash as u64, outcome_from_stored(o, m, l), seq as u64)))
}

/// `(client_seq, outcome, sequence of the change the op made or 0)`.
type OpResult = (u64, OutcomeKind, u64);

/// Every op of a local transaction is refused, naming the op that caused it.
fn reject_all(ops: &[IngestOp], bad_seq: u64, why: &str) -> Vec<OpResult> {
    ops.iter()
        .map(|o| {
            let (code, message) = match &o.op {
                Err(r) if o.client_seq == bad_seq => (r.code.to_string(), r.message.clone()),
                _ => (
                    "transaction_rejected".to_string(),
                    format!("op {bad_seq} of the same transaction was rejected: {why}"),
                ),
            };
            (o.client_seq, OutcomeKind::Rejected { code, message }, 0)
        })
        .collect()
}

/// Holds the ops of a non-final part of a local transaction until its last part arrives.
fn stage_part(
    tx: &rusqlite::Transaction<'_>,
    node: i64,
    ltx: &IngestTx,
) -> Result<Vec<OpResult>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO staged(node, tx_id, client_seq, payload_hash, op) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut outcomes = Vec::with_capacity(ltx.ops.len());
    for o in &ltx.ops {
        if let Ok(op) = &o.op {
            stmt.execute(params![
                node,
                ltx.tx_id as i64,
                o.client_seq as i64,
                o.payload_hash as i64,
                op_to_wire(op).encode_to_vec()
            ])?;
        }
        outcomes.push((o.client_seq, OutcomeKind::Staged, 0));
    }
    Ok(outcomes)
}

/// Takes (and deletes) the staged parts of a local transaction, in client order.
fn take_staged(
    tx: &rusqlite::Transaction<'_>,
    node: i64,
    tx_id: u64,
) -> Result<Vec<IngestOp>, StoreError> {
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT client_seq, payload_hash, op FROM staged WHERE node = ?1 AND tx_id = ?2 ORDER BY client_seq",
        )?;
        let mut rows = stmt.query(params![node, tx_id as i64])?;
        while let Some(r) = rows.next()? {
            let client_seq = r.get::<_, i64>(0)? as u64;
            let payload_hash = r.get::<_, i64>(1)? as u64;
            let blob = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            let wire =
                burrow_proto::v1::Op::decode(blob).map_err(|source| StoreError::Corrupt {
                    table: "staged".into(),
                    row_id: client_seq.to_string(),
                    source,
                })?;
            let op =
                op_from_wire(wire, tx_id).map_err(|e| Rejection::new("invalid_op", e.to_string()));
            out.push(IngestOp {
                client_seq,
                payload_hash,
                op,
            });
        }
    }
    if !out.is_empty() {
        tx.prepare_cached("DELETE FROM staged WHERE node = ?1 AND tx_id = ?2")?
            .execute(params![node, tx_id as i64])?;
    }
    Ok(out)
}

/// Applies one complete local transaction (all its ops, staged parts included); returns the
/// outcome of every op. All-or-nothing: any refused op refuses the whole transaction.
fn ingest_tx(
    tx: &rusqlite::Transaction<'_>,
    req: &IngestRequest,
    node: i64,
    tx_id: u64,
    ops: &[IngestOp],
    head: &mut u64,
    touched: &mut Option<std::collections::BTreeSet<String>>,
) -> Result<Vec<OpResult>, StoreError> {
    let uploader = Uploader {
        client_id: &req.client_id,
        user_id: &req.user_id,
        replica: replica_tag(&req.client_id),
        now_ms: req.now_ms,
    };
    let replica = uploader.replica;
    let now = Hlc::from_ms(req.now_ms);
    if let Some((bad_seq, bad)) = ops
        .iter()
        .find_map(|o| o.op.as_ref().err().map(|r| (o.client_seq, r)))
    {
        return Ok(reject_all(ops, bad_seq, &bad.message));
    }
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut fresh = Vec::new();
    let mut any_duplicate = false;
    for o in ops {
        match recorded(tx, node, o.client_seq)? {
            Some((hash, _, _)) if hash != o.payload_hash => {
                let why = format!(
                    "op id {} was already used for a different change",
                    o.client_seq
                );
                let mut all = reject_all(ops, o.client_seq, &why);
                if let Some(entry) = all.iter_mut().find(|(s, _, _)| *s == o.client_seq) {
                    entry.1 = OutcomeKind::Rejected {
                        code: "op_id_reused".into(),
                        message: why,
                    };
                }
                return Ok(all);
            }
            Some((_, outcome, change_seq)) => {
                any_duplicate = true;
                outcomes.push((o.client_seq, outcome, change_seq));
            }
            None => {
                outcomes.push((o.client_seq, OutcomeKind::Applied, 0));
                fresh.push((outcomes.len() - 1, o));
            }
        }
    }
    if let Some(rules) = req.env.rules.as_ref().filter(|r| r.has_permissions()) {
        let fresh_ops: Vec<&burrow_core::Op> = fresh
            .iter()
            .filter_map(|(_, o)| o.op.as_ref().ok())
            .collect();
        if let Some((bad_seq, denied)) = super::scope::check_permissions(
            tx,
            rules,
            &req.env.schema,
            &req.claims,
            req.now_ms,
            replica,
            &fresh_ops,
        )? {
            // A forbidden op has no effect, and neither has its local transaction.
            let mut all = reject_all(ops, bad_seq, &denied.reason);
            if let Some(entry) = all.iter_mut().find(|(s, _, _)| *s == bad_seq) {
                entry.1 = OutcomeKind::Rejected {
                    code: denied.code.to_string(),
                    message: denied.reason,
                };
            }
            // Recorded: a late replay of this request is answered the same, even if the
            // permissions would allow it by then (the device has moved it to its rejected list).
            for (slot, o) in &fresh {
                let (Ok(op), Some((_, OutcomeKind::Rejected { code, message }, _))) =
                    (&o.op, all.get(*slot))
                else {
                    continue;
                };
                record_op(tx, node, tx_id, o, op, 0, OUTCOME_REJECTED, message, code)?;
            }
            return Ok(all);
        }
    }
    let index_rules = req
        .env
        .rules
        .as_ref()
        .filter(|r| r.has_streams() || !r.lookup_tables().is_empty());
    for (slot, o) in fresh {
        let Ok(op) = &o.op else { continue };
        if op.table == CONFLICTS_TABLE {
            let seq = conflict_log::resolve(tx, head, op, &uploader)?;
            record_op(tx, node, tx_id, o, op, seq, OUTCOME_APPLIED, "", "")?;
            if let Some(entry) = outcomes.get_mut(slot) {
                entry.2 = seq;
            }
            continue;
        }
        let current = read_row(tx, &op.table, &op.row_id)?;
        let seq = *head + 1;
        let ctx = ApplyContext {
            table: req.env.schema.table(&op.table),
            replica,
            hlc: correct_device_hlc(op.hlc, req.clock_offset_ms, now),
            seq,
            claims: &req.claims,
            custom: &req.env.custom,
        };
        let applied = apply_op(current.as_ref(), op, &ctx);
        let recorded_seq = if let Some(row) = &applied.new_row {
            *head = seq;
            tx.prepare_cached(
                "INSERT INTO rows(tbl, id, seq, deleted, hlc, replica, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(tbl, id) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted,
                   hlc = excluded.hlc, replica = excluded.replica, fields = excluded.fields",
            )?
            .execute(params![
                op.table,
                op.row_id,
                row.seq as i64,
                row.deleted,
                row.hlc.0 as i64,
                row.replica as i64,
                stored_fields_to_bytes(row)
            ])?;
            if let Some(rules) = index_rules {
                super::scope::index_row(
                    tx,
                    rules,
                    &req.env.schema,
                    &op.table,
                    &op.row_id,
                    row,
                    seq,
                    touched,
                )?;
            }
            seq
        } else {
            0
        };
        for c in &applied.conflicts {
            conflict_log::record(tx, head, op, c, &uploader)?;
        }
        let (code, message, lost) = match &applied.outcome {
            OutcomeKind::Conflict { lost, reason } => {
                (OUTCOME_CONFLICT, reason.clone(), lost.join(","))
            }
            _ => (OUTCOME_APPLIED, String::new(), String::new()),
        };
        record_op(tx, node, tx_id, o, op, recorded_seq, code, &message, &lost)?;
        if let Some(entry) = outcomes.get_mut(slot) {
            entry.1 = applied.outcome;
            entry.2 = recorded_seq;
        }
    }
    if any_duplicate {
        // A resent last part: also answer for the parts applied with it earlier.
        let mut stmt = tx.prepare_cached(
            "SELECT client_seq, outcome, message, lost, seq FROM ops WHERE node = ?1 AND tx_id = ?2 ORDER BY client_seq",
        )?;
        let mut rows = stmt.query(params![node, tx_id as i64])?;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            if !outcomes.iter().any(|(s, _, _)| *s == seq) {
                let change_seq = r.get::<_, i64>(4)? as u64;
                outcomes.push((
                    seq,
                    outcome_from_stored(r.get(1)?, r.get(2)?, r.get(3)?),
                    change_seq,
                ));
            }
        }
    }
    Ok(outcomes)
}

/// Records an op's id, payload hash and outcome: the dedup mark retries are answered from.
#[allow(clippy::too_many_arguments)]
fn record_op(
    tx: &rusqlite::Transaction<'_>,
    node: i64,
    tx_id: u64,
    o: &IngestOp,
    op: &burrow_core::Op,
    seq: u64,
    outcome: i64,
    message: &str,
    lost: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO ops(node, client_seq, tx_id, payload_hash, tbl, row_id, seq, outcome, message, lost)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        node,
        o.client_seq as i64,
        tx_id as i64,
        o.payload_hash as i64,
        op.table,
        op.row_id,
        seq as i64,
        outcome,
        message,
        lost
    ])?;
    Ok(())
}

fn ingest_blocking(conn: &mut Connection, req: IngestRequest) -> Result<IngestResult, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let node = node_for(&tx, &req.client_id, &req.user_id, req.now_ms)?;
    let mut head: u64 = tx.query_row("SELECT value FROM meta WHERE key = 'head_seq'", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let mut outcomes = Vec::new();
    let mut touched = req
        .env
        .rules
        .as_ref()
        .filter(|r| r.has_streams())
        .map(|_| std::collections::BTreeSet::new());
    for ltx in &req.txs {
        // Any storage error aborts the whole request (the transaction rolls back on drop):
        // the client retries it, and nothing is half-applied.
        let invalid = ltx
            .ops
            .iter()
            .find_map(|o| o.op.as_ref().err().map(|r| (o.client_seq, r)));
        let mut o = match (ltx.more_parts, invalid) {
            (true, None) => stage_part(&tx, node, ltx)?,
            (true, Some((bad_seq, bad))) => {
                // A bad op in an early part refuses the staged parts too.
                let mut all = take_staged(&tx, node, ltx.tx_id)?;
                all.extend(ltx.ops.iter().cloned());
                reject_all(&all, bad_seq, &bad.message)
            }
            (false, _) => {
                let mut all = take_staged(&tx, node, ltx.tx_id)?;
                all.extend(ltx.ops.iter().cloned());
                ingest_tx(&tx, &req, node, ltx.tx_id, &all, &mut head, &mut touched)?
            }
        };
        outcomes.append(&mut o);
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'head_seq'",
        [head as i64],
    )?;
    fail::fail_point!("server-ingest-before-commit", |_| Err(
        crate::error::injected("server-ingest-before-commit")
    ));
    tx.commit()?;
    fail::fail_point!("server-ingest-after-commit", |_| Err(
        crate::error::injected("server-ingest-after-commit")
    ));
    Ok(IngestResult {
        outcomes,
        head_seq: head,
        touched,
    })
}

/// A row as read from the `rows` table, before decoding its fields.
struct StoredRowRef<'a> {
    table: String,
    row_id: String,
    seq: u64,
    deleted: bool,
    hlc: u64,
    replica: u64,
    fields: &'a [u8],
}

/// Builds the change sent for a stored row, moving decoded values instead of cloning them
/// (this is the hot path of every download). Returns `None` when everything the client would
/// get is its own writes, which it already knows.
fn row_change_from_stored(
    row: StoredRowRef<'_>,
    since: u64,
    exclude_replica: Option<u64>,
) -> Result<Option<RowChange>, StoreError> {
    let StoredRowRef {
        table,
        row_id,
        seq,
        deleted,
        hlc,
        replica,
        fields,
    } = row;
    let own = |r: u64| Some(r) == exclude_replica;
    if deleted {
        let change = RowChange {
            table,
            row_id,
            seq,
            deleted,
            fields: vec![],
            hlc: burrow_core::Hlc(hlc),
            evicted: false,
        };
        return Ok((!own(replica)).then_some(change));
    }
    let stored =
        burrow_proto::v1::StoredRow::decode(fields).map_err(|source| StoreError::Corrupt {
            table: table.clone(),
            row_id: row_id.clone(),
            source,
        })?;
    let mut excluded = 0usize;
    let fields: Vec<ChangedField> = stored
        .fields
        .into_iter()
        .filter(|f| f.seq > since)
        .filter(|f| {
            let mine = own(f.replica);
            excluded += usize::from(mine);
            !mine
        })
        .map(|f| ChangedField {
            column: f.column,
            value: burrow_proto::convert::value_from_wire(f.value),
            seq: f.seq,
        })
        .collect();
    if fields.is_empty() && (excluded > 0 || own(replica)) {
        return Ok(None);
    }
    Ok(Some(RowChange {
        table,
        row_id,
        seq,
        deleted,
        fields,
        hlc: burrow_core::Hlc(hlc),
        evicted: false,
    }))
}

/// Reads one stored row and builds the change sent for it (`None`: nothing to send).
fn read_change(
    tx: &Connection,
    table: &str,
    row_id: &str,
    since: u64,
    exclude_replica: Option<u64>,
) -> Result<Option<RowChange>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, deleted, hlc, fields, replica FROM rows WHERE tbl = ?1 AND id = ?2",
    )?;
    let mut rows = stmt.query(params![table, row_id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let blob = r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
    let stored = StoredRowRef {
        table: table.to_string(),
        row_id: row_id.to_string(),
        seq: r.get::<_, i64>(0)? as u64,
        deleted: r.get(1)?,
        hlc: r.get::<_, i64>(2)? as u64,
        replica: r.get::<_, i64>(4)? as u64,
        fields: blob,
    };
    row_change_from_stored(stored, since, exclude_replica)
}

/// A pull under sync rules (see `scope`); the caller saves `new_scope` with the writer.
fn pull_scoped_blocking(
    conn: &mut Connection,
    req: PullRequest,
) -> Result<(Page, Vec<super::scope::NewScope>), StoreError> {
    fail::fail_point!("server-pull", |_| Err(crate::error::injected(
        "server-pull"
    )));
    let tx = conn.transaction()?;
    let head = tx.query_row("SELECT value FROM meta WHERE key = 'head_seq'", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let Some(scope) = req.scope.as_ref() else {
        return Err(StoreError::Rules("a scoped pull needs its rules".into()));
    };
    let conn_ref: &Connection = &tx;
    let mut reader = |t: &str, id: &str, since: u64, exclude: Option<u64>| {
        read_change(conn_ref, t, id, since, exclude)
    };
    let out = super::scope::pull_scoped(conn_ref, &req, scope, head, &mut reader, &scope.schema)?;
    Ok((
        Page {
            changes: out.changes,
            cursor: out.cursor,
            more: out.more,
            head_seq: head,
            position: out.position,
            refused: out.refused,
            grants: Some(out.grants.into_iter().map(|b| b.0).collect()),
        },
        out.remember,
    ))
}

fn pull_blocking(conn: &mut Connection, req: PullRequest) -> Result<Page, StoreError> {
    fail::fail_point!("server-pull", |_| Err(crate::error::injected(
        "server-pull"
    )));
    let tx = conn.transaction()?;
    let head = tx.query_row("SELECT value FROM meta WHERE key = 'head_seq'", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let Cursor { since, after } = req.cursor;
    let mut changes = Vec::new();
    let mut bytes = 0usize;
    let mut rows_read = 0usize;
    let mut last = after;
    let mut more = false;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT tbl, id, seq, deleted, hlc, fields, replica FROM rows
             WHERE seq > ?1 AND (audience IS NULL OR instr(audience, ?2) > 0) ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![
            after as i64,
            conflict_log::audience_pattern(req.audience)
        ])?;
        while let Some(r) = rows.next()? {
            if bytes >= req.page_bytes_max || rows_read >= req.page_rows_max.max(1) {
                more = true;
                break;
            }
            let table: String = r.get(0)?;
            let id: String = r.get(1)?;
            let seq = r.get::<_, i64>(2)? as u64;
            let deleted: bool = r.get(3)?;
            last = seq;
            rows_read += 1;
            let blob = r.get_ref(5)?.as_blob().map_err(rusqlite::Error::from)?;
            bytes += blob.len() + table.len() + id.len() + 16;
            let hlc = r.get::<_, i64>(4)? as u64;
            let replica = r.get::<_, i64>(6)? as u64;
            let stored = StoredRowRef {
                table,
                row_id: id,
                seq,
                deleted,
                hlc,
                replica,
                fields: blob,
            };
            if let Some(change) = row_change_from_stored(stored, since, req.exclude_replica)? {
                changes.push(change);
            }
        }
    }
    let cursor = if more {
        Cursor { since, after: last }
    } else {
        Cursor::at(head.max(last))
    };
    Ok(Page {
        changes,
        cursor,
        more,
        head_seq: head,
        position: super::ScopePosition::default(),
        refused: Vec::new(),
        grants: None,
    })
}

impl ServerStore for SqliteServerStore {
    async fn ingest(&self, req: IngestRequest) -> Result<IngestResult, StoreError> {
        Self::blocking(self.writer.clone(), move |c| ingest_blocking(c, req)).await
    }

    async fn pull(&self, req: PullRequest) -> Result<Page, StoreError> {
        if req.scope.is_none() {
            return Self::blocking(self.reader.clone(), move |c| pull_blocking(c, req)).await;
        }
        let (page, remember) =
            Self::blocking(self.reader.clone(), move |c| pull_scoped_blocking(c, req)).await?;
        if !remember.is_empty() {
            // Remember the sets before the client can name them in a cursor.
            Self::blocking(self.writer.clone(), move |c| {
                for (hash, buckets) in &remember {
                    super::scope::save_scope(c, *hash, buckets)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(page)
    }

    async fn install_rules(
        &self,
        rules: Arc<burrow_core::rules::SyncRules>,
        schema: Arc<burrow_core::Schema>,
    ) -> Result<(), StoreError> {
        Self::blocking(self.writer.clone(), move |c| {
            super::scope::install(c, &rules, &schema, super::scope::fingerprint(&rules))
        })
        .await
    }

    async fn client_owner(&self, client_id: &str) -> Result<Option<String>, StoreError> {
        let client_id = client_id.to_string();
        Self::blocking(self.reader.clone(), move |c| {
            Ok(c.query_row(
                "SELECT user_id FROM clients WHERE client_id = ?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn head_seq(&self) -> Result<u64, StoreError> {
        Self::blocking(self.reader.clone(), |c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = 'head_seq'", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        })
        .await
    }

    async fn conflicts(&self, limit: usize) -> Result<Vec<ConflictEntry>, StoreError> {
        Self::blocking(self.reader.clone(), move |c| conflict_log::list(c, limit)).await
    }
}
