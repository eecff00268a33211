//! Conflict resolution for field-level ops (the `merge` and `lww` policies).
//!
//! The server keeps, for every field, the version that set it ([`FieldVersion`]). An incoming
//! write either *follows* that version (its author had seen it: the op's `base_seq` is at or
//! above the version's sequence) and simply replaces it, or is *concurrent* with it, and then
//! the later hybrid logical time wins, ties broken by the replica tag. The loser of a
//! concurrent write is a conflict and must be logged by the caller.

use crate::hlc::Hlc;
use crate::op::{Op, OpKind, OutcomeKind};
use crate::value::Value;
use std::collections::BTreeMap;

/// Who set a field and when, as the server stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldVersion {
    /// Server sequence of the change.
    pub seq: u64,
    /// HLC of the write on its device.
    pub hlc: Hlc,
    /// Stable tag of the writing replica (see [`replica_tag`]).
    pub replica: u64,
}

/// An incoming write's identity for resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingWrite {
    /// HLC of the write.
    pub hlc: Hlc,
    /// Tag of the writing replica.
    pub replica: u64,
    /// The row version its author had seen.
    pub base_seq: u64,
}

/// What happens to one field when a write arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldDecision {
    /// No previous value, or the author had seen it, or it is the author's own earlier write:
    /// the incoming value replaces it without a conflict.
    Apply,
    /// Concurrent, and the incoming write wins; the current value is the conflict's loser.
    ApplyOverConcurrent,
    /// Concurrent, and the current value wins; the incoming value is the loser.
    Lose,
}

/// Whether `w` happened after `v` in LWW order: later HLC, then larger replica tag.
pub fn lww_wins(w: &IncomingWrite, v: &FieldVersion) -> bool {
    (w.hlc, w.replica) > (v.hlc, v.replica)
}

/// Decides one field under `merge`/`lww`.
pub fn decide_field(current: Option<&FieldVersion>, incoming: &IncomingWrite) -> FieldDecision {
    let Some(cur) = current else {
        return FieldDecision::Apply;
    };
    if cur.replica == incoming.replica {
        // The same device's writes are ordered by its own monotone clock.
        return if incoming.hlc >= cur.hlc {
            FieldDecision::Apply
        } else {
            FieldDecision::Lose
        };
    }
    if cur.seq <= incoming.base_seq {
        return FieldDecision::Apply;
    }
    if lww_wins(incoming, cur) {
        FieldDecision::ApplyOverConcurrent
    } else {
        FieldDecision::Lose
    }
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
    /// Current value.
    pub value: Value,
    /// Who set it and when.
    pub version: FieldVersion,
}

/// The server's state of one row: live fields or a tombstone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerRow {
    /// The row is deleted; `fields` is then empty.
    pub deleted: bool,
    /// Sequence of the row's latest change.
    pub seq: u64,
    /// Latest HLC among the row's changes.
    pub hlc: Hlc,
    /// Replica tag of the latest change's author (for a tombstone: who deleted it).
    pub replica: u64,
    /// Live fields by column name.
    pub fields: BTreeMap<String, StoredField>,
}

/// A value that lost a conflict, for the conflict log.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRecord {
    /// Column whose value lost.
    pub column: String,
    /// The losing value.
    pub loser: Value,
    /// Replica tag, HLC and sequence (0 when it was never applied) of the losing write.
    pub loser_version: FieldVersion,
    /// The winning write's replica tag and HLC; sequence of the winning change.
    pub winner_version: FieldVersion,
    /// Stable code: `lww` (concurrent same-field write) or `deleted` (delete beat an update).
    pub reason: &'static str,
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

