//! Scoped mode (`SimConfig::rules`): the server runs with sync rules and write permissions,
//! and this module is the independent oracle of invariant I10 (authorization). It evaluates
//! the rules by hand-written predicates over the server's rows (never through the server's
//! bucket or permission code):
//! - [`granted`]: the part of the server's state a user's grants cover (I10a);
//! - [`Judge`]: at the simulated server boundary, the verdict the permissions must give each
//!   uploaded local transaction, compared with the server's answer (I10b).

use crate::check::Dump;
use burrow_core::Value;
use burrow_proto::{decode_frame, v1};
use burrow_server::SqliteServerStore;
use burrow_server::http::AppState;
use rusqlite::OptionalExtension;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// The schema of scoped mode: [`crate::SIM_SCHEMA`] plus `items.team`, `items.owner` and
/// `batches.item` (the item a batch belongs to), the columns the sync rules filter on.
pub static SCOPED_SCHEMA: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::SIM_SCHEMA
        .replace(
            "pick = { type = \"text\", policy = \"manual\" }\n",
            "pick = { type = \"text\", policy = \"manual\" }\nteam = \"text\"\nowner = \"text\"\n",
        )
        .replace("label = \"text\"\n", "label = \"text\"\nitem = \"text\"\n")
});

/// The sync rules of scoped mode. Members (`role = 'member'`, claims `team`, `sub`) read the
/// items of their team not yet `delivered` (claim equality + row filter), the items they own
/// (a second stream on the same table), the batches of their team's items (a lookup) and, by
/// subscription, the batches of an item they own (a parameterised stream). A dispatcher reads
/// and writes everything. Members write items of their team or owned by them (judged on the
/// stored row and on the row after the write, so a non-owner cannot move an item to another
/// team), and batches of their team's items.
pub const SIM_RULES: &str = r#"
[streams.team_items]
table = "items"
when = "auth.role = 'member'"
where = "team = auth.team AND (phase IS NULL OR phase != 'delivered')"

[streams.own_items]
table = "items"
when = "auth.role = 'member'"
where = "owner = auth.sub"

[streams.team_batches]
table = "batches"
when = "auth.role = 'member'"
where = "item IN (SELECT id FROM items WHERE team = auth.team)"

[streams.item_batches]
table = "batches"
params = { item = "text" }
when = "auth.role = 'member' AND param.item IN (SELECT id FROM items WHERE owner = auth.sub)"
where = "item = param.item"

[streams.all_items]
table = "items"
when = "auth.role = 'dispatcher'"

[streams.all_batches]
table = "batches"
when = "auth.role = 'dispatcher'"

[[permissions]]
table = "*"
actions = ["insert", "update", "delete"]
when = "auth.role = 'dispatcher'"

[[permissions]]
table = "items"
actions = ["insert", "update", "delete"]
when = "auth.role = 'member' AND (team = auth.team OR owner = auth.sub)"

[[permissions]]
table = "batches"
actions = ["insert", "update", "delete"]
when = "auth.role = 'member' AND item IN (SELECT id FROM items WHERE team = auth.team)"
"#;

/// The parameterised stream the apps subscribe to.
pub const ITEM_BATCHES: &str = "item_batches";

/// The teams a member can belong to (`green` has no items at first).
pub const TEAMS: [&str; 3] = ["red", "blue", "green"];

/// A user's claims as the oracle sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimClaims {
    /// `sub`: the user id.
    pub sub: String,
    /// Whether `role = 'dispatcher'` (otherwise `member`).
    pub dispatcher: bool,
    /// `team` (members only).
    pub team: Option<String>,
}

impl SimClaims {
    /// The extra claims of the user's token.
    pub fn extra(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        let role = if self.dispatcher {
            "dispatcher"
        } else {
            "member"
        };
        m.insert("role".into(), serde_json::Value::String(role.into()));
        if let Some(t) = &self.team {
            m.insert("team".into(), serde_json::Value::String(t.clone()));
        }
        m
    }

    /// The claims a verified token carries.
    pub fn from_token(claims: &burrow_server::auth::Claims) -> SimClaims {
        let text = |k: &str| {
            claims
                .extra
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        SimClaims {
            sub: claims.sub.clone(),
            dispatcher: text("role").as_deref() == Some("dispatcher"),
            team: text("team"),
        }
    }
}

fn json_text<'a>(row: &'a BTreeMap<String, serde_json::Value>, col: &str) -> Option<&'a str> {
    row.get(col).and_then(|v| v.as_str())
}

