//! `burrow demo`: a delivery company's day through a bad network, and the brief's promises
//! as measured facts.
//!
//! An embedded server (temporary directory, free loopback port) serves the delivery
//! example's schema and sync rules (`examples/delivery/`). A fleet — by default 12 drivers,
//! 4 warehouse scanners, 3 technicians and a manager — runs real clients, each with its own
//! SQLite file, user and token, and its own fault proxy with a network script drawn from the
//! seed (tunnels the app notices, silent tunnels, EDGE stretches, on top of the `--network`
//! profile). Drivers confirm deliveries (critical) with a photo each (bulk), scanners
//! increment shared stock counters, technicians and the manager edit shared report notes (a
//! text CRDT), the manager approves the reports (`prefer`: approval wins) and gives a route
//! to another driver halfway through. Then the network heals, every queue drains, and the
//! demo audits every op, the conflict log and each device's state against a fresh copy of
//! its scope. See [`report::Report`] for what is measured.

mod assemble;
mod attempts;
mod audit;
mod converge;
mod day;
mod device;
mod dice;
mod drain;
mod fleet;
mod ledger;
mod link;
mod plan;
mod progress;
mod propagation;
mod report;
mod script;
mod setup;
mod story;
mod work;

use anyhow::{Result, bail};
use burrow_proxy::Profile;
use clap::Args;
use fleet::Role;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The small delivery schema the benchmarks use (routes, shipments, scans).
pub const DELIVERY_SCHEMA: &str = include_str!("../../assets/delivery.toml");

/// Arguments of `burrow demo`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Networks: every device has its own fault proxy with the chosen base profile — wifi (20 ms \
round trip), 3g (300 ms, 1.6/0.77 Mbit/s), edge (840 ms, 240/200 kbit/s) or hostile (EDGE \
plus random connection resets, 5 % per second per connection, and 1-5 s stalls) — and a \
script drawn from the seed: tunnels of 2-5 s (half of them the app notices and reports as \
offline, half are silent: the link is just dead), and stretches of EDGE (on an EDGE base: \
weak signal, EDGE with frequent 1-3 s stalls). The manager's office stays connected. \
The profiles' own 30 s outages are replaced by the scripts so that a run fits in a minute, \
and clients retry with the library's backoff (1 s, doubling, full jitter) capped at 4 s \
instead of 5 min for the same reason.

The default is edge: the brief's bad network (EDGE with disconnects). Sync success is the \
chaos test's definition: an attempt completed, or failed and the next attempt completed; \
attempts a tunnel cut (the link was down when they started or ended) are counted apart, \
since nothing completes without a link. A connection reset mid-request is resumed within \
the attempt (up to 3 in a row; the report's sync.reconnects counts them), so under hostile \
an attempt fails only when the link breaks on every try.

Exit code 0 when every promise held, 3 when one did not (offline availability below \
100 %, sync success at or below 99.9 %, a write lost, a duplicate, a counter or text edit \
missing, a device not converged, or the drain not done within 60 s), 1 on an error.")]
pub struct DemoArgs {
    /// Devices in the fleet: one manager, the rest drivers, warehouse scanners and
    /// technicians in the ratio 12 : 4 : 3.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=500))]
    devices: u64,
    /// Seconds of work under the network scripts, before the network heals.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=3600))]
    duration: u64,
    /// Every device's base network: wifi, 3g, edge or hostile (see below).
    #[arg(long, default_value = "edge", value_parser = ["wifi", "3g", "edge", "hostile"])]
    network: String,
    /// Seed of the workload and of the network scripts.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the report as JSON on stdout (and nothing on stderr).
    #[arg(long)]
    json: bool,
    /// Keep the databases in this (new or empty) directory for inspection.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// Runs the demo; exit code 3 when a promise failed.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

/// The run's profiles: the base without its outage schedule (the scripts make the tunnels);
/// a stretch of EDGE on top of it (when the base is EDGE already, a weak-signal stretch: EDGE
/// with frequent stalls, the way lost packets feel); and the heal (the base's latency and
/// bandwidth, no faults).
fn profiles(network: &str) -> Result<(day::Profiles, Profile)> {
    let base = Profile::named(network)?.without_outages();
    let edge = Profile::edge();
    let stretch = if base.latency >= edge.latency {
        edge.with_name("weak signal")
            .with_drops(base.drop_per_sec)
            .with_stalls(0.2, Duration::from_secs(1), Duration::from_secs(3))
    } else {
        edge.with_drops(base.drop_per_sec).with_stalls(
            base.stall_per_sec,
            base.stall_min,
            base.stall_max,
        )
    };
    let healed = base
        .clone()
        .with_name(&format!("{network} healed"))
        .with_drops(0.0)
        .with_stalls(0.0, Duration::ZERO, Duration::ZERO);
    Ok((day::Profiles { base, stretch }, healed))
}

fn data_dir(keep: &Option<PathBuf>, temp: &tempfile::TempDir) -> Result<PathBuf> {
    match keep {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("--keep {}: the directory is not empty", d.display());
            }
            std::fs::create_dir_all(d)?;
            Ok(d.clone())
        }
        None => Ok(temp.path().to_path_buf()),
    }
}

