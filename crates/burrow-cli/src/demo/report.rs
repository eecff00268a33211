//! The demo's report: the promises as measured facts, the checks that set the exit code,
//! and their rendering as a table (stdout) or JSON (`--json`).

use super::attempts::SyncSummary;
use super::audit::{ConflictGroup, CounterMerge, OpsAudit, Reassignment, TextMerge};
use super::propagation::Latency;
use serde::Serialize;
use std::collections::BTreeMap;

/// Local writes of the whole fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Writes {
    /// Writes attempted.
    pub attempted: u64,
    /// Accepted by the local database.
    pub succeeded: u64,
    /// Attempted while the device was offline.
    pub offline_attempted: u64,
    /// Of those, accepted.
    pub offline_succeeded: u64,
    /// The first errors, if any.
    pub errors: Vec<String>,
}

/// The conflict log and the merged columns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conflicts {
    /// Entries in the server's conflict log.
    pub logged: u64,
    /// Entries per policy.
    pub by_policy: BTreeMap<String, u64>,
    /// Per column and policy, with how they were resolved.
    pub groups: Vec<ConflictGroup>,
    /// `counter` columns: concurrent increments add up (nothing is logged).
    pub counter: CounterMerge,
    /// `text` columns: concurrent edits merge (nothing is logged).
    pub text: TextMerge,
}

/// Traffic through the fault proxies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Wire {
    /// Bytes from the devices to the server (HTTP and live push, as on the wire).
    pub bytes_up: u64,
    /// Bytes from the server to the devices.
    pub bytes_down: u64,
    /// Ops the devices wrote.
    pub ops: u64,
    /// Photo rows among them, and their image bytes.
    pub photos: u64,
    /// Image bytes of the photos.
    pub photo_bytes: u64,
    /// Wire bytes per op once the photos' image bytes are taken out.
    pub bytes_per_op_without_photos: f64,
    /// Bytes of the sync frames themselves (compressed protobuf of completed syncs, without
    /// HTTP, TCP or live push) per op.
    pub frame_bytes_per_op: f64,
    /// TCP connections the proxies forwarded.
    pub connections: u64,
    /// Connections the hostile profile dropped at random.
    pub drops: u64,
    /// Stalls the profile injected.
    pub stalls: u64,
    /// Open connections cut by tunnels.
    pub cut: u64,
    /// Connections refused inside tunnels.
    pub refused: u64,
}

/// What the network scripts did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Script {
    /// Tunnels the app noticed and reported (`set_network(Offline)`).
    pub tunnels_known: u64,
    /// Tunnels nobody told the client about (the network is silently dead).
    pub tunnels_silent: u64,
    /// Stretches of a slower profile.
    pub edge_stretches: u64,
    /// That profile's name (`edge`, or `weak signal` on an EDGE base).
    pub stretch_profile: String,
}

/// Wall-clock phases, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Server, proxies, clients, the morning's plan synced everywhere.
    pub setup: f64,
    /// The run under the network scripts.
    pub run: f64,
    /// From the heal until every outbox was empty.
    pub outboxes_empty: f64,
    /// From the heal until every device had converged.
    pub drain: f64,
    /// The whole demo.
    pub total: f64,
}

/// One device's convergence.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceState {
    /// The device.
    pub device: String,
    /// Its role.
    pub role: String,
    /// Its state equals its reference.
    pub converged: bool,
    /// Its state hash.
    pub hash: String,
    /// The hash of a fresh client of the same user synced from the server.
    pub reference: String,
}

/// One promise, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is promised.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The measurement behind it.
    pub detail: String,
}

