//! `burrow bench delta`: a device holding a synced copy of `rows` shipments pulls the
//! `changes` updates another device made and pushed while it was away (one row each), through
//! a real server on loopback. Measured: the pull's wall time (request to every change applied
//! with the cursor) and its bytes on the wire.

use crate::bench::{fixture_for, median};
use crate::bench_seed::insert_shipments;
use crate::demo::DELIVERY_SCHEMA;
use anyhow::{Context, Result};
use burrow_client::{Client, HttpTransport};
use std::time::Instant;

/// Target wall time of a 10,000-change delta pull (from the product brief).
pub const TARGET_SECONDS: f64 = 0.5;
/// Rows the writing device changes per local transaction.
const CHANGES_PER_TX: u64 = 1_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Rows both devices hold.
    pub rows: u64,
    /// Changes pulled per repetition.
    pub changes: u64,
    /// Repetitions (each pulls a fresh set of `changes` changes).
    pub reps: usize,
}

/// Runs the benchmark; returns the JSON result and the table lines.
pub async fn run(o: &DeltaOptions) -> Result<(serde_json::Value, Vec<(String, String)>)> {
    anyhow::ensure!(o.changes > 0, "--changes must be at least 1");
    anyhow::ensure!(
        o.rows >= o.changes,
        "--rows ({}) must be at least --changes ({}): each change updates its own row",
        o.rows,
        o.changes
    );
    let f = fixture_for(DELIVERY_SCHEMA).await?;
    let transport = HttpTransport::new(&f.server.url(), &f.token)?;
    // The writer creates the rows; the reader gets its copy by an initial sync.
    let writer = Client::open(f.dir.join("writer.db"), &f.schema)?;
    let t = Instant::now();
    writer.write(|tx| insert_shipments(tx, 0, o.rows))?;
    writer.sync(&transport).await?;
    let reader = Client::open(f.dir.join("reader.db"), &f.schema)?;
    let initial = reader.sync(&transport).await?;
    anyhow::ensure!(
        initial.changes_received == o.rows,
        "the reader's initial sync got {} rows, expected {}",
        initial.changes_received,
        o.rows
    );
    let setup_secs = t.elapsed().as_secs_f64();
    let (mut walls, mut bytes, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..o.reps.max(1) {
        // The other device changes `changes` rows (the first ones by rowid, new values each
        // repetition) and pushes them.
        let mut done = 0;
        while done < o.changes {
            let n = CHANGES_PER_TX.min(o.changes - done);
            writer.write(|tx| {
                tx.execute(
                    "UPDATE shipments SET status = ?1 || '-' || rowid, pieces = pieces + 1 \
                     WHERE rowid > ?2 AND rowid <= ?3",
                    rusqlite::params![format!("r{rep}"), done as i64, (done + n) as i64],
                )
            })?;
            done += n;
        }
        let pushed = writer.sync(&transport).await?;
        anyhow::ensure!(
            pushed.ops_acked == o.changes,
            "the writer pushed {} ops, expected {}",
            pushed.ops_acked,
            o.changes
        );
        let t = Instant::now();
        let r = reader.sync(&transport).await?;
        walls.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            r.changes_received == o.changes && r.complete,
            "the delta pull got {} changes, expected {}: {r:?}",
            r.changes_received,
            o.changes
        );
        let seen = reader.query_json(&format!(
            "SELECT count(*) AS n FROM shipments WHERE status LIKE 'r{rep}-%'"
        ))?;
        let seen = seen
            .first()
            .and_then(|r| r["n"].as_u64())
            .context("count")?;
        anyhow::ensure!(
            seen == o.changes,
            "{seen} changed rows visible, expected {}",
            o.changes
        );
        bytes.push(r.bytes_down as f64);
        requests.push(r.requests as f64);
    }
    f.server.shutdown().await;
    let wall = median(walls.clone());
    let down = median(bytes);
    let result = serde_json::json!({
        "bench": "delta",
        "rows": o.rows,
        "changes": o.changes,
        "reps": o.reps.max(1),
        "wall_seconds_median": wall,
        "wall_seconds_all": walls,
        "changes_per_second": o.changes as f64 / wall,
        "bytes_down": down,
        "bytes_per_change": down / o.changes as f64,
        "requests": median(requests),
        "target_seconds": TARGET_SECONDS,
        "setup_seconds": setup_secs,
    });
    let lines = vec![
        (
            format!(
                "delta pull of {} changes (holding {} rows)",
                o.changes, o.rows
            ),
            format!(
                "{wall:.3} s ({:.0} changes/s) {}",
                o.changes as f64 / wall,
                crate::bench_capture::verdict(wall, TARGET_SECONDS)
            ),
        ),
        (
            "bytes down".to_string(),
            format!("{down:.0} B ({:.1} B/change)", down / o.changes as f64),
        ),
        ("target".to_string(), format!("≤ {TARGET_SECONDS} s")),
        (
            "(setup) seed, upload, reader's initial sync".to_string(),
            format!("{setup_secs:.1} s"),
        ),
    ];
    Ok((result, lines))
}
