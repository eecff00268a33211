//! Conflict resolution: how an op changes the server's state of a row, field by field, under
//! each column's policy (see `docs/schema-file.md#policies`).
//!
//! The server keeps, for every field, the version that set it ([`FieldVersion`]). An incoming
//! write either *follows* that version (its author had seen it: the op's `base_seq` is at or
//! above the version's sequence, or it is the same device's later write) and simply replaces
//! it, or is *concurrent* with it. Concurrent writes are decided by the column's policy:
//! - `merge`, `lww`, `manual`: the later (server-corrected) hybrid logical time wins, ties
//!   broken by the replica tag; `manual` also opens a conflict that keeps every version;
//! - `min`, `max`, `order`, `prefer`, `max_by`: the rule decides, ties fall back to `lww`;
//! - `custom:NAME`: a registered [`CustomResolver`] picks a side or merges;
//! - `counter`, `text`, `list`: never conflict — increments add up, CRDT updates merge.
//!
//! Every value a concurrent write overwrote, or that lost, becomes a [`ConflictRecord`] for
//! the conflict log. Deletes concurrent with updates follow the table's
//! [`DeleteConflict`] mode.

use crate::claims::ClaimSet;
use crate::conflict::WHOLE_ROW;
use crate::crdt::{self, CrdtKind};
use crate::hlc::Hlc;
use crate::op::{Op, OpKind, OutcomeKind};
use crate::schema::{Column, DeleteConflict, Policy, Table};
use crate::value::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who set a field and when, as the server stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldVersion {
    /// Server sequence of the change.
    pub seq: u64,
    /// HLC of the write, corrected to server time.
    pub hlc: Hlc,
    /// Stable tag of the writing replica (see [`replica_tag`]); 0 for merged values (counters,
    /// CRDTs, custom merges), which have no single author.
    pub replica: u64,
}

/// An incoming write's identity for resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingWrite {
    /// HLC of the write (server-corrected).
    pub hlc: Hlc,
    /// Tag of the writing replica.
    pub replica: u64,
    /// The row version its author had seen.
    pub base_seq: u64,
}

/// Whether `w` happened after `v` in LWW order: later HLC, then larger replica tag.
pub fn lww_wins(w: &IncomingWrite, v: &FieldVersion) -> bool {
    (w.hlc, w.replica) > (v.hlc, v.replica)
}

/// Whether an incoming write follows (has seen, or is the same device's later write of) the
/// current version; otherwise the two are concurrent.
pub fn follows(current: &FieldVersion, incoming: &IncomingWrite) -> bool {
    current.replica == incoming.replica || current.seq <= incoming.base_seq
}

/// Whether a delete with `base_seq` overwrote a concurrent write that set `v`: the value was
/// written by another replica after the deleting device last saw the row.
pub fn delete_overrides_concurrent(v: &FieldVersion, delete_replica: u64, base_seq: u64) -> bool {
    v.replica != delete_replica && v.seq > base_seq
}

/// A stable 64-bit tag for a client id (FNV-1a), used for deterministic tie-breaks that do not
/// depend on the order in which the server first met the clients.
pub fn replica_tag(client_id: &str) -> u64 {
    crate::hash::fnv1a64(client_id.as_bytes())
}

/// One field as the server stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredField {
    /// Current value (for `text`/`list` columns: the CRDT document's bytes).
    pub value: Value,
    /// Who set it and when.
    pub version: FieldVersion,
    /// What the column's rule compared when this value was written: whether the writer was
    /// preferred (`prefer`), or the row's value of the other column (`max_by`); `Null`
    /// otherwise.
    pub rank: Value,
}

/// The server's state of one row: live fields or a tombstone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerRow {
    /// The row is deleted. A tombstone keeps its last fields only in tables whose
    /// `on_delete_conflict` is not `delete_wins` (so a winning update can bring them back);
    /// they are never sent to devices.
    pub deleted: bool,
    /// Sequence of the row's latest change.
    pub seq: u64,
    /// Latest HLC among the row's changes.
    pub hlc: Hlc,
    /// Replica tag of the latest change's author (for a tombstone: who deleted it).
    pub replica: u64,
    /// Fields by column name.
    pub fields: BTreeMap<String, StoredField>,
}

/// What a custom resolver sees of one concurrent write to a field.
#[derive(Debug)]
pub struct CustomInput<'a> {
    /// Table of the row.
    pub table: &'a str,
    /// Primary key of the row.
    pub row_id: &'a str,
    /// The column.
    pub column: &'a str,
    /// The server's current value and who set it.
    pub current: &'a StoredField,
    /// The incoming value.
    pub incoming: &'a Value,
    /// The incoming write's time and replica.
    pub incoming_write: IncomingWrite,
    /// The incoming writer's token claims.
    pub claims: &'a ClaimSet,
    /// The row as the server holds it before the op.
    pub row: &'a ServerRow,
    /// The whole incoming op (its other fields).
    pub op: &'a Op,
    /// The writes are concurrent; `false` when the incoming writer had seen the current value
    /// (or wrote it itself), i.e. the incoming write is a deliberate edit of it.
    pub concurrent: bool,
}

