//! The end of the day: the network heals (links up, no faults, the apps on Wi-Fi), every
//! outbox drains, and every device converges on the server's state within its scope. The
//! time each device's state last changed is tracked from the heal, so the drain time is when
//! the last device reached its final state, not when the demo looked.

use super::converge::{self, Reference};
use super::device::Device;
use super::progress::{self, Progress};
use super::setup::World;
use anyhow::Result;
use burrow_proxy::Profile;
use std::time::Duration;
use tokio::time::Instant;

/// Longest the drain may take before the demo gives up (and fails).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the drain measured.
pub struct Drained {
    /// From the heal until every outbox was empty (`None`: not within the timeout).
    pub empty_after: Option<Duration>,
    /// From the heal until every device held its final, converged state.
    pub converged_after: Option<Duration>,
    /// Each device's reference copy.
    pub references: Vec<Reference>,
    /// Whether each device converged.
    pub verdicts: Vec<bool>,
}

/// When each device's state hash last changed since the heal.
struct Hashes {
    since: Vec<(String, Duration)>,
}

impl Hashes {
    fn new(devices: &[Device]) -> Hashes {
        Hashes {
            since: devices
                .iter()
                .map(|d| (d.client.state_hash().unwrap_or_default(), Duration::ZERO))
                .collect(),
        }
    }

    fn poll(&mut self, devices: &[Device], at: Duration) {
        for (d, (hash, since)) in devices.iter().zip(self.since.iter_mut()) {
            if let Ok(h) = d.client.state_hash()
                && h != *hash
            {
                *hash = h;
                *since = at;
            }
        }
    }
}

/// Heals every link with `healed`, then waits for the drain and the convergence.
pub async fn drain(
    world: &World,
    healed: &Profile,
    seed: u64,
    progress: &Progress,
) -> Result<Drained> {
    let devices = world.devices.as_slice();
    let heal = Instant::now();
    for d in devices {
        d.link.heal(healed.clone());
    }
    progress.note("the network heals: every link up, no faults, every app on Wi-Fi; draining");
    let mut hashes = Hashes::new(devices);
    let mut next_show = Instant::now();
    let empty_after = loop {
        hashes.poll(devices, heal.elapsed());
        if devices.iter().all(|d| d.pending() == Some(0)) {
            break Some(heal.elapsed());
        }
        if heal.elapsed() > DRAIN_TIMEOUT {
            break None;
        }
        if Instant::now() >= next_show {
            let snap = progress::snapshot(devices, world.server.store()).await;
            progress.show("drain", heal.elapsed(), DRAIN_TIMEOUT, &snap);
            next_show = Instant::now() + progress.interval();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let references = converge::references(
        devices,
        &world.server.url(),
        &world.schema,
        crate::bench_scope::EXAMPLE_SCHEMA,
        &world.dir.join("reference"),
        seed,
    )
    .await?;
    let deadline = heal + DRAIN_TIMEOUT;
    let verdicts = loop {
        hashes.poll(devices, heal.elapsed());
        let now: Vec<bool> = hashes
            .since
            .iter()
            .zip(&references)
            .map(|((h, _), r)| *h == r.hash)
            .collect();
        if now.iter().all(|c| *c) || Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let converged_after = match (empty_after, verdicts.iter().all(|c| *c)) {
        (Some(empty), true) => Some(
            hashes
                .since
                .iter()
                .map(|(_, at)| *at)
                .fold(empty, Duration::max),
        ),
        _ => None,
    };
    Ok(Drained {
        empty_after,
        converged_after,
        references,
        verdicts,
    })
}