async fn run_async(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let temp = tempfile::tempdir()?;
    let dir = data_dir(&args.keep, &temp)?;
    let (profiles, healed) = profiles(&args.network)?;
    let devices = args.devices as usize;
    let run = Duration::from_secs(args.duration);
    let groups = fleet::composition(devices).len();
    let progress = progress::Progress::new(args.json, groups);
    let counts = fleet::composition(devices);
    progress.note(&format!(
        "burrow demo: {devices} devices ({}, {}, {}, 1 manager), {} s on `{}`, seed {}",
        report::plural(counts[&Role::Driver], "driver"),
        report::plural(counts[&Role::Warehouse], "warehouse scanner"),
        report::plural(counts[&Role::Technician], "technician"),
        args.duration,
        args.network,
        args.seed
    ));
    let morning = setup::Morning {
        dir: &dir,
        devices,
        run_secs: args.duration,
        seed: args.seed,
        profile: healed.clone(),
    };
    let world = setup::morning(&morning, &progress).await?;
    let setup_s = started.elapsed().as_secs_f64();
    let story = Arc::new(cast(&world, args.seed, run)?);
    let ledger = Arc::new(ledger::Ledger::default());
    let watcher =
        propagation::Watcher::start(world.devices[world.manager].client.path(), ledger.clone())?;
    let run_started = Instant::now();
    let script = day::run(
        &world,
        story.clone(),
        ledger.clone(),
        &profiles,
        run,
        args.seed,
        &progress,
    )
    .await?;
    let run_s = run_started.elapsed().as_secs_f64();
    let drained = drain::drain(&world, &healed, args.seed, &progress).await?;
    progress.finish();
    watcher.stop();
    for d in world.devices.iter() {
        if let Err(e) = d.stop().await {
            progress.note(&format!("warning: {}", crate::one_line(&e)));
        }
    }
    let timings = report::Timings {
        setup: setup_s,
        run: run_s,
        ..report::Timings::default()
    };
    let inputs = assemble::Inputs {
        seed: args.seed,
        network: &args.network,
        duration_s: args.duration,
        story: &story,
        ledger: &ledger,
        script,
        drained: &drained,
        timings,
    };
    let mut report = assemble::report(&world, inputs).await?;
    report.timings.total = started.elapsed().as_secs_f64();
    if args.keep.is_some() {
        report.data_dir = Some(dir.display().to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    drop(drained);
    world.server.shutdown().await;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_CHECK_FAILED)
    })
}

/// Picks who loses a route and who gets it.
fn cast(world: &setup::World, seed: u64, run: Duration) -> Result<story::Story> {
    let drivers: Vec<usize> = world
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.member.role == Role::Driver)
        .map(|(i, _)| i)
        .collect();
    if drivers.len() < 2 {
        bail!("the fleet needs two drivers to reassign a route");
    }
    let mut dice = dice::Dice::new(seed, 0x57_0000);
    let k = dice.below(drivers.len() as u64) as usize;
    let victim = drivers[k];
    let heir = drivers[(k + 1 + dice.below(drivers.len() as u64 - 1) as usize) % drivers.len()];
    let route = world.devices[victim].member.route_id();
    let shipments = (0..world.per_route)
        .map(|s| plan::shipment_id(&route, s))
        .collect();
    Ok(story::Story::new(run, victim, heir, route, shipments))
}
