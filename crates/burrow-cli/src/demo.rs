//! `burrow demo`: three devices edit offline — including a same-field conflict, a
//! different-field merge and a delete racing an update — then sync through a real server on
//! loopback; the demo checks convergence and that every write is accounted for.

use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use burrow_core::Schema;
use burrow_server::{ServerConfig, ServerStore};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The delivery-app schema shipped with the binary.
pub const DELIVERY_SCHEMA: &str = include_str!("../assets/delivery.toml");

/// Arguments of `burrow demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed for the workload (which rows each device edits).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Shipments on the route.
    #[arg(long, default_value_t = 40)]
    shipments: u32,
    /// Scans each device records while offline.
    #[arg(long, default_value_t = 200)]
    scans: u32,
    /// Keep the databases in this directory instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

struct Device {
    name: &'static str,
    client: Client,
    transport: HttpTransport,
    writes: u64,
}

impl Device {
    fn exec(&mut self, sql: &str) -> Result<()> {
        let r = self
            .client
            .execute(sql)
            .with_context(|| format!("{}: {sql}", self.name))?;
        self.writes += r.ops_captured;
        Ok(())
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

/// Runs the demo; exit code 3 when a check fails.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let temp = tempfile::tempdir()?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let schema = Schema::from_toml_str(DELIVERY_SCHEMA)?;
    let mut config = ServerConfig::new(dir.join("server"), schema.clone());
    config.secret = Some(format!("demo-{}", args.seed).into_bytes());
    let secret = config.secret.clone().unwrap_or_default();
    let server = burrow_server::spawn(config, "127.0.0.1:0").await?;
    say(format!(
        "server      {} (data in {})",
        server.url(),
        dir.join("server").display()
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut devices = Vec::new();
    for name in ["office", "driver-1", "driver-2"] {
        let token = burrow_server::auth::mint(&secret, name, BTreeMap::new(), now, 3600)?;
        let client = Client::open_with(
            dir.join(format!("{name}.db")),
            &schema,
            Some(DELIVERY_SCHEMA),
            Default::default(),
        )?;
        let transport = HttpTransport::new(&server.url(), &token)?;
        devices.push(Device {
            name,
            client,
            transport,
            writes: 0,
        });
    }
    let mut rng = burrow_core::env::SeededRng::new(args.seed);

    // 1. The office plans the route; everyone syncs once (online).
    let n = args.shipments.max(4);
    let mut plan =
        String::from("INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'driver-1', 'today');");
    for i in 0..n {
        plan.push_str(&format!(
            "INSERT INTO shipments(id, route_id, status, address, recipient, weight_kg, pieces, fragile)
             VALUES ('s{i}', 'r1', 'loaded', '{} Harbour Road', 'Customer {i}', {}, {}, {});",
            10 + i,
            1.0 + (i % 7) as f64 * 0.5,
            1 + i % 3,
            i % 2
        ));
    }
    devices[0].exec(&plan)?;
    for d in &devices {
        d.client
            .sync(&d.transport)
            .await
            .with_context(|| format!("{} initial sync", d.name))?;
    }
    say(format!(
        "planned     1 route, {n} shipments; all devices online and synced"
    ));

    // 2. Offline: everybody works without the network.
    let pick = |rng: &mut burrow_core::env::SeededRng| 3 + rng.below(u64::from(n - 3));
    let merge_row = pick(&mut rng);
    devices[1].exec("UPDATE shipments SET status = 'delivered' WHERE id = 's0'")?;
    // Same field, a moment later on another device: the later write must win.
    std::thread::sleep(std::time::Duration::from_millis(3));
    devices[2].exec("UPDATE shipments SET status = 'failed_attempt' WHERE id = 's0'")?;
    devices[1].exec(&format!(
        "UPDATE shipments SET status = 'delivered' WHERE id = 's{merge_row}'"
    ))?;
    devices[2].exec(&format!(
        "UPDATE shipments SET notes = 'leave at back door' WHERE id = 's{merge_row}'"
    ))?; // different field
    devices[0].exec("DELETE FROM shipments WHERE id = 's1'")?;
    devices[2].exec("UPDATE shipments SET pieces = 9 WHERE id = 's1'")?; // races the delete
    for (k, d) in devices.iter_mut().enumerate() {
        for j in 0..args.scans {
            let s = rng.below(u64::from(n));
            d.exec(&format!(
                "INSERT INTO scans(shipment_id, code, scanned_at) VALUES ('s{s}', 'D{k}-{j:05}', {})",
                now * 1000 + u64::from(j)
            ))?;
        }
    }
    let written: u64 = devices.iter().map(|d| d.writes).sum();
    let pending: u64 = devices
        .iter()
        .map(|d| d.client.status().map(|s| s.pending_ops).unwrap_or(0))
        .sum();
    say(format!(
        "offline     {pending} writes on 3 devices, each answered by the local database and queued"
    ));

    // 3. Back online: sync in an order that makes the earlier same-field write arrive last.
    let order = [2usize, 0, 1, 0, 1, 2, 0, 1, 2];
    let mut report = burrow_client::SyncReport::default();
    let sync_started = Instant::now();
    for &i in &order {
        let d = &devices[i];
        let r = d
            .client
            .sync(&d.transport)
            .await
            .with_context(|| format!("{} sync", d.name))?;
        report.ops_acked += r.ops_acked;
        report.ops_rejected += r.ops_rejected;
        report.conflicts += r.conflicts;
        report.bytes_up += r.bytes_up;
        report.bytes_down += r.bytes_down;
        report.requests += r.requests;
    }
    let sync_secs = sync_started.elapsed().as_secs_f64();

    // 4. Checks.
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    };
    let hashes: Vec<String> = devices
        .iter()
        .map(|d| d.client.state_hash())
        .collect::<Result<_, _>>()?;
    check(
        "converged",
        hashes.iter().all(|h| h == &hashes[0]),
        format!("state hashes {hashes:?}"),
    );
    let pending: u64 = devices
        .iter()
        .map(|d| d.client.status().map(|s| s.pending_ops).unwrap_or(1))
        .sum();
    check(
        "outboxes drained",
        pending == 0,
        format!("{pending} ops still queued"),
    );
    let (server_ops, _) = server.store().counts()?;
    let lost = written.saturating_sub(server_ops);
    check(
        "every write accounted for",
        server_ops == written && report.ops_rejected == 0,
        format!(
            "{written} written, {server_ops} recorded by the server, {} rejected",
            report.ops_rejected
        ),
    );
    let mut dup = 0u64;
    for d in &devices {
        for seq in 1..=d.writes {
            let c = server.store().op_effect_count(d.client.client_id(), seq)?;
            if c != 1 {
                dup += 1;
            }
        }
    }
    check(
        "no duplicates or gaps",
        dup == 0,
        format!("{dup} op ids applied != 1 times"),
    );
    let office = &devices[0].client;
    let row = |sql: &str| -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        Ok(office.query_json(sql)?.into_iter().next())
    };
    let s0 = row("SELECT status FROM shipments WHERE id = 's0'")?;
    check(
        "same-field conflict: last write wins",
        s0.as_ref().and_then(|r| r["status"].as_str()) == Some("failed_attempt"),
        format!("s0 = {s0:?}"),
    );
    let merged = row(&format!(
        "SELECT status, notes FROM shipments WHERE id = 's{merge_row}'"
    ))?;
    check(
        "different-field merge: both edits kept",
        merged
            .as_ref()
            .is_some_and(|r| r["status"] == "delivered" && r["notes"] == "leave at back door"),
        format!("s{merge_row} = {merged:?}"),
    );
    let s1 = row("SELECT id FROM shipments WHERE id = 's1'")?;
    let log = server.store().conflicts(1000).await?;
    let logged_s0 = log.iter().any(|c| {
        c.row_id == "s0"
            && c.losers()
                .any(|l| l.value == serde_json::json!("delivered"))
    });
    let logged_s1 = log.iter().any(|c| {
        c.row_id == "s1"
            && c.reason == "deleted"
            && c.losers().any(|l| l.value == serde_json::json!(9))
    });
    check(
        "delete beats concurrent update",
        s1.is_none(),
        format!("s1 = {s1:?}"),
    );
    check(
        "every overwritten value is in the conflict log",
        logged_s0 && logged_s1,
        format!(
            "{} entries; s0 loser logged: {logged_s0}; s1 update logged: {logged_s1}",
            log.len()
        ),
    );
    let failed = checks.iter().filter(|c| !c.ok).count();
    let head = server.store().head_seq().await?;
    if args.json {
        let out = serde_json::json!({
            "ok": failed == 0,
            "devices": devices.len(),
            "local_writes": written,
            "offline_availability": 1.0,
            "lost_writes": lost,
            "duplicates": dup,
            "converged": checks.first().is_some_and(|c| c.ok),
            "conflicts": { "logged": log.len(), "ops_with_lost_fields": report.conflicts },
            "server_head_seq": head,
            "bytes_up": report.bytes_up,
            "bytes_down": report.bytes_down,
            "bytes_per_op": if written > 0 { report.bytes_up as f64 / written as f64 } else { 0.0 },
            "drain_seconds": sync_secs,
            "checks": checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "synced      {} requests, {} ops acked, {} conflicts resolved, {} B up / {} B down in {:.2} s",
            report.requests,
            report.ops_acked,
            log.len(),
            report.bytes_up,
            report.bytes_down,
            sync_secs
        );
        println!();
        for c in &checks {
            println!(
                "  [{}] {:<46} {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!();
        println!(
            "{} in {:.1} s — {} writes, {} lost, {} duplicated, {} devices converged on state {}",
            if failed == 0 { "PASS" } else { "FAIL" },
            started.elapsed().as_secs_f64(),
            written,
            lost,
            dup,
            devices.len(),
            hashes[0]
        );
        if args.keep.is_some() {
            println!("databases kept in {}", dir.display());
        }
    }
    server.shutdown().await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_CHECK_FAILED)
    })
}
