//! The audit after the drain: every op a device captured is applied on the server exactly
//! once or visibly refused (with a reason) — otherwise it is lost; the conflict log by
//! policy and how each was resolved; the merged columns (counters add up, every text edit
//! survives); what the route reassignment did to the old and the new driver's devices.

use super::device::Device;
use super::fleet::Role;
use super::ledger::Ledger;
use super::story::Story;
use super::work::count;
use anyhow::Result;
use burrow_client::Client;
use burrow_core::conflict::{ConflictEntry, ConflictStatus};
use burrow_server::SqliteServerStore;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every op of every device, accounted for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpsAudit {
    /// Ops the devices captured (their outbox numbering, `1..=seq`).
    pub written: u64,
    /// Applied on the server (exactly once).
    pub applied: u64,
    /// Refused by the server with a reason, kept on the device (`Client::rejected_ops`).
    pub rejected: u64,
    /// Refusals by reason code.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Neither applied nor visibly refused.
    pub lost: u64,
    /// A few lost ops, `device:seq`.
    pub lost_examples: Vec<String>,
    /// Op ids applied more than once.
    pub duplicates: u64,
    /// Ops the server holds that no device captured.
    pub phantom: u64,
    /// Ops still in an outbox after the drain.
    pub still_pending: u64,
}

/// The highest op number a client ever gave out (its outbox numbering never repeats).
fn last_seq(client: &Client) -> u64 {
    client
        .with_connection(|c| {
            Ok(c.query_row(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = '_burrow_outbox'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .unwrap_or(0)
        .max(0) as u64
}

/// Accounts for every op of every device against the server's op records.
pub fn ops(devices: &[Device], store: &SqliteServerStore) -> Result<OpsAudit> {
    let mut a = OpsAudit::default();
    for d in devices {
        let id = d.client.client_id();
        let last = last_seq(&d.client);
        let refused: HashMap<u64, String> = d
            .client
            .rejected_ops()?
            .into_iter()
            .map(|r| (r.client_seq, r.code))
            .collect();
        a.written += last;
        a.still_pending += d.client.status()?.pending_ops;
        for seq in 1..=last {
            match store.op_effect_count(id, seq)? {
                1 => a.applied += 1,
                0 => match refused.get(&seq) {
                    Some(code) => {
                        a.rejected += 1;
                        *a.rejected_by_code.entry(code.clone()).or_default() += 1;
                    }
                    None => {
                        a.lost += 1;
                        if a.lost_examples.len() < 10 {
                            a.lost_examples.push(format!("{}:{seq}", d.member.name));
                        }
                    }
                },
                _ => {
                    a.applied += 1;
                    a.duplicates += 1;
                }
            }
        }
        if store.op_answer_recorded(id, last + 1)? {
            a.phantom += 1;
        }
    }
    Ok(a)
}

/// One way conflicts of a column were resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The value the row kept (digits shown as `#`), and whose it was.
    pub kept: String,
    /// The value that lost, and whose it was.
    pub over: String,
    /// How often.
    pub count: u64,
}

/// The conflicts of one column under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictGroup {
    /// `table.column`.
    pub column: String,
    /// The policy (or `deleted` / `update_wins`) that decided.
    pub policy: String,
    /// Entries in the log.
    pub count: u64,
    /// Still open (manual conflicts waiting for a person).
    pub open: u64,
    /// How they were resolved, most frequent first.
    pub resolutions: Vec<Resolution>,
}

/// A value as the report shows it: short, digits as `#` so similar values group.
fn shape(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::String(s) => format!("'{s}'"),
        serde_json::Value::Null => "nothing".to_string(),
        other => other.to_string(),
    };
    let text: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut out = String::new();
    let mut last_hash = false;
    for c in text.chars() {
        if !(c == '#' && last_hash) {
            out.push(c);
        }
        last_hash = c == '#';
    }
    out.chars().take(32).collect()
}

/// Entries, open entries, and `(kept, over)` pairs of one column and policy.
type Tally = (u64, u64, BTreeMap<(String, String), u64>);

/// Groups the conflict log by column and policy; `roles` names each user's role.
pub fn conflicts(log: &[ConflictEntry], roles: &HashMap<String, Role>) -> Vec<ConflictGroup> {
    let who = |user: &Option<String>| {
        user.as_ref()
            .and_then(|u| roles.get(u))
            .map_or("?", |r| r.label())
            .to_string()
    };
    let mut groups: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for e in log {
        let g = groups
            .entry((format!("{}.{}", e.table, e.column), e.reason.clone()))
            .or_default();
        g.0 += 1;
        if e.status == ConflictStatus::Open {
            g.1 += 1;
        }
        let kept = e.winner().map_or_else(
            || "a merge".to_string(),
            |w| format!("{} ({})", shape(&w.value), who(&w.user)),
        );
        for l in e.losers() {
            let over = format!("{} ({})", shape(&l.value), who(&l.user));
            *g.2.entry((kept.clone(), over)).or_default() += 1;
        }
    }
    groups
        .into_iter()
        .map(|((column, policy), (count, open, res))| {
            let mut resolutions: Vec<Resolution> = res
                .into_iter()
                .map(|((kept, over), count)| Resolution { kept, over, count })
                .collect();
            resolutions.sort_by_key(|r| std::cmp::Reverse(r.count));
            ConflictGroup {
                column,
                policy,
                count,
                open,
                resolutions,
            }
        })
        .collect()
}

/// Concurrent counter increments, checked against the server's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CounterMerge {
    /// Increments written.
    pub increments: u64,
    /// Devices that wrote them.
    pub devices: usize,
    /// Items incremented.
    pub items: usize,
    /// Items whose server total is the initial stock plus every increment.
    pub exact: usize,
    /// Items whose total is off: `item: expected != actual`.
    pub mismatches: Vec<String>,
}