/// I10a's oracle: the rows of `server` (the server's live rows) that `who`'s grants cover, given
/// the items the device subscribed to through [`ITEM_BATCHES`]. Each stream is a hand-written
/// predicate:
/// - `team_items`: `team = auth.team AND (phase IS NULL OR phase != 'delivered')`;
/// - `own_items`: `owner = auth.sub`;
/// - `team_batches`: `item` is the id of a live item with `team = auth.team`;
/// - `item_batches(item)`: subscribed, `item` = the param, and the param is the id of a live
///   item with `owner = auth.sub` (the stream's `when`);
/// - a dispatcher: everything.
pub fn granted(server: &Dump, who: &SimClaims, subscribed: &BTreeSet<String>) -> Dump {
    if who.dispatcher {
        return server.clone();
    }
    let empty = BTreeMap::new();
    let items = server.get("items").unwrap_or(&empty);
    let team = who.team.as_deref();
    let team_ids: BTreeSet<&String> = items
        .iter()
        .filter(|(_, r)| team.is_some() && json_text(r, "team") == team)
        .map(|(id, _)| id)
        .collect();
    let owned_ids: BTreeSet<&String> = items
        .iter()
        .filter(|(_, r)| json_text(r, "owner") == Some(who.sub.as_str()))
        .map(|(id, _)| id)
        .collect();
    let mut out = Dump::new();
    for (table, rows) in server {
        let keep: BTreeMap<_, _> = rows
            .iter()
            .filter(|(id, r)| match table.as_str() {
                "items" => {
                    let team_stream = team.is_some()
                        && json_text(r, "team") == team
                        && json_text(r, "phase") != Some("delivered");
                    team_stream || owned_ids.contains(id)
                }
                "batches" => json_text(r, "item").is_some_and(|item| {
                    let item = item.to_string();
                    team_ids.contains(&item)
                        || (subscribed.contains(&item) && owned_ids.contains(&item))
                }),
                _ => false,
            })
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        out.insert(table.clone(), keep);
    }
    out
}

/// I10a: a device holds exactly the rows its user's current grants cover, with the server's
/// values. `when` says at which point of the run (for the message).
pub fn same_scoped_state(
    index: usize,
    when: &str,
    dump: &Dump,
    granted: &Dump,
    violations: &mut Vec<String>,
) {
    for (t, (outside, missing, differ)) in crate::check::table_diffs(dump, granted) {
        violations.push(format!(
            "I10 device {index} ({when}): {t} differs from its grants on the server: held outside the grants {outside:?}, granted but missing {missing:?}, differing {differ:?}"
        ));
    }
}

type Row = BTreeMap<String, Value>;

fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    match row.get(col) {
        Some(Value::Text(t)) => Some(t.as_str()),
        _ => None,
    }
}

/// One uploaded local transaction the judge decided on.
#[derive(Debug)]
pub(crate) struct Judged {
    client_id: String,
    tx_id: u64,
    seqs: Vec<u64>,
    /// The first op the permissions forbid, with the oracle's reason.
    forbidden: Option<(u64, String)>,
    /// Ops of earlier transactions of the same request whose rows the verdict assumed as the
    /// op left them. The oracle does not model conflict resolution: when one of them met a
    /// conflict, the row may differ and the verdict is uncertain (the server's answer is
    /// taken, not checked).
    assumed: BTreeSet<u64>,
}

/// Rows as the earlier transactions of a request leave them (`None`: deleted), with the op
/// that wrote each last.
type Overlay = BTreeMap<(String, String), (Option<Row>, u64)>;

