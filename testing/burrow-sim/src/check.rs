//! The invariants of the testing plan, checked against real databases.

use crate::net::{POISONED_VALUE, PoisonRule};
use crate::world::Device;
pub use crate::world::SimReport;
use burrow_client::Client;
use burrow_core::Schema;
use burrow_core::conflict::{CONFLICTS_TABLE, ConflictEntry};
use burrow_server::SqliteServerStore;
use burrow_server::http::AppState;
use burrow_server::store::ServerStore;
use burrow_server::validate::ROW_ID_BYTES_MAX;
use rusqlite::OptionalExtension;
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

/// How one table of a replica differs from the reference: up to three ids only in the
/// replica, up to three only in the reference, and up to two differing rows.
pub type TableDiff<'a> = (Vec<&'a String>, Vec<&'a String>, Vec<String>);

/// Compares every table of `mine` with `theirs`; yields `(table, diff)` for each that differs.
pub fn table_diffs<'a>(mine: &'a Dump, theirs: &'a Dump) -> Vec<(&'a String, TableDiff<'a>)> {
    static EMPTY: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    let tables: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    for t in tables {
        let a = mine.get(t).unwrap_or(&EMPTY);
        let b = theirs.get(t).unwrap_or(&EMPTY);
        if a == b {
            continue;
        }
        let only_mine: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).take(3).collect();
        let only_theirs: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).take(3).collect();
        let differ: Vec<String> = a
            .iter()
            .filter_map(|(k, v)| {
                b.get(k)
                    .filter(|w| *w != v)
                    .map(|w| format!("{k}: {v:?} vs server {w:?}"))
            })
            .take(2)
            .collect();
        out.push((t, (only_mine, only_theirs, differ)));
    }
    out
}

/// I3: a replica holds exactly the server's state.
pub fn same_state(index: usize, dump: &Dump, server: &Dump, report: &mut SimReport) {
    for (t, (only_mine, only_server, differ)) in table_diffs(dump, server) {
        report.violations.push(format!(
                "I3 device {index} diverges from the server in {t}: only local {only_mine:?}, only server {only_server:?}, differing {differ:?}"
            ));
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

/// What the simulator knows of one op it made a device commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpNote {
    /// Its local transaction (`_burrow_outbox.tx`).
    pub tx: i64,
    /// The code the server must refuse it with, when it belongs to a poisoned class.
    pub poison: Option<&'static str>,
}

/// The code the server refuses an op with when it is poisoned: a row id above the server's
/// limit (`invalid_row_id`, from the real validator) or a value `rule` refuses
/// ([`POISONED_VALUE`]); `None` for an op the server must accept.
pub fn poison_code(
    rule: Option<&PoisonRule>,
    table: &str,
    row_id: &str,
    data: Option<&str>,
) -> Option<&'static str> {
    if table == CONFLICTS_TABLE {
        return None;
    }
    // The poison rule answers before the real validator sees the op.
    let refused = rule.is_some_and(|rule| {
        data.and_then(|d| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(d).ok()
        })
        .is_some_and(|obj| {
            obj.iter()
                .any(|(col, v)| v.as_str().is_some_and(|t| rule.refuses(table, col, t)))
        })
    });
    if refused {
        Some(POISONED_VALUE)
    } else if row_id.len() > ROW_ID_BYTES_MAX {
        Some("invalid_row_id")
    } else {
        None
    }
}

/// Records the ops the device queued after `after_seq` (its new writes, or ops re-queued by
/// `retry_rejected`), classified by [`poison_code`].
pub(crate) fn note_ops(
    d: &mut Device,
    client: &Client,
    rule: Option<&PoisonRule>,
    after_seq: u64,
    report: &mut SimReport,
) {
    type Row = (i64, i64, String, String, Option<String>);
    let rows = client.with_connection(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT seq, tx, tbl, row_id, data FROM _burrow_outbox WHERE seq > ?1 ORDER BY seq",
        )?;
        let v = stmt
            .query_map([after_seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<Vec<Row>>>()?;
        Ok(v)
    });
    match rows {
        Ok(rows) => {
            for (seq, tx, table, row_id, data) in rows {
                let poison = poison_code(rule, &table, &row_id, data.as_deref());
                d.ops.insert(seq as u64, OpNote { tx, poison });
            }
        }
        Err(e) => report
            .violations
            .push(format!("device {}: outbox unreadable: {e}", d.index)),
    }
}

