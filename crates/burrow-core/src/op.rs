//! Ops (local changes), row changes (what the server sends down), cursors and outcomes.

use crate::hlc::Hlc;
use crate::value::Value;

/// What an op does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// The app inserted the row (all its columns are in the op).
    Insert,
    /// The app changed some fields (only the changed ones are in the op).
    Update,
    /// The app deleted the row.
    Delete,
}

impl OpKind {
    /// The number stored in the outbox and on the wire.
    pub fn code(self) -> i64 {
        match self {
            OpKind::Insert => 1,
            OpKind::Update => 2,
            OpKind::Delete => 3,
        }
    }

    /// The kind from its stored number.
    pub fn from_code(code: i64) -> Option<OpKind> {
        Some(match code {
            1 => OpKind::Insert,
            2 => OpKind::Update,
            3 => OpKind::Delete,
            _ => return None,
        })
    }
}

/// One field set by an op: the column and its new value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// Column name.
    pub column: String,
    /// New value.
    pub value: Value,
}

impl FieldValue {
    /// The fields of `(column, value)` pairs, in order (how ops are written by hand: tests,
    /// benches, seeding).
    ///
    /// ```
    /// use burrow_core::{FieldValue, Value};
    /// let fields = FieldValue::list([("status", Value::Text("delivered".into()))]);
    /// assert_eq!(fields[0].column, "status");
    /// ```
    pub fn list<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Vec<FieldValue> {
        pairs
            .into_iter()
            .map(|(column, value)| FieldValue {
                column: column.to_string(),
                value,
            })
            .collect()
    }
}

/// One captured local change to one row, identified by `(client_id, client_seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Position in the client's outbox; unique and never reused per client.
    pub client_seq: u64,
    /// The local transaction the op belongs to; ops of one transaction apply all-or-nothing.
    pub tx: u64,
    /// Table name.
    pub table: String,
    /// Primary key of the row.
    pub row_id: String,
    /// Insert, update or delete.
    pub kind: OpKind,
    /// Changed fields (empty for deletes).
    pub fields: Vec<FieldValue>,
    /// Hybrid logical time of the write on its device.
    pub hlc: Hlc,
    /// The server sequence of the row version the device had when it wrote (0 = none):
    /// server changes above it were concurrent with this op.
    pub base_seq: u64,
}

impl Op {
    /// An approximate encoded size, used to bound upload batches.
    pub fn approx_size(&self) -> usize {
        24 + self.table.len()
            + self.row_id.len()
            + self
                .fields
                .iter()
                .map(|f| f.column.len() + f.value.approx_size() + 4)
                .sum::<usize>()
    }
}

/// One field of a row as the server holds it: value plus the sequence that last set it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedField {
    /// Column name.
    pub column: String,
    /// Current value.
    pub value: Value,
    /// Server sequence of the change that set this value.
    pub seq: u64,
}

/// The server's current state of one row, sent to a client whose cursor is behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// Table name.
    pub table: String,
    /// Primary key.
    pub row_id: String,
    /// Server sequence of the row's latest change.
    pub seq: u64,
    /// The row is deleted (a tombstone); `fields` is then empty.
    pub deleted: bool,
    /// Fields changed since the client's cursor (all fields on an initial sync).
    pub fields: Vec<ChangedField>,
    /// Latest HLC among the row's changes, so the receiver's clock moves past it.
    pub hlc: Hlc,
    /// The row left the receiver's scope (selective sync): remove it locally, record no
    /// delete. `fields` is empty; the row lives on on the server.
    pub evicted: bool,
}

/// How far a client has applied the server's changes.
///
/// A pull pages through rows in order of their latest change. While paging, `since` stays at
/// the position the pull started from (fields changed after it are sent) and `after` advances
/// with each page; when the pull reaches the head both equal the head. Every change with
/// sequence `<= since` is reflected locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Every change at or below this sequence is applied.
    pub since: u64,
    /// Rows whose latest change is at or below this sequence were sent in this pull.
    pub after: u64,
}

impl Cursor {
    /// A cursor at a settled position `seq`.
    pub fn at(seq: u64) -> Cursor {
        Cursor {
            since: seq,
            after: seq,
        }
    }

    /// Whether a pull is between pages.
    pub fn is_paging(&self) -> bool {
        self.after > self.since
    }
}

/// The server's verdict on one uploaded op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Applied as written.
    Applied,
    /// Resolved against concurrent changes: some or all fields lost (recorded in the conflict
    /// log), or the row had been deleted.
    Conflict {
        /// The op's columns whose value did not win (all of them when the row had been deleted;
        /// empty when the op won and overwrote concurrent values).
        lost: Vec<String>,
        /// Why, in words.
        reason: String,
    },
    /// Held until the last part of its (large) local transaction arrives.
    Staged,
    /// Refused permanently (validation, permission); nothing applied.
    Rejected {
        /// Stable machine-readable code, e.g. `unknown_table`.
        code: String,
        /// Human-readable reason.
        message: String,
    },
}
