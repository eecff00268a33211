//! Conflict resolution for field-level ops (the `merge` and `lww` policies).
//!
//! The server keeps, for every field, the version that set it ([`FieldVersion`]). An incoming
//! write either *follows* that version (its author had seen it: the op's `base_seq` is at or
//! above the version's sequence) and simply replaces it, or is *concurrent* with it, and then
//! the later hybrid logical time wins, ties broken by the replica tag. The loser of a
//! concurrent write is a conflict and must be logged by the caller.

use crate::hlc::Hlc;

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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
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
}
