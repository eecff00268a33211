//! The run: every device works (its own thread) while its network script plays (tunnels,
//! EDGE stretches, on top of the base profile's faults), the story unfolds, and the progress
//! display follows the fleet.

use super::dice::Dice;
use super::ledger::Ledger;
use super::progress::{self, Progress};
use super::report::Script;
use super::script::{self, Hold, Trouble, Window};
use super::setup::World;
use super::story::Story;
use super::work::{self, Ctx};
use anyhow::Result;
use burrow_proxy::Profile;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The profiles of a run.
pub struct Profiles {
    /// The chosen `--network` (without its own outage schedule: the scripts make tunnels).
    pub base: Profile,
    /// An EDGE stretch on top of it.
    pub stretch: Profile,
}

/// One device's windows, each with what its end waits for.
type Playlist = Vec<(Window, Option<Hold>)>;

/// Longest the victim's tunnel waits for the reassignment to reach the server.
const HOLD_MAX: Duration = Duration::from_secs(15);

/// Draws every device's network script; the victim's includes the story's tunnel, which ends
/// only once the reassignment is on the server.
fn scripts(world: &World, story: &Arc<Story>, run: Duration, seed: u64) -> (Vec<Playlist>, Script) {
    let mut toggle = seed % 2 == 1;
    let mut counts = Script::default();
    let mut out = Vec::new();
    for (i, d) in world.devices.iter().enumerate() {
        let victim = i == story.victim;
        let avoid = victim.then(|| {
            let (a, b) = story.victim_window();
            (
                a.saturating_sub(Duration::from_secs(1)),
                b + Duration::from_secs(3),
            )
        });
        let mut dice = Dice::new(seed, 0x5C00 + i as u64);
        let mut windows: Vec<(Window, Option<Hold>)> =
            script::plan(d.member.role, run, &mut dice, &mut toggle, avoid)
                .into_iter()
                .map(|w| (w, None))
                .collect();
        if victim {
            let (from, to) = story.victim_window();
            let (story, store) = (story.clone(), world.server.store().clone());
            let boss = world.devices[world.manager].client.client_id().to_string();
            let ready = move || {
                story
                    .reassign_seq()
                    .is_some_and(|seq| store.op_effect_count(&boss, seq).is_ok_and(|n| n > 0))
            };
            let hold = Hold {
                ready: Box::new(ready),
                max: HOLD_MAX,
            };
            let w = Window {
                from,
                to,
                trouble: Trouble::Tunnel { known: true },
            };
            windows.push((w, Some(hold)));
            windows.sort_by_key(|(w, _)| w.from);
        }
        for (w, _) in &windows {
            match w.trouble {
                Trouble::Tunnel { known: true } => counts.tunnels_known += 1,
                Trouble::Tunnel { known: false } => counts.tunnels_silent += 1,
                Trouble::Edge => counts.edge_stretches += 1,
            }
        }
        out.push(windows);
    }
    (out, counts)
}

/// Runs the day for `run`; returns what the network scripts did.
pub async fn run(
    world: &World,
    story: Arc<Story>,
    ledger: Arc<Ledger>,
    profiles: &Profiles,
    run: Duration,
    seed: u64,
    progress: &Progress,
) -> Result<Script> {
    for d in world.devices.iter() {
        d.link.set_profile(profiles.base.clone(), false);
    }
    let (plans, mut counts) = scripts(world, &story, run, seed);
    counts.stretch_profile = profiles.stretch.name.clone();
    let t0 = Instant::now();
    let mut players = Vec::new();
    for (d, windows) in world.devices.iter().zip(plans) {
        players.push(tokio::spawn(script::play(
            d.link.clone(),
            windows,
            t0,
            profiles.base.clone(),
            profiles.stretch.clone(),
        )));
    }
    let mut workers = Vec::new();
    for me in 0..world.devices.len() {
        let ctx = Ctx {
            devices: world.devices.clone(),
            me,
            manager: world.manager,
            ledger: ledger.clone(),
            story: story.clone(),
            t0,
            run,
            seed,
        };
        workers.push(tokio::task::spawn_blocking(move || work::run(&ctx)));
    }
    let mut next_show = Instant::now();
    let mut told = false;
    while !workers.iter().all(|w| w.is_finished()) {
        if Instant::now() >= next_show {
            let snap = progress::snapshot(&world.devices, world.server.store()).await;
            progress.show("run", t0.elapsed(), run, &snap);
            next_show = Instant::now() + progress.interval();
        }
        if !told && let Some(s) = story.snapshot() {
            told = true;
            progress.note(&format!(
                "{:>5.1} s  the manager gives {} to {} while {} is in a tunnel with {} edit(s) on it pending",
                s.at_secs,
                story.route,
                world.devices[story.heir].member.name,
                world.devices[story.victim].member.name,
                s.pending_seqs.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.await?;
    }
    for p in players {
        p.abort();
    }
    Ok(counts)
}
