//! Upload priority lanes (issue #5, item 1): the order in which pending local transactions are
//! uploaded.
//!
//! Every op has a lane — `critical > normal > bulk` — defaulting to its table's `priority` in
//! the schema file and overridable per local transaction; a transaction's lane is the highest
//! lane among its ops (or the override). Upload drains higher lanes first and is FIFO (by the
//! outbox seq of the transaction's first op) within a lane, but a transaction never overtakes
//! an earlier one
//!
//! 1. on the same row (both touch some `(table, row_id)`),
//! 2. in the same local transaction (the unit of ordering is the whole transaction: it is never
//!    split or reordered internally), or
//! 3. on a row it references (a column declared `references = "routes"` that it sets names a
//!    row an earlier transaction touches; see [`references_of`]).
//!
//! "Earlier" is position in the input, which is outbox order. Only a *later* transaction that
//! references a row is held back; an earlier transaction referencing a row that a later one
//! touches (e.g. deletes) does not hold the later one back.
//!
//! # Priority inheritance
//!
//! A critical transaction that depends on an earlier bulk one must wait for it. Left alone, the
//! bulk transaction would wait behind every normal and bulk transaction before it, and the
//! critical one with it. So a transaction *inherits* the lanes of the later transactions that
//! depend on it, directly or transitively:
//!
//! `effective lane(t) = max(lane(t), effective lane(u) for every later u that depends on t)`
//!
//! and ordering uses effective lanes (see [`effective_lanes`]). A bulk transaction that a
//! critical one waits on is therefore uploaded with the critical lane, right before it.
//!
//! # Guarantees
//!
//! [`upload_order`] is a priority topological sort over the dependency graph (edges always go
//! from a transaction to earlier ones), picking among ready transactions the highest effective
//! lane, then the smallest `first_seq`. With inheritance this gives:
//!
//! - every dependency is uploaded before its dependents (rules 1–3, transitively);
//! - the output's effective lanes never increase: all effective-critical transactions first,
//!   then normal, then bulk;
//! - for input positions `a < b` with `effective lane(a) >= effective lane(b)`, `a` is uploaded
//!   before `b` (in particular FIFO within a lane).
//!
//! Cost: O(ops · log n) — rows and references are indexed in a hash map keeping, for each row,
//! the last transaction that touched it, so each op adds at most one edge; no pairs are
//! compared.
//!
//! TODO(#5): read_batch orders transactions with lanes::upload_order

use burrow_core::{Priority, Table};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// One pending local transaction as the upload orderer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingTx {
    /// Local transaction number (outbox order = order of first op seq).
    pub tx: u64,
    /// Outbox seq of its first op (the FIFO key within a lane).
    pub first_seq: u64,
    /// The transaction's lane: the highest priority among its ops, or the override.
    pub lane: Priority,
    /// `(table, row_id)` of every op.
    pub rows: Vec<(String, String)>,
    /// `(referenced table, referenced row id)` named by the reference columns its ops set.
    pub references: Vec<(String, String)>,
}

/// For each transaction of `pending`, the earlier transactions it depends on directly (sorted,
/// without duplicates): for every row it touches or references, the last earlier transaction
/// that touched that row. Older touchers of the row are reached transitively, since each
/// toucher depends on the previous one.
fn dependencies(pending: &[PendingTx]) -> Vec<Vec<usize>> {
    let mut last_toucher: HashMap<(&str, &str), usize> = HashMap::new();
    let mut deps = Vec::with_capacity(pending.len());
    for (j, t) in pending.iter().enumerate() {
        let mut d: Vec<usize> = t
            .rows
            .iter()
            .chain(&t.references)
            .filter_map(|(tbl, id)| last_toucher.get(&(tbl.as_str(), id.as_str())).copied())
            .collect();
        d.sort_unstable();
        d.dedup();
        deps.push(d);
        for (tbl, id) in &t.rows {
            last_toucher.insert((tbl.as_str(), id.as_str()), j);
        }
    }
    deps
}

/// Effective lanes from direct dependencies: one pass in reverse input order, since every
/// dependent of a transaction comes later in the input.
fn inherit(pending: &[PendingTx], deps: &[Vec<usize>]) -> Vec<Priority> {
    let mut eff: Vec<Priority> = pending.iter().map(|t| t.lane).collect();
    for j in (0..pending.len()).rev() {
        let lane = eff[j];
        for &i in &deps[j] {
            eff[i] = eff[i].max(lane);
        }
    }
    eff
}