/// I1 + I2 + Q1: every committed op the server may accept is recorded by the server exactly
/// once and never rejected; every poisoned op, and every other op of its local transaction, is
/// never applied and sits in the rejected list with its reason (the poisoned op with its own
/// code, its siblings with `transaction_rejected`) unless the app retried or discarded it; no
/// op is rejected because of authentication.
///
/// Scoped mode (I10b): `forbidden` holds the verdict of the last delivery of each op the
/// server judged (`true`: refused by the permissions, confirmed by the oracle at the server
/// boundary). Such an op must never have been applied and must sit in the rejected list with
/// `permission_denied` or `transaction_rejected`, unless the app retried or discarded it; an op
/// the device holds as refused by the permissions must have been judged forbidden last.
pub(crate) async fn zero_loss_no_dups(
    d: &Device,
    client: &Client,
    server: &AppState<SqliteServerStore>,
    forbidden: &BTreeMap<u64, bool>,
    report: &mut SimReport,
) -> Result<(), String> {
    let rejected: BTreeMap<u64, _> = client
        .rejected_ops()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.client_seq, r))
        .collect();
    let poisoned_txs: std::collections::BTreeSet<i64> = d
        .ops
        .values()
        .filter(|n| n.poison.is_some())
        .map(|n| n.tx)
        .collect();
    let store = server.store();
    let mut broken = 0;
    for seq in 1..=d.ops_committed {
        let note = d.ops.get(&seq);
        let poison = note.and_then(|n| n.poison);
        let in_poisoned_tx = note.is_some_and(|n| poisoned_txs.contains(&n.tx));
        let n = store
            .op_effect_count(&d.client_id, seq)
            .map_err(|e| e.to_string())?;
        let before = report.violations.len();
        let judged_forbidden = forbidden.get(&seq).copied();
        let permission_code =
            |code: &str| matches!(code, "permission_denied" | "transaction_rejected");
        if !in_poisoned_tx && judged_forbidden.is_some() && {
            let r = rejected.get(&seq);
            judged_forbidden == Some(true) || r.is_some_and(|r| r.code == "permission_denied")
        } {
            // I10b: refused by the permissions.
            let r = rejected.get(&seq);
            if n != 0 {
                report.violations.push(format!(
                    "I10 device {}: op {seq} was refused by the permissions ({}) but the server recorded it {n} times (last verdict: {})",
                    d.index,
                    r.map(|r| r.code.as_str()).unwrap_or("not in the rejected list"),
                    if judged_forbidden == Some(true) { "forbidden" } else { "allowed" }
                ));
            } else if judged_forbidden != Some(true) {
                report.violations.push(format!(
                    "I10 device {}: op {seq} is in the rejected list as {} but its last judged delivery was allowed",
                    d.index,
                    r.map(|r| r.code.as_str()).unwrap_or("-")
                ));
            } else {
                match r {
                    Some(r) if permission_code(&r.code) && !r.message.is_empty() => {}
                    Some(r) => report.violations.push(format!(
                        "I10 device {}: forbidden op {seq} rejected with {} \"{}\", expected permission_denied or transaction_rejected",
                        d.index, r.code, r.message
                    )),
                    None if d.retried.contains(&seq) || d.discarded.contains(&seq) => {}
                    None => report.violations.push(format!(
                        "I10 device {}: forbidden op {seq} is not in the rejected list (dropped or lost)",
                        d.index
                    )),
                }
            }
        } else if !in_poisoned_tx {
            if let Some(r) = rejected.get(&seq) {
                let why = if r.code.contains("token") || r.code.contains("auth") {
                    "A2 rejected because of authentication"
                } else {
                    "I1 rejected in a valid workload"
                };
                report.violations.push(format!(
                    "{why}: device {} op {seq}: {} {}",
                    d.index, r.code, r.message
                ));
            } else if n != 1 {
                report.violations.push(format!(
                    "I{} device {}: op {seq} recorded {n} times by the server",
                    if n == 0 { 1 } else { 2 },
                    d.index
                ));
            }
        } else {
            if n != 0 {
                report.violations.push(format!(
                    "Q1 device {}: op {seq} of a poisoned transaction was applied by the server ({n} records)",
                    d.index
                ));
            }
            let allowed: &[&str] = match poison {
                Some(code) => &[code, "transaction_rejected"],
                None => &["transaction_rejected"],
            };
            match rejected.get(&seq) {
                Some(r) if allowed.contains(&r.code.as_str()) && !r.message.is_empty() => {}
                Some(r) => report.violations.push(format!(
                    "Q1 device {}: op {seq} ({}) rejected with {} \"{}\", expected one of {allowed:?}",
                    d.index,
                    poison.unwrap_or("sibling of a poisoned op"),
                    r.code,
                    r.message
                )),
                None if d.retried.contains(&seq) || d.discarded.contains(&seq) => {}
                None => report.violations.push(format!(
                    "Q1 device {}: op {seq} ({}) is not in the rejected list (dropped or lost)",
                    d.index,
                    poison.unwrap_or("sibling of a poisoned op")
                )),
            }
        }
        if report.violations.len() > before {
            broken += 1;
            if broken >= 5 {
                break;
            }
        }
    }
    for (seq, r) in rejected.range(d.ops_committed + 1..) {
        report.violations.push(format!(
            "Q1 device {}: rejected op {seq} ({}) was never committed",
            d.index, r.code
        ));
    }
    Ok(())
}