/// A custom resolver's decision for one field.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomChoice {
    /// Keep the current value; the incoming one is logged as the loser.
    KeepCurrent,
    /// Take the incoming value; the current one is logged as the loser.
    TakeIncoming,
    /// Store this value instead of either; both are logged as losers. It must conform to
    /// the column's type (otherwise the current value is kept).
    Merge(Value),
}

/// A server-side rule for `custom:NAME` columns, for cases the declarative policies cannot
/// express. Register it with the server under `NAME`. It must be deterministic: a pure
/// function of its input.
pub trait CustomResolver: Send + Sync + std::fmt::Debug {
    /// Decides a concurrent write to one field.
    fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice;
}

/// Custom resolvers by name.
pub type CustomResolvers = BTreeMap<String, Arc<dyn CustomResolver>>;

/// A value that lost (or was overwritten), for the conflict log.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRecord {
    /// Column whose value lost; `*` for a whole row (a delete against an update).
    pub column: String,
    /// The losing value (for a row: a JSON object of its fields; for a delete: `Null`).
    pub loser: Value,
    /// Replica tag, HLC and sequence (0 when it was never applied) of the losing write.
    pub loser_version: FieldVersion,
    /// The winning value (for a delete that won: `Null`).
    pub winner: Value,
    /// The winning write's replica tag, HLC and sequence.
    pub winner_version: FieldVersion,
    /// What decided: the policy name (`lww`, `min`, `prefer`, `custom:NAME`, …), `deleted`
    /// (a delete beat an update) or `update_wins` (an update beat a delete).
    pub reason: String,
    /// The conflict stays open for a person to resolve (policy `manual`, or
    /// `on_delete_conflict = "manual"`); the winner is provisional.
    pub manual: bool,
}

/// What applying one op to a row produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedOp {
    /// The row's new state, or `None` when the op changed nothing (no sequence consumed).
    pub new_row: Option<ServerRow>,
    /// Verdict for the uploading client.
    pub outcome: OutcomeKind,
    /// Losing values to record.
    pub conflicts: Vec<ConflictRecord>,
}

/// Everything besides the op and the row that resolution depends on.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    /// The table's schema (policies, delete mode); `None` resolves every column as `merge`.
    pub table: Option<&'a Table>,
    /// Tag of the writing replica.
    pub replica: u64,
    /// The op's HLC corrected to server time ([`crate::hlc::correct_device_hlc`]).
    pub hlc: Hlc,
    /// The sequence the change would get.
    pub seq: u64,
    /// The writer's token claims.
    pub claims: &'a ClaimSet,
    /// Registered custom resolvers.
    pub custom: &'a CustomResolvers,
}

static NO_CLAIMS: std::sync::LazyLock<ClaimSet> = std::sync::LazyLock::new(ClaimSet::new);
static NO_RESOLVERS: std::sync::LazyLock<CustomResolvers> =
    std::sync::LazyLock::new(CustomResolvers::new);

impl<'a> ApplyContext<'a> {
    /// A context with no claims and no custom resolvers, with the op's own HLC.
    pub fn plain(table: Option<&'a Table>, replica: u64, hlc: Hlc, seq: u64) -> ApplyContext<'a> {
        ApplyContext {
            table,
            replica,
            hlc,
            seq,
            claims: &NO_CLAIMS,
            custom: &NO_RESOLVERS,
        }
    }

    fn column(&self, name: &str) -> Option<&'a Column> {
        self.table.and_then(|t| t.column(name))
    }

    fn policy(&self, name: &str) -> &'a Policy {
        static MERGE: Policy = Policy::Merge;
        self.column(name).map_or(&MERGE, |c| &c.policy)
    }

    fn delete_mode(&self) -> DeleteConflict {
        self.table
            .map_or(DeleteConflict::DeleteWins, |t| t.on_delete_conflict)
    }

    fn version(&self) -> FieldVersion {
        FieldVersion {
            seq: self.seq,
            hlc: self.hlc,
            replica: self.replica,
        }
    }

    fn incoming(&self, op: &Op) -> IncomingWrite {
        IncomingWrite {
            hlc: self.hlc,
            replica: self.replica,
            base_seq: op.base_seq,
        }
    }
}