/// The effective lane of each transaction of `pending` (given in outbox order) after priority
/// inheritance: the highest of its own lane and the effective lanes of the later transactions
/// that depend on it (see the module docs).
pub fn effective_lanes(pending: &[PendingTx]) -> Vec<Priority> {
    inherit(pending, &dependencies(pending))
}

/// The order in which to upload `pending` (given in outbox order): indices into `pending`.
///
/// Rules: (1) a transaction is never split or reordered internally (the unit is the
/// transaction); (2) a transaction never goes before an earlier one that touches one of its
/// rows; (3) a transaction never goes before an earlier one that touches a row it references;
/// (4) subject to (2)(3), higher lanes first, FIFO (by `first_seq`) within a lane — using
/// effective lanes after priority inheritance (see the module docs).
pub fn upload_order(pending: &[PendingTx]) -> Vec<usize> {
    let n = pending.len();
    let deps = dependencies(pending);
    let eff = inherit(pending, &deps);
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, d) in deps.iter().enumerate() {
        for &i in d {
            dependents[i].push(j);
        }
    }
    drop(deps);
    let key = |i: usize| (eff[i], Reverse(pending[i].first_seq), Reverse(i));
    let mut ready: BinaryHeap<(Priority, Reverse<u64>, Reverse<usize>)> =
        (0..n).filter(|&i| waiting[i] == 0).map(key).collect();
    let mut order = Vec::with_capacity(n);
    while let Some((_, _, Reverse(i))) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(key(j));
            }
        }
    }
    debug_assert_eq!(
        order.len(),
        n,
        "dependencies only point to earlier transactions"
    );
    order
}

