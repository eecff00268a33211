//! The morning: an embedded server with the delivery example's schema and sync rules, one
//! fault proxy and one client (its own SQLite file, its own user and token) per device, the
//! manager's plan for the day, and every device's first sync of its share of it.

use super::device::Device;
use super::fleet::{self, Member, Role};
use super::plan;
use super::progress::Progress;
use super::report::plural;
use super::work::count;
use crate::bench_live::open_files_short_of;
use crate::bench_scope::{EXAMPLE_RULES, EXAMPLE_SCHEMA};
use anyhow::{Context, Result, bail};
use burrow_client::{Client, ClientOptions, RunOptions};
use burrow_core::Schema;
use burrow_core::backoff::BackoffConfig;
use burrow_core::env::{Clock, SystemClock};
use burrow_core::rules::SyncRules;
use burrow_proxy::Profile;
use burrow_server::{RunningServer, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest the morning may take (the plan reaching every device).
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
/// Open files per device at most: its database, WAL, shared memory and journal, the proxy's
/// listener and both ends of its connections, live push.
const FILES_PER_DEVICE: u64 = 16;
/// Open files for the server, the runtime and the references.
const FILES_BESIDES: u64 = 128;

/// Fails with advice when `devices` would run out of file descriptors mid-run.
fn check_open_files(devices: usize) -> Result<()> {
    let need = devices as u64 * FILES_PER_DEVICE + FILES_BESIDES;
    match open_files_short_of(need) {
        Some(limit) => bail!(
            "{devices} devices need about {need} open files but the limit is {limit}: raise \
             it (`ulimit -n {need}`) or use fewer --devices"
        ),
        _ => Ok(()),
    }
}

/// Lifetime of the devices' tokens.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

/// How the devices' runners sync: live push on, a poll every 3 s as the fallback, and the
/// library's backoff (1 s, doubling, full jitter) capped at 4 s instead of 5 min, so a run
/// of a minute is not spent waiting.
pub fn run_options() -> RunOptions {
    RunOptions {
        poll_interval_ms: 3_000,
        backoff: BackoffConfig {
            cap_ms: 4_000,
            ..BackoffConfig::default()
        },
        token_provider: None,
        live: true,
    }
}

/// The server, the fleet and the day's plan.
pub struct World {
    /// The embedded server.
    pub server: RunningServer,
    /// The served schema.
    pub schema: Schema,
    /// The devices.
    pub devices: Arc<Vec<Device>>,
    /// The manager's index.
    pub manager: usize,
    /// Shipments on each route.
    pub per_route: usize,
    /// Where the databases live.
    pub dir: PathBuf,
}

/// Settings of the morning.
pub struct Morning<'a> {
    /// Where the databases go.
    pub dir: &'a Path,
    /// Devices in the fleet.
    pub devices: usize,
    /// Seconds of run (sizes the routes).
    pub run_secs: u64,
    /// The run's seed.
    pub seed: u64,
    /// The proxies' profile for the morning (no faults: the day starts at the depot).
    pub profile: Profile,
}

/// Starts everything and waits until every device holds its share of the plan.
pub async fn morning(m: &Morning<'_>, progress: &Progress) -> Result<World> {
    check_open_files(m.devices)?;
    let schema = Schema::from_toml_str(EXAMPLE_SCHEMA).context("examples/delivery/schema.toml")?;
    let rules = Arc::new(
        SyncRules::parse(EXAMPLE_RULES, &schema).context("examples/delivery/burrow.toml")?,
    );
    let secret = format!("burrow-demo-{:x}", m.seed).into_bytes();
    let mut config = ServerConfig::new(m.dir.join("server"), schema.clone());
    config.secret = Some(secret.clone());
    config.rules = Some(rules.clone());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    let members = fleet::members(m.devices);
    let mut devices = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let proxy = burrow_proxy::spawn(
            "127.0.0.1:0",
            server.local_addr(),
            m.profile.clone(),
            m.seed ^ (0xD00D_0000 + i as u64),
        )
        .await?;
        let token = burrow_server::auth::mint(
            &secret,
            &member.name,
            member.claims(),
            SystemClock.now_ms() / 1000,
            TOKEN_TTL_SECS,
        )?;
        let options = ClientOptions {
            client_id: Some(format!("{}-{:x}", member.name, m.seed)),
            ..ClientOptions::default()
        };
        let db = m.dir.join("devices").join(format!("{}.db", member.name));
        std::fs::create_dir_all(m.dir.join("devices"))?;
        let client = Client::open_with(&db, &schema, Some(EXAMPLE_SCHEMA), options)
            .with_context(|| format!("{}: open {}", member.name, db.display()))?;
        devices.push(Device::new(member.clone(), client, proxy, token));
    }
    let manager = members
        .iter()
        .position(|x| x.role == Role::Manager)
        .context("the fleet has no manager")?;
    let today = rules.today(SystemClock.now_ms());
    let per_route = plan::shipments_per_route(m.run_secs);
    progress.note(&format!(
        "server {} with the delivery example's schema and sync rules; {} devices, each with its \
         own SQLite file, user and fault proxy",
        server.url(),
        devices.len()
    ));
    let started = Instant::now();
    let options = run_options();
    let boss = &devices[manager];
    boss.exec(&plan::manager_sql(&members, &today, per_route))
        .context("the manager's plan was refused locally")?;
    boss.start(&options)?;
    wait_for(started, "the manager's plan to reach the server", || {
        boss.pending() == Some(0)
    })
    .await?;
    for d in devices.iter().filter(|d| d.member.role == Role::Technician) {
        d.exec(&plan::report_sql(&d.member));
    }
    for (i, d) in devices.iter().enumerate() {
        if i != manager {
            d.start(&options)?;
        }
    }
    wait_for(
        started,
        "every device to sync its share of the plan",
        || devices.iter().all(|d| ready(d, &members, per_route)),
    )
    .await?;
    progress.note(&format!(
        "the day is planned ({today}): {} of {per_route} shipments, {} items, {}; every device \
         synced its share in {:.1} s",
        plural(
            members.iter().filter(|x| x.role == Role::Driver).count(),
            "route"
        ),
        plan::items().len(),
        plural(
            members
                .iter()
                .filter(|x| x.role == Role::Technician)
                .count(),
            "service job"
        ),
        started.elapsed().as_secs_f64()
    ));
    Ok(World {
        server,
        schema,
        devices: Arc::new(devices),
        manager,
        per_route,
        dir: m.dir.to_path_buf(),
    })
}

/// The device holds its share of the plan and has nothing left to send.
fn ready(d: &Device, members: &[Member], per_route: usize) -> bool {
    d.pending() == Some(0)
        && plan::expected(&d.member, members, per_route)
            .iter()
            .all(|(sql, n)| count(&d.client, sql) == *n)
}

async fn wait_for(started: Instant, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    while !done() {
        if started.elapsed() > SETUP_TIMEOUT {
            bail!("setup: waited {} s for {what}", SETUP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