/// Everything the demo measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every check held.
    pub ok: bool,
    /// The seed of the workload and the network scripts.
    pub seed: u64,
    /// The base network profile.
    pub network: String,
    /// Seconds of run before the heal.
    pub duration_s: u64,
    /// Devices in the fleet.
    pub devices: usize,
    /// Devices per role.
    pub fleet: BTreeMap<String, usize>,
    /// Local writes that succeeded / attempted while the device was offline.
    pub offline_availability: f64,
    /// Sync attempts that completed, or failed and the next completed (tunnels apart).
    pub sync_success_rate: f64,
    /// Ops neither applied by the server nor visibly refused.
    pub lost_writes: u64,
    /// Op ids applied more than once.
    pub duplicates: u64,
    /// Every device holds exactly the server's state within its scope.
    pub converged: bool,
    /// The conflict log and merges.
    pub conflicts: Conflicts,
    /// Driver confirmation → visible on the manager's device, both online.
    pub propagation_ms: Latency,
    /// The same when the driver (or manager) was offline at the write.
    pub offline_to_visible_ms: Latency,
    /// Confirmations the manager never saw (refused on the server).
    pub never_visible: u64,
    /// Bytes through the proxies (both ways) per op written.
    pub bytes_per_op: f64,
    /// From the heal until every outbox was empty and every device converged.
    pub drain_seconds: f64,
    /// Local writes.
    pub writes: Writes,
    /// Sync attempts.
    pub sync: SyncSummary,
    /// Every op accounted for.
    pub ops: OpsAudit,
    /// The mid-run route reassignment.
    pub reassignment: Option<Reassignment>,
    /// Per device.
    pub convergence: Vec<DeviceState>,
    /// Traffic.
    pub wire: Wire,
    /// Network trouble injected.
    pub network_script: Script,
    /// Phases.
    pub timings: Timings,
    /// What the demo could not show yet, and why.
    pub skipped: Vec<String>,
    /// The promises, checked.
    pub checks: Vec<Check>,
    /// Where the databases were kept (`--keep`).
    pub data_dir: Option<String>,
}