/// Applies `op` from replica `replica` to the row's current state under `merge`/`lww`, with
/// `seq` as the sequence of the change it would create. Deletes win over concurrent updates;
/// every overwritten concurrent value and every losing value becomes a [`ConflictRecord`].
pub fn apply_op(current: Option<&ServerRow>, op: &Op, replica: u64, seq: u64) -> AppliedOp {
    let incoming = IncomingWrite {
        hlc: op.hlc,
        replica,
        base_seq: op.base_seq,
    };
    let this_version = FieldVersion {
        seq,
        hlc: op.hlc,
        replica,
    };
    let unapplied = FieldVersion {
        seq: 0,
        hlc: op.hlc,
        replica,
    };
    match op.kind {
        OpKind::Delete => {
            let Some(row) = current else {
                let tomb = ServerRow {
                    deleted: true,
                    seq,
                    hlc: op.hlc,
                    replica,
                    fields: BTreeMap::new(),
                };
                return AppliedOp {
                    new_row: Some(tomb),
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
            let conflicts: Vec<ConflictRecord> = row
                .fields
                .iter()
                .filter(|(_, f)| delete_overrides_concurrent(&f.version, replica, op.base_seq))
                .map(|(c, f)| ConflictRecord {
                    column: c.clone(),
                    loser: f.value.clone(),
                    loser_version: f.version,
                    winner_version: this_version,
                    reason: "deleted",
                })
                .collect();
            let tomb = ServerRow {
                deleted: true,
                seq,
                hlc: row.hlc.max(op.hlc),
                replica,
                fields: BTreeMap::new(),
            };
            let outcome = if conflicts.is_empty() {
                OutcomeKind::Applied
            } else {
                OutcomeKind::Conflict {
                    lost: vec![],
                    reason: "delete overrode concurrent updates (logged)".into(),
                }
            };
            AppliedOp {
                new_row: Some(tomb),
                outcome,
                conflicts,
            }
        }
        OpKind::Insert | OpKind::Update => {
            // A delete beats writes made without seeing it — unless the deleting device itself
            // re-creates the row (its own later write is causally after its delete).
            if let Some(row) =
                current.filter(|r| r.deleted && op.base_seq < r.seq && r.replica != replica)
            {
                let tomb_version = FieldVersion {
                    seq: row.seq,
                    hlc: row.hlc,
                    replica: row.replica,
                };
                let conflicts = op
                    .fields
                    .iter()
                    .map(|f| ConflictRecord {
                        column: f.column.clone(),
                        loser: f.value.clone(),
                        loser_version: unapplied,
                        winner_version: tomb_version,
                        reason: "deleted",
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
            let mut row = match current {
                Some(r) if !r.deleted => r.clone(),
                _ => ServerRow::default(),
            };
            let mut conflicts = Vec::new();
            let mut lost = Vec::new();
            let mut changed = false;
            for f in &op.fields {
                let cur = row.fields.get(&f.column);
                match decide_field(cur.map(|c| &c.version), &incoming) {
                    FieldDecision::Apply => {}
                    FieldDecision::ApplyOverConcurrent => {
                        if let Some(c) = cur {
                            conflicts.push(ConflictRecord {
                                column: f.column.clone(),
                                loser: c.value.clone(),
                                loser_version: c.version,
                                winner_version: this_version,
                                reason: "lww",
                            });
                        }
                    }
                    FieldDecision::Lose => {
                        if let Some(c) = cur {
                            conflicts.push(ConflictRecord {
                                column: f.column.clone(),
                                loser: f.value.clone(),
                                loser_version: unapplied,
                                winner_version: c.version,
                                reason: "lww",
                            });
                        }
                        lost.push(f.column.clone());
                        continue;
                    }
                }
                row.fields.insert(
                    f.column.clone(),
                    StoredField {
                        value: f.value.clone(),
                        version: this_version,
                    },
                );
                changed = true;
            }
            // An insert of a row the server never saw with no fields still creates the row.
            let creates = current.is_none_or(|r| r.deleted);
            let new_row = if changed || creates {
                row.deleted = false;
                row.seq = seq;
                row.hlc = row.hlc.max(op.hlc);
                row.replica = replica;
                Some(row)
            } else {
                None
            };
            let outcome = if conflicts.is_empty() && lost.is_empty() {
                OutcomeKind::Applied
            } else {
                let reason = if lost.is_empty() {
                    "won over concurrent writes (losers logged)".to_string()
                } else {
                    format!("lost to concurrent writes: {}", lost.join(", "))
                };
                OutcomeKind::Conflict { lost, reason }
            };
            AppliedOp {
                new_row,
                outcome,
                conflicts,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

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
        let a = apply_op(
            None,
            &op(OpKind::Insert, &[("x", 1), ("y", 1)], 10, 0),
            1,
            1,
        );
        let row = a.new_row.unwrap();
        // Two devices saw seq 1, then change different fields and the same field concurrently.
        let b = apply_op(
            Some(&row),
            &op(OpKind::Update, &[("x", 2), ("z", 9)], 20, 1),
            2,
            2,
        );
        let row = b.new_row.unwrap();
        assert_eq!(b.outcome, OutcomeKind::Applied);
        let c = apply_op(
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
        let row = apply_op(None, &op(OpKind::Insert, &[("x", 1)], 10, 0), 1, 1)
            .new_row
            .unwrap();
        // Update first, then the concurrent delete (based on seq 1): update value logged.
        let up = apply_op(Some(&row), &op(OpKind::Update, &[("x", 5)], 30, 1), 2, 2);
        let del = apply_op(up.new_row.as_ref(), &op(OpKind::Delete, &[], 20, 1), 3, 3);
        assert!(del.new_row.as_ref().unwrap().deleted);
        assert_eq!(del.conflicts.len(), 1);
        assert_eq!(del.conflicts[0].loser, Value::Integer(5));
        // Delete first, then the concurrent update: update refused and logged.
        let del = apply_op(Some(&row), &op(OpKind::Delete, &[], 20, 1), 3, 2);
        let up = apply_op(
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
    fn the_deleting_device_may_recreate_the_row_without_having_seen_its_tombstone() {
        let tomb = apply_op(None, &op(OpKind::Delete, &[], 20, 0), 3, 4)
            .new_row
            .unwrap();
        let same = apply_op(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 0), 3, 5);
        assert_eq!(same.outcome, OutcomeKind::Applied);
        let other = apply_op(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 0), 2, 5);
        assert!(matches!(other.outcome, OutcomeKind::Conflict { .. }));
    }

    #[test]
    fn recreating_after_seeing_the_delete_resurrects() {
        let tomb = apply_op(None, &op(OpKind::Delete, &[], 20, 0), 3, 4)
            .new_row
            .unwrap();
        let again = apply_op(Some(&tomb), &op(OpKind::Insert, &[("x", 1)], 40, 4), 2, 5);
        assert_eq!(again.outcome, OutcomeKind::Applied);
        assert!(!again.new_row.unwrap().deleted);
    }
}