/// I10b's oracle at the server boundary: before a request reaches the server it decides, from
/// the server's stored rows, which local transactions the permissions must refuse; after the
/// answer it checks the server did exactly that, and that a refused transaction left no trace.
#[derive(Debug)]
pub struct Judge {
    conn: Mutex<rusqlite::Connection>,
    /// Ops of earlier parts of staged transactions, by (client, tx id).
    staged: Mutex<BTreeMap<(String, u64), BTreeMap<u64, v1::Op>>>,
    /// The last verdict the server gave (and the judge confirmed) per (client, op):
    /// `true` = refused as forbidden.
    verdicts: Mutex<BTreeMap<(String, u64), bool>>,
    /// Broken I10b checks.
    violations: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the judge could not read the server's rows.
#[derive(Debug, thiserror::Error)]
#[error("judge: {0}")]
pub struct JudgeError(String);

/// A stored row (when live) and, for a tombstone, its `(seq, replica)`.
type StoredState = (Option<Row>, Option<(u64, u64)>);

impl Judge {
    /// A judge reading the server database `db` through its own connection.
    pub fn open(db: &std::path::Path) -> Result<Judge, JudgeError> {
        let conn = rusqlite::Connection::open(db).map_err(|e| JudgeError(e.to_string()))?;
        Ok(Judge {
            conn: Mutex::new(conn),
            staged: Mutex::new(BTreeMap::new()),
            verdicts: Mutex::new(BTreeMap::new()),
            violations: Mutex::new(Vec::new()),
        })
    }

    /// The broken I10b checks so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    /// The verdicts of client `client_id`'s ops: `true` = the last judged delivery refused the
    /// op as forbidden (and the oracle agreed).
    pub fn verdicts(&self, client_id: &str) -> BTreeMap<u64, bool> {
        lock(&self.verdicts)
            .iter()
            .filter(|((c, _), _)| c == client_id)
            .map(|((_, s), v)| (*s, *v))
            .collect()
    }