/// The `(referenced table, row id)` pairs an op sets: the columns of `table` declared with
/// `references = "T"` whose value in the op's captured JSON `data` is a non-null text id.
/// Columns absent from `data` (unchanged by an update) name nothing.
pub fn references_of(
    table: &Table,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, String)> {
    table
        .columns
        .iter()
        .filter_map(|c| {
            let target = c.references.as_ref()?;
            match data.get(&c.name)? {
                serde_json::Value::String(id) => Some((target.clone(), id.clone())),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use burrow_core::Schema;
    use proptest::prelude::*;

    fn row(t: &str, id: &str) -> (String, String) {
        (t.to_string(), id.to_string())
    }

    /// Transactions in outbox order; `first_seq` = 10 × position + 1.
    /// A test transaction: lane, rows touched, rows referenced.
    type Spec = (Priority, Vec<(String, String)>, Vec<(String, String)>);

    fn txs(specs: Vec<Spec>) -> Vec<PendingTx> {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (lane, rows, references))| PendingTx {
                tx: i as u64 + 1,
                first_seq: 10 * i as u64 + 1,
                lane,
                rows,
                references,
            })
            .collect()
    }

    #[test]
    fn empty_input() {
        assert!(upload_order(&[]).is_empty());
    }

    #[test]
    fn critical_after_bulk_on_other_rows_goes_first() {
        let mut specs: Vec<_> = (0..20)
            .map(|i| {
                (
                    Priority::Bulk,
                    vec![row("photos", &format!("p{i}"))],
                    vec![],
                )
            })
            .collect();
        specs.push((Priority::Critical, vec![row("shipments", "s1")], vec![]));
        let order = upload_order(&txs(specs));
        let mut expected = vec![20];
        expected.extend(0..20);
        assert_eq!(order, expected);
    }

    #[test]
    fn critical_update_waits_for_bulk_insert_which_inherits_critical() {
        let mut specs: Vec<_> = (0..20)
            .map(|i| {
                (
                    Priority::Bulk,
                    vec![row("photos", &format!("p{i}"))],
                    vec![],
                )
            })
            .collect();
        // The critical tx updates the row bulk tx 7 inserted.
        specs.push((Priority::Critical, vec![row("photos", "p7")], vec![]));
        let pending = txs(specs);
        let eff = effective_lanes(&pending);
        assert_eq!(eff[7], Priority::Critical);
        assert_eq!(eff[6], Priority::Bulk);
        let order = upload_order(&pending);
        let mut expected = vec![7, 20];
        expected.extend((0..20).filter(|&i| i != 7));
        assert_eq!(order, expected);
    }

    #[test]
    fn inheritance_is_transitive() {
        let pending = txs(vec![
            (Priority::Bulk, vec![row("a", "1")], vec![]),
            (Priority::Bulk, vec![row("b", "1")], vec![]),
            (Priority::Bulk, vec![row("a", "1"), row("c", "1")], vec![]),
            (Priority::Normal, vec![row("d", "1")], vec![]),
            (Priority::Critical, vec![row("c", "1")], vec![]),
        ]);
        assert_eq!(
            effective_lanes(&pending),
            vec![
                Priority::Critical,
                Priority::Bulk,
                Priority::Critical,
                Priority::Normal,
                Priority::Critical
            ]
        );
        assert_eq!(upload_order(&pending), vec![0, 2, 4, 3, 1]);
    }

    #[test]
    fn shipment_waits_for_the_route_it_references() {
        let pending = txs(vec![
            (Priority::Normal, vec![row("notes", "n1")], vec![]),
            (Priority::Normal, vec![row("routes", "r1")], vec![]),
            (Priority::Normal, vec![row("notes", "n2")], vec![]),
            (
                Priority::Critical,
                vec![row("shipments", "s1")],
                vec![row("routes", "r1")],
            ),
            (
                Priority::Critical,
                vec![row("shipments", "s2")],
                vec![row("routes", "r9")],
            ),
        ]);
        assert_eq!(upload_order(&pending), vec![1, 3, 4, 0, 2]);
    }

    #[test]
    fn referencing_does_not_hold_back_a_later_toucher() {
        // Rule 3 is one-way: tx 1 touches r1, which earlier tx 0 references; tx 1 (critical)
        // may go before tx 0 (bulk).
        let pending = txs(vec![
            (
                Priority::Bulk,
                vec![row("shipments", "s1")],
                vec![row("routes", "r1")],
            ),
            (Priority::Critical, vec![row("routes", "r1")], vec![]),
        ]);
        assert_eq!(upload_order(&pending), vec![1, 0]);
    }

    #[test]
    fn transaction_waits_for_every_earlier_toucher_of_its_rows() {
        let pending = txs(vec![
            (Priority::Bulk, vec![row("a", "1")], vec![]),
            (Priority::Bulk, vec![row("b", "1")], vec![]),
            (Priority::Bulk, vec![row("x", "1")], vec![]),
            (
                Priority::Critical,
                vec![row("a", "1"), row("b", "1")],
                vec![],
            ),
        ]);
        assert_eq!(upload_order(&pending), vec![0, 1, 3, 2]);
    }

    #[test]
    fn fifo_within_a_lane() {
        let lanes = [
            Priority::Normal,
            Priority::Bulk,
            Priority::Critical,
            Priority::Normal,
            Priority::Bulk,
            Priority::Critical,
            Priority::Normal,
        ];
        let pending = txs(lanes
            .iter()
            .enumerate()
            .map(|(i, &lane)| (lane, vec![row("t", &i.to_string())], vec![]))
            .collect());
        assert_eq!(upload_order(&pending), vec![2, 5, 0, 3, 6, 1, 4]);
    }

    #[test]
    fn fifo_uses_first_seq() {
        let mut pending = txs(vec![
            (Priority::Normal, vec![row("t", "1")], vec![]),
            (Priority::Normal, vec![row("t", "2")], vec![]),
        ]);
        // Positions are outbox order, but the FIFO key is first_seq.
        pending[0].first_seq = 50;
        assert_eq!(upload_order(&pending), vec![1, 0]);
    }

    #[test]
    fn references_from_op_data() {
        let schema = Schema::from_toml_str(
            r#"
            version = 1
            [tables.routes.columns]
            name = "text"
            [tables.depots.columns]
            name = "text"
            [tables.shipments]
            priority = "critical"
            [tables.shipments.columns]
            route_id = { type = "text", references = "routes" }
            depot_id = { type = "text", references = "depots" }
            status = "text"
            "#,
        )
        .unwrap();
        let sh = schema.table("shipments").unwrap();
        let data = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            references_of(
                sh,
                &data(serde_json::json!({"route_id": "r1", "depot_id": "d1", "status": "x"}))
            ),
            vec![row("routes", "r1"), row("depots", "d1")]
        );
        assert_eq!(
            references_of(
                sh,
                &data(serde_json::json!({"route_id": null, "status": "r2"}))
            ),
            vec![]
        );
        assert_eq!(
            references_of(sh, &data(serde_json::json!({"depot_id": "d2"}))),
            vec![row("depots", "d2")]
        );
        let routes = schema.table("routes").unwrap();
        assert_eq!(
            references_of(routes, &data(serde_json::json!({"name": "r1"}))),
            vec![]
        );
    }

    /// Tiny deterministic generator for the large input.
    struct XorShift(u64);
    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn orders_100k_transactions_quickly() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let tables = ["shipments", "routes", "photos", "notes"];
        let mut seq = 1;
        let pending: Vec<PendingTx> = (0..100_000u64)
            .map(|i| {
                let ops = 1 + rng.below(4);
                let rows = (0..ops)
                    .map(|_| {
                        let t = tables[rng.below(4) as usize];
                        (t.to_string(), format!("{t}-{}", rng.below(50_000)))
                    })
                    .collect();
                let references = (0..rng.below(2))
                    .map(|_| {
                        (
                            "routes".to_string(),
                            format!("routes-{}", rng.below(50_000)),
                        )
                    })
                    .collect();
                let t = PendingTx {
                    tx: i + 1,
                    first_seq: seq,
                    lane: Priority::from_i64(rng.below(3) as i64),
                    rows,
                    references,
                };
                seq += ops;
                t
            })
            .collect();
        let start = std::time::Instant::now();
        let order = upload_order(&pending);
        let elapsed = start.elapsed();
        eprintln!("lanes::upload_order: 100000 transactions in {elapsed:?}");
        assert_eq!(order.len(), pending.len());
        assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    }

    fn arb_row() -> impl Strategy<Value = (String, String)> {
        (0..3usize, 0..5usize).prop_map(|(t, r)| (["a", "b", "c"][t].to_string(), format!("{r}")))
    }

    fn arb_pending() -> impl Strategy<Value = Vec<PendingTx>> {
        let tx = (
            0..3i64,
            prop::collection::vec(arb_row(), 1..=4),
            prop::collection::vec(arb_row(), 0..=2),
        );
        prop::collection::vec(tx, 0..=200).prop_map(|specs| {
            let mut seq = 1;
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (lane, rows, references))| {
                    let t = PendingTx {
                        tx: i as u64 + 1,
                        first_seq: seq,
                        lane: Priority::from_i64(lane),
                        rows,
                        references,
                    };
                    seq += t.rows.len() as u64;
                    t
                })
                .collect()
        })
    }

    /// Whether `j` (later) directly depends on `i` (earlier), by comparing all pairs.
    fn depends(pending: &[PendingTx], j: usize, i: usize) -> bool {
        i < j
            && pending[j]
                .rows
                .iter()
                .chain(&pending[j].references)
                .any(|r| pending[i].rows.contains(r))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn lane_order_never_overtakes(pending in arb_pending()) {
            let n = pending.len();
            let order = upload_order(&pending);
            // A permutation.
            let mut pos = vec![usize::MAX; n];
            for (k, &i) in order.iter().enumerate() {
                prop_assert!(i < n && pos[i] == usize::MAX, "not a permutation: {order:?}");
                pos[i] = k;
            }
            prop_assert_eq!(order.len(), n);
            // Never overtakes an earlier transaction on the same row or on a referenced row
            // (brute force over all pairs).
            for j in 0..n {
                for i in 0..j {
                    if depends(&pending, j, i) {
                        prop_assert!(pos[i] < pos[j], "{j} overtook {i}: {order:?}");
                    }
                }
            }
            // Inheritance, brute force: max own lane over everything that depends on it.
            let mut eff: Vec<Priority> = pending.iter().map(|t| t.lane).collect();
            for j in (0..n).rev() {
                for i in 0..j {
                    if depends(&pending, j, i) {
                        eff[i] = eff[i].max(eff[j]);
                    }
                }
            }
            prop_assert_eq!(&effective_lanes(&pending), &eff);
            // Higher effective lanes drain first.
            for w in order.windows(2) {
                prop_assert!(eff[w[0]] >= eff[w[1]], "lane went up: {order:?}");
            }
            // FIFO: an earlier transaction in the same (or a higher) effective lane goes first,
            // dependency or not.
            for b in 0..n {
                for a in 0..b {
                    if eff[a] >= eff[b] {
                        prop_assert!(pos[a] < pos[b], "{b} overtook {a}: {order:?}");
                    }
                }
            }
            // The first is the earliest dependency-free transaction of the highest lane.
            if let Some(top) = pending.iter().map(|t| t.lane).max() {
                let first =
                    (0..n).find(|&j| eff[j] == top && (0..j).all(|i| !depends(&pending, j, i)));
                prop_assert_eq!(Some(order[0]), first);
            }
        }
    }
}
