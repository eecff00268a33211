//! Puts the report together from what the run, the drain and the audit measured.

use super::attempts;
use super::audit;
use super::drain::{DRAIN_TIMEOUT, Drained};
use super::fleet::{Role, composition};
use super::ledger::Ledger;
use super::plan;
use super::propagation;
use super::report::{Conflicts, DeviceState, Report, Script, Timings, Wire, Writes};
use super::setup::World;
use super::story::Story;
use anyhow::Result;
use burrow_server::ServerStore;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// What the demo knows besides the world itself.
pub struct Inputs<'a> {
    /// The run's seed.
    pub seed: u64,
    /// The base network's name.
    pub network: &'a str,
    /// Seconds of run.
    pub duration_s: u64,
    /// The story.
    pub story: &'a Story,
    /// The workload's record.
    pub ledger: &'a Ledger,
    /// What the network scripts did.
    pub script: Script,
    /// What the drain measured.
    pub drained: &'a Drained,
    /// Phases so far (the drain's are filled in here).
    pub timings: Timings,
}

/// Audits the world after the drain and builds the report (checks included).
pub async fn report(world: &World, i: Inputs<'_>) -> Result<Report> {
    let devices = world.devices.as_slice();
    let store = world.server.store();
    let mut writes = Writes::default();
    for d in devices {
        let w = &d.writes;
        writes.attempted += w.attempted.load(Ordering::Relaxed);
        writes.succeeded += w.succeeded.load(Ordering::Relaxed);
        writes.offline_attempted += w.offline_attempted.load(Ordering::Relaxed);
        writes.offline_succeeded += w.offline_succeeded.load(Ordering::Relaxed);
        writes.errors.extend(
            w.errors()
                .into_iter()
                .map(|e| format!("{}: {e}", d.member.name)),
        );
    }
    let lists: Vec<Vec<attempts::Attempt>> =
        devices.iter().map(|d| d.attempts.attempts()).collect();
    let missed = devices.iter().map(|d| d.attempts.lagged()).sum();
    let mut sync = attempts::summarize(&lists, missed);
    sync.reconnects = devices.iter().map(|d| d.attempts.reconnects()).sum();
    let ops = audit::ops(devices, store)?;
    let roles: HashMap<String, Role> = devices
        .iter()
        .map(|d| (d.member.name.clone(), d.member.role))
        .collect();
    let log = store.conflicts(1_000_000).await?;
    let groups = audit::conflicts(&log, &roles);
    let mut by_policy = std::collections::BTreeMap::new();
    for e in &log {
        *by_policy.entry(e.reason.clone()).or_default() += 1;
    }
    let (counter, text) = match i.drained.references.get(world.manager) {
        Some(r) => audit::merges(i.ledger, &plan::initial_stock(), &r.client)?,
        None => Default::default(),
    };
    let conflicts = Conflicts {
        logged: log.len() as u64,
        by_policy,
        groups,
        counter,
        text,
    };
    let reassignment = audit::reassignment(i.story, devices, store)?;
    let propagation = propagation::summarize(&i.ledger.confirmations());
    let mut wire = Wire {
        ops: ops.written,
        photos: i.ledger.photos.load(Ordering::Relaxed),
        photo_bytes: i.ledger.photo_bytes.load(Ordering::Relaxed),
        ..Wire::default()
    };
    for d in devices {
        let s = d.proxy.stats();
        wire.bytes_up += s.bytes_up;
        wire.bytes_down += s.bytes_down;
        wire.connections += s.connections;
        wire.drops += s.drops;
        wire.stalls += s.stalls;
        wire.cut += s.cut;
        wire.refused += s.refused;
    }
    let frames: u64 = devices.iter().map(|d| d.attempts.frame_bytes()).sum();
    let on_wire = wire.bytes_up + wire.bytes_down;
    let per = |bytes: u64, ops: u64| {
        if ops == 0 {
            0.0
        } else {
            bytes as f64 / ops as f64
        }
    };
    wire.bytes_per_op_without_photos = per(
        on_wire.saturating_sub(wire.photo_bytes),
        wire.ops.saturating_sub(wire.photos),
    );
    wire.frame_bytes_per_op = per(frames, wire.ops);
    let convergence: Vec<DeviceState> = devices
        .iter()
        .zip(&i.drained.references)
        .zip(&i.drained.verdicts)
        .map(|((d, r), ok)| DeviceState {
            device: d.member.name.clone(),
            role: d.member.role.label().to_string(),
            converged: *ok,
            hash: d.client.state_hash().unwrap_or_default(),
            reference: r.hash.clone(),
        })
        .collect();
    let mut timings = i.timings;
    timings.outboxes_empty = i.drained.empty_after.unwrap_or(DRAIN_TIMEOUT).as_secs_f64();
    timings.drain = i
        .drained
        .converged_after
        .unwrap_or(DRAIN_TIMEOUT)
        .as_secs_f64();
    let mut report = Report {
        ok: false,
        seed: i.seed,
        network: i.network.to_string(),
        duration_s: i.duration_s,
        devices: devices.len(),
        fleet: composition(devices.len())
            .into_iter()
            .map(|(r, n)| (r.label().to_string(), n))
            .collect(),
        offline_availability: if writes.offline_attempted == 0 {
            1.0
        } else {
            writes.offline_succeeded as f64 / writes.offline_attempted as f64
        },
        sync_success_rate: sync.success_rate,
        lost_writes: ops.lost,
        duplicates: ops.duplicates,
        converged: !convergence.is_empty() && convergence.iter().all(|d| d.converged),
        conflicts,
        propagation_ms: propagation.online,
        offline_to_visible_ms: propagation.offline_to_visible,
        never_visible: propagation.never_visible,
        bytes_per_op: per(on_wire, wire.ops),
        drain_seconds: timings.drain,
        writes,
        sync,
        ops,
        reassignment,
        convergence,
        wire,
        network_script: i.script,
        timings,
        skipped: vec![
            "attachments (issue #10, not built yet): photos travel as rows of a bulk `photos` \
             table"
                .into(),
            "the office does not download photos: the delivery example has no dispatcher \
             stream for `photos` yet"
                .into(),
        ],
        checks: Vec::new(),
        data_dir: None,
    };
    report.check(i.drained.converged_after.is_some());
    Ok(report)
}