/// Concurrent notes edits (text CRDT), checked against the server's text.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TextMerge {
    /// Edits written.
    pub edits: u64,
    /// Devices that wrote them.
    pub devices: usize,
    /// Reports edited.
    pub reports: usize,
    /// Edits whose marker the merged text holds exactly once.
    pub present: u64,
    /// Markers missing or doubled.
    pub missing: Vec<String>,
}

/// Checks the merged columns against `server` (a fresh client of the manager, which reads
/// everything).
pub fn merges(
    ledger: &Ledger,
    initial: &BTreeMap<String, i64>,
    server: &Client,
) -> Result<(CounterMerge, TextMerge)> {
    let (increments, counter_devices) = ledger.increments();
    let totals: HashMap<String, i64> = server
        .query_json("SELECT id, quantity FROM items")?
        .into_iter()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?.to_string();
            Some((id, r.get("quantity")?.as_i64()?))
        })
        .collect();
    let mut c = CounterMerge {
        devices: counter_devices,
        items: increments.len(),
        ..CounterMerge::default()
    };
    for (item, (sum, n)) in &increments {
        c.increments += n;
        let expected = initial.get(item).copied().unwrap_or(0) + sum;
        match totals.get(item) {
            Some(actual) if *actual == expected => c.exact += 1,
            actual => c.mismatches.push(format!(
                "{item}: expected {expected}, server has {actual:?}"
            )),
        }
    }
    let notes: HashMap<String, String> = server
        .query_json("SELECT id, notes FROM reports")?
        .into_iter()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?.to_string();
            Some((id, r.get("notes")?.as_str().unwrap_or_default().to_string()))
        })
        .collect();
    let markers = ledger.markers();
    let mut t = TextMerge {
        edits: markers.len() as u64,
        devices: markers.iter().map(|m| m.2).collect::<BTreeSet<_>>().len(),
        reports: markers.iter().map(|m| &m.0).collect::<BTreeSet<_>>().len(),
        ..TextMerge::default()
    };
    for (report, marker, _) in &markers {
        let found = notes
            .get(report)
            .map_or(0, |text| text.matches(marker.as_str()).count());
        if found == 1 {
            t.present += 1;
        } else if t.missing.len() < 10 {
            t.missing
                .push(format!("{report} {marker}: found {found} times"));
        }
    }
    Ok((c, t))
}

/// What the mid-run reassignment did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reassignment {
    /// The route.
    pub route: String,
    /// Its old driver.
    pub from: String,
    /// Its new driver.
    pub to: String,
    /// Seconds into the run.
    pub at_secs: f64,
    /// The route's shipments on the old driver's device at that moment…
    pub rows_before: u64,
    /// …and after the drain.
    pub rows_after: u64,
    /// Rows that left the old driver's device.
    pub evicted_rows: u64,
    /// The route's shipments on the new driver's device after the drain.
    pub heir_rows: u64,
    /// The old driver's edits on them still in its outbox at that moment.
    pub pending_edits: u64,
    /// Of those, applied by the server (they got there while still allowed).
    pub uploaded: u64,
    /// Refused with a reason (kept on the device).
    pub rejected_with_reason: u64,
    /// Neither.
    pub lost: u64,
    /// Edits on them the old driver made after that moment (its device did not know yet),
    /// refused with a reason.
    pub refused_later: u64,
    /// The reasons given.
    pub reasons: Vec<String>,
}

/// Audits the reassignment of `story` (`None` when it never happened).
pub fn reassignment(
    story: &Story,
    devices: &[Device],
    store: &SqliteServerStore,
) -> Result<Option<Reassignment>> {
    let Some(snap) = story.snapshot() else {
        return Ok(None);
    };
    let victim = &devices[story.victim];
    let heir = &devices[story.heir];
    let rows = |c: &Client| {
        count(
            c,
            &format!(
                "SELECT count(*) AS n FROM shipments WHERE route_id = '{}'",
                story.route
            ),
        )
        .max(0) as u64
    };
    let on_route: Vec<burrow_client::RejectedOp> = victim
        .client
        .rejected_ops()?
        .into_iter()
        .filter(|r| r.table == "shipments" && story.shipments.contains(&r.row_id))
        .collect();
    let refused: HashMap<u64, (String, String)> = on_route
        .iter()
        .map(|r| (r.client_seq, (r.code.clone(), r.message.clone())))
        .collect();
    let rows_after = rows(&victim.client);
    let mut r = Reassignment {
        route: story.route.clone(),
        from: victim.member.name.clone(),
        to: heir.member.name.clone(),
        at_secs: snap.at_secs,
        rows_before: snap.rows_held,
        rows_after,
        evicted_rows: snap.rows_held.saturating_sub(rows_after),
        heir_rows: rows(&heir.client),
        pending_edits: snap.pending_seqs.len() as u64,
        refused_later: on_route
            .iter()
            .filter(|r| !snap.pending_seqs.contains(&r.client_seq))
            .count() as u64,
        ..Reassignment::default()
    };
    for seq in &snap.pending_seqs {
        if store.op_effect_count(victim.client.client_id(), *seq)? > 0 {
            r.uploaded += 1;
        } else if let Some((code, message)) = refused.get(seq) {
            r.rejected_with_reason += 1;
            let reason = format!("{code}: {message}");
            if !r.reasons.contains(&reason) {
                r.reasons.push(reason);
            }
        } else {
            r.lost += 1;
        }
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shaped_for_grouping() {
        assert_eq!(
            shape(&serde_json::json!("submitted rev 12")),
            "'submitted rev #'"
        );
        assert_eq!(shape(&serde_json::json!(null)), "nothing");
        assert_eq!(shape(&serde_json::json!(42)), "#");
    }
}