/// Whether the device holds the server's confirmed state of `table/row_id` (a live shadow).
pub(crate) fn confirmed_row(client: &Client, table: &str, row_id: &str) -> bool {
    client
        .with_connection(|c| {
            Ok(c.query_row(
                "SELECT EXISTS(SELECT 1 FROM _burrow_shadow WHERE tbl = ?1 AND id = ?2 AND deleted = 0)",
                [table, row_id],
                |r| r.get(0),
            )?)
        })
        .unwrap_or(false)
}

/// Q2: every row of a rejected op that has no op left in the outbox shows the server-confirmed
/// state (the shadow) in its plain columns: a rejection restores what the server holds.
pub(crate) fn rejected_rows_show_server_state(
    index: usize,
    client: &Client,
    schema: &Schema,
    report: &mut SimReport,
) {
    let rejected = match client.rejected_ops() {
        Ok(r) => r,
        Err(e) => {
            report
                .violations
                .push(format!("device {index}: rejected list unreadable: {e}"));
            return;
        }
    };
    let rows: std::collections::BTreeSet<(String, String)> =
        rejected.into_iter().map(|r| (r.table, r.row_id)).collect();
    for (table, row_id) in rows {
        let Some(t) = schema.table(&table) else {
            continue;
        };
        match row_matches_shadow(client, t, &row_id) {
            Ok(None) => {}
            Ok(Some(diff)) => report.violations.push(format!(
                "Q2 device {index}: {table}/{row_id} after a rejection: {diff}"
            )),
            Err(e) => report
                .violations
                .push(format!("device {index}: {table}/{row_id}: {e}")),
        }
    }
}

/// `Some(difference)` when the visible row differs from the shadow in a plain column; `None`
/// when it matches or ops on the row are still queued.
fn row_matches_shadow(
    client: &Client,
    table: &burrow_core::Table,
    row_id: &str,
) -> Result<Option<String>, String> {
    type Shadow = Option<(bool, i64, Vec<u8>)>;
    let (queued, shadow): (bool, Shadow) = client
        .with_connection(|c| {
            let queued = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM _burrow_outbox WHERE tbl = ?1 AND row_id = ?2)",
                rusqlite::params![table.name, row_id],
                |r| r.get(0),
            )?;
            let shadow = c
                .query_row(
                    "SELECT deleted, seq, fields FROM _burrow_shadow WHERE tbl = ?1 AND id = ?2",
                    rusqlite::params![table.name, row_id],
                    |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            Ok((queued, shadow))
        })
        .map_err(|e| e.to_string())?;
    if queued {
        return Ok(None);
    }
    let visible = client
        .query_json(&format!(
            "SELECT * FROM \"{}\" WHERE id = '{}'",
            table.name,
            row_id.replace('\'', "''")
        ))
        .map_err(|e| e.to_string())?
        .into_iter()
        .next();
    let confirmed = match shadow {
        Some((false, seq, blob)) => Some(
            burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    match (visible, confirmed) {
        (None, None) => Ok(None),
        (Some(_), None) => Ok(Some("visible, but the server holds no such row".into())),
        (None, Some(_)) => Ok(Some("gone, but the server holds the row".into())),
        (Some(v), Some(s)) => {
            let differ: Vec<String> = table
                .columns
                .iter()
                .filter(|c| !c.policy.is_merged())
                .filter_map(|c| {
                    let mine = v.get(&c.name).cloned().unwrap_or_default();
                    let theirs = s
                        .fields
                        .get(&c.name)
                        .map(|f| f.value.to_json())
                        .unwrap_or_default();
                    (mine != theirs).then(|| format!("{}: {mine} vs confirmed {theirs}", c.name))
                })
                .collect();
            Ok((!differ.is_empty()).then(|| differ.join(", ")))
        }
    }
}

/// The queue of a device: outbox `(seq, ack_seq, staged)`, rejected ops and cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueSnapshot {
    outbox: Vec<(i64, Option<i64>, i64)>,
    rejected: Vec<i64>,
    cursor: (i64, i64),
}

