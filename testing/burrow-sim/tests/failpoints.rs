//! The failpoint matrix: every durability boundary × {injected I/O error, panic}; after each,
//! restart everything and check zero loss (I1), no duplicates (I2), no partial batch (I4) and
//! crash integrity (I8).
//!
//! `cargo test -p burrow-sim --release --features failpoints --test failpoints`
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_client::{Client, ClientOptions};
use burrow_core::Schema;
use burrow_core::env::Clock;
use burrow_server::ServerConfig;
use burrow_sim::SIM_SCHEMA;
use burrow_sim::check::{SimReport, client_dump, crash_integrity, no_partial_batch, server_dump};
use burrow_sim::net::{DeviceClock, Net, SimClock, SimTransport};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

const POINTS: [&str; 8] = [
    "client-write-before-commit",
    "client-write-after-commit",
    "client-read-batch",
    "client-sync-before-apply",
    "client-apply-before-commit",
    "server-ingest-before-commit",
    "server-ingest-after-commit",
    "server-pull",
];

struct Dev {
    id: String,
    path: std::path::PathBuf,
    clock: Arc<DeviceClock>,
    client: Option<Arc<Client>>,
    reported_ops: u64,
}

impl Dev {
    fn open(&mut self, schema: &Schema) -> Arc<Client> {
        if self.client.is_none() {
            let opts = ClientOptions {
                clock: Some(self.clock.clone() as Arc<dyn Clock>),
                upload_ops_max: 4,
                page_bytes_max: 600,
                client_id: Some(self.id.clone()),
                ..Default::default()
            };
            self.client = Some(Arc::new(
                Client::open_with(&self.path, schema, Some(SIM_SCHEMA), opts).unwrap(),
            ));
        }
        self.client.clone().unwrap()
    }
}

/// Returns whether the failpoint visibly fired (an error or panic that names it).
async fn case(point: &str, action: &str) -> (bool, SimReport) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::from_toml_str(SIM_SCHEMA).unwrap();
    let clock = Arc::new(SimClock::new(1_790_000_000_000));
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    config.secret = Some(b"s".to_vec());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let tokens = (0..2)
        .map(|c| {
            burrow_server::auth::mint(
                b"s",
                &format!("u{c}"),
                Default::default(),
                4_000_000_000,
                1_000_000,
            )
            .unwrap()
        })
        .collect();
    let db = config.data_dir.join("server.db");
    let net = Arc::new(Net::new(config, db.clone(), clock.clone(), 2, 1, tokens).unwrap());
    let mut devs: Vec<Dev> = (0..2)
        .map(|c| Dev {
            id: format!("fp-{c}"),
            path: dir.path().join(format!("d{c}.db")),
            clock: Arc::new(DeviceClock::new(clock.clone(), c as i64 * 1000)),
            client: None,
            reported_ops: 0,
        })
        .collect();
    let mut report = SimReport::default();
    let mut fired = false;
    let mut n = 0;
    fail::cfg(point, &format!("1*{action}")).unwrap();
    for round in 0..4 {
        for (c, d) in devs.iter_mut().enumerate() {
            clock.advance(100);
            let client = d.open(&schema);
            n += 1;
            let sql = if round % 2 == 0 {
                format!(
                    "INSERT INTO items(id, title, qty) VALUES ('i{c}-{n}', 'x', {n}); UPDATE items SET qty = qty + 1"
                )
            } else {
                (0..5)
                    .map(|k| format!("INSERT INTO batches(id, tag, size) VALUES ('b{c}-{n}-{k}', 'b{c}-{n}', 5)"))
                    .collect::<Vec<_>>()
                    .join(";")
            };
            let write = std::panic::catch_unwind(AssertUnwindSafe(|| client.execute(&sql)));
            match write {
                Ok(Ok(r)) => d.reported_ops += r.ops_captured,
                Ok(Err(e)) => fired |= e.to_string().contains(point),
                Err(_) => {
                    fired = true;
                    d.client = None; // the app crashed
                    crash_integrity(
                        c,
                        &d.open(&schema),
                        d.reported_ops,
                        &mut SimReport::default(),
                    );
                }
            }
            let client = d.open(&schema);
            let t = SimTransport {
                net: net.clone(),
                index: c,
            };
            let sync =
                tokio::spawn(async move { client.sync(&t).await.map_err(|e| e.to_string()) }).await;
            match sync {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => fired |= e.contains(point),
                Err(_) => {
                    fired = true;
                    d.client = None;
                }
            }
        }
    }
    fail::remove(point);
    // Restart everything and let it settle.
    net.restart_server().unwrap();
    for d in devs.iter_mut() {
        d.client = None;
        let client = d.open(&schema);
        let seq: i64 = client
            .with_connection(|c| {
                Ok(c.query_row(
                    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'), 0)",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert!(
            seq as u64 >= d.reported_ops,
            "{point}/{action}: reported writes missing from the outbox"
        );
        let integrity: String = client
            .with_connection(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
            .unwrap();
        if integrity != "ok" {
            report.violations.push(format!("I8 {}: {integrity}", d.id));
        }
        d.reported_ops = seq as u64; // everything committed must now reach the server once
    }
    for _ in 0..6 {
        for (c, d) in devs.iter_mut().enumerate() {
            let client = d.open(&schema);
            let _ = client
                .sync(&SimTransport {
                    net: net.clone(),
                    index: c,
                })
                .await;
        }
    }
    let server = net.server().unwrap();
    let sdump = server_dump(&db, &schema).unwrap();
    no_partial_batch("server", &sdump, &mut report);
    for d in devs.iter_mut() {
        let client = d.open(&schema);
        if client.status().unwrap().pending_ops != 0 {
            report
                .violations
                .push(format!("I7 {}: outbox not drained", d.id));
        }
        let dump = client_dump(&client, &schema).unwrap();
        no_partial_batch(&d.id, &dump, &mut report);
        if dump != sdump {
            report
                .violations
                .push(format!("I3 {} differs from the server", d.id));
        }
        for seq in 1..=d.reported_ops {
            let k = server.store().op_effect_count(&d.id, seq).unwrap();
            if k != 1 {
                report.violations.push(format!(
                    "I{} {}: op {seq} applied {k} times",
                    if k == 0 { 1 } else { 2 },
                    d.id
                ));
                break;
            }
        }
    }
    (fired, report)
}

#[test]
fn every_failpoint_with_error_and_panic_keeps_the_invariants() {
    let scenario = fail::FailScenario::setup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    for point in POINTS {
        for action in ["return", "panic"] {
            let (fired, report) = rt.block_on(case(point, action));
            eprintln!(
                "{point} × {action}: fired {fired}, violations {:?}",
                report.violations
            );
            if !fired {
                failures.push(format!("{point} × {action} never fired"));
            }
            for v in report.violations {
                failures.push(format!("{point} × {action}: {v}"));
            }
        }
    }
    scenario.teardown();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