/// The numeric or textual order of two values of one column; `None` when incomparable
/// (different kinds). `Null` is below everything.
pub fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Null, Null) => Some(Ordering::Equal),
        (Null, _) => Some(Ordering::Less),
        (_, Null) => Some(Ordering::Greater),
        (Integer(x), Integer(y)) => Some(x.cmp(y)),
        (Integer(x), Real(y)) => (*x as f64).partial_cmp(y),
        (Real(x), Integer(y)) => x.partial_cmp(&(*y as f64)),
        (Real(x), Real(y)) => x.partial_cmp(y),
        (Text(x), Text(y)) | (Json(x), Json(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        (Blob(x), Blob(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// What a rule says about two concurrent values: `Greater` when the incoming one wins,
/// `Less` when the current one does, `Equal` when the rule cannot tell (then `lww` decides).
fn rule_order(policy: &Policy, incoming: (&Value, &Value), current: (&Value, &Value)) -> Ordering {
    let (inc_value, inc_rank) = incoming;
    let (cur_value, cur_rank) = current;
    match policy {
        Policy::Max => compare_values(inc_value, cur_value).unwrap_or(Ordering::Equal),
        Policy::Min => match (inc_value, cur_value) {
            // A number beats no number under both min and max.
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            _ => compare_values(cur_value, inc_value).unwrap_or(Ordering::Equal),
        },
        Policy::Order { order } => {
            let pos = |v: &Value| match v {
                Value::Text(s) => order.iter().position(|o| o == s).map_or(-1, |p| p as i64),
                _ => -1,
            };
            pos(inc_value).cmp(&pos(cur_value))
        }
        Policy::Prefer { .. } | Policy::MaxBy { .. } => {
            compare_values(inc_rank, cur_rank).unwrap_or(Ordering::Equal)
        }
        _ => Ordering::Equal,
    }
}

/// The rank an incoming write carries for its column's rule.
fn incoming_rank(policy: &Policy, op: &Op, row: &ServerRow, claims: &ClaimSet) -> Value {
    match policy {
        Policy::Prefer { claim, value } => Value::Bool(claims.has(claim, value)),
        Policy::MaxBy { column } => op
            .fields
            .iter()
            .find(|f| &f.column == column)
            .map(|f| f.value.clone())
            .or_else(|| row.fields.get(column).map(|f| f.value.clone()))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Adds an increment to a counter, saturating instead of overflowing.
pub fn add_increment(current: &Value, delta: &Value) -> Value {
    match (current, delta) {
        (Value::Integer(a), Value::Integer(b)) => Value::Integer(a.saturating_add(*b)),
        (Value::Null, Value::Integer(b)) => Value::Integer(*b),
        (cur, Value::Null) => cur.clone(),
        (cur, d) => {
            let as_f = |v: &Value| match v {
                Value::Integer(i) => *i as f64,
                Value::Real(f) => *f,
                _ => 0.0,
            };
            Value::Real((as_f(cur) + as_f(d)).clamp(f64::MIN, f64::MAX))
        }
    }
}

/// The CRDT kind of a policy, if it is one.
pub fn crdt_kind(policy: &Policy) -> Option<CrdtKind> {
    match policy {
        Policy::Text => Some(CrdtKind::Text),
        Policy::List => Some(CrdtKind::List),
        _ => None,
    }
}

/// A row's live fields as a JSON object (CRDT documents materialized), for conflict records
/// that keep a whole row.
pub fn row_as_json(table: Option<&Table>, fields: &BTreeMap<String, StoredField>) -> Value {
    let mut obj = serde_json::Map::new();
    for (c, f) in fields {
        let policy = table.and_then(|t| t.column(c)).map(|c| &c.policy);
        let value = match (policy.and_then(crdt_kind), &f.value) {
            (Some(kind), Value::Blob(b)) => crdt::materialize(kind, b).unwrap_or(Value::Null),
            _ => f.value.clone(),
        };
        obj.insert(c.clone(), value.to_json());
    }
    Value::Json(serde_json::Value::Object(obj).to_string())
}

/// How a losing value is written to the conflict log: CRDT documents materialized, a CRDT edit
/// (`is_update`) as `{"$crdt": "<hex>"}` — the form the device keeps it in.
fn logged_value(table: Option<&Table>, column: &str, value: &Value, is_update: bool) -> Value {
    let kind = table
        .and_then(|t| t.column(column))
        .and_then(|c| crdt_kind(&c.policy));
    match (kind, value) {
        (Some(_), Value::Blob(_)) if is_update => {
            Value::Json(serde_json::json!({ "$crdt": value.to_json() }).to_string())
        }
        (Some(kind), Value::Blob(b)) => crdt::materialize(kind, b).unwrap_or(Value::Null),
        _ => value.clone(),
    }
}

/// One field's result under its policy.
enum FieldResult {
    /// Store this value (the op's, a sum, a merge) with this rank and version.
    Store(Value, Value, FieldVersion),
    /// The op's value lost: keep the current one.
    Lost,
}

/// Resolves one field of an incoming insert/update against the row under the column's policy.
/// Returns the value to store, or `Lost`; records every loser in `conflicts`.
fn resolve_field(
    ctx: &ApplyContext<'_>,
    op: &Op,
    row: &ServerRow,
    column: &str,
    value: &Value,
    conflicts: &mut Vec<ConflictRecord>,
) -> (FieldResult, bool) {
    let policy = ctx.policy(column);
    let cur = row.fields.get(column);
    let this = ctx.version();
    let merged_version = FieldVersion { replica: 0, ..this };
    // A merged field keeps its latest writer in `rank` (its version has no single author).
    let writer = Value::Integer(this.replica as i64);
    if matches!(policy, Policy::Counter) {
        let base = cur.map_or(&Value::Null, |c| &c.value);
        let sum = add_increment(base, value);
        return (FieldResult::Store(sum, writer, merged_version), false);
    }
    if let Some(kind) = crdt_kind(policy) {
        let Value::Blob(update) = value else {
            return (FieldResult::Lost, true);
        };
        let state = cur.and_then(|c| match &c.value {
            Value::Blob(b) => Some(b.as_slice()),
            _ => None,
        });
        return match crdt::merge(kind, state, update) {
            Ok((state, _)) => (
                FieldResult::Store(Value::Blob(state), writer, merged_version),
                false,
            ),
            Err(_) => (FieldResult::Lost, true),
        };
    }
    let rank = incoming_rank(policy, op, row, ctx.claims);
    let Some(cur) = cur else {
        return (FieldResult::Store(value.clone(), rank, this), false);
    };
    let incoming = ctx.incoming(op);
    let after = follows(&cur.version, &incoming);
    // Rules (and custom resolvers) are invariants of the field: they judge every write, so
    // the result is the rule's maximum over all writes whatever the arrival order. The other
    // policies let a write that saw the current value replace it.
    let judged = matches!(
        policy,
        Policy::Min
            | Policy::Max
            | Policy::Order { .. }
            | Policy::Prefer { .. }
            | Policy::MaxBy { .. }
            | Policy::Custom(_)
    );
    if after && !judged {
        return (FieldResult::Store(value.clone(), rank, this), false);
    }
    let manual = matches!(policy, Policy::Manual);
    let reason = match policy {
        Policy::Merge => "lww".to_string(),
        other => other.name(),
    };
    let unapplied = FieldVersion { seq: 0, ..this };
    let mut record = |loser: &Value, loser_version, winner: &Value, winner_version| {
        conflicts.push(ConflictRecord {
            column: column.to_string(),
            loser: loser.clone(),
            loser_version,
            winner: winner.clone(),
            winner_version,
            reason: reason.clone(),
            manual,
        })
    };
    let choice = match policy {
        Policy::Custom(name) => match ctx.custom.get(name) {
            Some(resolver) => resolver.resolve(&CustomInput {
                table: &op.table,
                row_id: &op.row_id,
                column,
                current: cur,
                incoming: value,
                incoming_write: incoming,
                claims: ctx.claims,
                row,
                op,
                concurrent: !after,
            }),
            // The server refuses to start without it; resolve deterministically anyway.
            None if after || lww_wins(&incoming, &cur.version) => CustomChoice::TakeIncoming,
            None => CustomChoice::KeepCurrent,
        },
        _ => match rule_order(policy, (value, &rank), (&cur.value, &cur.rank)) {
            Ordering::Greater => CustomChoice::TakeIncoming,
            Ordering::Less => CustomChoice::KeepCurrent,
            Ordering::Equal if after || lww_wins(&incoming, &cur.version) => {
                CustomChoice::TakeIncoming
            }
            Ordering::Equal => CustomChoice::KeepCurrent,
        },
    };
    match choice {
        CustomChoice::TakeIncoming => {
            // Replacing a value its writer had seen is an edit, not a conflict.
            if !after {
                record(&cur.value, cur.version, value, this);
            }
            (FieldResult::Store(value.clone(), rank, this), false)
        }
        CustomChoice::KeepCurrent => {
            record(value, unapplied, &cur.value, cur.version);
            (FieldResult::Lost, true)
        }
        CustomChoice::Merge(m) => {
            let conformed = match ctx.column(column) {
                Some(c) => m.conform(c.ty).ok(),
                None => Some(m),
            };
            let Some(m) = conformed else {
                record(value, unapplied, &cur.value, cur.version);
                return (FieldResult::Lost, true);
            };
            record(&cur.value, cur.version, &m, merged_version);
            record(value, unapplied, &m, merged_version);
            // Stored, but not the value the device sent: it learns the merge by download.
            (FieldResult::Store(m, Value::Null, merged_version), true)
        }
    }
}

/// Applies `op` to the row's current state (`None`: the server never saw the row) under the
/// policies of `ctx.table`. Every overwritten concurrent value and every losing value becomes
/// a [`ConflictRecord`].
pub fn apply_op(current: Option<&ServerRow>, op: &Op, ctx: &ApplyContext<'_>) -> AppliedOp {
    match op.kind {
        OpKind::Delete => apply_delete(current, op, ctx),
        OpKind::Insert | OpKind::Update => apply_write(current, op, ctx),
    }
}

fn conflict_outcome(
    conflicts: &[ConflictRecord],
    lost: Vec<String>,
    reason: String,
) -> OutcomeKind {
    if conflicts.is_empty() && lost.is_empty() {
        OutcomeKind::Applied
    } else {
        OutcomeKind::Conflict { lost, reason }
    }
}

/// Who last wrote a field: its version, with the writer a merged field keeps in `rank`.
fn writer_version(ctx: &ApplyContext<'_>, column: &str, f: &StoredField) -> FieldVersion {
    match (f.version.replica, &f.rank) {
        (0, Value::Integer(w)) if ctx.policy(column).is_merged() => FieldVersion {
            replica: *w as u64,
            ..f.version
        },
        _ => f.version,
    }
}

fn apply_delete(current: Option<&ServerRow>, op: &Op, ctx: &ApplyContext<'_>) -> AppliedOp {
    let this = ctx.version();
    let mode = ctx.delete_mode();
    let tombstone = |row: Option<&ServerRow>| ServerRow {
        deleted: true,
        seq: this.seq,
        hlc: row.map_or(this.hlc, |r| r.hlc.max(this.hlc)),
        replica: this.replica,
        fields: match (mode, row) {
            (DeleteConflict::DeleteWins, _) | (_, None) => BTreeMap::new(),
            (_, Some(r)) => r.fields.clone(),
        },
    };
    let Some(row) = current else {
        return AppliedOp {
            new_row: Some(tombstone(None)),
            outcome: OutcomeKind::Applied,
            conflicts: vec![],
        };
    };
    if row.deleted {
        return AppliedOp {
            new_row: None,
            outcome: OutcomeKind::Applied,
            conflicts: vec![],
        };
    }
    let concurrent: Vec<(&String, &StoredField, FieldVersion)> = row
        .fields
        .iter()
        .map(|(c, f)| (c, f, writer_version(ctx, c, f)))
        .filter(|(_, _, v)| delete_overrides_concurrent(v, this.replica, op.base_seq))
        .collect();
    if concurrent.is_empty() {
        return AppliedOp {
            new_row: Some(tombstone(Some(row))),
            outcome: OutcomeKind::Applied,
            conflicts: vec![],
        };
    }
    let latest = concurrent
        .iter()
        .map(|(_, _, v)| *v)
        .max_by_key(|v| (v.seq, v.replica != 0))
        .unwrap_or(this);
    let table = ctx.table;
    match mode {
        DeleteConflict::DeleteWins => {
            let conflicts = concurrent
                .iter()
                .map(|(c, f, v)| ConflictRecord {
                    column: (*c).clone(),
                    loser: logged_value(ctx.table, c, &f.value, false),
                    loser_version: *v,
                    winner: Value::Null,
                    winner_version: this,
                    reason: "deleted".into(),
                    manual: false,
                })
                .collect();
            AppliedOp {
                new_row: Some(tombstone(Some(row))),
                outcome: OutcomeKind::Conflict {
                    lost: vec![],
                    reason: "delete overrode concurrent updates (logged)".into(),
                },
                conflicts,
            }
        }
        DeleteConflict::UpdateWins => AppliedOp {
            new_row: None,
            outcome: OutcomeKind::Conflict {
                lost: row.fields.keys().cloned().collect(),
                reason: "the row was updated concurrently; the update wins".into(),
            },
            conflicts: vec![ConflictRecord {
                column: WHOLE_ROW.into(),
                loser: Value::Null,
                loser_version: FieldVersion { seq: 0, ..this },
                winner: row_as_json(table, &row.fields),
                winner_version: latest,
                reason: "update_wins".into(),
                manual: false,
            }],
        },
        DeleteConflict::Manual => AppliedOp {
            new_row: Some(tombstone(Some(row))),
            outcome: OutcomeKind::Conflict {
                lost: vec![],
                reason: "deleted; the concurrent update is kept in a conflict for the user".into(),
            },
            conflicts: vec![ConflictRecord {
                column: WHOLE_ROW.into(),
                loser: row_as_json(table, &row.fields),
                loser_version: latest,
                winner: Value::Null,
                winner_version: this,
                reason: "deleted".into(),
                manual: true,
            }],
        },
    }
}

fn apply_write(current: Option<&ServerRow>, op: &Op, ctx: &ApplyContext<'_>) -> AppliedOp {
    let this = ctx.version();
    let mut conflicts = Vec::new();
    // A delete the writer had not seen (and did not make itself).
    let unseen_tomb =
        current.filter(|r| r.deleted && op.base_seq < r.seq && r.replica != this.replica);
    // The tombstone an update brings the row back from (`update_wins`).
    let mut resurrected: Option<FieldVersion> = None;
    let mut row = match unseen_tomb {
        Some(tomb) => {
            let tomb_version = FieldVersion {
                seq: tomb.seq,
                hlc: tomb.hlc,
                replica: tomb.replica,
            };
            match ctx.delete_mode() {
                DeleteConflict::DeleteWins => {
                    let conflicts = op
                        .fields
                        .iter()
                        .map(|f| ConflictRecord {
                            column: f.column.clone(),
                            loser: logged_value(ctx.table, &f.column, &f.value, true),
                            loser_version: FieldVersion { seq: 0, ..this },
                            winner: Value::Null,
                            winner_version: tomb_version,
                            reason: "deleted".into(),
                            manual: false,
                        })
                        .collect();
                    return AppliedOp {
                        new_row: None,
                        outcome: OutcomeKind::Conflict {
                            lost: op.fields.iter().map(|f| f.column.clone()).collect(),
                            reason: "the row was deleted concurrently; delete wins".into(),
                        },
                        conflicts,
                    };
                }
                DeleteConflict::Manual => {
                    let mut fields = tomb.fields.clone();
                    for f in &op.fields {
                        let kind = ctx.column(&f.column).and_then(|c| crdt_kind(&c.policy));
                        let value = match (kind, &f.value) {
                            // The edit on top of the document it was made to, as a whole.
                            (Some(kind), Value::Blob(update)) => {
                                let doc = fields.get(&f.column).and_then(|d| match &d.value {
                                    Value::Blob(b) => Some(b.as_slice()),
                                    _ => None,
                                });
                                crdt::merge(kind, doc, update).map_or_else(
                                    |_| f.value.clone(),
                                    |(state, _)| Value::Blob(state),
                                )
                            }
                            _ => f.value.clone(),
                        };
                        fields.insert(
                            f.column.clone(),
                            StoredField {
                                value,
                                version: this,
                                rank: Value::Null,
                            },
                        );
                    }
                    return AppliedOp {
                        new_row: None,
                        outcome: OutcomeKind::Conflict {
                            lost: op.fields.iter().map(|f| f.column.clone()).collect(),
                            reason: "the row was deleted concurrently; both versions are kept \
                                     in a conflict for the user"
                                .into(),
                        },
                        conflicts: vec![ConflictRecord {
                            column: WHOLE_ROW.into(),
                            loser: row_as_json(ctx.table, &fields),
                            loser_version: FieldVersion { seq: 0, ..this },
                            winner: Value::Null,
                            winner_version: tomb_version,
                            reason: "deleted".into(),
                            manual: true,
                        }],
                    };
                }
                DeleteConflict::UpdateWins => {
                    resurrected = Some(tomb_version);
                    ServerRow {
                        deleted: false,
                        ..tomb.clone()
                    }
                }
            }
        }
        None => match current {
            Some(r) if !r.deleted => r.clone(),
            // New, or re-created after a delete its writer saw (or made): a fresh row.
            _ => ServerRow::default(),
        },
    };
    let mut lost = Vec::new();
    let mut changed = false;
    for f in &op.fields {
        let (result, not_as_sent) =
            resolve_field(ctx, op, &row, &f.column, &f.value, &mut conflicts);
        if not_as_sent {
            lost.push(f.column.clone());
        }
        if let FieldResult::Store(value, rank, version) = result {
            row.fields.insert(
                f.column.clone(),
                StoredField {
                    value,
                    version,
                    rank,
                },
            );
            changed = true;
        }
    }
    if let Some(tomb_version) = resurrected {
        // Devices dropped the row's fields with the tombstone: send them all again, to every
        // device (the deleter included: replica 0 is nobody's own write).
        for f in row.fields.values_mut() {
            if f.version != this {
                f.version = FieldVersion {
                    seq: this.seq,
                    replica: 0,
                    ..f.version
                };
            }
        }
        conflicts.push(ConflictRecord {
            column: WHOLE_ROW.into(),
            loser: Value::Null,
            loser_version: tomb_version,
            winner: row_as_json(ctx.table, &row.fields),
            winner_version: this,
            reason: "update_wins".into(),
            manual: false,
        });
    }
    let creates = current.is_none_or(|r| r.deleted);
    if unseen_tomb.is_none() && current.is_some_and(|r| r.deleted) {
        // A new life after a delete its writer saw: a column the op does not set is NULL,
        // said explicitly, so a device still holding the old life's row does not keep its
        // values.
        if let Some(t) = ctx.table {
            for c in t.columns.iter().filter(|c| !c.policy.is_merged()) {
                row.fields.entry(c.name.clone()).or_insert(StoredField {
                    value: Value::Null,
                    version: this,
                    rank: Value::Null,
                });
            }
        }
        changed = true;
    }
    let new_row = (changed || creates).then(|| {
        row.deleted = false;
        row.seq = this.seq;
        row.hlc = row.hlc.max(this.hlc);
        row.replica = this.replica;
        row
    });
    let reason = if lost.is_empty() {
        "won over concurrent writes (losers logged)".to_string()
    } else {
        format!("lost to concurrent writes: {}", lost.join(", "))
    };
    AppliedOp {
        new_row,
        outcome: conflict_outcome(&conflicts, lost, reason),
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq)]
    enum FieldDecision {
        Apply,
        ApplyOverConcurrent,
        Lose,
    }

    /// The `merge`/`lww` decision for one field.
    fn decide_field(current: Option<&FieldVersion>, incoming: &IncomingWrite) -> FieldDecision {
        match current {
            None => FieldDecision::Apply,
            Some(c) if follows(c, incoming) => FieldDecision::Apply,
            Some(c) if lww_wins(incoming, c) => FieldDecision::ApplyOverConcurrent,
            Some(_) => FieldDecision::Lose,
        }
    }

    /// Applies with no schema (every column `merge`), the op's own HLC.
    fn ap(current: Option<&ServerRow>, op: &Op, replica: u64, seq: u64) -> AppliedOp {
        apply_op(
            current,
            op,
            &ApplyContext::plain(None, replica, op.hlc, seq),
        )
    }

    fn v(seq: u64, hlc: u64, replica: u64) -> FieldVersion {
        FieldVersion {
            seq,
            hlc: Hlc(hlc),
            replica,
        }
    }
    fn w(hlc: u64, replica: u64, base_seq: u64) -> IncomingWrite {
        IncomingWrite {
            hlc: Hlc(hlc),
            replica,
            base_seq,
        }
    }

    #[test]
    fn a_write_that_saw_the_current_value_replaces_it_even_with_an_older_clock() {
        assert_eq!(
            decide_field(Some(&v(5, 100, 1)), &w(50, 2, 5)),
            FieldDecision::Apply
        );
    }

    #[test]
    fn concurrent_writes_resolve_by_hlc_then_replica() {
        assert_eq!(
            decide_field(Some(&v(5, 100, 1)), &w(200, 2, 4)),
            FieldDecision::ApplyOverConcurrent
        );
        assert_eq!(
            decide_field(Some(&v(5, 100, 1)), &w(50, 2, 4)),
            FieldDecision::Lose
        );
        assert_eq!(
            decide_field(Some(&v(5, 100, 1)), &w(100, 2, 4)),
            FieldDecision::ApplyOverConcurrent
        );
        assert_eq!(
            decide_field(Some(&v(5, 100, 3)), &w(100, 2, 4)),
            FieldDecision::Lose
        );
    }

    #[test]
    fn replica_tags_are_stable() {
        assert_eq!(replica_tag("a"), replica_tag("a"));
        assert_ne!(replica_tag("a"), replica_tag("b"));
    }

    /// Applies concurrent writes (all with base 0) to one field in the given order, as the
    /// server would, returning the final (hlc, replica) of the field.
    fn apply_in_order(writes: &[(u64, u64)]) -> Option<(u64, u64)> {
        let mut cur: Option<FieldVersion> = None;
        for (i, (hlc, replica)) in writes.iter().enumerate() {
            let inc = w(*hlc, *replica, 0);
            match decide_field(cur.as_ref(), &inc) {
                FieldDecision::Apply | FieldDecision::ApplyOverConcurrent => {
                    cur = Some(v(i as u64 + 1, *hlc, *replica));
                }
                FieldDecision::Lose => {}
            }
        }
        cur.map(|c| (c.hlc.0, c.replica))
    }

    proptest! {
        /// Convergence regardless of delivery order, and idempotence under duplicates:
        /// concurrent writes from distinct replicas (one write each, base 0) end with the
        /// LWW-maximal write whatever the order and however often each is delivered.
        #[test]
        fn lww_converges_regardless_of_order_and_duplicates(
            hlcs in proptest::collection::vec(0u64..20, 1..8),
            order_seed in any::<u64>(),
            dups in proptest::collection::vec(0usize..8, 0..6),
        ) {
            let writes: Vec<(u64, u64)> = hlcs.iter().enumerate().map(|(i, h)| (*h, i as u64 + 1)).collect();
            let mut shuffled = writes.clone();
            let mut rng = crate::env::SeededRng::new(order_seed);
            for i in (1..shuffled.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                shuffled.swap(i, j);
            }
            for d in dups {
                if let Some(x) = writes.get(d % writes.len()).copied() { shuffled.push(x); }
            }
            let expected = writes.iter().copied().max();
            prop_assert_eq!(apply_in_order(&shuffled), expected);
        }

        /// Field-level merge: writes to different fields never interfere.
        #[test]
        fn different_fields_all_apply(fields in proptest::collection::vec((0u8..5, 0u64..50), 1..20)) {
            let mut state: HashMap<u8, FieldVersion> = HashMap::new();
            for (i, (f, hlc)) in fields.iter().enumerate() {
                let inc = w(*hlc, i as u64 + 1, 0);
                if decide_field(state.get(f), &inc) != FieldDecision::Lose {
                    state.insert(*f, v(i as u64 + 1, *hlc, i as u64 + 1));
                }
            }
            for f in fields.iter().map(|(f, _)| *f) {
                prop_assert!(state.contains_key(&f));
            }
        }
    }

    fn op(kind: OpKind, fields: &[(&str, i64)], hlc: u64, base_seq: u64) -> Op {
        Op {
            client_seq: 1,
            tx: 1,
            table: "t".into(),
            row_id: "r".into(),
            kind,
            fields: fields
                .iter()
                .map(|(c, v)| crate::FieldValue {
                    column: c.to_string(),
                    value: Value::Integer(*v),
                })
                .collect(),
            hlc: Hlc(hlc),
            base_seq,
        }
    }

    #[test]
    fn different_fields_merge_and_same_field_logs_the_loser() {
        let a = ap(
            None,
            &op(OpKind::Insert, &[("x", 1), ("y", 1)], 10, 0),
            1,
            1,
        );
        let row = a.new_row.unwrap();
        // Two devices saw seq 1, then change different fields and the same field concurrently.
        let b = ap(
            Some(&row),
            &op(OpKind::Update, &[("x", 2), ("z", 9)], 20, 1),
            2,
            2,
        );
        let row = b.new_row.unwrap();
        assert_eq!(b.outcome, OutcomeKind::Applied);
        let c = ap(
            Some(&row),
            &op(OpKind::Update, &[("y", 3), ("z", 7)], 15, 1),
            3,
            3,
        );
        let row = c.new_row.unwrap();
        assert_eq!(row.fields["x"].value, Value::Integer(2));
        assert_eq!(row.fields["y"].value, Value::Integer(3));
        assert_eq!(
            row.fields["z"].value,
            Value::Integer(9),
            "later HLC keeps z"
        );
        assert_eq!(c.conflicts.len(), 1);
        assert_eq!(c.conflicts[0].loser, Value::Integer(7));
        assert!(
            matches!(c.outcome, OutcomeKind::Conflict { ref lost, .. } if lost == &["z".to_string()])
        );
    }

    #[test]
    fn delete_wins_over_concurrent_update_both_orders() {
        let row = ap(None, &op(OpKind::Insert, &[("x", 1)], 10, 0), 1, 1)
            .new_row
            .unwrap();
        // Update first, then the concurrent delete (based on seq 1): update value logged.
        let up = ap(Some(&row), &op(OpKind::Update, &[("x", 5)], 30, 1), 2, 2);
        let del = ap(up.new_row.as_ref(), &op(OpKind::Delete, &[], 20, 1), 3, 3);
        assert!(del.new_row.as_ref().unwrap().deleted);
        assert_eq!(del.conflicts.len(), 1);
        assert_eq!(del.conflicts[0].loser, Value::Integer(5));
        // Delete first, then the concurrent update: update refused and logged.
        let del = ap(Some(&row), &op(OpKind::Delete, &[], 20, 1), 3, 2);
        let up = ap(
            del.new_row.as_ref(),
            &op(OpKind::Update, &[("x", 5)], 30, 1),
            2,
            3,
        );
        assert!(up.new_row.is_none());
        assert_eq!(up.conflicts[0].loser, Value::Integer(5));
        assert!(matches!(up.outcome, OutcomeKind::Conflict { .. }));
    }

    #[test]
    fn an_update_after_a_seen_delete_starts_a_new_life_with_the_other_columns_null() {
        let schema = crate::Schema::from_toml_str(
            "version = 1\n[tables.t.columns]\nx = \"integer\"\ny = \"integer\"\nn = { type = \"integer\", policy = \"counter\" }\n",
        )
        .unwrap();
        let table = schema.table("t");
        let ctx = |replica, hlc, seq| ApplyContext::plain(table, replica, Hlc(hlc), seq);
        let row = apply_op(
            None,
            &op(OpKind::Insert, &[("x", 1), ("y", 2)], 10, 0),
            &ctx(1, 10, 1),
        )
        .new_row
        .unwrap();
        let tomb = apply_op(Some(&row), &op(OpKind::Delete, &[], 20, 1), &ctx(1, 20, 2))
            .new_row
            .unwrap();
        // The same device, having seen the delete (base 2), sends an update of x.
        let again = apply_op(
            Some(&tomb),
            &op(OpKind::Update, &[("x", 7)], 30, 2),
            &ctx(1, 30, 3),
        );
        assert_eq!(again.outcome, OutcomeKind::Applied);
        let new = again.new_row.unwrap();
        assert!(!new.deleted);
        assert_eq!(new.fields["x"].value, Value::Integer(7));
        // y is NULL *at this change*, so a device holding the old life drops its old y.
        assert_eq!(new.fields["y"].value, Value::Null);
        assert_eq!(new.fields["y"].version.seq, 3);
        assert!(
            !new.fields.contains_key("n"),
            "merged columns are left alone"
        );
    }

    #[test]
    fn the_deleting_device_may_recreate_the_row_without_having_seen_its_tombstone() {
        let tomb = ap(None, &op(OpKind::Delete, &[], 20, 0), 3, 4)
            .new_row
            .unwrap();
        let same = ap(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 0), 3, 5);
        assert_eq!(same.outcome, OutcomeKind::Applied);
        let other = ap(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 0), 2, 5);
        assert!(matches!(other.outcome, OutcomeKind::Conflict { .. }));
    }

    #[test]
    fn recreating_after_seeing_the_delete_resurrects() {
        let tomb = ap(None, &op(OpKind::Delete, &[], 20, 0), 3, 4)
            .new_row
            .unwrap();
        let again = ap(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 4), 2, 5);
        assert_eq!(again.outcome, OutcomeKind::Applied);
        assert!(!again.new_row.unwrap().deleted);
    }
}