    /// The stored row (live), and for a tombstone its `(seq, replica)`.
    fn stored_state(&self, table: &str, id: &str) -> Result<StoredState, String> {
        let conn = lock(&self.conn);
        let found = conn
            .query_row(
                "SELECT deleted, seq, fields, replica FROM rows WHERE tbl = ?1 AND id = ?2",
                [table, id],
                |r| {
                    Ok((
                        r.get::<_, bool>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| e.to_string())?;
        if let Some((true, seq, _, replica)) = found {
            return Ok((None, Some((seq as u64, replica as u64))));
        }
        Ok((Self::live(found.map(|(d, s, b, _)| (d, s, b)))?, None))
    }

    fn live(found: Option<(bool, i64, Vec<u8>)>) -> Result<Option<Row>, String> {
        match found {
            Some((false, seq, blob)) => {
                let row = burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
                    .map_err(|e| e.to_string())?;
                Ok(Some(
                    row.fields.into_iter().map(|(k, f)| (k, f.value)).collect(),
                ))
            }
            _ => Ok(None),
        }
    }

    /// Ids of the live items with `team = team` in the store, as `earlier` (transactions of
    /// the same request judged before) leaves them.
    fn team_items(
        &self,
        team: &str,
        earlier: &Overlay,
        assumed: &mut BTreeSet<u64>,
    ) -> Result<BTreeSet<String>, String> {
        let mut ids = BTreeSet::new();
        {
            let conn = lock(&self.conn);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, seq, fields FROM rows WHERE tbl = 'items' AND deleted = 0",
                )
                .map_err(|e| e.to_string())?;
            let mut q = stmt.query([]).map_err(|e| e.to_string())?;
            while let Some(r) = q.next().map_err(|e| e.to_string())? {
                let id: String = r.get(0).map_err(|e| e.to_string())?;
                let seq: i64 = r.get(1).map_err(|e| e.to_string())?;
                let blob: Vec<u8> = r.get(2).map_err(|e| e.to_string())?;
                let row = burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
                    .map_err(|e| e.to_string())?;
                if matches!(row.fields.get("team").map(|f| &f.value), Some(Value::Text(t)) if t == team)
                {
                    ids.insert(id);
                }
            }
        }
        for ((table, id), (row, seq)) in earlier {
            if table != "items" {
                continue;
            }
            assumed.insert(*seq);
            match row {
                Some(r) if text(r, "team") == Some(team) => {
                    ids.insert(id.clone());
                }
                _ => {
                    ids.remove(id);
                }
            }
        }
        Ok(ids)
    }

    /// Decides the request `body` sent with `claims` before the server sees it. Transactions
    /// with ops already recorded (deduplicated), staged parts, and transactions the validator
    /// refuses (a row id above the limit) are not judged.
    pub(crate) fn before(
        &self,
        claims: &SimClaims,
        body: &[u8],
        server: &AppState<SqliteServerStore>,
    ) -> Vec<Judged> {
        let Ok(req) = decode_frame::<v1::SyncRequest>(body, 1 << 28) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut earlier: Overlay = BTreeMap::new();
        for ltx in &req.upload {
            let key = (req.client_id.clone(), ltx.tx_id);
            let invalid = |op: &v1::Op| op.row_id.len() > burrow_server::validate::ROW_ID_BYTES_MAX;
            // Mirrors the server's staging: parts accumulate; the last part (or an invalid
            // part) consumes them.
            let ops: Vec<v1::Op> = {
                let mut staged = lock(&self.staged);
                if ltx.more_parts {
                    if ltx.ops.iter().any(invalid) {
                        staged.remove(&key);
                    } else {
                        let group = staged.entry(key).or_default();
                        for op in &ltx.ops {
                            group.insert(op.client_seq, op.clone());
                        }
                    }
                    continue;
                }
                let mut group = staged.remove(&key).unwrap_or_default();
                for op in &ltx.ops {
                    group.insert(op.client_seq, op.clone());
                }
                group.into_values().collect()
            };
            let recorded = ops.iter().any(|op| {
                server
                    .store()
                    .op_answer_recorded(&req.client_id, op.client_seq)
                    .unwrap_or(true)
            });
            if recorded || ops.iter().any(invalid) {
                continue;
            }
            let mut local: Overlay = BTreeMap::new();
            let mut forbidden = None;
            let mut assumed = BTreeSet::new();
            for op in &ops {
                match self.judge_op(
                    claims,
                    &req.client_id,
                    op,
                    &earlier,
                    &mut local,
                    &mut assumed,
                ) {
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        forbidden = Some((op.client_seq, why));
                        break;
                    }
                    Err(e) => {
                        lock(&self.violations).push(format!("judge: {e}"));
                        return out;
                    }
                }
            }
            if forbidden.is_none() {
                earlier.extend(local);
            } else if std::env::var_os("SIM_LOG").is_some() {
                eprintln!(
                    "judge: {} tx {} forbidden: {forbidden:?}",
                    req.client_id, ltx.tx_id
                );
            }
            out.push(Judged {
                client_id: req.client_id.clone(),
                tx_id: ltx.tx_id,
                seqs: ops.iter().map(|o| o.client_seq).collect(),
                forbidden,
                assumed,
            });
        }
        out
    }

    /// `Some(reason)` when the permissions forbid `op` (hand-written predicates of
    /// [`SIM_RULES`]); updates `local` with the row as the op leaves it, and `assumed` with
    /// the ops of `earlier` the verdict relies on.
    fn judge_op(
        &self,
        who: &SimClaims,
        client_id: &str,
        op: &v1::Op,
        earlier: &Overlay,
        local: &mut Overlay,
        assumed: &mut BTreeSet<u64>,
    ) -> Result<Option<String>, String> {
        if op.table == burrow_core::conflict::CONFLICTS_TABLE {
            return self.judge_resolution(who, client_id, op, earlier, local, assumed);
        }
        let key = (op.table.clone(), op.row_id.clone());
        let delete = op.kind == v1::OpKind::Delete as i32;
        let writer = burrow_core::resolve::replica_tag(client_id);
        let mapped = match local.get(&key) {
            Some((row, _)) => Some(row.clone()),
            None => earlier.get(&key).map(|(row, seq)| {
                assumed.insert(*seq);
                row.clone()
            }),
        };
        let (stored, stored_tomb) = self.stored_state(&op.table, &op.row_id)?;
        // The tombstone the op meets, if any: one from before this request, or this client's
        // own delete earlier in the request (`None` in the maps).
        let tomb = match &mapped {
            Some(None) => stored_tomb.or(Some((u64::MAX, writer))),
            Some(Some(_)) => None,
            None => stored_tomb,
        };
        if let Some((tomb_seq, tomb_replica)) = tomb {
            // A write with no effect on a tombstone is not judged: deleting it again, or a
            // write its author had not seen (it loses to the delete).
            let unseen = op.base_seq < tomb_seq && tomb_replica != writer;
            if delete || unseen {
                local.insert(key, (None, op.client_seq));
                return Ok(None);
            }
        }
        let old = match mapped {
            Some(r) => r,
            None => stored,
        };
        let new = if delete {
            None
        } else {
            let mut row = old.clone().unwrap_or_default();
            for f in &op.fields {
                let v = burrow_proto::convert::value_from_wire(f.value.clone());
                row.insert(f.column.clone(), v);
            }
            Some(row)
        };
        local.insert(key, (new.clone(), op.client_seq));
        if who.dispatcher {
            return Ok(None);
        }
        let team_items = self.writable_items(who, &op.table, earlier, assumed)?;
        let may = |row: Option<&Row>| may_write(who, &op.table, &team_items, row);
        let (action, ok) = match (delete, &old) {
            (true, _) => ("delete", may(old.as_ref())),
            (false, Some(_)) => ("update", may(old.as_ref()) && may(new.as_ref())),
            (false, None) => ("insert", may(new.as_ref())),
        };
        Ok((!ok).then(|| {
            format!(
                "{action} of {}/{} by {} (team {:?}): old {:?}, new {:?}",
                op.table,
                op.row_id,
                who.sub,
                who.team,
                old.as_ref().map(summary),
                new.as_ref().map(summary)
            )
        }))
    }

    /// The items whose batches `who` may write (those of their team), when `table` is
    /// `batches`.
    fn writable_items(
        &self,
        who: &SimClaims,
        table: &str,
        earlier: &Overlay,
        assumed: &mut BTreeSet<u64>,
    ) -> Result<BTreeSet<String>, String> {
        match who.team.as_deref() {
            Some(t) if table == "batches" => self.team_items(t, earlier, assumed),
            _ => Ok(BTreeSet::new()),
        }
    }

    /// Closing conflict record `op.row_id`: allowed for a device involved in it whose user may
    /// update the conflicted row (as the transaction leaves it); an unknown or closed record
    /// is not judged (no effect).
    fn judge_resolution(
        &self,
        who: &SimClaims,
        client_id: &str,
        op: &v1::Op,
        earlier: &Overlay,
        local: &Overlay,
        assumed: &mut BTreeSet<u64>,
    ) -> Result<Option<String>, String> {
        let found = {
            let conn = lock(&self.conn);
            conn.query_row(
                "SELECT seq, fields, audience FROM rows WHERE tbl = ?1 AND id = ?2",
                [burrow_core::conflict::CONFLICTS_TABLE, op.row_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| e.to_string())?
        };
        let Some((seq, blob, audience)) = found else {
            return Ok(None);
        };
        let row = burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
            .map_err(|e| e.to_string())?;
        let Some(entry) = burrow_core::conflict::ConflictEntry::from_fields(
            &op.row_id,
            seq as u64,
            row.fields.iter().map(|(c, f)| (c.as_str(), &f.value)),
        ) else {
            return Ok(None);
        };
        if entry.status != burrow_core::conflict::ConflictStatus::Open {
            return Ok(None);
        }
        let writer = burrow_core::resolve::replica_tag(client_id);
        if !audience
            .as_deref()
            .is_some_and(|a| a.split(',').any(|r| r == writer.to_string()))
        {
            return Ok(Some(format!(
                "closing {} by {}: not one of its devices",
                entry.id, who.sub
            )));
        }
        if who.dispatcher {
            return Ok(None);
        }
        let key = (entry.table.clone(), entry.row_id.clone());
        let target = match local.get(&key) {
            Some((row, _)) => row.clone(),
            None => match earlier.get(&key) {
                Some((row, seq)) => {
                    assumed.insert(*seq);
                    row.clone()
                }
                None => self.stored_state(&entry.table, &entry.row_id)?.0,
            },
        };
        let Some(target) = target else {
            return Ok(None);
        };
        let team_items = self.writable_items(who, &entry.table, earlier, assumed)?;
        Ok(
            (!may_write(who, &entry.table, &team_items, Some(&target))).then(|| {
                format!(
                    "closing {} by {} (team {:?}): may not update {}/{} ({})",
                    entry.id,
                    who.sub,
                    who.team,
                    entry.table,
                    entry.row_id,
                    summary(&target)
                )
            }),
        )
    }

    /// Checks the server's `answer` against the verdicts of [`Judge::before`]; returns how many
    /// forbidden transactions the server refused.
    pub(crate) fn after(
        &self,
        judged: Vec<Judged>,
        answer: &[u8],
        server: &AppState<SqliteServerStore>,
    ) -> u64 {
        let Ok(resp) = decode_frame::<v1::SyncResponse>(answer, 1 << 28) else {
            return 0;
        };
        let outcomes: BTreeMap<u64, &v1::OpOutcome> =
            resp.outcomes.iter().map(|o| (o.client_seq, o)).collect();
        let rejected = v1::OutcomeKind::Rejected as i32;
        let mut refused = 0;
        let mut violations = lock(&self.violations);
        let mut verdicts = lock(&self.verdicts);
        let applied = v1::OutcomeKind::Applied as i32;
        for j in judged {
            let uncertain = j
                .assumed
                .iter()
                .any(|s| outcomes.get(s).is_none_or(|o| o.kind != applied));
            if uncertain {
                // The verdict assumed rows an earlier transaction of the request left as the
                // oracle computed them, but that transaction met a conflict (or was refused):
                // take the server's answer.
                if std::env::var_os("SIM_LOG").is_some() {
                    let kinds: Vec<_> = j
                        .assumed
                        .iter()
                        .map(|s| outcomes.get(s).map(|o| (o.kind, o.code.clone())))
                        .collect();
                    eprintln!(
                        "judge: {} tx {} uncertain (assumed ops {:?}: {kinds:?})",
                        j.client_id, j.tx_id, j.assumed
                    );
                }
                for seq in &j.seqs {
                    if let Some(o) = outcomes.get(seq) {
                        let denied = o.kind == rejected
                            && matches!(
                                o.code.as_str(),
                                "permission_denied" | "transaction_rejected"
                            );
                        verdicts.insert((j.client_id.clone(), *seq), denied);
                    }
                }
                continue;
            }
            let mut answered = true;
            match &j.forbidden {
                Some((bad, why)) => {
                    let mut ok = true;
                    for seq in &j.seqs {
                        let want = if seq == bad {
                            "permission_denied"
                        } else {
                            "transaction_rejected"
                        };
                        match outcomes.get(seq) {
                            Some(o) if o.kind == rejected && o.code == want => {}
                            Some(o) => {
                                ok = false;
                                violations.push(format!(
                                    "I10 forbidden write not refused: client {} tx {} op {seq}: outcome kind {} code {:?} \"{}\", expected {want}; oracle: {why}",
                                    j.client_id, j.tx_id, o.kind, o.code, o.message
                                ));
                            }
                            None => answered = false,
                        }
                        let n = server
                            .store()
                            .op_effect_count(&j.client_id, *seq)
                            .unwrap_or(0);
                        if n != 0 && ok {
                            violations.push(format!(
                                "I10 forbidden write took effect: client {} op {seq} recorded {n} times; oracle: {why}",
                                j.client_id
                            ));
                        }
                    }
                    if ok && answered {
                        refused += 1;
                    }
                }
                None => {
                    for seq in &j.seqs {
                        match outcomes.get(seq) {
                            Some(o)
                                if o.kind == rejected
                                    && matches!(
                                        o.code.as_str(),
                                        "permission_denied" | "lookup_failed"
                                    ) =>
                            {
                                violations.push(format!(
                                    "I10 allowed write refused: client {} tx {} op {seq}: {} \"{}\"",
                                    j.client_id, j.tx_id, o.code, o.message
                                ));
                            }
                            Some(_) => {}
                            None => answered = false,
                        }
                    }
                }
            }
            if answered {
                for seq in &j.seqs {
                    verdicts.insert((j.client_id.clone(), *seq), j.forbidden.is_some());
                }
            }
        }
        refused
    }
}

/// The hand-written write predicate of [`SIM_RULES`] for members: items of their team or
/// owned by them; batches of an item of their team (`team_items`). A missing row reads as
/// NULLs (fail closed).
fn may_write(
    who: &SimClaims,
    table: &str,
    team_items: &BTreeSet<String>,
    row: Option<&Row>,
) -> bool {
    let Some(row) = row else { return false };
    match table {
        "items" => {
            (who.team.is_some() && text(row, "team") == who.team.as_deref())
                || text(row, "owner") == Some(who.sub.as_str())
        }
        "batches" => text(row, "item").is_some_and(|i| team_items.contains(i)),
        _ => false,
    }
}

fn summary(row: &Row) -> String {
    ["team", "owner", "item"]
        .iter()
        .filter_map(|c| text(row, c).map(|v| format!("{c}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}