/// `12,345`.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.2 MB`, `34.5 KB`, `512 B`.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// `1.23 s` or `850 ms`.
fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn pct(v: f64) -> String {
    let p = v * 100.0;
    if (99.0..100.0).contains(&p) {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

impl Report {
    /// Derives the checks (the promises) and `ok` from the measurements.
    pub fn check(&mut self, drained: bool) {
        let w = &self.writes;
        let s = &self.sync;
        let o = &self.ops;
        let c = &self.conflicts;
        let converged = self.convergence.iter().filter(|d| d.converged).count();
        self.checks = vec![
            Check {
                name: "offline availability 100 %".into(),
                ok: w.offline_attempted > 0
                    && w.offline_succeeded == w.offline_attempted
                    && w.succeeded == w.attempted,
                detail: format!(
                    "{} of {} local writes made while offline succeeded ({} of {} in all)",
                    int(w.offline_succeeded),
                    int(w.offline_attempted),
                    int(w.succeeded),
                    int(w.attempted)
                ),
            },
            Check {
                name: "sync success > 99.9 %".into(),
                ok: self.sync_success_rate > 0.999,
                detail: format!(
                    "{} attempts with the link up: {} completed, {} failed and the next completed, \
                     {} did not; {} more cut by a tunnel (not judged); {} dropped connections \
                     resumed within an attempt",
                    int(s.judged),
                    int(s.completed),
                    int(s.resumed),
                    int(s.not_resumed),
                    int(s.cut_by_tunnel),
                    int(s.reconnects)
                ),
            },
            Check {
                name: "0 lost writes".into(),
                ok: o.lost == 0 && o.still_pending == 0,
                detail: format!(
                    "{} ops written: {} applied on the server, {} refused with a reason{}, {} neither{}",
                    int(o.written),
                    int(o.applied),
                    int(o.rejected),
                    codes(&o.rejected_by_code),
                    int(o.lost),
                    if o.still_pending > 0 {
                        format!(", {} still queued", o.still_pending)
                    } else {
                        String::new()
                    }
                ),
            },
            Check {
                name: "0 duplicates".into(),
                ok: o.duplicates == 0 && o.phantom == 0,
                detail: format!(
                    "{} op ids applied twice, {} ops on the server no device wrote",
                    o.duplicates, o.phantom
                ),
            },
            Check {
                name: "counters add up".into(),
                ok: c.counter.mismatches.is_empty(),
                detail: format!(
                    "{} increments from {}: {} of {} item totals exact",
                    int(c.counter.increments),
                    plural(c.counter.devices, "device"),
                    c.counter.exact,
                    c.counter.items
                ),
            },
            Check {
                name: "every text edit kept".into(),
                ok: c.text.missing.is_empty(),
                detail: format!(
                    "{} notes edits from {} on {}: {} in the merged text",
                    int(c.text.edits),
                    plural(c.text.devices, "device"),
                    plural(c.text.reports, "shared report"),
                    int(c.text.present)
                ),
            },
            Check {
                name: "converged within scope".into(),
                ok: self.converged,
                detail: format!(
                    "{converged} of {} devices hold exactly what a fresh client of their user downloads",
                    self.convergence.len()
                ),
            },
            Check {
                name: "drained".into(),
                ok: drained,
                detail: if drained {
                    format!(
                        "outboxes empty {:.1} s and every device converged {:.1} s after the heal",
                        self.timings.outboxes_empty, self.timings.drain
                    )
                } else {
                    format!("not done {:.0} s after the heal", self.timings.drain)
                },
            },
        ];
        self.ok = self.checks.iter().all(|c| c.ok);
    }

    /// Check `i` of [`Report::check`] (a failed placeholder before it ran).
    fn verdict(&self, i: usize) -> Check {
        self.checks.get(i).cloned().unwrap_or_else(|| Check {
            name: String::new(),
            ok: false,
            detail: "not checked".into(),
        })
    }

    /// The report as a table, for people (after [`Report::check`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(String::new());
        line(format!("{:<30} {:<16} {}", "promise", "measured", "how"));
        let rows = [
            (
                "offline availability",
                pct(self.offline_availability),
                &self.verdict(0),
            ),
            (
                "sync success",
                pct(self.sync_success_rate),
                &self.verdict(1),
            ),
            (
                "lost writes",
                self.lost_writes.to_string(),
                &self.verdict(2),
            ),
            ("duplicates", self.duplicates.to_string(), &self.verdict(3)),
            (
                "convergence (within scope)",
                format!(
                    "{}/{}",
                    self.convergence.iter().filter(|d| d.converged).count(),
                    self.convergence.len()
                ),
                &self.verdict(6),
            ),
        ];
        for (name, value, check) in rows {
            line(format!(
                "{} {:<28} {:<16} {}",
                if check.ok { " " } else { "!" },
                name,
                value,
                check.detail
            ));
        }
        let p = &self.propagation_ms;
        line(format!(
            "  {:<28} {:<16} {} confirmations driver → manager's device, both online (live push); \
             offline → visible: p50 {} over {}",
            "propagation p50 / p99",
            format!("{} / {}", ms(p.p50), ms(p.p99)),
            p.samples,
            ms(self.offline_to_visible_ms.p50),
            self.offline_to_visible_ms.samples
        ));
        let w = &self.wire;
        line(format!(
            "  {:<28} {:<16} {} up + {} down through the proxies for {} ops; {} B/op without \
             the {} photos' {} of image bytes; the sync frames alone (photos included) {} B/op",
            "bytes on the wire per op",
            format!("{:.0} B", self.bytes_per_op),
            bytes(w.bytes_up),
            bytes(w.bytes_down),
            int(w.ops),
            w.bytes_per_op_without_photos.round(),
            int(w.photos),
            bytes(w.photo_bytes),
            w.frame_bytes_per_op.round()
        ));
        line(format!(
            "{} {:<28} {:<16} {}",
            if self.verdict(7).ok { " " } else { "!" },
            "time to drain",
            format!("{:.1} s", self.drain_seconds),
            self.verdict(7).detail
        ));
        line(String::new());
        let c = &self.conflicts;
        line(format!(
            "conflicts: {} in the server's conflict log, each value that lost kept there",
            c.logged
        ));
        for g in &c.groups {
            let how: Vec<String> = g
                .resolutions
                .iter()
                .take(3)
                .map(|r| format!("kept {} over {} ×{}", r.kept, r.over, r.count))
                .collect();
            line(format!(
                "  {:<18} {:<8} {:>4}  {}",
                g.column,
                g.policy,
                g.count,
                how.join("; ")
            ));
        }
        line(format!(
            "  {:<18} {:<8} {:>4}  {} ({} merged, nothing to log)",
            "items.quantity",
            "counter",
            "—",
            self.verdict(4).detail,
            int(c.counter.increments)
        ));
        line(format!(
            "  {:<18} {:<8} {:>4}  {}",
            "reports.notes",
            "text",
            "—",
            self.verdict(5).detail
        ));
        if let Some(r) = &self.reassignment {
            line(String::new());
            line(format!(
                "route reassigned mid-run: {} from {} to {} at {:.1} s",
                r.route, r.from, r.to, r.at_secs
            ));
            line(format!(
                "  {}'s device held {} of its shipments, {} after ({} evicted); {} holds {}",
                r.from, r.rows_before, r.rows_after, r.evicted_rows, r.to, r.heir_rows
            ));
            line(format!(
                "  {}'s pending edits on them at that moment: {} — {} uploaded while still allowed, \
                 {} refused with a reason, {} lost",
                r.from, r.pending_edits, r.uploaded, r.rejected_with_reason, r.lost
            ));
            if r.refused_later > 0 {
                line(format!(
                    "  {} more edits on them, made before the device learned of it: refused with a reason",
                    r.refused_later
                ));
            }
            for reason in r.reasons.iter().take(2) {
                line(format!("    reason: {reason}"));
            }
        }
        line(String::new());
        let n = &self.network_script;
        line(format!(
            "network `{}`: {} tunnels ({} the app noticed, {} silent), {} `{}` stretches; \
             proxies: {} connections, {} dropped at random, {} stalls, {} cut by tunnels",
            self.network,
            n.tunnels_known + n.tunnels_silent,
            n.tunnels_known,
            n.tunnels_silent,
            n.edge_stretches,
            n.stretch_profile,
            int(w.connections),
            int(w.drops),
            int(w.stalls),
            int(w.cut)
        ));
        if !self.sync.errors.is_empty() {
            let errors: Vec<String> = self
                .sync
                .errors
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            line(format!("sync failures by cause: {}", errors.join(", ")));
        }
        for s in &self.skipped {
            line(format!("not shown: {s}"));
        }
        let t = &self.timings;
        line(String::new());
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        line(format!(
            "{} in {:.1} s (setup {:.1} s, run {:.1} s, drain {:.1} s) — {}",
            if self.ok { "PASS" } else { "FAIL" },
            t.total,
            t.setup,
            t.run,
            t.drain,
            if failed.is_empty() {
                "every promise held".to_string()
            } else {
                format!("broken: {}", failed.join(", "))
            }
        ));
        if let Some(dir) = &self.data_dir {
            line(format!("databases kept in {dir}"));
        }
        out
    }
}

/// `1 device`, `3 devices`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn codes(by_code: &BTreeMap<String, u64>) -> String {
    if by_code.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by_code.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(int(12), "12");
        assert_eq!(bytes(1_500), "1.5 KB");
        assert_eq!(pct(0.99951), "99.95 %");
        assert_eq!(pct(1.0), "100.0 %");
    }

    #[test]
    fn checks_follow_the_measurements() {
        let mut r = Report {
            writes: Writes {
                attempted: 10,
                succeeded: 10,
                offline_attempted: 4,
                offline_succeeded: 4,
                errors: vec![],
            },
            sync_success_rate: 1.0,
            converged: true,
            ..Report::default()
        };
        r.check(true);
        assert!(r.ok, "{:?}", r.checks);
        r.sync_success_rate = 0.999;
        r.check(true);
        assert!(!r.ok);
        assert!(r.render().contains("FAIL"));
    }
}