/// Reads the device's queue.
pub(crate) fn queue_snapshot(client: &Client) -> Result<QueueSnapshot, String> {
    client
        .with_connection(|c| {
            let mut stmt =
                c.prepare_cached("SELECT seq, ack_seq, staged FROM _burrow_outbox ORDER BY seq")?;
            let outbox = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare_cached("SELECT seq FROM _burrow_rejected ORDER BY seq")?;
            let rejected = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let cursor = c.query_row(
                "SELECT cursor_since, cursor_after FROM _burrow_local WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(QueueSnapshot {
                outbox,
                rejected,
                cursor,
            })
        })
        .map_err(|e| e.to_string())
}

/// A1: a sync with an expired token fails, and leaves the outbox, the rejected list and the
/// cursor exactly as they were (`before` is the queue when the sync started, `None` when the
/// token was valid); a valid token is never refused.
pub(crate) fn expiry_keeps_queue(
    index: usize,
    client: &Client,
    before: Option<QueueSnapshot>,
    result: &Result<burrow_client::SyncReport, burrow_client::Error>,
    report: &mut SimReport,
) {
    let refused = matches!(
        result,
        Err(burrow_client::Error::Transport(
            burrow_client::TransportError::Unauthorized { .. }
        ))
    );
    let Some(before) = before else {
        if refused {
            report.violations.push(format!(
                "A1 device {index}: a valid token was refused: {result:?}"
            ));
        }
        return;
    };
    match result {
        Ok(_) => report.violations.push(format!(
            "A1 device {index}: a sync succeeded with an expired token"
        )),
        Err(burrow_client::Error::Transport(burrow_client::TransportError::Unauthorized {
            code,
            ..
        })) if code != "token_expired" => report.violations.push(format!(
            "A1 device {index}: an expired token was refused with {code}, not token_expired"
        )),
        Err(_) => {}
    }
    match queue_snapshot(client) {
        Ok(after) if after == before => {}
        Ok(after) => report.violations.push(format!(
            "A1 device {index}: the queue changed while the token was expired: outbox {} -> {} ops, rejected {:?} -> {:?}, cursor {:?} -> {:?}",
            before.outbox.len(),
            after.outbox.len(),
            before.rejected,
            after.rejected,
            before.cursor,
            after.cursor
        )),
        Err(e) => report.violations.push(format!("device {index}: {e}")),
    }
}

/// E1: a failed sync fails for a reason the simulator injected — the app went offline
/// (`offline`), the network (`unreachable`, `connection_lost`), an expired token
/// (`unauthorized`, A1 judges it), the server's or the device's storage (`server_error`,
/// `storage`: failpoints and restarts). Any other kind (a timeout, a refused or undecodable
/// exchange, a rate limit, a configuration error) would be a bug.
pub(crate) fn failure_is_explained(
    index: usize,
    result: &Result<burrow_client::SyncReport, burrow_client::Error>,
    report: &mut SimReport,
) {
    use burrow_client::FailureKind;
    let Err(e) = result else { return };
    let kind = e.failure_kind();
    if !matches!(
        kind,
        FailureKind::Offline
            | FailureKind::Unreachable
            | FailureKind::ConnectionLost
            | FailureKind::Unauthorized
            | FailureKind::ServerError
            | FailureKind::Storage
    ) {
        report.violations.push(format!(
            "E1 device {index}: a sync failed with kind `{kind}`, which no injected fault explains: {e}"
        ));
    }
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
